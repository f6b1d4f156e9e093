"""``train.pretrain``: an autoencoder phase before the adversarial steps, and k-means means.

VaDE's initialisation (Jiang et al. 2017) for a model with a mixture h | k: first train the
extractor E and the generator G as an autoencoder, |x - G(E(x))|^2 and nothing else, then
place the component means of p(h | k) at the k-means centres of the codes E(x) of training
data. The adversarial game then starts from components that already lie where the data's
codes cluster, where it otherwise starts from random means that the codes know nothing of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ggdsl.build import build_modules, module_key
from ggdsl.compiled import Compiled, TrainState, make_optimizer
from ggdsl.errors import BuildError, TrainError
from ggdsl.objective import reconstruction_error, sample_q, split_observed
from ggdsl.plan import ModelPlan


@dataclass(frozen=True)
class Mixture:
    """One mixture of the model: the categorical ``k``, its child ``h`` and the generator of the means."""

    k: str
    h: str
    generator: str
    classes: int


def mixtures(plan: ModelPlan) -> list[Mixture]:
    """The model's mixtures h | k: each categorical latent with an exact posterior and its child."""
    out = []
    for latent in plan.analysis.exact:
        child = plan.analysis.q_parents[latent][0]
        var = plan.spec.model[plan.analysis.templates[latent]]
        out.append(Mixture(latent, child, plan.generator_of[child], int(var.get("classes"))))
    return out


def resolve_init(config: Mapping[str, Any], analysis: Any) -> str:
    """``train.pretrain.init`` resolved: ``kmeans`` or ``none`` (``auto``: kmeans where the
    model has a mixture, a categorical latent with an exact posterior)."""
    if config["init"] == "auto":
        return "kmeans" if analysis.exact else "none"
    return config["init"]


def init_kind(compiled: Compiled) -> str:
    """:func:`resolve_init` for a compiled model."""
    return resolve_init(compiled.spec.train.pretrain, compiled.plan.analysis)


def _means_layer(gen: Any, mixture: Mixture) -> nnx.Linear:
    """The one dense layer that maps a one-hot k to the component means (``net: linear``)."""
    net = gen.generators[module_key(mixture.generator)]
    linears = [node for _, node in nnx.iter_graph(net) if isinstance(node, nnx.Linear)]
    params = jax.tree.leaves(nnx.state(net, nnx.Param))
    if len(linears) != 1 or len(params) != 2:
        raise BuildError(
            f"train.pretrain.init: kmeans sets the component means of {mixture.h} | {mixture.k}, which needs "
            f"{mixture.h}'s network to be one dense layer (net: linear); use init: none for another network"
        )
    return linears[0]


def check_pretrain(compiled: Compiled) -> None:
    """Raises :class:`BuildError` for a ``train.pretrain`` this model cannot run."""
    config = compiled.spec.train.pretrain
    if config is None:
        return
    plan = compiled.plan
    if not any(plan.generator_of.get(node) for node in plan.analysis.observed):
        raise BuildError("train.pretrain: no observed variable of this model has a generator to reconstruct it")
    make_optimizer(config["optimizer"], "train.pretrain.optimizer")
    if config["init"] == "kmeans" and not mixtures(plan):
        raise BuildError(
            "train.pretrain.init: kmeans needs a mixture (a categorical latent k with a normal child h | k "
            "of net: linear, as GMGAN's); this model has none: use init: none"
        )
    if init_kind(compiled) == "kmeans":
        gen, _ = nnx.eval_shape(lambda: build_modules(plan, 0))
        for mixture in mixtures(plan):
            _means_layer(gen, mixture)


def make_pretrain_step(compiled: Compiled, tx: optax.GradientTransformation) -> Callable:
    """The jitted autoencoder step ``(g_params, g_rest, opt, batch, key) -> (g_params, g_rest, opt, error)``."""
    plan, settings, g_def = compiled.plan, compiled.settings, compiled.g_def

    def loss_fn(g_params, g_rest, batch, key):
        gen = nnx.merge(g_def, g_params, g_rest, copy=True)
        observed = split_observed(plan, batch)
        key_q, key_r = jax.random.split(key)
        stack = settings.stack_steps
        q_values, _, _ = sample_q(gen, plan, observed, key_q, train=True, settings=settings, stack_steps=stack)
        error = reconstruction_error(gen, plan, q_values, observed, key_r, train=True, stack_steps=stack)
        return error, nnx.split(gen, nnx.Param, ...)[2]

    def step(g_params, g_rest, opt, batch, key):
        (error, g_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_params, g_rest, batch, key)
        updates, opt = tx.update(grads, opt, g_params)
        return optax.apply_updates(g_params, updates), g_rest, opt, error

    return jax.jit(step)


def codes(compiled: Compiled, state: TrainState, observed: Mapping[str, np.ndarray], chunk: int = 500) -> dict:
    """q's values of every latent for ``observed`` data (:meth:`Run.infer <ggdsl.run.Run.infer>`
    of the state's own weights, ``chunk`` examples at a time), as numpy arrays."""
    from ggdsl.run import Run

    run = Run.from_state(compiled, {k: v for k, v in state.items() if k != "g_ema"}, None, 0)
    total = len(next(iter(observed.values())))
    parts = [run.infer({k: v[i : i + chunk] for k, v in observed.items()}) for i in range(0, total, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def kmeans_means(
    compiled: Compiled, state: TrainState, observed: Mapping[str, np.ndarray], seed: int
) -> tuple[TrainState, dict[str, float]]:
    """The state with each mixture's component means at the k-means centres of q's codes of ``observed``."""
    from sklearn.cluster import KMeans

    values = codes(compiled, state, observed)
    gen = compiled.generative(state)
    summary: dict[str, float] = {}
    for mixture in mixtures(compiled.plan):
        code = values[compiled.plan.analysis.templates[mixture.h]]
        h = code.reshape(len(code), -1).astype(np.float64)
        fit = KMeans(n_clusters=mixture.classes, n_init=10, random_state=seed).fit(h)
        centres = np.asarray(fit.cluster_centers_, np.float32)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            centres = np.asarray(multihost_utils.broadcast_one_to_all(centres))
        layer = _means_layer(gen, mixture)
        layer.kernel[...] = jnp.asarray(centres) - layer.bias[...][None]
        sizes = np.bincount(fit.labels_, minlength=mixture.classes)
        summary[f"pretrain/kmeans_rms/{mixture.h}"] = float(np.sqrt(fit.inertia_ / len(h)))
        summary[f"pretrain/kmeans_smallest/{mixture.h}"] = float(sizes.min() / len(h))
    _, g_params, g_rest = nnx.split(gen, nnx.Param, ...)
    return {**state, "g_params": g_params, "g_rest": g_rest}, summary


def pretrain(
    compiled: Compiled,
    state: TrainState,
    batches: Iterator[Mapping[str, Any]],
    dataset: Any,
    *,
    stop: Callable[[], bool] = lambda: False,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[TrainState, dict[str, float] | None]:
    """Run ``train.pretrain`` on a fresh state; returns the new state and a summary record.

    The summary is ``None`` when ``stop()`` turned true before the last step (nothing of
    the phase is kept then). ``on_step(step, error)`` is called every step, with the
    reconstruction error of that batch (a device value, so the call does not wait on it).
    """
    spec = compiled.spec
    config = spec.train.pretrain
    tx = make_optimizer(config["optimizer"], "train.pretrain.optimizer")
    step_fn = make_pretrain_step(compiled, tx)
    g_params, g_rest, opt = state["g_params"], state["g_rest"], tx.init(state["g_params"])
    base_key = jax.random.fold_in(jax.random.key(spec.train.seed), 1 << 30)
    error = jnp.zeros(())
    started = time.perf_counter()
    for step in range(1, config["steps"] + 1):
        if stop():
            return state, None
        g_params, g_rest, opt, error = step_fn(g_params, g_rest, opt, next(batches), jax.random.fold_in(base_key, step))
        if on_step is not None:
            on_step(step, error)
    finite = bool(jnp.isfinite(error)) and all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(g_params))
    if not finite:
        raise TrainError(
            f"train.pretrain: the reconstruction error or the weights are not finite after {config['steps']} "
            f"steps (last error {float(error)}); nothing was saved. Check the data for NaN or inf, or lower "
            "train.pretrain.optimizer.learning_rate"
        )
    state = {**state, "g_params": g_params, "g_rest": g_rest}
    summary = {
        "pretrain/recon": float(error),  # waits for the last step
        "pretrain/steps": float(config["steps"]),
        "pretrain/steps_per_s": config["steps"] / max(time.perf_counter() - started, 1e-9),
    }
    if init_kind(compiled) == "kmeans":
        rng = np.random.default_rng([spec.train.seed, 1 << 30])
        count = min(int(config["examples"]), dataset.num_examples)
        index = np.sort(rng.choice(dataset.num_examples, count, replace=False))
        observed = {name: dataset.features[feature][index] for name, feature in spec.data.observe.items()}
        state, kmeans = kmeans_means(compiled, state, observed, spec.train.seed)
        summary.update(kmeans)
    if "g_ema" in state:
        state["g_ema"] = state["g_params"]
    return state, summary
