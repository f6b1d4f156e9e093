"""The objective as pure functions: sample p, sample q, discriminator and generator losses.

Everything here takes merged NNX modules and explicit PRNG keys and returns arrays, so the
training step can differentiate and jit it. Values are carried per unrolled node as
``(batch, *event_shape)`` arrays; a categorical is a one-hot (or relaxed) vector.

Losses (``loss: bce``, the JS estimate of the paper): for each discriminator D_A, q-side
tuples (data and recognition samples) are labelled 1 and p-side tuples (ancestral
samples) 0. The discriminators minimise ``softplus(-D(q)) + softplus(D(p))``; generators
and extractors minimise the non-saturating ``softplus(-D(p)) + softplus(D(q))``. Copies
of one template share D and are averaged; groups are weighted (uniform by default).

``loss: hinge`` (SAGAN, BigGAN, BigBiGAN) has the discriminators minimise
``relu(1 - D(q)) + relu(1 + D(p))`` and the generators and extractors ``D(q) - D(p)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from ggdsl.build import Critics, Generative, module_key
from ggdsl.nodes import BUILTIN_TYPES, node_sampler
from ggdsl.plan import ModelPlan

Values = dict[str, jax.Array]


@dataclass(frozen=True)
class Settings:
    """Static knobs of the objective (hashable: part of the jitted step's closure)."""

    discrete: str = "gumbel_softmax"
    temperature: float = 0.1
    reconstruction: float = 0.0
    latent_reconstruction: float = 0.0
    r1: float = 0.0
    r1_groups: tuple[tuple[str, float], ...] | None = None  # gamma per discriminator group; None: r1 for all
    instance_noise: float = 0.0
    code_likelihood: float = 0.0
    latent_weights: tuple[tuple[str, float], ...] | None = None  # per spec latent; None: all of them
    augment: tuple[float, float, float] | None = None  # (shift px, rotate deg, scale) of images
    augment_targets: tuple[str, ...] = ()  # where: latent_reconstruction, discriminators, consistency
    consistency: float = 0.0  # weight of q's agreement on real x and T(x) (1 when given per latent)
    consistency_weights: tuple[tuple[str, float], ...] | None = None  # per spec latent; None: all of them
    loss: str = "bce"  # bce or hinge
    stack_steps: bool = True  # copies of a template in one call / a scan; False: one call per node


def settings_of(plan: ModelPlan) -> Settings:
    spec = plan.spec
    latent = spec.objective.latent_reconstruction
    return Settings(
        spec.inference.discrete,
        float(spec.inference.temperature),
        float(spec.objective.reconstruction),
        _overall(latent),
        _overall(spec.objective.r1),
        r1_groups=_per_name(spec.objective.r1),
        latent_weights=_per_name(latent),
        loss=spec.objective.loss,
        instance_noise=float(spec.objective.instance_noise),
        code_likelihood=float(spec.objective.code_likelihood),
        augment=(
            tuple(float(spec.objective.augment[key]) for key in ("shift", "rotate", "scale"))
            if spec.objective.augment
            else None
        ),
        augment_targets=tuple(spec.objective.augment["apply_to"]) if spec.objective.augment else (),
        consistency=_overall(spec.objective.consistency),
        consistency_weights=_per_name(spec.objective.consistency),
    )


def _weight(plan: ModelPlan, weights: tuple[tuple[str, float], ...] | None, latent: str) -> float:
    """The weight of one unrolled latent under :func:`_per_name` weights (unlisted: 0)."""
    return 1.0 if weights is None else dict(weights).get(plan.analysis.templates[latent], 0.0)


def _overall(weights) -> float:
    """The weight a term is scaled by: one number, or 1 where weights are given per latent."""
    return (1.0 if any(weights.values()) else 0.0) if isinstance(weights, Mapping) else float(weights)


def _per_name(weights) -> tuple[tuple[str, float], ...] | None:
    """Weights per latent (or per discriminator group) as a hashable tuple, or None where one number
    covers them all."""
    return tuple(sorted((k, float(v)) for k, v in weights.items())) if isinstance(weights, Mapping) else None


def group_weights(plan: ModelPlan) -> dict[str, float]:
    """Weight of each discriminator group: uniform over groups unless the spec says otherwise."""
    groups = list(plan.discriminators)
    weights = plan.spec.objective.weights
    if weights == "uniform" or plan.spec.objective.divergence == "global":
        return {g: 1.0 / len(groups) for g in groups}
    return {g: float(weights.get(g, 0.0)) for g in groups}


def discrete_sample(logits: jax.Array, key: jax.Array, method: str, temperature: float):
    """A sample of a categorical as a (relaxed) one-hot, and its log-probability.

    ``gumbel_softmax``: softmax((logits + g) / tau), differentiable. ``straight_through``:
    the hard one-hot forward, the relaxed gradient backward. ``reinforce``: the hard
    one-hot with no path back; the log-probability feeds the score-function term.
    """
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(logits + gumbel, axis=-1), logits.shape[-1], dtype=logits.dtype)
    log_prob = jnp.sum(hard * log_probs, axis=-1)
    if method == "reinforce":
        return jax.lax.stop_gradient(hard), log_prob
    soft = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
    if method == "straight_through":
        return hard + soft - jax.lax.stop_gradient(soft), log_prob
    return soft, log_prob


def _gather(values: Values, nodes: tuple[str, ...]) -> jax.Array:
    if len(nodes) == 1:
        return values[nodes[0]]
    return jnp.stack([values[n] for n in nodes], axis=1)


def _call(net, binding: Mapping[str, tuple[str, ...]], values: Values, extra: Mapping[str, jax.Array], train: bool):
    inputs = {name: _gather(values, nodes) for name, nodes in binding.items()}
    inputs.update(extra)
    return net(inputs, train=train)


def _std(gen: Generative, var, key: str) -> jax.Array:
    if var.get("std") == "learned":
        return jnp.exp(gen.log_std[module_key(key)][...])
    return jnp.asarray(var.get("std"), jnp.float32)


def _definition(plan: ModelPlan, node: str):
    var = plan.spec.model[plan.analysis.templates[node]]
    return (var.first, f"{var.name}[1]") if node in plan.analysis.first else (var, var.name)


# --- Tied templates across steps -------------------------------------------------------------
#
# The copies of one network template (a frame generator x[t] | h, v[t], an extractor
# q(v[t] | x[t]), a transition v[t] | v[t-1]) are traced once, whatever the number of steps:
# copies whose inputs are all known are stacked along the batch axis and run as one call (the
# vmap of a per-example network, in one larger matrix product); a chain, where each copy reads
# the previous copy's output, runs under ``jax.lax.scan``. Anything else falls back to one call
# per copy. ``stack_steps=False`` forces that fallback (for testing the equivalence).


def _stacked_call(net, net_spec, bindings, values: Values, extra: Mapping[str, jax.Array], train: bool) -> list:
    """One call of ``net`` for several copies, their inputs stacked along the batch axis."""
    inputs = {name: jnp.concatenate([_gather(values, b[name]) for b in bindings], axis=0) for name in bindings[0]}
    inputs.update(extra)
    return jnp.split(net(inputs, train=train), len(bindings), axis=0)


def _chain_slot(bindings, members: list[str], ready: Mapping[str, object]) -> str | None:
    """The input through which each copy reads the previous one, if ``members`` form a chain."""
    if len(members) < 2:
        return None
    slots = None
    for i, binding in enumerate(bindings):
        if i == 0:
            candidates = {s for s, nodes in binding.items() if len(nodes) == 1}
        else:
            candidates = {s for s, nodes in binding.items() if nodes == (members[i - 1],)}
        slots = candidates if slots is None else slots & candidates
        others = [n for s, nodes in binding.items() if s not in slots for n in nodes]
        if not slots or any(n not in ready for n in others):
            return None
    slot = sorted(slots)[0]
    first_input = bindings[0][slot][0]
    if first_input not in ready or any(n not in ready for s, nodes in bindings[0].items() for n in nodes):
        return None
    return slot


def _scan_chain(net, net_spec, bindings, slot: str, values: Values, per_step: Mapping[str, jax.Array], finish, train):
    """Run a chain of copies under ``lax.scan``; ``finish(out, step_inputs) -> (value, extras)``."""
    graphdef, params, state = nnx.split(net, nnx.Param, ...)
    xs = {name: jnp.stack([_gather(values, b[name]) for b in bindings]) for name in bindings[0] if name != slot}
    xs.update(per_step)

    def body(carry, step):
        previous, net_state = carry
        module = nnx.merge(graphdef, params, net_state)
        inputs = {slot: previous, **step}
        out = module({k: v for k, v in inputs.items() if k in net_spec.inputs}, train=train)
        value, extras = finish(out, inputs)
        return (value, nnx.state(module, nnx.Not(nnx.Param))), (value, extras)

    init = (values[bindings[0][slot][0]], state)
    (_, final_state), (stacked, extras) = jax.lax.scan(body, init, xs)
    if jax.tree.leaves(final_state):
        nnx.update(net, final_state)
    return stacked, extras


def _pending_members(net_spec, node: str, order: Mapping[str, int], values: Values) -> tuple[list[str], list]:
    pairs = [(m, b) for m, b in zip(net_spec.members, net_spec.bindings, strict=True) if m not in values]
    pairs.sort(key=lambda pair: order[pair[0]])
    return [m for m, _ in pairs], [b for _, b in pairs]


def _finish_p(gen: Generative, var, std_key: str, settings: Settings, batch_size: int):
    """Turns a generator output (or None, for a root) into a sample of the node."""
    shape = (batch_size, *var.shape)

    def finish(net_out, key_node):
        if var.type == "categorical":
            classes = int(var.get("classes"))
            if net_out is None:
                probs = var.get("probs")
                logits = jnp.log(jnp.asarray(probs, jnp.float32)) if probs is not None else jnp.zeros(classes)
                return jax.nn.one_hot(jax.random.categorical(key_node, logits, shape=shape), classes)
            return discrete_sample(net_out, key_node, settings.discrete, settings.temperature)[0]
        if var.type == "normal":
            noise = jax.random.normal(key_node, shape)
            mean = net_out if net_out is not None else jnp.asarray(var.get("mean"), jnp.float32)
            return mean + _std(gen, var, std_key) * noise
        if var.type == "uniform":
            return jax.random.uniform(key_node, shape, minval=var.get("low"), maxval=var.get("high"))
        if var.type == "implicit":
            return net_out
        return node_sampler(var.type).sample_p(var, net_out, key_node, shape, settings)

    return finish


def sample_p(
    gen: Generative,
    plan: ModelPlan,
    batch_size: int,
    key: jax.Array,
    *,
    train: bool,
    settings: Settings,
    fixed: Mapping[str, jax.Array] | None = None,
    stack_steps: bool = True,
) -> Values:
    """Ancestral samples of every node of p; ``fixed`` clamps nodes (e.g. a component)."""
    nodes = plan.analysis.nodes
    order = {node: i for i, node in enumerate(nodes)}
    values: Values = dict(fixed or {})
    for node in nodes:
        if node in values:
            continue
        var, std_key = _definition(plan, node)
        finish = _finish_p(gen, var, std_key, settings, batch_size)
        gen_key = plan.generator_of.get(node)
        if gen_key is None:
            values[node] = finish(None, jax.random.fold_in(key, order[node]))
            continue
        net_spec = plan.generators[gen_key]
        net = gen.generators[module_key(gen_key)]
        members, bindings = _pending_members(net_spec, node, order, values)
        if not stack_steps:
            members, bindings = [node], [net_spec.bindings[net_spec.members.index(node)]]
        keys = [jax.random.fold_in(key, order[m]) for m in members]
        has_eps = "eps" in net_spec.inputs
        eps_shape = (batch_size, *net_spec.inputs.get("eps", ()))
        eps = [jax.random.normal(jax.random.fold_in(k, 1), eps_shape) for k in keys] if has_eps else []
        residual = net_spec.residual
        slot = _chain_slot(bindings, members, values)
        if slot is not None:
            per_step = {"__key__": jnp.stack(keys)}
            if has_eps:
                per_step["eps"] = jnp.stack(eps)

            def finish_step(out, step, finish=finish, residual=residual):
                if residual is not None:
                    out = out + step[residual]
                return finish(out, step["__key__"]), {}

            stacked, _ = _scan_chain(net, net_spec, bindings, slot, values, per_step, finish_step, train)
            values.update({m: stacked[i] for i, m in enumerate(members)})
            continue
        ready = all(n in values for b in bindings for nodes_ in b.values() for n in nodes_)
        if not ready:
            members, bindings, keys, eps = [node], [net_spec.bindings[net_spec.members.index(node)]], keys[:1], eps[:1]
        extra = {"eps": jnp.concatenate(eps, axis=0)} if has_eps else {}
        outs = _stacked_call(net, net_spec, bindings, values, extra, train)
        for member, binding, out, key_member in zip(members, bindings, outs, keys, strict=True):
            if residual is not None:
                out = out + _gather(values, binding[residual])
            values[member] = finish(out, key_member)
    return values


def split_observed(plan: ModelPlan, batch: Mapping[str, jax.Array]) -> Values:
    """Data batch by variable -> values by unrolled node (a video gives one frame per step)."""
    values: Values = {}
    for node in plan.analysis.observed:
        template = plan.analysis.templates[node]
        step = plan.analysis.steps[node]
        array = batch[template]
        values[node] = array if step is None else array[:, step - 1]
    return values


def exact_logits(
    gen: Generative, plan: ModelPlan, latent: str, values: Values, *, train: bool, fixed_means: bool = False
) -> jax.Array:
    """log q(k | h) up to a constant: log pi_k - |h - mu_k|^2 / (2 std^2).

    ``fixed_means`` stops the gradient at the component means (they then move only with
    the terms that shape p).
    """
    var = plan.spec.model[plan.analysis.templates[latent]]
    classes = int(var.get("classes"))
    child = plan.analysis.q_parents[latent][0]
    child_var, std_key = _definition(plan, child)
    net_spec = plan.generators[plan.generator_of[child]]
    (input_name,) = net_spec.inputs
    means = gen.generators[module_key(plan.generator_of[child])]({input_name: jnp.eye(classes)}, train=False)
    if fixed_means:
        means = jax.lax.stop_gradient(means)
    std = _std(gen, child_var, std_key)
    h = values[child]
    diff = (h[:, None] - means[None]) / std
    sq = jnp.sum(diff.reshape(diff.shape[0], classes, -1) ** 2, axis=-1)
    probs = var.get("probs")
    log_prior = jnp.log(jnp.asarray(probs, jnp.float32)) if probs is not None else 0.0
    return log_prior - 0.5 * sq


def _finish_q(var, settings: Settings):
    """Turns an extractor output into (sample, extras): a categorical's posterior and log-probability."""

    def finish(out, key_latent):
        if var.type == "categorical":
            value, log_prob = discrete_sample(out, key_latent, settings.discrete, settings.temperature)
            return value, {"probs": jax.nn.softmax(out, axis=-1), "log_prob": log_prob}
        if var.type not in BUILTIN_TYPES:
            return node_sampler(var.type).sample_q(var, out, key_latent, settings), {}
        return out, {}

    return finish


def sample_q(
    gen: Generative,
    plan: ModelPlan,
    observed: Values,
    key: jax.Array,
    *,
    train: bool,
    settings: Settings,
    stack_steps: bool = True,
) -> tuple[Values, dict[str, jax.Array], dict[str, jax.Array]]:
    """Recognition samples of every latent given observed values, leaves to roots.

    Returns (values of all nodes, posterior probabilities of categorical latents,
    log-probabilities of the discrete samples, for the score-function estimator).
    """
    values: Values = dict(observed)
    probs: dict[str, jax.Array] = {}
    log_probs: dict[str, jax.Array] = {}
    order = {latent: i for i, latent in enumerate(plan.analysis.order)}

    def store(latent: str, value: jax.Array, extras: Mapping[str, jax.Array]) -> None:
        values[latent] = value
        if "probs" in extras:
            probs[latent], log_probs[latent] = extras["probs"], extras["log_prob"]

    def template(latent: str):
        return plan.spec.model[plan.analysis.templates[latent]]

    for latent in plan.analysis.order:
        if latent in values:
            continue
        finish = _finish_q(template(latent), settings)
        if latent in plan.analysis.exact:
            out = exact_logits(gen, plan, latent, values, train=train)
            store(latent, *finish(out, jax.random.fold_in(key, order[latent])))
            continue
        net_key = plan.extractor_of[latent]
        net_spec = plan.extractors[net_key]
        net = gen.extractors[module_key(net_key)]
        members, bindings = _pending_members(net_spec, latent, order, values)
        if not stack_steps:
            members, bindings = [latent], [net_spec.bindings[net_spec.members.index(latent)]]
        keys = [jax.random.fold_in(key, order[m]) for m in members]
        one_template = len({plan.analysis.templates[m] for m in members}) == 1
        slot = _chain_slot(bindings, members, values) if one_template else None
        if slot is not None:

            def finish_step(out, step, finish=finish):
                return finish(out, step["__key__"])

            stacked, extras = _scan_chain(
                net, net_spec, bindings, slot, values, {"__key__": jnp.stack(keys)}, finish_step, train
            )
            for i, member in enumerate(members):
                store(member, stacked[i], {k: v[i] for k, v in extras.items()})
            continue
        if not all(n in values for b in bindings for nodes_ in b.values() for n in nodes_):
            members, bindings, keys = [latent], [net_spec.bindings[net_spec.members.index(latent)]], keys[:1]
        outs = _stacked_call(net, net_spec, bindings, values, {}, train)
        for member, out, key_member in zip(members, outs, keys, strict=True):
            store(member, *_finish_q(template(member), settings)(out, key_member))
    return values, probs, log_probs


def reconstruct(
    gen: Generative, plan: ModelPlan, q_values: Values, key: jax.Array, *, train: bool, stack_steps: bool = True
) -> Values:
    """G applied to the recognition values of each observed node's parents (copies of a template in one call)."""
    out: Values = {}
    index = {node: i for i, node in enumerate(plan.analysis.observed)}
    groups: dict[str, list[str]] = {}
    for node in plan.analysis.observed:
        gen_key = plan.generator_of.get(node)
        if gen_key is not None:
            groups.setdefault(gen_key, []).append(node)
    for gen_key, nodes in groups.items():
        net_spec = plan.generators[gen_key]
        chunks = [[n] for n in nodes] if not stack_steps else [nodes]
        for chunk in chunks:
            bindings = [net_spec.bindings[net_spec.members.index(n)] for n in chunk]
            extra = {}
            if "eps" in net_spec.inputs:
                shape = (q_values[chunk[0]].shape[0], *net_spec.inputs["eps"])
                noise = [jax.random.normal(jax.random.fold_in(key, index[n]), shape) for n in chunk]
                extra["eps"] = jnp.concatenate(noise)
            net = gen.generators[module_key(gen_key)]
            outs = _stacked_call(net, net_spec, bindings, q_values, extra, train)
            out.update(zip(chunk, outs, strict=True))
    return out


def reconstruction_error(
    gen: Generative,
    plan: ModelPlan,
    q_values: Values,
    observed: Values,
    key: jax.Array,
    *,
    train: bool,
    stack_steps: bool = True,
) -> jax.Array:
    """E |x - G(E(x))|^2: the squared error summed over each example's entries, averaged over
    the batch, summed over the observed nodes that have a generator."""
    recon = reconstruct(gen, plan, q_values, key, train=train, stack_steps=stack_steps)
    size = next(iter(observed.values())).shape[0]
    return sum(jnp.mean(jnp.sum((recon[n] - observed[n]).reshape(size, -1) ** 2, axis=-1)) for n in recon)


def affine_resample(images: jax.Array, angle: jax.Array, zoom: jax.Array, offset: jax.Array) -> jax.Array:
    """Each image of ``(batch, H, W, C)`` rotated, zoomed about its centre and shifted (bilinear).

    Per image ``i``: the rotation ``angle[i]`` (radians, counter-clockwise as displayed with
    row 0 at the top), the zoom factor ``zoom[i]``, then the shift ``offset[i]`` = (rows,
    columns) in pixels. Output pixel ``p`` reads the input at ``A^-1 (p - c - offset) + c``
    for ``A`` = zoom * rotation and ``c`` the centre; pixels from outside take the nearest
    edge pixel's value, so the background stays what it was in any data range.
    Differentiable in the images.
    """
    height, width = images.shape[1:3]
    centre_y, centre_x = (height - 1) / 2.0, (width - 1) / 2.0
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=images.dtype), jnp.arange(width, dtype=images.dtype), indexing="ij"
    )

    def one(image, angle, zoom, offset):
        dy, dx = rows - centre_y - offset[0], cols - centre_x - offset[1]
        cos, sin = jnp.cos(angle), jnp.sin(angle)
        src_y = (cos * dy + sin * dx) / zoom + centre_y
        src_x = (-sin * dy + cos * dx) / zoom + centre_x
        channel = lambda c: jax.scipy.ndimage.map_coordinates(c, [src_y, src_x], order=1, mode="nearest")  # noqa: E731
        return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

    return jax.vmap(one)(images, angle, zoom, offset)


def random_affine(images: jax.Array, key: jax.Array, shift: float, rotate: float, scale: float) -> jax.Array:
    """:func:`affine_resample` with each image's map drawn uniformly: an angle in +-``rotate``
    degrees, a zoom in 1 +- ``scale`` and a shift in +-``shift`` pixels along each axis."""
    batch = images.shape[0]
    k_angle, k_zoom, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(jax.random.uniform(k_angle, (batch,), minval=-rotate, maxval=rotate))
    zoom = 1.0 + jax.random.uniform(k_zoom, (batch,), minval=-scale, maxval=scale)
    offset = jax.random.uniform(k_shift, (batch, 2), minval=-shift, maxval=shift)
    return affine_resample(images, angle, zoom, offset)


def augment_images(plan: ModelPlan, values: Values, key: jax.Array, augment: tuple[float, float, float]) -> Values:
    """``values`` with every image-shaped observed node (``(batch, H, W, C)``) under :func:`random_affine`.

    The nodes of one per-step variable (a video's frames) share one transform per example.
    """
    out = dict(values)
    templates = plan.analysis.templates
    names = sorted({templates[node] for node in plan.analysis.observed})
    for node in plan.analysis.observed:
        if values[node].ndim == 4:
            template_key = jax.random.fold_in(key, names.index(templates[node]))
            out[node] = random_affine(values[node], template_key, *augment)
    return out


def latent_reconstruction(
    gen: Generative, plan: ModelPlan, p_values: Values, key: jax.Array, *, settings: Settings, train: bool
) -> jax.Array:
    """How well q recovers p's latents from p's own samples (the InfoGAN / ClusterGAN term).

    Squared error summed over a continuous latent's dimensions; for a categorical, the
    cross-entropy of q's posterior against p's draw. Averaged over the batch, summed over
    latents, each weighted by ``settings.latent_weights`` where the spec gives weights
    per latent (a latent of weight 0 is left out). With ``settings.augment`` applied to
    ``latent_reconstruction``, q reads p's images through :func:`augment_images`.
    """
    observed = {n: p_values[n] for n in plan.analysis.observed}
    if settings.augment is not None and "latent_reconstruction" in settings.augment_targets:
        key, key_augment = jax.random.split(key)
        observed = augment_images(plan, observed, key_augment, settings.augment)
    recovered, probs, _ = sample_q(
        gen, plan, observed, key, train=train, settings=settings, stack_steps=settings.stack_steps
    )
    batch = next(iter(observed.values())).shape[0]
    total = jnp.zeros(())
    for latent in plan.analysis.latent:
        weight = _weight(plan, settings.latent_weights, latent)
        if not weight:
            continue
        if latent in probs:
            err = -jnp.mean(jnp.sum(p_values[latent] * jnp.log(probs[latent] + 1e-8), axis=-1))
        else:
            diff = (recovered[latent] - p_values[latent]).reshape(batch, -1)
            err = jnp.mean(jnp.sum(diff**2, axis=-1))
        total = total + weight * err
    return total


def _prior(plan: ModelPlan, latent: str) -> jax.Array:
    """p(k) of a categorical latent with no parents: its ``probs``, else uniform."""
    var = plan.spec.model[plan.analysis.templates[latent]]
    probs = var.get("probs")
    classes = int(var.get("classes"))
    return jnp.asarray(probs, jnp.float32) if probs is not None else jnp.full((classes,), 1.0 / classes)


def consistency(
    gen: Generative,
    plan: ModelPlan,
    observed: Values,
    q_values: Values,
    q_probs: Mapping[str, jax.Array],
    key: jax.Array,
    *,
    settings: Settings,
    train: bool,
) -> jax.Array:
    """How far q's reading of transformed real images is from its reading of the originals.

    ``T`` draws one of ``settings.augment``'s maps per real image (:func:`augment_images`).
    For a continuous latent, the squared distance between q's draw at T(x) and at x; for a
    categorical, the cross-entropy of q(k | T(x)) against q(k | x). q's reading of the
    untransformed batch (``q_values``, ``q_probs``) is held fixed: it is the target, so the
    term teaches q to read a transformed image as its original (consistency training: UDA,
    Xie et al. 2020; the invariance behind IIC, Ji et al. 2019). Averaged over the batch,
    summed over latents, each weighted by ``settings.consistency_weights`` where the spec
    gives weights per latent (a latent of weight 0 is left out). The target q(k | x) is
    balanced over the batch (:func:`balanced_assignment`), so that agreeing by sending every
    image to one component does not pay; an exact posterior's component means are held
    fixed, so only the extractor learns from this term.
    """
    key_augment, key_q = jax.random.split(key)
    moved = augment_images(plan, observed, key_augment, settings.augment)
    codes, probs, _ = sample_q(
        gen, plan, moved, key_q, train=train, settings=settings, stack_steps=settings.stack_steps
    )
    batch = next(iter(observed.values())).shape[0]
    total = jnp.zeros(())
    for latent in plan.analysis.latent:
        weight = _weight(plan, settings.consistency_weights, latent)
        if not weight:
            continue
        if latent in probs:
            posterior = probs[latent]
            if latent in plan.analysis.exact:  # GMGAN's q(k | h): the component means held fixed
                posterior = jax.nn.softmax(exact_logits(gen, plan, latent, codes, train=train, fixed_means=True))
            target = balanced_assignment(jnp.log(q_probs[latent] + 1e-8), _prior(plan, latent))
            target = jax.lax.stop_gradient(target)
            err = -jnp.mean(jnp.sum(target * jnp.log(posterior + 1e-8), axis=-1))
        else:
            diff = (codes[latent] - jax.lax.stop_gradient(q_values[latent])).reshape(batch, -1)
            err = jnp.mean(jnp.sum(diff**2, axis=-1))
        total = total + weight * err
    return total


def balanced_assignment(log_joint: jax.Array, prior: jax.Array, iterations: int = 20) -> jax.Array:
    """Soft assignments of a batch to components whose batch totals follow ``prior``.

    ``log_joint`` is (batch, K) log p(h_i, k) (up to a constant). Sinkhorn iterations in the
    log domain rescale exp(log_joint) to a transport plan whose rows sum to 1/batch and whose
    columns sum to the prior; returned scaled so that each row sums to 1 (SwAV's balanced
    codes; Cuturi 2013). Without the column constraint this is q(k | h).
    """
    batch = log_joint.shape[0]
    log_rows = -jnp.log(float(batch))
    log_cols = jnp.log(prior)

    def body(_, uv):
        u, v = uv
        u = log_rows - jax.nn.logsumexp(log_joint + v[None, :], axis=1)
        v = log_cols - jax.nn.logsumexp(log_joint + u[:, None], axis=0)
        return u, v

    u0, v0 = jnp.zeros((batch,)), jnp.zeros(prior.shape)
    u, v = jax.lax.fori_loop(0, iterations, body, (u0, v0))
    plan = jnp.exp(log_joint + u[:, None] + v[None, :])
    return plan / jnp.sum(plan, axis=1, keepdims=True)


def code_log_likelihood(gen: Generative, plan: ModelPlan, q_values: Values, *, train: bool) -> jax.Array:
    """Mean over the batch of log p(h | k) + log p(k) at q's codes h = E(x), k balanced.

    For every h with a closed-form density (a latent whose parent k has a closed-form
    posterior, GMGAN's mixture p(h) = sum_k pi_k N(h; mu_k, std^2 I), whether q uses that
    posterior or a network of its own). Each code is scored under the
    components it is assigned to, where the batch's assignments are p(k | h) (q's own where
    q uses the exact posterior) rescaled so
    that the batch uses the components as often as p(k) draws them
    (:func:`balanced_assignment`, held fixed in the gradient): without that, every code
    falls into the nearest component and q collapses to one cluster. The component means
    are held fixed here; the log-density is summed over h's dimensions.
    """
    total = jnp.zeros(())
    for latent in plan.analysis.mixtures:
        child = plan.analysis.q_parents[latent][0]
        child_var, std_key = _definition(plan, child)
        probs = plan.spec.model[plan.analysis.templates[latent]].get("probs")
        prior = _prior(plan, latent)
        h = q_values[child]
        dims = h.reshape(h.shape[0], -1).shape[-1]
        std = jnp.broadcast_to(_std(gen, child_var, std_key), h.shape).reshape(h.shape[0], -1)
        # exact_logits: log pi_k - |h - mu_k|^2 / (2 std^2); the uniform log pi_k is left out there.
        logits = exact_logits(gen, plan, latent, q_values, train=train, fixed_means=True)
        log_joint = logits if probs is not None else logits + jnp.log(prior)
        log_norm = -jnp.sum(jnp.log(std), axis=-1) - 0.5 * dims * jnp.log(2 * jnp.pi)
        weights = jax.lax.stop_gradient(balanced_assignment(log_joint, prior))
        total = total + jnp.mean(jnp.sum(weights * log_joint, axis=-1) + log_norm)
    return total


def _critic_inputs(net_spec, values: Values) -> dict[str, jax.Array]:
    return {
        name: jnp.concatenate([_gather(values, binding[name]) for binding in net_spec.bindings], axis=0)
        for name in net_spec.inputs
    }


def discriminator_logits(critics: Critics, plan: ModelPlan, values: Values, *, train: bool) -> dict[str, jax.Array]:
    """Logits of each discriminator group, copies stacked: shape (copies, batch)."""
    out = {}
    for group, net_spec in plan.discriminators.items():
        logits = critics.discriminators[module_key(group)](_critic_inputs(net_spec, values), train=train)
        out[group] = logits.reshape(len(net_spec.bindings), -1)
    return out


def r1_gammas(settings: Settings, plan: ModelPlan) -> dict[str, float]:
    """The R1 weight gamma of each discriminator group that pays one (gamma > 0)."""
    if settings.r1_groups is None:
        return {group: settings.r1 for group in plan.discriminators} if settings.r1 else {}
    given = dict(settings.r1_groups)
    return {group: given[group] for group in plan.discriminators if given.get(group, 0.0) > 0}


def r1_penalties(
    critics: Critics, plan: ModelPlan, values: Values, *, train: bool, groups: tuple[str, ...] | None = None
) -> dict[str, jax.Array]:
    """E |grad_A D(A)|^2 at q-side tuples, per group (the zero-centred R1 penalty); ``groups``
    picks the groups (default: every discriminator).

    The gradient is taken with respect to all of the factor's inputs, data and latents.
    """
    out = {}
    for group, net_spec in plan.discriminators.items():
        if groups is not None and group not in groups:
            continue
        inputs = jax.lax.stop_gradient(_critic_inputs(net_spec, values))
        # A fresh copy of the network inside the differentiated function: its state updates
        # (batch statistics, spectral-norm vectors) stay local to the penalty.
        graphdef, state = nnx.split(critics.discriminators[module_key(group)])

        def apply(given, graphdef=graphdef, state=state):
            return nnx.merge(graphdef, state, copy=True)(given, train=train)

        logits, pullback = jax.vjp(apply, inputs)
        (grads,) = pullback(jnp.ones_like(logits))
        squares = sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1) for g in grads.values())
        out[group] = jnp.mean(squares)
    return out


def _adversarial(loss: str, lq: jax.Array, lp: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(discriminator loss, generators' loss per example) of one group's logits.

    ``lq`` and ``lp`` are ``(copies, batch)`` logits at q-side and p-side tuples; the
    generators' loss is averaged over copies, so it stays per example.
    """
    if loss == "hinge":
        d_group = jnp.mean(jax.nn.relu(1.0 - lq)) + jnp.mean(jax.nn.relu(1.0 + lp))
        return d_group, jnp.mean(lq - lp, axis=0)
    d_group = jnp.mean(jax.nn.softplus(-lq)) + jnp.mean(jax.nn.softplus(lp))
    return d_group, jnp.mean(jax.nn.softplus(-lp) + jax.nn.softplus(lq), axis=0)


def losses(
    gen: Generative,
    critics: Critics,
    plan: ModelPlan,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
    *,
    settings: Settings,
    baseline: jax.Array | float = 0.0,
    train: bool = True,
    progress: jax.Array | float = 0.0,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(discriminator loss, generator + extractor loss, metrics) on one batch.

    ``progress`` (the step over ``train.steps``) anneals the instance noise, whose std falls
    linearly from ``settings.instance_noise`` to 0. With ``settings.augment`` applied to
    ``discriminators``, both sides' images are transformed (independently per example)
    before every discriminator and the R1 penalty see them.
    """
    key_p, key_q, key_r = jax.random.split(key, 3)
    observed = split_observed(plan, batch)
    batch_size = next(iter(observed.values())).shape[0]
    stack = settings.stack_steps
    q_values, q_probs, log_probs = sample_q(
        gen, plan, observed, key_q, train=train, settings=settings, stack_steps=stack
    )
    p_values = sample_p(gen, plan, batch_size, key_p, train=train, settings=settings, stack_steps=stack)
    metrics: dict[str, jax.Array] = {}
    for latent, probs in q_probs.items():
        used = jnp.any(jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1]) > 0, axis=0)
        metrics[f"usage/{latent}"] = jnp.sum(used).astype(jnp.float32)
    seen_q, seen_p = q_values, p_values  # what the discriminators see
    if settings.augment is not None and "discriminators" in settings.augment_targets:
        key_a = jax.random.fold_in(key_r, 11)
        seen_q = augment_images(plan, seen_q, jax.random.fold_in(key_a, 0), settings.augment)
        seen_p = augment_images(plan, seen_p, jax.random.fold_in(key_a, 1), settings.augment)
    if settings.instance_noise:
        std = settings.instance_noise * jnp.clip(1.0 - progress, 0.0, 1.0)
        metrics["instance_noise"] = std
        key_n = jax.random.fold_in(key_r, 7)
        seen_q, seen_p = dict(seen_q), dict(seen_p)
        for index, node in enumerate(plan.analysis.observed):
            for side, values in enumerate((seen_q, seen_p)):
                noise = jax.random.normal(jax.random.fold_in(key_n, 2 * index + side), values[node].shape)
                values[node] = values[node] + std * noise
    logits_q = discriminator_logits(critics, plan, seen_q, train=train)
    logits_p = discriminator_logits(critics, plan, seen_p, train=train)
    weights = group_weights(plan)
    d_loss = jnp.zeros(())
    g_per_example = jnp.zeros((batch_size,))
    for group in plan.discriminators:
        lq, lp = logits_q[group], logits_p[group]
        d_group, g_group = _adversarial(settings.loss, lq, lp)
        d_loss = d_loss + weights[group] * d_group
        g_per_example = g_per_example + weights[group] * g_group
        metrics[f"d_loss/{group}"] = d_group
        metrics[f"d_acc/{group}"] = 0.5 * (jnp.mean(lq > 0) + jnp.mean(lp < 0))
    gammas = r1_gammas(settings, plan)
    if gammas:
        for group, penalty in r1_penalties(critics, plan, seen_q, train=train, groups=tuple(gammas)).items():
            metrics[f"r1/{group}"] = penalty
            d_loss = d_loss + weights[group] * 0.5 * gammas[group] * penalty
    g_loss = jnp.mean(g_per_example)
    metrics["g_adv"] = g_loss
    if settings.reconstruction:
        err = reconstruction_error(gen, plan, q_values, observed, key_r, train=train, stack_steps=stack)
        metrics["recon"] = err
        g_loss = g_loss + settings.reconstruction * err
    if settings.latent_reconstruction:
        err = latent_reconstruction(gen, plan, p_values, jax.random.fold_in(key_r, 1), settings=settings, train=train)
        metrics["latent_recon"] = err
        g_loss = g_loss + settings.latent_reconstruction * err
    if settings.consistency:
        key_c = jax.random.fold_in(key_r, 2)
        err = consistency(gen, plan, observed, q_values, q_probs, key_c, settings=settings, train=train)
        metrics["consistency"] = err
        g_loss = g_loss + settings.consistency * err
    if settings.code_likelihood:
        log_lik = code_log_likelihood(gen, plan, q_values, train=train)
        metrics["code_nll"] = -log_lik
        g_loss = g_loss - settings.code_likelihood * log_lik
    if settings.discrete == "reinforce" and log_probs:
        advantage = jax.lax.stop_gradient(g_per_example - baseline)
        score = sum(jnp.mean(advantage * lp) for lp in log_probs.values())
        g_loss = g_loss + score
        metrics["reinforce_baseline_target"] = jnp.mean(jax.lax.stop_gradient(g_per_example))
    metrics["d_loss"] = d_loss
    metrics["g_loss"] = g_loss
    return d_loss, g_loss, metrics
