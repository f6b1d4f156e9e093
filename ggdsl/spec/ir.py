"""The frozen intermediate representation every stage reads.

The YAML loader (:func:`ggdsl.load_spec`) and the Python builder (:class:`ggdsl.ModelBuilder`)
both produce a :class:`Spec`; nothing downstream sees YAML. Everything here is a frozen
dataclass or a :class:`~ggdsl.spec.frozen.FrozenDict`, so specs compare by value and can be
used as cache keys. Where a value came from in the file is kept in ``Spec.origin``, which
takes no part in equality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ggdsl.spec.frozen import FrozenDict

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PARENT_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[t-(\d+)\])?$")


@dataclass(frozen=True)
class Layer:
    """One layer of a network: its kind, the value of the kind key, and its other keys.

    ``{deconv: 128, kernel: 5, stride: 2, act: relu}`` is
    ``Layer("deconv", 128, FrozenDict(kernel=5, stride=2, act="relu"))``.
    """

    kind: str
    value: Any
    options: FrozenDict = field(default_factory=FrozenDict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        from ggdsl.spec.frozen import thaw

        return {self.kind: thaw(self.value), **thaw(self.options)}


# A network reference: a name (an entry of ``networks:`` or a preset) or an inline layer list.
NetRef = str | tuple[Layer, ...]


@dataclass(frozen=True)
class ParentRef:
    """A parent in ``given``: a variable name and how many steps back (0: same step)."""

    name: str
    lag: int = 0

    def __str__(self) -> str:
        return self.name if self.lag == 0 else f"{self.name}[t-{self.lag}]"

    @classmethod
    def parse(cls, text: str) -> ParentRef | None:
        match = PARENT_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            return None
        return cls(match.group(1), int(match.group(2) or 0))


@dataclass(frozen=True)
class Variable:
    """A variable of the generative model p.

    ``options`` holds the keys specific to the node type (``classes``, ``probs``, ``mean``,
    ``std``, ``low``, ``high``, ``net``, ``noise`` ...), with their defaults filled in.
    """

    name: str
    type: str
    shape: tuple[int, ...] = ()
    given: tuple[ParentRef, ...] = ()
    observed: bool = False
    steps: bool = False
    options: FrozenDict = field(default_factory=FrozenDict)
    first: Variable | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    @property
    def net(self) -> NetRef | None:
        return self.options.get("net")

    @property
    def event_shape(self) -> tuple[int, ...]:
        """Shape of one sample; a categorical is carried as a one-hot of ``classes``."""
        if self.type == "categorical":
            return (*self.shape, int(self.options["classes"]))
        return self.shape


@dataclass(frozen=True)
class DataSpec:
    source: str
    observe: FrozenDict = field(default_factory=FrozenDict)
    range: tuple[float, float] = (0.0, 1.0)
    options: FrozenDict = field(default_factory=FrozenDict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class TimeSpec:
    steps: int


@dataclass(frozen=True)
class InferenceSpec:
    family: str = "inverse"
    discrete: str = "gumbel_softmax"
    temperature: float = 0.1
    nets: FrozenDict = field(default_factory=FrozenDict)


@dataclass(frozen=True)
class ObjectiveSpec:
    divergence: str = "local"
    loss: str = "bce"
    reconstruction: float = 0.0
    latent_reconstruction: float | FrozenDict = 0.0  # one weight, or {latent: weight}
    code_likelihood: float = 0.0
    augment: FrozenDict | None = None  # {shift, rotate, scale, apply_to} of images
    consistency: float | FrozenDict = 0.0  # q's agreement on x and T(x): one weight, or {latent: weight}
    r1: float | FrozenDict = 0.0  # one gamma for every discriminator, or {factor: gamma}
    weights: str | FrozenDict = "uniform"
    discriminators: FrozenDict = field(default_factory=FrozenDict)
    marginals: tuple[str, ...] = ()  # observed variables with a unary discriminator D(v)
    video: str = "concat"
    spectral_norm: bool = False
    instance_noise: float = 0.0


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int = 50
    steps: int = 10000
    optimizer: FrozenDict = field(
        default_factory=lambda: FrozenDict(name="adam", learning_rate=2.0e-4, b1=0.5, b2=0.999)
    )
    critic_optimizer: FrozenDict | None = None
    critic_steps: int = 1
    seed: int = 0
    log_every: int = 100
    eval_every: int = 5000
    checkpoint_every: int = 5000
    devices: str | int = "auto"
    on_nonfinite: str = "stop"
    ema: float = 0.0
    holdout: int = 0
    select: str = "last"
    pretrain: FrozenDict | None = None  # {steps, init, optimizer, examples}
    init_from: FrozenDict | None = None  # {run, step}


@dataclass(frozen=True)
class Spec:
    """A whole model spec. ``model`` maps names to variables in declaration order."""

    name: str
    model: FrozenDict
    data: DataSpec | None = None
    time: TimeSpec | None = None
    inference: InferenceSpec = field(default_factory=InferenceSpec)
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    networks: FrozenDict = field(default_factory=FrozenDict)
    train: TrainSpec = field(default_factory=TrainSpec)
    eval: tuple[str, ...] = ()
    origin: Any = field(default=None, compare=False, repr=False)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return tuple(self.model.values())

    @property
    def observed(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables if v.observed)

    @property
    def latent(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables if not v.observed)

    def to_dict(self) -> dict[str, Any]:
        from ggdsl.spec.dump import spec_to_dict

        return spec_to_dict(self)

    def to_yaml(self) -> str:
        """The spec as YAML text; ``load_spec(spec.to_yaml()) == spec``."""
        from ggdsl.spec.dump import spec_to_yaml

        return spec_to_yaml(self)
