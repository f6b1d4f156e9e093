"""Load and validate a spec: YAML text or a plain dict in, a frozen :class:`Spec` out.

Every problem in a file is collected before anything is raised, each with the line it
came from, and raised together as one :class:`~ggdsl.errors.SpecError`::

    >>> from ggdsl import load_spec
    >>> spec = load_spec('''
    ... name: tiny
    ... model:
    ...   z: {type: normal, shape: [2]}
    ...   x: {type: implicit, shape: [4], given: [z], net: mlp_generator, observed: true}
    ... ''')
    >>> spec.model["x"].given[0].name
    'z'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ggdsl.errors import Problem, SpecError
from ggdsl.spec.frozen import FrozenDict, freeze
from ggdsl.spec.ir import (
    NAME_RE,
    DataSpec,
    InferenceSpec,
    Layer,
    ObjectiveSpec,
    ParentRef,
    Spec,
    TimeSpec,
    TrainSpec,
    Variable,
)
from ggdsl.spec.schema import (
    AUGMENT_KEYS,
    AUGMENT_TARGETS,
    COMMON_KEYS,
    CONTRASTIVE_KEYS,
    EVAL_NAMES,
    INFERENCE_KEYS,
    INIT_FROM_KEYS,
    NODE_TYPES,
    OBJECTIVE_KEYS,
    PRETRAIN_AUGMENT_TARGETS,
    PRETRAIN_KEYS,
    TOP_KEYS,
    TRAIN_KEYS,
    Key,
    _describe,
    check_float,
    check_int,
)
from ggdsl.spec.yamltree import join, load_value, parse_yaml

RUN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RANGES = ((0.0, 1.0), (-1.0, 1.0))


class _Context:
    """Where problems go, and the lines they point at."""

    def __init__(self, file: str, lines: Mapping[str, int] | None, overrides: Mapping[str, str] | None = None):
        self.file = file
        self.lines = dict(lines or {})
        self.overrides = dict(overrides or {})  # key path -> the --set item that wrote it
        for key in self.overrides:  # the file's lines under an overridden key no longer hold its value
            for path in [p for p in self.lines if _under(p, key)]:
                del self.lines[path]
        self.problems: list[Problem] = []

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return self.lines.get("")

    def error(self, path: str, message: str) -> None:
        for key, item in reversed(self.overrides.items()):  # the last --set to write a path wins
            if _under(path, key):
                self.problems.append(Problem(f"--set {item}", None, path, message))
                return
        self.problems.append(Problem(self.file, self.line(path), path, message))


def _under(path: str, key: str) -> bool:
    """Whether YAML path ``path`` is ``key`` or lies inside it."""
    return path == key or (path.startswith(key) and path[len(key)] in ".[")


def _known(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _check_keys(ctx: _Context, raw: Any, path: str, keys: Mapping[str, Key]) -> dict[str, Any] | None:
    """Check a mapping against a key table; returns values with defaults filled."""
    if not isinstance(raw, Mapping):
        ctx.error(path, f"expected a mapping, got {type(raw).__name__}")
        return None
    out: dict[str, Any] = {}
    for key in raw:
        if key not in keys:
            ctx.error(join(path, key), f"unknown key '{key}' (known: {_known(keys)})")
    for key, spec in keys.items():
        if key not in raw:
            if spec.required:
                ctx.error(path, f"missing required key '{key}'")
            else:
                out[key] = spec.default
            continue
        value, message = spec.check(raw[key])
        if message is not None:
            ctx.error(join(path, key), message)
        else:
            out[key] = value
    return out


class _Loader:
    def __init__(self, raw: Any, ctx: _Context):
        self.raw = raw
        self.ctx = ctx
        self.networks: dict[str, tuple[Layer, ...]] = {}

    def error(self, path: str, message: str) -> None:
        self.ctx.error(path, message)

    def load(self) -> Spec | None:
        raw = self.raw
        if not isinstance(raw, Mapping):
            self.error("", f"a spec is a mapping with at least 'name' and 'model', got {type(raw).__name__}")
            return None
        for key in raw:
            if key not in TOP_KEYS:
                self.error(str(key), f"unknown top-level key '{key}' (known: {_known(TOP_KEYS)})")
        name = raw.get("name")
        if name is None:
            self.error("", "missing required key 'name'")
        elif not isinstance(name, str) or not RUN_NAME_RE.match(name) or len(name) > 128:
            self.error("name", "expected a name of letters, digits, '_', '-' and '.' (it names run folders)")
            name = None
        time = self._time(raw.get("time"))
        self._networks(raw.get("networks"))
        model = self._model(raw.get("model"), time)
        data = self._data(raw.get("data"), model)
        inference = self._inference(raw.get("inference"), model)
        objective = self._objective(raw.get("objective"), model)
        train = self._train(raw.get("train"), model)
        evals = self._eval(raw.get("eval"))
        if self.ctx.problems or model is None or name is None:
            return None
        return Spec(
            name=name,
            model=FrozenDict(model),
            data=data,
            time=time,
            inference=inference,
            objective=objective,
            networks=FrozenDict(self.networks),
            train=train,
            eval=evals,
        )

    # -- sections -------------------------------------------------------------------------

    def _time(self, raw: Any) -> TimeSpec | None:
        if raw is None:
            return None
        values = _check_keys(self.ctx, raw, "time", {"steps": Key(check_int(1, 100_000))})
        if not values or "steps" not in values:
            return None
        return TimeSpec(values["steps"])

    def _networks(self, raw: Any) -> None:
        if raw is None:
            return
        if not isinstance(raw, Mapping):
            self.error("networks", "expected a mapping from network names to layer lists")
            return
        for name, layers in raw.items():
            path = join("networks", name)
            if not isinstance(name, str) or not NAME_RE.match(name):
                self.error(path, f"network names are identifiers, got {name!r}")
                continue
            parsed = self._layers(layers, path)
            if parsed is not None:
                self.networks[name] = parsed

    def _layers(self, raw: Any, path: str) -> tuple[Layer, ...] | None:
        from ggdsl.nets.shapes import check_layer

        if not isinstance(raw, list) or not raw:
            self.error(path, "expected a non-empty list of layers")
            return None
        layers, ok = [], True
        for index, item in enumerate(raw):
            layer, problems = check_layer(item)
            for sub, message in problems:
                self.error(join(join(path, index), sub) if sub else join(path, index), message)
            if layer is None:
                ok = False
            else:
                layers.append(layer)
        return tuple(layers) if ok else None

    def _net_ref(self, raw: Any, path: str) -> Any:
        from ggdsl.nets.shapes import preset_names

        if isinstance(raw, str):
            if raw not in self.networks and raw not in preset_names():
                self.error(
                    path,
                    f"unknown network '{raw}' (networks: {_known(self.networks)}; presets: {_known(preset_names())})",
                )
                return None
            return raw
        return self._layers(raw, path)

    def _variable(
        self, name: str, raw: Any, path: str, *, names: Mapping[str, Any], time: TimeSpec | None, nested: bool
    ) -> Variable | None:
        if not isinstance(raw, Mapping):
            self.error(path, f"expected a mapping with at least 'type', got {type(raw).__name__}")
            return None
        kind = raw.get("type")
        if kind is None:
            self.error(path, f"missing required key 'type' (known types: {_known(NODE_TYPES)})")
            return None
        if not isinstance(kind, str) or kind not in NODE_TYPES:
            self.error(join(path, "type"), f"unknown type {kind!r} (known: {_known(NODE_TYPES)})")
            return None
        node = NODE_TYPES[kind]
        before = len(self.ctx.problems)
        values = _check_keys(self.ctx, raw, path, {**COMMON_KEYS, **node.keys})
        if values is None:
            return None
        given = self._given(values.get("given"), join(path, "given"), name, names, raw, nested)
        if node.needs_given and not given:
            self.error(join(path, "given"), f"a {kind} variable needs parents in 'given'")
        steps = values.get("steps", False)
        if steps and time is None:
            self.error(join(path, "steps"), "steps: true needs a time plate: add `time: {steps: T}`")
        if nested and steps:
            self.error(join(path, "steps"), "the first step is drawn once; remove `steps` here")
        # Checks see the parents as written, so an unknown parent is reported once, not twice.
        for key, message in node.check({**values, "given": values.get("given") or given}):
            self.error(join(path, key), message)
        options = {}
        for key in node.keys:
            value = values.get(key)
            if key == "net" and value is not None:
                value = self._net_ref(value, join(path, "net"))
            options[key] = freeze(value)
        first = None
        raw_first = values.get("first")
        if raw_first is not None:
            if nested:
                self.error(join(path, "first"), "`first` cannot be nested")
            elif not steps:
                self.error(join(path, "first"), "`first` applies only to a variable with steps: true")
            else:
                if isinstance(raw_first, Mapping) and "shape" not in raw_first and "shape" in values:
                    raw_first = {**raw_first, "shape": list(values["shape"])}
                first = self._variable(name, raw_first, join(path, "first"), names=names, time=time, nested=True)
                if first is not None and first.shape != values.get("shape"):
                    self.error(
                        join(path, "first.shape"),
                        f"the first step's shape {list(first.shape)} differs from {list(values['shape'])}",
                    )
        if len(self.ctx.problems) > before:
            return None
        return Variable(
            name=name,
            type=kind,
            shape=tuple(values["shape"]),
            given=tuple(given),
            observed=values["observed"],
            steps=steps,
            options=FrozenDict(options),
            first=first,
        )

    def _given(
        self, raw: Any, path: str, name: str, names: Mapping[str, Any], var: Mapping, nested: bool
    ) -> list[ParentRef]:
        if raw is None or raw == ():
            return []
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            self.error(path, "expected a list of parent names")
            return []
        parents: list[ParentRef] = []
        for index, item in enumerate(raw):
            item_path = join(path, index)
            ref = ParentRef.parse(item) if isinstance(item, str) else None
            if ref is None:
                self.error(item_path, f"expected a variable name or 'name[t-1]', got {item!r}")
                continue
            if ref.name not in names:
                self.error(item_path, f"unknown variable '{ref.name}' (known: {_known(n for n in names if n != name)})")
                continue
            parent = names[ref.name]
            parent_steps = isinstance(parent, Mapping) and parent.get("steps") is True
            steps = var.get("steps") is True
            if ref.lag:
                if ref.lag > 1:
                    self.error(item_path, f"only the previous step can be read ('{ref.name}[t-1]'), got '{item}'")
                    continue
                if nested:
                    self.error(item_path, "the first step has no previous step to read")
                    continue
                if not (steps and parent_steps):
                    self.error(item_path, f"'{ref}' reads a previous step: both variables need steps: true")
                    continue
            elif ref.name == name and not nested:
                self.error(item_path, f"'{name}' cannot be its own parent (for the previous step write '{name}[t-1]')")
                continue
            elif parent_steps and not steps and not nested:
                self.error(
                    item_path,
                    f"'{name}' is global (no steps) but '{ref.name}' has one copy per step",
                )
                continue
            if ref in parents:
                self.error(item_path, f"'{ref}' is listed twice")
                continue
            parents.append(ref)
        return parents

    def _model(self, raw: Any, time: TimeSpec | None) -> dict[str, Variable] | None:
        if raw is None:
            self.error("", "missing required key 'model'")
            return None
        if not isinstance(raw, Mapping) or not raw:
            self.error("model", "expected a mapping from variable names to their definitions")
            return None
        model: dict[str, Variable] = {}
        for name, var in raw.items():
            path = join("model", name)
            if not isinstance(name, str) or not NAME_RE.match(name):
                self.error(path, f"variable names are identifiers (letters, digits, _), got {name!r}")
                continue
            parsed = self._variable(name, var, path, names=raw, time=time, nested=False)
            if parsed is not None:
                model[name] = parsed
        self._check_graph(raw, model)
        return model

    def _check_graph(self, raw: Mapping, model: Mapping[str, Variable]) -> None:
        import networkx as nx

        for var in model.values():
            lagged = [str(p) for p in var.given if p.lag]
            if lagged and var.first is None:
                self.error(
                    join(join("model", var.name), "first"),
                    f"'{var.name}' reads {', '.join(lagged)}, which step 1 does not have: "
                    "add `first:` (how step 1 is drawn)",
                )
        graph = nx.DiGraph()
        graph.add_nodes_from(model)
        for var in model.values():
            for parent in var.given:
                if parent.lag == 0 and parent.name in model:
                    graph.add_edge(parent.name, var.name)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        names = [edge[0] for edge in cycle]
        shown = " -> ".join([*names, names[0]])
        lines = ", ".join(f"{n} (line {self.ctx.line(join('model', n))})" for n in names)
        self.error(join(join("model", names[0]), "given"), f"the model has a cycle: {shown}; at {lines}")

    def _data(self, raw: Any, model: Mapping[str, Variable] | None) -> DataSpec | None:
        observed = [v.name for v in (model or {}).values() if v.observed]
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            self.error("data", "expected a mapping with at least 'source' and 'observe'")
            return None
        source = raw.get("source")
        if not isinstance(source, str):
            self.error("data", "missing required key 'source'")
            return None
        from ggdsl.data.registry import check_source_options

        options = {k: v for k, v in raw.items() if k != "source"}
        for key, message in check_source_options(source, options):
            self.error(join("data", key) if key else "data.source", message)
        observe = raw.get("observe", {})
        if not isinstance(observe, Mapping):
            observe = {}
        for var in observe:
            if model is not None and var not in model:
                self.error(join("data.observe", var), f"unknown variable '{var}' (known: {_known(model)})")
            elif model is not None and not model[var].observed:
                self.error(join("data.observe", var), f"'{var}' is latent; only observed variables take data")
        for var in observed:
            if var not in observe:
                self.error("data.observe", f"observed variable '{var}' has no data; add `{var}: <feature>`")
        value_range = raw.get("range", [0, 1])
        numbers = isinstance(value_range, (list, tuple)) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value_range
        )
        if not numbers or tuple(float(v) for v in value_range) not in RANGES:
            value_range = (0.0, 1.0)  # reported by the source registry
        rest = {k: v for k, v in options.items() if k not in ("observe", "range")}
        return DataSpec(
            source=source,
            observe=freeze(dict(observe)),
            range=tuple(float(v) for v in value_range),
            options=freeze(rest),
        )

    def _inference(self, raw: Any, model: Mapping[str, Variable] | None) -> InferenceSpec:
        values = _check_keys(self.ctx, {} if raw is None else raw, "inference", INFERENCE_KEYS)
        if values is None:
            return InferenceSpec()
        nets = values.get("nets") or {}
        parsed = {}
        if not isinstance(nets, Mapping):
            self.error("inference.nets", "expected a mapping from latent names to networks")
            nets = {}
        for var, net in nets.items():
            path = join("inference.nets", var)
            if model is not None and (var not in model or model[var].observed):
                latents = [v.name for v in model.values() if not v.observed]
                self.error(path, f"'{var}' is not a latent variable (latents: {_known(latents)})")
                continue
            parsed[var] = self._net_ref(net, path)
        return InferenceSpec(
            family=values.get("family", "inverse"),
            discrete=values.get("discrete", "gumbel_softmax"),
            temperature=values.get("temperature", 0.1),
            nets=freeze(parsed),
        )

    def _augment(self, value: Any, path: str = "objective.augment") -> FrozenDict | None:
        """``objective.augment``: {shift: pixels, rotate: degrees, scale: fraction, apply_to: [...]}, or
        ``train.pretrain.augment``: the same maps with {target: transformed | original}; None when unset."""
        pretrain = path != "objective.augment"
        known = _known([*AUGMENT_KEYS, "target" if pretrain else "apply_to"])
        if value is None:
            return None
        if not isinstance(value, Mapping) or not value:
            self.error(path, f"expected a mapping with some of {known}, got {value!r}")
            return None
        checked: dict[str, Any] = {}
        targets = [AUGMENT_TARGETS[0]]
        target = PRETRAIN_AUGMENT_TARGETS[0]
        for name, amount in value.items():
            where = join(path, str(name))
            if pretrain and name == "target":
                if amount not in PRETRAIN_AUGMENT_TARGETS:
                    self.error(where, f"expected {' or '.join(PRETRAIN_AUGMENT_TARGETS)}, got {amount!r}")
                else:
                    target = amount
                continue
            if not pretrain and name == "apply_to":
                listed = amount if isinstance(amount, list) else [amount]
                wrong = [t for t in listed if t not in AUGMENT_TARGETS]
                if wrong or not listed:
                    self.error(where, f"expected a list of {', '.join(AUGMENT_TARGETS)}, got {amount!r}")
                else:
                    targets = [t for t in AUGMENT_TARGETS if t in listed]
                continue
            if name not in AUGMENT_KEYS:
                self.error(where, f"unknown key '{name}' (known: {known})")
                continue
            number, message = check_float(0.0, AUGMENT_KEYS[name])(amount)
            if message:
                self.error(where, message)
                continue
            checked[str(name)] = number
        maps = {key: checked.get(key, 0.0) for key in AUGMENT_KEYS}
        return freeze({**maps, "target": target} if pretrain else {**maps, "apply_to": targets})

    def _latent_weights(
        self, value: Any, model: Mapping[str, Variable] | None, path: str = "objective.latent_reconstruction"
    ) -> float | FrozenDict:
        """``latent_reconstruction`` (or ``consistency``): one weight for every latent, or {latent: weight}."""
        latents = [v.name for v in model.values() if not v.observed] if model is not None else None
        return self._named_numbers(
            value, path, "{latent: weight}", names=latents, noun="latent variable", plural="latents"
        )

    def _factor_weights(self, value: Any, path: str, what: str) -> float | FrozenDict:
        """One number for every discriminator, or {factor: number} (names checked against the model later)."""
        return self._named_numbers(value, path, f"{{factor: {what}}}")

    def _named_numbers(
        self, value: Any, path: str, form: str, names: list[str] | None = None, noun: str = "", plural: str = ""
    ) -> float | FrozenDict:
        """A non-negative number, or a mapping of ``names`` (any name, where None) to such numbers;
        an unknown name is reported as not a ``noun``, with the ``plural`` listed."""
        if not isinstance(value, Mapping):
            number, message = check_float(0.0)(value)
            if message:
                self.error(path, f"expected a number or a mapping {form}: {message}")
                return 0.0
            return number
        checked = {}
        for name, weight in value.items():
            where = join(path, name)
            if names is not None and name not in names:
                self.error(where, f"'{name}' is not a {noun} ({plural}: {_known(names)})")
                continue
            number, message = check_float(0.0)(weight)
            if message:
                self.error(where, message)
                continue
            checked[str(name)] = number
        return freeze(checked)

    def _marginals(self, value: Any, model: Mapping[str, Variable] | None, divergence: Any) -> tuple[str, ...]:
        """``marginals``: a list of observed variables, each at most once, under the local divergence."""
        path = "objective.marginals"
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            self.error(path, f"expected a list of observed variables, got {value!r}")
            return ()
        observed = [v.name for v in model.values() if v.observed] if model is not None else None
        names: list[str] = []
        for index, name in enumerate(value):
            where = join(path, index)
            if not isinstance(name, str):
                self.error(where, f"expected a variable name, got {name!r}")
            elif observed is not None and name not in observed:
                self.error(where, f"'{name}' is not an observed variable (observed: {_known(observed)})")
            elif name in names:
                self.error(where, f"'{name}' is listed twice")
            else:
                names.append(name)
        if names and divergence == "global":
            self.error(path, "marginal discriminators sit beside local factors; `divergence: global` has one D")
            return ()
        return tuple(names)

    def _objective(self, raw: Any, model: Mapping[str, Variable] | None = None) -> ObjectiveSpec:
        values = _check_keys(self.ctx, {} if raw is None else raw, "objective", OBJECTIVE_KEYS)
        if values is None:
            return ObjectiveSpec()
        weights = values.get("weights", "uniform")
        if weights != "uniform":
            if not isinstance(weights, Mapping):
                self.error("objective.weights", "expected 'uniform' or a mapping {factor-name: weight}")
                weights = "uniform"
            else:
                checked = {}
                for factor, weight in weights.items():
                    number, message = check_float(0.0)(weight)
                    if message:
                        self.error(join("objective.weights", factor), message)
                    checked[str(factor)] = number
                weights = freeze(checked)
        discriminators = values.get("discriminators") or {}
        parsed = {}
        if not isinstance(discriminators, Mapping):
            self.error("objective.discriminators", "expected a mapping {factor-name: network}")
        else:
            for factor, net in discriminators.items():
                parsed[str(factor)] = self._net_ref(net, join("objective.discriminators", factor))
        return ObjectiveSpec(
            divergence=values.get("divergence", "local"),
            marginals=self._marginals(values.get("marginals", ()), model, values.get("divergence", "local")),
            loss=values.get("loss", "bce"),
            reconstruction=values.get("reconstruction", 0.0),
            latent_reconstruction=self._latent_weights(values.get("latent_reconstruction", 0.0), model),
            code_likelihood=values.get("code_likelihood", 0.0),
            augment=self._augment(values.get("augment")),
            consistency=self._latent_weights(values.get("consistency", 0.0), model, "objective.consistency"),
            r1=self._factor_weights(values.get("r1", 0.0), "objective.r1", "gamma"),
            weights=weights,
            discriminators=freeze(parsed),
            video=values.get("video", "concat"),
            spectral_norm=values.get("spectral_norm", False),
            instance_noise=values.get("instance_noise", 0.0),
        )

    def _train(self, raw: Any, model: Mapping[str, Variable] | None = None) -> TrainSpec:
        values = _check_keys(self.ctx, {} if raw is None else raw, "train", TRAIN_KEYS)
        if values is None:
            return TrainSpec()
        optimizer = values.get("optimizer")
        if not isinstance(optimizer, Mapping) or not isinstance(optimizer.get("name"), str):
            self.error("train.optimizer", "expected a mapping with 'name' (an optax optimiser) and its arguments")
            optimizer = TRAIN_KEYS["optimizer"].default
        for key, value in optimizer.items():
            if key != "name" and not isinstance(value, (int, float, bool, str, list, type(None))):
                self.error(join("train.optimizer", key), "optimiser arguments are numbers, booleans or names")
        values["optimizer"] = freeze(dict(optimizer))
        critic = values.get("critic_optimizer")
        if critic is not None:
            if not isinstance(critic, Mapping) or not isinstance(critic.get("name"), str):
                self.error("train.critic_optimizer", "expected a mapping with 'name' (an optax optimiser)")
                critic = None
            values["critic_optimizer"] = freeze(dict(critic)) if critic is not None else None
        if values.get("pretrain") is not None:
            values["pretrain"] = self._pretrain(values["pretrain"], model)
        if values.get("init_from") is not None:
            values["init_from"] = self._init_from(values["init_from"])
        if values.get("select") not in (None, "last") and not values.get("holdout"):
            self.error(
                "train.select",
                f"selecting by {values['select']} needs held-out training examples: set train.holdout "
                "(e.g. 1000), or use select: last",
            )
        return TrainSpec(**{k: v for k, v in values.items() if v is not None})

    def _init_from(self, raw: Any) -> FrozenDict | None:
        """``train.init_from``: {run, step}; a bare string is the run."""
        values = _check_keys(self.ctx, {"run": raw} if isinstance(raw, str) else raw, "train.init_from", INIT_FROM_KEYS)
        if values is None or "run" not in values:
            return None
        if values.get("step") is None:
            values.pop("step", None)
        return freeze(values)

    def _pretrain(self, raw: Any, model: Mapping[str, Variable] | None = None) -> FrozenDict | None:
        """``train.pretrain``: {steps, init, optimizer, examples, ...}, defaults filled."""
        values = _check_keys(self.ctx, raw, "train.pretrain", PRETRAIN_KEYS)
        if values is None or "steps" not in values:
            return None
        listed = values.get("standardize")
        if isinstance(listed, list):
            latents = [v.name for v in model.values() if not v.observed] if model is not None else None
            for index, name in enumerate(listed):
                where = join("train.pretrain.standardize", index)
                if latents is not None and name not in latents:
                    self.error(where, f"'{name}' is not a latent variable (latents: {_known(latents)})")
                elif listed.index(name) != index:
                    self.error(where, f"'{name}' is listed twice")
            values["standardize"] = tuple(listed)
        optimizer = values.get("optimizer")
        if not isinstance(optimizer, Mapping) or not isinstance(optimizer.get("name"), str):
            self.error(
                "train.pretrain.optimizer", "expected a mapping with 'name' (an optax optimiser) and its arguments"
            )
            return None
        values["optimizer"] = dict(optimizer)
        augment = self._augment(values.pop("augment", None), "train.pretrain.augment")
        if augment is not None:
            values["augment"] = augment
        contrastive = self._contrastive(values.pop("contrastive", None), augment is not None)
        if contrastive is not None:
            values["contrastive"] = contrastive
        return freeze(values)

    def _contrastive(self, raw: Any, augmented: bool) -> FrozenDict | None:
        """``train.pretrain.contrastive``: {weight, temperature}; a bare number is the weight."""
        where = "train.pretrain.contrastive"
        if raw is None:
            return None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = {"weight": raw}
        if not isinstance(raw, Mapping):
            self.error(where, f"expected a weight or {{weight, temperature}}; got {_describe(raw)}")
            return None
        before = len(self.ctx.problems)
        values = _check_keys(self.ctx, raw, where, CONTRASTIVE_KEYS)
        if values is None or len(self.ctx.problems) > before:
            return None
        if not augmented:
            self.error(where, "needs train.pretrain.augment: the two views of each image are drawn with its maps")
            return None
        return freeze(values)

    def _eval(self, raw: Any) -> tuple[str, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error("eval", "expected a list of evaluation names")
            return ()
        names = []
        for index, item in enumerate(raw):
            if not isinstance(item, str) or item not in EVAL_NAMES:
                self.error(join("eval", index), f"unknown evaluation {item!r} (known: {_known(EVAL_NAMES)})")
            elif item in names:
                self.error(join("eval", index), f"'{item}' is listed twice")
            else:
                names.append(item)
        return tuple(names)


def _check_factor_keys(spec: Spec, ctx: _Context) -> None:
    """Names under objective.weights / discriminators must be factor names of the model."""
    from ggdsl.factorize import analyze

    r1 = spec.objective.r1 if isinstance(spec.objective.r1, Mapping) else {}
    if spec.objective.weights == "uniform" and not spec.objective.discriminators and not r1:
        return
    factors = {f.name for f in analyze(spec).factors}
    if spec.objective.divergence == "global":
        factors = {"global"}
    if isinstance(spec.objective.weights, Mapping):
        for name in spec.objective.weights:
            if name not in factors:
                ctx.error(join("objective.weights", name), f"unknown factor '{name}' (factors: {_known(factors)})")
        if spec.objective.divergence != "global" and not any(spec.objective.weights.values()):
            ctx.error(
                "objective.weights",
                f"every factor has weight 0, so nothing is trained adversarially (factors: {_known(factors)})",
            )
    for name in spec.objective.discriminators:
        if name not in factors:
            ctx.error(join("objective.discriminators", name), f"unknown factor '{name}' (factors: {_known(factors)})")
    for name in r1:
        if name not in factors:
            ctx.error(join("objective.r1", name), f"unknown factor '{name}' (factors: {_known(factors)})")


def _validate(
    raw: Any,
    file: str,
    lines: Mapping[str, int] | None,
    problems: list[Problem],
    overrides: Iterable[str] = (),
) -> Spec:
    written = {item.partition("=")[0]: item for item in overrides if "=" in item}
    ctx = _Context(file, lines, written)
    try:
        spec = _Loader(raw, ctx).load()
    except RecursionError:
        raise SpecError([Problem(file, None, "", "the spec is nested too deeply")]) from None
    if spec is not None and not problems and not ctx.problems:
        _check_factor_keys(spec, ctx)
    if problems or ctx.problems or spec is None:
        raise SpecError([*problems, *ctx.problems] or [Problem(file, None, "", "invalid spec")])
    from dataclasses import replace

    return replace(spec, origin=SpecOrigin(file, FrozenDict(ctx.lines)))


def spec_from_dict(raw: Any, *, file: str = "<dict>", lines: Mapping[str, int] | None = None) -> Spec:
    """Validate a plain dict (as YAML would give) and return the frozen spec."""
    return _validate(raw, file, lines, [])


class SpecOrigin:
    """Where a spec came from: its file and the line of each YAML path (not compared)."""

    def __init__(self, file: str, lines: Mapping[str, int]):
        self.file = file
        self.lines = lines

    def line(self, path: str) -> int | None:
        return _Context(self.file, self.lines).line(path)


def apply_overrides(raw: Any, overrides: Iterable[str], *, file: str = "<command line>") -> Any:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw spec dict.

    >>> apply_overrides({"train": {"steps": 10}}, ["train.steps=500"])
    {'train': {'steps': 500}}
    """
    problems = []
    if not isinstance(raw, dict):
        return raw
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            problems.append(Problem(file, None, item, "expected key.path=value, e.g. train.steps=500"))
            continue
        try:
            value = load_value(text)
        except yaml.YAMLError as error:
            problems.append(Problem(file, None, key, f"bad value {text!r}: {error}"))
            continue
        target = raw
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = target.get(part) if isinstance(target, dict) else None
            if nxt is None:
                nxt = {}
                target[part] = nxt
            if not isinstance(nxt, dict):
                problems.append(Problem(file, None, key, f"'{part}' is not a mapping"))
                break
            target = nxt
        else:
            target[parts[-1]] = value
    if problems:
        raise SpecError(problems)
    return raw


def _looks_like_path(source: str) -> bool:
    return "\n" not in source and (source.endswith((".yaml", ".yml")) or os.path.exists(source))


def load_spec(source: str | os.PathLike | Mapping, *, overrides: Iterable[str] = ()) -> Spec:
    """Load a spec from a YAML file path, YAML text or a dict, applying ``--set`` overrides.

    Checks structure only: data files are never opened. Raises :class:`SpecError` holding
    every problem found, each as ``file:line: yaml.path: message``.
    """
    if isinstance(source, Mapping):
        import copy

        overrides = list(overrides)
        return _validate(apply_overrides(copy.deepcopy(dict(source)), overrides), "<dict>", None, [], overrides)
    if isinstance(source, os.PathLike) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SpecError([Problem(str(path), None, "", "no such file")]) from None
        except (OSError, UnicodeDecodeError) as error:
            raise SpecError([Problem(str(path), None, "", f"cannot read: {error}")]) from None
        file = str(source)
    elif isinstance(source, str):
        text, file = source, "<string>"
    else:
        raise SpecError(
            [Problem("<input>", None, "", f"expected a path, YAML text or a dict, got {type(source).__name__}")]
        )
    raw, lines, problems = parse_yaml(text, file)
    overrides = list(overrides)
    return _validate(apply_overrides(raw, overrides), file, lines, problems, overrides)
