"""Which networks a spec compiles to, with their inputs and layers, as plain data.

Both ``ggdsl explain`` (parameter counts, no JAX) and the build stage read this plan, so
what explain prints is what trains. One network per *template*: a generator per spec
variable (and one for a ``first:`` definition with parents), an extractor per recognition
group (latents whose q has one structure), a discriminator per factor group (or one
global discriminator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from ggdsl.errors import BuildError
from ggdsl.factorize import Analysis, analyze, relative_inputs
from ggdsl.nets.shapes import (
    PRESET_RESIDUAL,
    Plan,
    discriminator_plan,
    extractor_plan,
    get_preset,
    network_plan,
    plan_out_shape,
    plan_param_count,
)
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import Layer, Spec, Variable

Shape = tuple[int, ...]


@dataclass(frozen=True)
class NetSpec:
    """One network: its role, the named inputs it reads, its output, its layer plan."""

    role: str  # "generator" | "extractor" | "discriminator"
    key: str  # the template or group it serves
    inputs: dict[str, Shape]
    out_shape: Shape
    plan: Plan
    source: str  # the preset or network name, "auto" when assembled from shapes
    members: tuple[str, ...] = ()  # unrolled nodes (or factors) sharing it
    bindings: tuple[dict[str, tuple[str, ...]], ...] = ()  # per member: input -> unrolled nodes
    residual: str | None = None  # an input added back to the output (transition presets)

    @property
    def params(self) -> int:
        return plan_param_count(self.plan, self.inputs)


@dataclass(frozen=True)
class ModelPlan:
    spec: Spec
    analysis: Analysis
    generators: dict[str, NetSpec] = field(default_factory=dict)
    extractors: dict[str, NetSpec] = field(default_factory=dict)
    discriminators: dict[str, NetSpec] = field(default_factory=dict)
    generator_of: dict[str, str | None] = field(default_factory=dict)  # node -> generator key
    extractor_of: dict[str, str | None] = field(default_factory=dict)  # latent -> extractor key

    def all(self) -> list[NetSpec]:
        return [*self.generators.values(), *self.extractors.values(), *self.discriminators.values()]


def event_shape(spec: Spec, analysis: Analysis, node: str) -> Shape:
    return tuple(spec.model[analysis.templates[node]].event_shape)


def _input_shapes(spec: Spec, analysis: Analysis, named: tuple) -> dict[str, Shape]:
    shapes = {}
    for name, nodes in named:
        shape = event_shape(spec, analysis, nodes[0])
        shapes[name] = (len(nodes), *shape) if len(nodes) > 1 else shape
    return shapes


def _output_range(spec: Spec, variable: str | None, observed: bool) -> tuple[float, float] | None:
    """The range a preset's output activation maps onto: the pixel range for an observed
    variable fed from a pixel feature (``image``, ``video``), else ``None`` (linear)."""
    if not observed:
        return None
    if spec.data is None:
        return (0.0, 1.0)
    from ggdsl.data.dataset import PIXEL_FEATURES

    feature = spec.data.observe.get(variable) if variable is not None else None
    if feature is not None and feature not in PIXEL_FEATURES:
        return None  # a vector feature (e.g. the toy source's x) is not squashed into a range
    return spec.data.range


def _resolve(
    spec: Spec,
    net,
    out_shape: Shape,
    inputs: Mapping[str, Shape],
    *,
    observed: bool,
    where: str,
    variable: str | None = None,
):
    """A net reference to (plan, source name, residual?)."""
    data_range = _output_range(spec, variable, observed)
    if isinstance(net, str):
        if net in spec.networks:
            layers, source = spec.networks[net], net
        else:
            layers, source = get_preset(net, out_shape, data_range=data_range), net
        residual = net in PRESET_RESIDUAL
    else:
        layers, source, residual = net, "inline", False
    plan = network_plan(layers, inputs)
    produced = plan_out_shape(plan, inputs)
    if tuple(produced) != tuple(out_shape):
        raise BuildError(f"{where}: network '{source}' produces shape {list(produced)}, needs {list(out_shape)}")
    return plan, source, residual


def _generator(spec: Spec, analysis: Analysis, nodes: list[str], var: Variable, key: str) -> NetSpec | None:
    if not var.given:
        return None
    first = nodes[0]
    named = relative_inputs(first, analysis.p_parents[first], analysis.steps, analysis.templates)
    inputs = _input_shapes(spec, analysis, named)
    noise = int(var.get("noise") or 0)
    if noise:
        inputs["eps"] = (noise,)
    out_shape = tuple(var.event_shape)
    plan, source, residual = _resolve(
        spec,
        var.net,
        out_shape,
        inputs,
        observed=var.observed,
        where=f"model.{var.name}.net",
        variable=var.name,
    )
    residual_input = None
    if residual:
        lagged = [name for name, _ in named if name == f"{var.name}[t-1]"]
        if not lagged:
            raise BuildError(
                f"model.{var.name}.net: '{source}' adds its input back, so it needs '{var.name}[t-1]' in given"
            )
        residual_input = lagged[0]
    bindings = tuple(dict(relative_inputs(n, analysis.p_parents[n], analysis.steps, analysis.templates)) for n in nodes)
    return NetSpec("generator", key, inputs, out_shape, plan, source, tuple(nodes), bindings, residual_input)


def _recovers_latents(weights) -> bool:
    return any(weights.values()) if isinstance(weights, Mapping) else bool(weights)


def plan_model(spec: Spec, analysis: Analysis | None = None) -> ModelPlan:
    """Resolve every network of the compiled model.

    >>> from ggdsl import load_spec
    >>> from ggdsl.cli import resolve_spec_path
    >>> plan = plan_model(load_spec(resolve_spec_path("gmgan_digits")))
    >>> sorted(plan.discriminators), sorted(plan.extractors)
    (['h|k', 'x|h'], ['h|x'])
    """
    analysis = analysis or analyze(spec)
    if spec.objective.code_likelihood and not analysis.mixtures:
        raise BuildError(
            "objective.code_likelihood: no latent of this model has a closed-form density p(h) "
            "(a categorical parent with a closed-form posterior, as GMGAN's k of a `normal ... net: linear` h)"
        )
    if _recovers_latents(spec.objective.consistency) and "consistency" not in (spec.objective.augment or {}).get(
        "apply_to", ()
    ):
        raise BuildError(
            "objective.consistency: needs the maps of objective.augment, with consistency in its apply_to "
            "(e.g. augment: {shift: 2, rotate: 15, scale: 0.1, apply_to: [consistency]})"
        )
    if spec.objective.augment:
        targets = spec.objective.augment["apply_to"]
        if "latent_reconstruction" in targets and not _recovers_latents(spec.objective.latent_reconstruction):
            raise BuildError(
                "objective.augment: applies to latent_reconstruction (where q recovers p's latents from "
                "p's images), but objective.latent_reconstruction is 0"
            )
        if "consistency" in targets and not _recovers_latents(spec.objective.consistency):
            raise BuildError("objective.augment: applies to consistency, but objective.consistency (its weight) is 0")
    pretrain = spec.train.pretrain
    for where, augment in (
        ("objective.augment", spec.objective.augment),
        ("train.pretrain.augment", pretrain and pretrain.get("augment")),
    ):
        if augment and not any(len(spec.model[analysis.templates[n]].shape) == 3 for n in analysis.observed):
            raise BuildError(f"{where}: no observed variable of this model is an image (shape [H, W, C])")
    result = ModelPlan(spec, analysis)
    # Generators: one per template (first-step definitions apart).
    groups: dict[str, list[str]] = {}
    for node in analysis.nodes:
        key = node if node in analysis.first else analysis.templates[node]
        groups.setdefault(key, []).append(node)
    for key, nodes in groups.items():
        template = spec.model[analysis.templates[nodes[0]]]
        var = template.first if nodes[0] in analysis.first else template
        net = _generator(spec, analysis, nodes, var, key)
        if net is not None:
            result.generators[key] = net
        for node in nodes:
            result.generator_of[node] = key if net is not None else None
    # Extractors: one per recognition group, exact posteriors excepted.
    q_members: dict[str, list[str]] = {}
    for latent in analysis.order:
        if latent in analysis.exact:
            result.extractor_of[latent] = None
            continue
        q_members.setdefault(analysis.q_groups[latent], []).append(latent)
        result.extractor_of[latent] = analysis.q_groups[latent]
    for key, latents in q_members.items():
        head = latents[0]
        named = relative_inputs(head, analysis.q_parents[head], analysis.steps, analysis.templates)
        inputs = _input_shapes(spec, analysis, named)
        if not inputs:
            raise BuildError(f"latent '{head}' has no recognition parents; it cannot be inferred from data")
        template = spec.model[analysis.templates[head]]
        out_shape = tuple(template.event_shape)
        override = spec.inference.nets.get(template.name)
        if override is not None:
            plan, source, _ = _resolve(
                spec, override, out_shape, inputs, observed=False, where=f"inference.nets.{template.name}"
            )
        else:
            plan, source = extractor_plan(inputs, out_shape), "auto"
        bindings = tuple(
            dict(relative_inputs(z, analysis.q_parents[z], analysis.steps, analysis.templates)) for z in latents
        )
        result.extractors[key] = NetSpec("extractor", key, inputs, out_shape, plan, source, tuple(latents), bindings)
    # Discriminators: one per factor group, or one global.
    if spec.objective.divergence == "global":
        named_all: dict[str, list[str]] = {}
        for node in analysis.nodes:
            named_all.setdefault(analysis.templates[node], []).append(node)
        named = tuple((k, tuple(v)) for k, v in named_all.items())
        inputs = _input_shapes(spec, analysis, named)
        override = spec.objective.discriminators.get("global")
        plan, source = _discriminator(spec, override, inputs, "global")
        result.discriminators["global"] = NetSpec(
            "discriminator", "global", inputs, (1,), plan, source, ("global",), (dict(named),)
        )
        return result
    weights = spec.objective.weights
    for group, factors in analysis.groups().items():
        if isinstance(weights, Mapping) and float(weights.get(group, 0.0)) == 0.0:
            continue  # a factor of weight 0 adds nothing to the objective: no discriminator is built
        head = factors[0]
        named = (
            (analysis.templates[head.child] if head.child not in analysis.first else head.child, (head.child,)),
            *relative_inputs(head.child, head.variables[1:], analysis.steps, analysis.templates),
        )
        inputs = _input_shapes(spec, analysis, named)
        override = spec.objective.discriminators.get(group)
        plan, source = _discriminator(spec, override, inputs, group)
        bindings = tuple(
            {
                named[0][0]: (f.child,),
                **dict(relative_inputs(f.child, f.variables[1:], analysis.steps, analysis.templates)),
            }
            for f in factors
        )
        result.discriminators[group] = NetSpec(
            "discriminator", group, inputs, (1,), plan, source, tuple(f.name for f in factors), bindings
        )
    return result


WEIGHT_LAYERS = ("dense", "conv", "deconv", "conv3d")


def spectral_plan(plan: Plan) -> Plan:
    """The same network with ``norm: spectral`` on every weight layer that has no other norm."""

    def convert(layer: Layer) -> Layer:
        if layer.kind in WEIGHT_LAYERS and layer.get("norm", "none") == "none":
            return dataclasses.replace(layer, options=FrozenDict({**layer.options, "norm": "spectral"}))
        return layer

    branches = tuple(dataclasses.replace(b, layers=tuple(map(convert, b.layers))) for b in plan.branches)
    return Plan(branches, tuple(map(convert, plan.head)))


def _discriminator(spec: Spec, override, inputs: dict[str, Shape], group: str) -> tuple[Plan, str]:
    plan, source = _discriminator_layers(spec, override, inputs, group)
    return (spectral_plan(plan) if spec.objective.spectral_norm else plan), source


def _discriminator_layers(spec: Spec, override, inputs: dict[str, Shape], group: str) -> tuple[Plan, str]:
    if override is None:
        return discriminator_plan(inputs, video=spec.objective.video), "auto"
    layers = spec.networks[override] if isinstance(override, str) and override in spec.networks else override
    if isinstance(layers, str):
        raise BuildError(
            f"objective.discriminators.{group}: presets produce data, not logits; "
            "give a network from `networks:` or a layer list"
        )
    plan = network_plan(layers, inputs)
    out = plan_out_shape(plan, inputs)
    if tuple(out) != (1,):
        raise BuildError(f"objective.discriminators.{group}: must end in one unit (a logit), ends in {list(out)}")
    return plan, "inline" if not isinstance(override, str) else override
