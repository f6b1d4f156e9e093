"""The objective as pure functions: sample p, sample q, discriminator and generator losses.

Everything here takes merged NNX modules and explicit PRNG keys and returns arrays, so the
training step can differentiate and jit it. Values are carried per unrolled node as
``(batch, *event_shape)`` arrays; a categorical is a one-hot (or relaxed) vector.

Losses (``loss: bce``, the JS estimate of the paper): for each discriminator D_A, q-side
tuples (data and recognition samples) are labelled 1 and p-side tuples (ancestral
samples) 0. The discriminators minimise ``softplus(-D(q)) + softplus(D(p))``; generators
and extractors minimise the non-saturating ``softplus(-D(p)) + softplus(D(q))``. Copies
of one template share D and are averaged; groups are weighted (uniform by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ggdsl.build import Critics, Generative, module_key
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


def settings_of(plan: ModelPlan) -> Settings:
    spec = plan.spec
    return Settings(
        spec.inference.discrete,
        float(spec.inference.temperature),
        float(spec.objective.reconstruction),
        float(spec.objective.latent_reconstruction),
        float(spec.objective.r1),
    )


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


def sample_p(
    gen: Generative,
    plan: ModelPlan,
    batch_size: int,
    key: jax.Array,
    *,
    train: bool,
    settings: Settings,
    fixed: Mapping[str, jax.Array] | None = None,
) -> Values:
    """Ancestral samples of every node of p; ``fixed`` clamps nodes (e.g. a component)."""
    values: Values = {}
    for index, node in enumerate(plan.analysis.nodes):
        if fixed is not None and node in fixed:
            values[node] = fixed[node]
            continue
        key_node = jax.random.fold_in(key, index)
        var, std_key = _definition(plan, node)
        shape = (batch_size, *var.shape)
        gen_key = plan.generator_of.get(node)
        net_out = None
        if gen_key is not None:
            net_spec = plan.generators[gen_key]
            binding = net_spec.bindings[net_spec.members.index(node)]
            extra = {}
            if "eps" in net_spec.inputs:
                extra["eps"] = jax.random.normal(jax.random.fold_in(key_node, 1), (batch_size, *net_spec.inputs["eps"]))
            net_out = _call(gen.generators[module_key(gen_key)], binding, values, extra, train)
            if net_spec.residual is not None:
                net_out = net_out + _gather(values, binding[net_spec.residual])
        if var.type == "categorical":
            classes = int(var.get("classes"))
            if net_out is None:
                probs = var.get("probs")
                logits = jnp.log(jnp.asarray(probs, jnp.float32)) if probs is not None else jnp.zeros(classes)
                index_sample = jax.random.categorical(key_node, logits, shape=shape)
                values[node] = jax.nn.one_hot(index_sample, classes)
            else:
                values[node] = discrete_sample(net_out, key_node, settings.discrete, settings.temperature)[0]
        elif var.type == "normal":
            noise = jax.random.normal(key_node, shape)
            mean = net_out if net_out is not None else jnp.asarray(var.get("mean"), jnp.float32)
            values[node] = mean + _std(gen, var, std_key) * noise
        elif var.type == "uniform":
            values[node] = jax.random.uniform(key_node, shape, minval=var.get("low"), maxval=var.get("high"))
        elif var.type == "implicit":
            values[node] = net_out
        else:
            raise NotImplementedError(f"no sampler for node type {var.type!r}")
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


def exact_logits(gen: Generative, plan: ModelPlan, latent: str, values: Values, *, train: bool) -> jax.Array:
    """log q(k | h) up to a constant: log pi_k - |h - mu_k|^2 / (2 std^2)."""
    var = plan.spec.model[plan.analysis.templates[latent]]
    classes = int(var.get("classes"))
    child = plan.analysis.q_parents[latent][0]
    child_var, std_key = _definition(plan, child)
    net_spec = plan.generators[plan.generator_of[child]]
    (input_name,) = net_spec.inputs
    means = gen.generators[module_key(plan.generator_of[child])]({input_name: jnp.eye(classes)}, train=False)
    std = _std(gen, child_var, std_key)
    h = values[child]
    diff = (h[:, None] - means[None]) / std
    sq = jnp.sum(diff.reshape(diff.shape[0], classes, -1) ** 2, axis=-1)
    probs = var.get("probs")
    log_prior = jnp.log(jnp.asarray(probs, jnp.float32)) if probs is not None else 0.0
    return log_prior - 0.5 * sq


def sample_q(
    gen: Generative, plan: ModelPlan, observed: Values, key: jax.Array, *, train: bool, settings: Settings
) -> tuple[Values, dict[str, jax.Array], dict[str, jax.Array]]:
    """Recognition samples of every latent given observed values, leaves to roots.

    Returns (values of all nodes, posterior probabilities of categorical latents,
    log-probabilities of the discrete samples, for the score-function estimator).
    """
    values: Values = dict(observed)
    probs: dict[str, jax.Array] = {}
    log_probs: dict[str, jax.Array] = {}
    for index, latent in enumerate(plan.analysis.order):
        key_latent = jax.random.fold_in(key, index)
        var = plan.spec.model[plan.analysis.templates[latent]]
        if latent in plan.analysis.exact:
            out = exact_logits(gen, plan, latent, values, train=train)
        else:
            net_key = plan.extractor_of[latent]
            net_spec = plan.extractors[net_key]
            binding = net_spec.bindings[net_spec.members.index(latent)]
            out = _call(gen.extractors[module_key(net_key)], binding, values, {}, train)
        if var.type == "categorical":
            probs[latent] = jax.nn.softmax(out, axis=-1)
            values[latent], log_probs[latent] = discrete_sample(
                out, key_latent, settings.discrete, settings.temperature
            )
        else:
            values[latent] = out
    return values, probs, log_probs


def reconstruct(gen: Generative, plan: ModelPlan, q_values: Values, key: jax.Array, *, train: bool) -> Values:
    """G applied to the recognition values of each observed node's parents."""
    out = {}
    for index, node in enumerate(plan.analysis.observed):
        gen_key = plan.generator_of.get(node)
        if gen_key is None:
            continue
        net_spec = plan.generators[gen_key]
        binding = net_spec.bindings[net_spec.members.index(node)]
        extra = {}
        if "eps" in net_spec.inputs:
            extra["eps"] = jax.random.normal(
                jax.random.fold_in(key, index), (q_values[node].shape[0], *net_spec.inputs["eps"])
            )
        out[node] = _call(gen.generators[module_key(gen_key)], binding, q_values, extra, train)
    return out


def latent_reconstruction(
    gen: Generative, plan: ModelPlan, p_values: Values, key: jax.Array, *, settings: Settings, train: bool
) -> jax.Array:
    """How well q recovers p's latents from p's own samples (the InfoGAN / ClusterGAN term).

    Squared error summed over a continuous latent's dimensions; for a categorical, the
    cross-entropy of q's posterior against p's draw. Averaged over the batch, summed over
    latents.
    """
    observed = {n: p_values[n] for n in plan.analysis.observed}
    recovered, probs, _ = sample_q(gen, plan, observed, key, train=train, settings=settings)
    batch = next(iter(observed.values())).shape[0]
    total = jnp.zeros(())
    for latent in plan.analysis.latent:
        if latent in probs:
            total = total - jnp.mean(jnp.sum(p_values[latent] * jnp.log(probs[latent] + 1e-8), axis=-1))
        else:
            diff = (recovered[latent] - p_values[latent]).reshape(batch, -1)
            total = total + jnp.mean(jnp.sum(diff**2, axis=-1))
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


def r1_penalties(critics: Critics, plan: ModelPlan, values: Values, *, train: bool) -> dict[str, jax.Array]:
    """E |grad_A D(A)|^2 at q-side tuples, per group (the zero-centred R1 penalty).

    The gradient is taken with respect to all of the factor's inputs, data and latents.
    """
    out = {}
    for group, net_spec in plan.discriminators.items():
        inputs = jax.lax.stop_gradient(_critic_inputs(net_spec, values))
        net = critics.discriminators[module_key(group)]
        logits, pullback = jax.vjp(lambda given, net=net: net(given, train=train), inputs)
        (grads,) = pullback(jnp.ones_like(logits))
        squares = sum(jnp.sum(g.reshape(g.shape[0], -1) ** 2, axis=-1) for g in grads.values())
        out[group] = jnp.mean(squares)
    return out


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
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(discriminator loss, generator + extractor loss, metrics) on one batch."""
    key_p, key_q, key_r = jax.random.split(key, 3)
    observed = split_observed(plan, batch)
    batch_size = next(iter(observed.values())).shape[0]
    q_values, _, log_probs = sample_q(gen, plan, observed, key_q, train=train, settings=settings)
    p_values = sample_p(gen, plan, batch_size, key_p, train=train, settings=settings)
    logits_q = discriminator_logits(critics, plan, q_values, train=train)
    logits_p = discriminator_logits(critics, plan, p_values, train=train)
    weights = group_weights(plan)
    d_loss = jnp.zeros(())
    g_per_example = jnp.zeros((batch_size,))
    metrics: dict[str, jax.Array] = {}
    for group in plan.discriminators:
        lq, lp = logits_q[group], logits_p[group]
        d_group = jnp.mean(jax.nn.softplus(-lq)) + jnp.mean(jax.nn.softplus(lp))
        g_group = jnp.mean(jax.nn.softplus(-lp) + jax.nn.softplus(lq), axis=0)
        d_loss = d_loss + weights[group] * d_group
        g_per_example = g_per_example + weights[group] * g_group
        metrics[f"d_loss/{group}"] = d_group
        metrics[f"d_acc/{group}"] = 0.5 * (jnp.mean(lq > 0) + jnp.mean(lp < 0))
    if settings.r1:
        for group, penalty in r1_penalties(critics, plan, q_values, train=train).items():
            metrics[f"r1/{group}"] = penalty
            d_loss = d_loss + weights[group] * 0.5 * settings.r1 * penalty
    g_loss = jnp.mean(g_per_example)
    metrics["g_adv"] = g_loss
    if settings.reconstruction:
        recon = reconstruct(gen, plan, q_values, key_r, train=train)
        err = sum(jnp.mean(jnp.sum((recon[n] - observed[n]).reshape(batch_size, -1) ** 2, axis=-1)) for n in recon)
        metrics["recon"] = err
        g_loss = g_loss + settings.reconstruction * err
    if settings.latent_reconstruction:
        err = latent_reconstruction(gen, plan, p_values, jax.random.fold_in(key_r, 1), settings=settings, train=train)
        metrics["latent_recon"] = err
        g_loss = g_loss + settings.latent_reconstruction * err
    if settings.discrete == "reinforce" and log_probs:
        advantage = jax.lax.stop_gradient(g_per_example - baseline)
        score = sum(jnp.mean(advantage * lp) for lp in log_probs.values())
        g_loss = g_loss + score
        metrics["reinforce_baseline_target"] = jnp.mean(jax.lax.stop_gradient(g_per_example))
    metrics["d_loss"] = d_loss
    metrics["g_loss"] = g_loss
    return d_loss, g_loss, metrics

