"""The Python builder: the same spec as YAML, written in code.

>>> from ggdsl import ModelBuilder
>>> b = ModelBuilder("gmgan-digits")
>>> k = b.categorical("k", classes=10)
>>> h = b.normal("h", shape=[16], given=[k], net="linear")
>>> x = b.implicit("x", shape=[8, 8, 1], given=[h], net="mlp_generator", observed=True)
>>> b.data(source="digits", observe={"x": "image"})
>>> spec = b.build()
>>> spec.model["h"].given[0].name
'k'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ggdsl.spec.ir import Layer, Spec
from ggdsl.spec.load import spec_from_dict
from ggdsl.spec.schema import NODE_TYPES


class VarRef(str):
    """A handle to a declared variable; ``v.prev`` is its previous step, ``v[t-1]``."""

    @property
    def prev(self) -> str:
        return f"{self}[t-1]"


def _plain(value: Any) -> Any:
    if isinstance(value, Layer):
        return value.to_dict()
    if isinstance(value, VarRef):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ModelBuilder:
    """Build a spec in Python; :meth:`build` validates it exactly as YAML is validated.

    Every node type in the registry has a method of its name (``b.categorical``,
    ``b.normal``, ``b.uniform``, ``b.implicit``, and any type a user registers, through
    :meth:`variable` or attribute access).
    """

    def __init__(self, name: str):
        self._raw: dict[str, Any] = {"name": name, "model": {}}

    def variable(self, name: str, type: str, **keys: Any) -> VarRef:
        """Declare a variable of any registered type; returns a handle for ``given``."""
        self._raw["model"][name] = {"type": type, **_plain(keys)}
        return VarRef(name)

    def __getattr__(self, type_name: str) -> Any:
        if type_name.startswith("_") or type_name not in NODE_TYPES:
            raise AttributeError(type_name)

        def declare(name: str, **keys: Any) -> VarRef:
            return self.variable(name, type_name, **keys)

        declare.__doc__ = NODE_TYPES[type_name].doc
        return declare

    def categorical(self, name: str, *, classes: int, **keys: Any) -> VarRef:
        return self.variable(name, "categorical", classes=classes, **keys)

    def normal(self, name: str, **keys: Any) -> VarRef:
        return self.variable(name, "normal", **keys)

    def uniform(self, name: str, **keys: Any) -> VarRef:
        return self.variable(name, "uniform", **keys)

    def implicit(self, name: str, *, given: Sequence[str], net: Any, **keys: Any) -> VarRef:
        return self.variable(name, "implicit", given=given, net=net, **keys)

    def time(self, steps: int) -> None:
        self._raw["time"] = {"steps": steps}

    def data(self, **keys: Any) -> None:
        self._raw["data"] = _plain(keys)

    def network(self, name: str, layers: Sequence[Mapping[str, Any] | Layer]) -> str:
        self._raw.setdefault("networks", {})[name] = _plain(list(layers))
        return name

    def inference(self, **keys: Any) -> None:
        self._raw["inference"] = _plain(keys)

    def objective(self, **keys: Any) -> None:
        self._raw["objective"] = _plain(keys)

    def train(self, **keys: Any) -> None:
        self._raw["train"] = _plain(keys)

    def evaluate(self, *names: str) -> None:
        self._raw["eval"] = list(names)

    def to_dict(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self._raw)

    def build(self) -> Spec:
        """Validate and freeze; raises :class:`~ggdsl.errors.SpecError` like the YAML loader."""
        return spec_from_dict(self.to_dict(), file=f"<builder {self._raw['name']}>")
