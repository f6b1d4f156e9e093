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
from ggdsl.nets.modules import Block, Dense
from ggdsl.objective import _definition, _std, augment_images, reconstruction_error, sample_q, split_observed
from ggdsl.plan import ModelPlan


@dataclass(frozen=True)
class Mixture:
    """One mixture of the model: the categorical ``k``, its child ``h`` and the generator of the means."""

    k: str
    h: str
    generator: str
    classes: int


def mixtures(plan: ModelPlan) -> list[Mixture]:
    """The model's mixtures h | k: each categorical latent with a closed-form posterior and its child."""
    out = []
    for latent in plan.analysis.mixtures:
        child = plan.analysis.q_parents[latent][0]
        var = plan.spec.model[plan.analysis.templates[latent]]
        out.append(Mixture(latent, child, plan.generator_of[child], int(var.get("classes"))))
    return out


def resolve_init(config: Mapping[str, Any], analysis: Any) -> str:
    """``train.pretrain.init`` resolved: ``kmeans`` or ``none`` (``auto``: kmeans where the
    model has a mixture, a categorical latent with a closed-form posterior)."""
    if config["init"] == "auto":
        return "kmeans" if analysis.mixtures else "none"
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


def _plain_dense(block: Block) -> nnx.Linear | None:
    """The ``nnx.Linear`` of a dense layer with no norm, no activation and no spectral normalisation."""
    op = block.op
    if isinstance(op, Dense) and op.spectral is None and block.norm is None and block.act == "linear":
        return op.linear
    return None


@dataclass(frozen=True)
class CodeScale:
    """Where a mixture's codes are rescaled: the extractor's last dense layer (its output is
    the code) and, per network that reads the code, the first dense layer with the rows of
    its kernel that the code feeds."""

    extractor: nnx.Linear
    readers: tuple[tuple[nnx.Linear, slice], ...]


def _reader_rows(net: Any, name: str) -> tuple[nnx.Linear, slice] | None:
    """The first dense layer of ``net`` and the kernel rows its vector input ``name`` feeds."""
    branch = next((i for i, names in enumerate(net.branch_inputs) if name in names), None)
    if branch is None or branch != len(net.branches) - 1 or len(net.branches[branch]) or not len(net.head):
        return None
    first = net.head[0].op
    if not isinstance(first, Dense) or first.spectral is not None:
        return None
    shapes = dict(net.input_shapes)
    names = net.branch_inputs[branch]
    size = int(np.prod(shapes[name]))
    after = sum(int(np.prod(shapes[n])) for n in names[names.index(name) + 1 :])
    rows = first.linear.kernel.shape[0]
    return first.linear, slice(rows - after - size, rows - after)


def code_scale(gen: Any, plan: ModelPlan, mixture: Mixture) -> CodeScale | str:
    """The layers that rescale ``mixture.h``'s codes without changing what p and q compute,
    or why there are none (a sentence). The discriminators that read h are left as they
    are: pretraining has not trained them."""
    return code_layers(gen, plan, mixture.h)


def code_layers(gen: Any, plan: ModelPlan, latent: str) -> CodeScale | str:
    """The layers that map the codes of ``latent`` (a template: every instance of it on the
    time plate) affinely without changing G(E(x)), or why there are none (a sentence).

    These are the last dense layer of its extractor and the first dense layer of every
    generator or extractor that reads it. The networks that generate ``latent`` itself on
    p's side (a transition) and the discriminators are left as they are: pretraining has not
    trained them.
    """
    nodes = {node for node in plan.analysis.latent if plan.analysis.templates[node] == latent}
    ext_keys = {plan.extractor_of.get(node) for node in nodes}
    if not nodes or None in ext_keys:
        return f"{latent} has no extractor"
    if len(ext_keys) > 1 or not set(plan.extractors[next(iter(ext_keys))].members) <= nodes:
        return f"{latent}'s extractor {', '.join(sorted(map(str, ext_keys)))} also gives other latents"
    (ext_key,) = ext_keys
    net = gen.extractors[module_key(ext_key)]
    blocks = list(net.head) if len(net.head) else list(net.branches[-1])
    last = _plain_dense(blocks[-1]) if blocks else None
    if last is None:
        return f"the last layer of {latent}'s extractor {ext_key} is not a dense layer without norm or act"
    own = {plan.generator_of.get(node) for node in nodes}
    readers = []
    for role, specs, modules in (
        ("generator", plan.generators, gen.generators),
        ("extractor", plan.extractors, gen.extractors),
    ):
        for key, spec in specs.items():
            if role == "generator" and key in own:
                continue
            names = {name for b in spec.bindings for name, found in b.items() if nodes & set(found)}
            if not names:
                continue
            (name,) = names if len(names) == 1 else (None,)
            bound = [b.get(name, ()) for b in spec.bindings] if name is not None else []
            found = _reader_rows(modules[module_key(key)], name) if name is not None else None
            if found is None or any(len(b) != 1 or b[0] not in nodes for b in bound):
                return f"the {role} {key} does not read {latent} alone as a vector input of its first dense layer"
            readers.append(found)
    return CodeScale(last, tuple(readers))


def standardized(spec: Any, analysis: Any) -> tuple[str, ...]:
    """The latents ``train.pretrain.standardize`` names (``true``: every continuous latent
    outside a mixture h | k), as templates in the model's order."""
    setting = spec.train.pretrain.get("standardize", False) if spec.train.pretrain else False
    if setting is False:
        return ()
    if setting is not True:
        return tuple(setting)
    children = {analysis.templates[analysis.q_parents[k][0]] for k in analysis.mixtures}
    return tuple(
        name
        for name, var in spec.model.items()
        if not var.observed and var.type != "categorical" and name not in children
    )


def _check_standardize(compiled: Compiled, gen: Any) -> None:
    plan = compiled.plan
    children = {plan.analysis.templates[m.h] for m in mixtures(plan)}
    latents = standardized(compiled.spec, plan.analysis)
    if compiled.spec.train.pretrain.get("standardize") is True and not latents:
        raise BuildError(
            "train.pretrain.standardize: true finds no continuous latent outside a mixture in this model; "
            "use standardize: false"
        )
    for latent in latents:
        var = plan.spec.model[latent]
        why = (
            "it is categorical"
            if var.type == "categorical"
            else "it is a mixture's child, whose codes init: kmeans places"
            if latent in children
            else code_layers(gen, plan, latent)
        )
        if isinstance(why, str):
            raise BuildError(f"train.pretrain.standardize: {latent} cannot be standardised: {why}")


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
    kmeans = init_kind(compiled) == "kmeans"
    if not kmeans and not standardized(compiled.spec, plan.analysis) and config.get("standardize") is not True:
        return
    gen, _ = nnx.eval_shape(lambda: build_modules(plan, 0))  # shapes only: which layers hold the codes
    _check_standardize(compiled, gen)
    if kmeans:
        for mixture in mixtures(plan):
            _means_layer(gen, mixture)
            found = code_scale(gen, plan, mixture)
            if config["rescale"] is True and isinstance(found, str):
                raise BuildError(
                    f"train.pretrain.rescale: true scales {mixture.h}'s codes, but {found}; use rescale: false "
                    "(or auto, which then leaves the codes as they are)"
                )


def _code_vector(plan: ModelPlan, values: Mapping[str, jax.Array], probs: Mapping[str, jax.Array]) -> jax.Array:
    """q's continuous latents of one batch, flattened and concatenated: ``(batch, d)``."""
    parts = [values[n].reshape(values[n].shape[0], -1) for n in plan.analysis.latent if n not in probs]
    return jnp.concatenate(parts, axis=-1)


def nt_xent(a: jax.Array, b: jax.Array, temperature: float) -> jax.Array:
    """The normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020): row i of
    ``a`` and row i of ``b`` are two views of one example, every other row of either is a
    negative; cosine similarity over ``temperature``, averaged over the 2N anchors."""
    z = jnp.concatenate([a, b]).astype(jnp.float32)
    z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-8)
    n = a.shape[0]
    logits = (z @ z.T) / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
    targets = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))


def make_pretrain_step(compiled: Compiled, tx: optax.GradientTransformation) -> Callable:
    """The jitted autoencoder step ``(g_params, g_rest, opt, batch, key) -> (g_params, g_rest, opt, error)``.

    With ``train.pretrain.augment``, the extractors read each image under a random affine map
    T and the generators rebuild T(x) (``target: transformed``) or x (``target: original``).
    """
    plan, settings, g_def = compiled.plan, compiled.settings, compiled.g_def
    augment = compiled.spec.train.pretrain.get("augment")
    maps = tuple(float(augment[key]) for key in ("shift", "rotate", "scale")) if augment else None
    contrastive = compiled.spec.train.pretrain.get("contrastive")

    def loss_fn(g_params, g_rest, batch, key):
        gen = nnx.merge(g_def, g_params, g_rest, copy=True)
        observed = split_observed(plan, batch)
        key_q, key_r, key_a = jax.random.split(key, 3)
        seen = target = observed
        if maps is not None:  # the autoencoder reads T(x), and rebuilds T(x) or x
            seen = augment_images(plan, observed, key_a, maps)
            target = seen if augment["target"] == "transformed" else observed
        stack = settings.stack_steps
        q_values, probs, _ = sample_q(gen, plan, seen, key_q, train=True, settings=settings, stack_steps=stack)
        error = reconstruction_error(gen, plan, q_values, target, key_r, train=True, stack_steps=stack)
        loss = error
        if contrastive is not None:  # a second view T'(x): its codes against T(x)'s (NT-Xent)
            key_v, key_q2 = jax.random.split(jax.random.fold_in(key, 7))
            other = augment_images(plan, observed, key_v, maps)
            q_other, _, _ = sample_q(gen, plan, other, key_q2, train=True, settings=settings, stack_steps=stack)
            loss = loss + contrastive["weight"] * nt_xent(
                _code_vector(plan, q_values, probs), _code_vector(plan, q_other, probs), contrastive["temperature"]
            )
        return loss, (error, nnx.split(gen, nnx.Param, ...)[2])

    def step(g_params, g_rest, opt, batch, key):
        (_, (error, g_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g_params, g_rest, batch, key)
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


def _rescale(compiled: Compiled, gen: Any, mixture: Mixture, spread: float) -> float:
    """Scales ``mixture.h``'s codes by std / ``spread`` where ``train.pretrain.rescale`` asks
    it and the networks allow it; returns the factor (1.0 where nothing was scaled)."""
    setting = compiled.spec.train.pretrain["rescale"]
    found = code_scale(gen, compiled.plan, mixture)
    if setting is False or isinstance(found, str) or spread <= 0:
        return 1.0
    var, std_key = _definition(compiled.plan, mixture.h)
    scale = float(jnp.mean(_std(gen, var, std_key))) / spread
    found.extractor.kernel[...] = found.extractor.kernel[...] * scale
    found.extractor.bias[...] = found.extractor.bias[...] * scale
    for linear, rows in found.readers:
        linear.kernel[...] = linear.kernel[...].at[rows].divide(scale)
    return scale


def standardize_codes(
    compiled: Compiled, state: TrainState, observed: Mapping[str, np.ndarray]
) -> tuple[TrainState, dict[str, float]]:
    """The state with the codes of every latent of ``train.pretrain.standardize`` at mean 0
    and std 1 per coordinate over ``observed``: the extractor's last dense layer takes the
    map z -> (z - m) / s and every network that reads z the inverse, so G(E(x)) is unchanged."""
    latents = standardized(compiled.spec, compiled.plan.analysis)
    if not latents:
        return state, {}
    values = codes(compiled, state, observed)
    gen = compiled.generative(state)
    summary: dict[str, float] = {}
    for latent in latents:
        found = code_layers(gen, compiled.plan, latent)
        assert not isinstance(found, str), found  # check_pretrain raised before training
        size = found.extractor.kernel.shape[-1]
        z = values[latent].reshape(-1, size).astype(np.float64)
        mean, std = z.mean(axis=0), z.std(axis=0)
        std = np.where(std > 1e-8, std, 1.0)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            mean, std = (np.asarray(a) for a in multihost_utils.broadcast_one_to_all((mean, std)))
        m, s = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
        found.extractor.kernel[...] = found.extractor.kernel[...] / s
        found.extractor.bias[...] = (found.extractor.bias[...] - m) / s
        for linear, rows in found.readers:
            kernel = linear.kernel[...]
            linear.bias[...] = linear.bias[...] + m @ kernel[rows]
            linear.kernel[...] = kernel.at[rows].multiply(s[:, None])
        summary[f"pretrain/code_mean/{latent}"] = float(np.sqrt(np.mean(mean**2)))
        summary[f"pretrain/code_std/{latent}"] = float(np.sqrt(np.mean(std**2)))
    _, g_params, g_rest = nnx.split(gen, nnx.Param, ...)
    return {**state, "g_params": g_params, "g_rest": g_rest}, summary


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
        spread = float(np.sqrt(fit.inertia_ / h.size))  # rms distance to the centre, per coordinate
        scale = _rescale(compiled, gen, mixture, spread)
        layer = _means_layer(gen, mixture)
        layer.kernel[...] = scale * jnp.asarray(centres) - layer.bias[...][None]
        sizes = np.bincount(fit.labels_, minlength=mixture.classes)
        summary[f"pretrain/kmeans_rms/{mixture.h}"] = float(np.sqrt(fit.inertia_ / len(h)))
        summary[f"pretrain/code_scale/{mixture.h}"] = scale
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
        previous = error
        g_params, g_rest, opt, error = step_fn(g_params, g_rest, opt, next(batches), jax.random.fold_in(base_key, step))
        jax.block_until_ready(previous)  # one step queued behind the running one, so stop() is heard at once
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
    kmeans = init_kind(compiled) == "kmeans"
    if kmeans or standardized(spec, compiled.plan.analysis):
        rng = np.random.default_rng([spec.train.seed, 1 << 30])
        count = min(int(config["examples"]), dataset.num_examples)
        index = np.sort(rng.choice(dataset.num_examples, count, replace=False))
        observed = {name: dataset.features[feature][index] for name, feature in spec.data.observe.items()}
        state, moments = standardize_codes(compiled, state, observed)
        summary.update(moments)
        if kmeans:
            state, placed = kmeans_means(compiled, state, observed, spec.train.seed)
            summary.update(placed)
    if "g_ema" in state:
        state["g_ema"] = state["g_params"]
    return state, summary
