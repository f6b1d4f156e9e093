"""A compiled model: the spec's plan, its modules split into states, and the pure step.

``compile_spec(spec)`` is what ``compile-and-train`` and ``load_run`` share: it builds the
networks once, splits them (``nnx.split``) into a graph definition and array states, and
makes the jitted training step, a pure function ``(state, batch) -> (state, metrics)``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from ggdsl.build import Critics, Generative, build_modules, module_key
from ggdsl.errors import BuildError
from ggdsl.objective import Settings, losses, settings_of
from ggdsl.plan import ModelPlan, plan_model
from ggdsl.spec.ir import Spec

TrainState = dict[str, Any]


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache, so a second run of a spec starts fast.

    The folder is ``$GGDSL_CACHE_DIR``, else ``$XDG_CACHE_HOME/ggdsl/jax`` (``~/.cache``);
    ``GGDSL_CACHE_DIR=off`` leaves the cache off. A folder set through JAX's own
    ``JAX_COMPILATION_CACHE_DIR`` is left as it is.
    """
    import os
    from pathlib import Path

    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    folder = os.environ.get("GGDSL_CACHE_DIR")
    if folder == "off":
        return None
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "ggdsl" / "jax")
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return folder


def make_optimizer(config: Mapping[str, Any], where: str = "train.optimizer") -> optax.GradientTransformation:
    """An optax optimiser from ``{name: adam, learning_rate: ..., ...}``."""
    config = dict(config)
    name = config.pop("name")
    factory = getattr(optax, name, None)
    if not callable(factory) or name.startswith("_"):
        known = [n for n in dir(optax) if not n.startswith("_") and callable(getattr(optax, n))]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise BuildError(f"{where}.name: optax has no optimiser '{name}'{hint}")
    try:
        tx = factory(**config)
    except TypeError as error:
        raise BuildError(f"{where}: optax.{name} rejects these arguments: {error}") from None
    # A wrongly typed argument (a learning rate given as a word) fails only at the first
    # update, deep inside the step: try one on a stand-in parameter now.
    params = {"w": jnp.zeros((2,), jnp.float32)}
    try:
        jax.eval_shape(lambda p: tx.update(p, tx.init(p), p), params)
    except (TypeError, ValueError) as error:
        given = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise BuildError(f"{where}: optax.{name}({given}) cannot update parameters: {error}") from None
    return tx


@dataclass
class Compiled:
    """Everything needed to train, sample from and infer with one spec."""

    spec: Spec
    plan: ModelPlan
    settings: Settings
    g_def: Any
    d_def: Any
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    _jitted: dict[str, Callable] = field(default_factory=dict, init=False, repr=False, compare=False)

    def jitted(self, name: str, fn: Callable, **jit_options: Any) -> Callable:
        """``jax.jit(fn, **jit_options)``, made once per compiled model and ``name``.

        A function of this model's arrays only (parameters, batches, keys), it is traced and
        compiled once and reused: evaluations every ``eval_every`` steps, each selection
        score and every :class:`~ggdsl.run.Run` of the model share one program instead of
        tracing a fresh closure each time. The first ``fn`` given a name is the one kept.
        """
        if name not in self._jitted:
            self._jitted[name] = jax.jit(fn, **jit_options)
        return self._jitted[name]

    def init_state(self, seed: int) -> TrainState:
        """Fresh parameters and optimiser states from ``seed`` (built in one compiled call)."""
        return self.jitted("init_state", self._init_state, static_argnums=0)(int(seed))

    def _init_state(self, seed: int) -> TrainState:
        generative, critics = build_modules(self.plan, seed)
        _, g_params, g_rest = nnx.split(generative, nnx.Param, ...)
        _, d_params, d_rest = nnx.split(critics, nnx.Param, ...)
        return {
            "g_params": g_params,
            "g_rest": g_rest,
            "d_params": d_params,
            "d_rest": d_rest,
            "g_opt": self.g_tx.init(g_params),
            "d_opt": self.d_tx.init(d_params),
            "step": jnp.zeros((), jnp.int32),
            "baseline": jnp.zeros((), jnp.float32),
            **({"g_ema": g_params} if self.spec.train.ema else {}),
        }

    def generative(self, state: TrainState) -> Generative:
        return nnx.merge(self.g_def, state["g_params"], state["g_rest"])

    def critics(self, state: TrainState) -> Critics:
        return nnx.merge(self.d_def, state["d_params"], state["d_rest"])

    def make_step(self, base_key: jax.Array, *, jit: bool = True):
        """The training step: ``critic_steps`` discriminator updates, one generator update."""
        plan, settings = self.plan, self.settings
        d_settings = dataclasses.replace(
            settings, reconstruction=0.0, latent_reconstruction=0.0, code_likelihood=0.0, consistency=0.0
        )
        settings = dataclasses.replace(settings, r1=0.0)
        g_def, d_def, g_tx, d_tx = self.g_def, self.d_def, self.g_tx, self.d_tx
        critic_steps = self.spec.train.critic_steps
        total_steps = self.spec.train.steps
        ema = float(self.spec.train.ema)

        # copy=True: fresh Variables owned by the grad trace, so batch norm may update its
        # statistics in place (merging the traced states as they are raises TraceContextError).
        def d_loss_fn(d_params, d_rest, g_params, g_rest, batch, key, progress):
            gen = nnx.merge(g_def, g_params, g_rest, copy=True)
            critics = nnx.merge(d_def, d_params, d_rest, copy=True)
            d_loss, _, metrics = losses(gen, critics, plan, batch, key, settings=d_settings, progress=progress)
            return d_loss, (metrics, nnx.split(critics, nnx.Param, ...)[2])

        def g_loss_fn(g_params, g_rest, d_params, d_rest, batch, key, baseline, progress):
            gen = nnx.merge(g_def, g_params, g_rest, copy=True)
            critics = nnx.merge(d_def, d_params, d_rest, copy=True)
            _, g_loss, metrics = losses(
                gen, critics, plan, batch, key, settings=settings, baseline=baseline, progress=progress
            )
            return g_loss, (metrics, nnx.split(gen, nnx.Param, ...)[2])

        def step(state: TrainState, batch: Mapping[str, jax.Array]):
            key = jax.random.fold_in(base_key, state["step"])
            progress = state["step"].astype(jnp.float32) / max(1, total_steps)
            d_params, d_rest, d_opt = state["d_params"], state["d_rest"], state["d_opt"]
            d_metrics = {}
            for index in range(critic_steps):
                grads, (d_metrics, d_rest) = jax.grad(d_loss_fn, has_aux=True)(
                    d_params,
                    d_rest,
                    state["g_params"],
                    state["g_rest"],
                    batch,
                    jax.random.fold_in(key, index),
                    progress,
                )
                updates, d_opt = d_tx.update(grads, d_opt, d_params)
                d_params = optax.apply_updates(d_params, updates)
            grads, (g_metrics, g_rest) = jax.grad(g_loss_fn, has_aux=True)(
                state["g_params"],
                state["g_rest"],
                d_params,
                d_rest,
                batch,
                jax.random.fold_in(key, critic_steps),
                state["baseline"],
                progress,
            )
            updates, g_opt = g_tx.update(grads, state["g_opt"], state["g_params"])
            g_params = optax.apply_updates(state["g_params"], updates)
            baseline = state["baseline"]
            if "reinforce_baseline_target" in g_metrics:
                baseline = 0.9 * baseline + 0.1 * g_metrics.pop("reinforce_baseline_target")
            metrics = {k: v for k, v in g_metrics.items() if not k.startswith("d_")}
            metrics.update({k: v for k, v in d_metrics.items() if k.startswith(("d_", "r1/"))})
            new_state = {
                "g_params": g_params,
                "g_rest": g_rest,
                "d_params": d_params,
                "d_rest": d_rest,
                "g_opt": g_opt,
                "d_opt": d_opt,
                "step": state["step"] + 1,
                "baseline": baseline,
            }
            if ema:
                new_state["g_ema"] = optax.incremental_update(g_params, state["g_ema"], 1.0 - ema)
            return new_state, metrics

        return jax.jit(step, donate_argnums=0) if jit else step

    def make_guarded_step(self, base_key: jax.Array, on_nonfinite: str = "stop", *, jit: bool = True) -> GuardedStep:
        """The training step with a finiteness guard: ``(state, guard, batch) -> (state, guard, metrics)``.

        Inside the step, every metric and every leaf of the new state is checked for NaN and
        inf (no host sync: the result is carried in ``guard``). ``guard["first_bad"]`` is the
        first step that produced a non-finite value (-1 while none did) and ``guard["flags"]``
        says which metrics and which parts (``discriminator x|h``, ``generator x``, ...) were
        non-finite at that step. With ``on_nonfinite="skip"`` a non-finite step's update is
        discarded (the state stays as before, only its ``step`` counter advances) and
        ``guard["skipped"]`` counts such steps; with ``"stop"`` the state is left as the step
        made it and the host stops training when it reads the guard.
        """
        if on_nonfinite not in ("stop", "skip"):
            raise BuildError(f"train.on_nonfinite: expected stop or skip, got {on_nonfinite!r}")
        raw = self.make_step(base_key, jit=False)
        names = {
            "discriminators": {module_key(k): k for k in self.plan.discriminators},
            "generators": {module_key(k): k for k in self.plan.generators},
            "extractors": {module_key(k): k for k in self.plan.extractors},
        }
        skip = on_nonfinite == "skip"

        def parts(state: TrainState) -> dict[str, list[jax.Array]]:
            grouped: dict[str, list[jax.Array]] = {}
            for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
                if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                    continue
                grouped.setdefault(part_name(path, names), []).append(leaf)
            return grouped

        def nonfinite_flags(state: TrainState, metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
            flags = {k: ~jnp.all(jnp.isfinite(v)) for k, v in metrics.items()}
            for part, leaves in parts(state).items():
                flags[part] = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
            return flags

        def guarded(state: TrainState, guard: Mapping[str, Any], batch: Mapping[str, jax.Array]):
            new_state, metrics = raw(state, batch)
            flags = nonfinite_flags(new_state, metrics)
            bad = jnp.any(jnp.stack(list(flags.values())))
            if skip:
                kept = {k: v for k, v in state.items() if k != "step"}
                proposed = {k: v for k, v in new_state.items() if k != "step"}
                # cond, not where: the state holds typed PRNG keys (dropout streams) too.
                kept = jax.lax.cond(bad, lambda: kept, lambda: proposed)
                new_state = {**kept, "step": new_state["step"]}
            first = bad & (guard["first_bad"] < 0)
            new_guard = {
                "first_bad": jnp.where(first, new_state["step"], guard["first_bad"]),
                "skipped": guard["skipped"] + bad.astype(jnp.int32),
                "flags": {k: jnp.where(first, flags[k], v) for k, v in guard["flags"].items()},
            }
            return new_state, new_guard, metrics

        def init_guard(state: TrainState, batch: Mapping[str, Any], skipped: int = 0) -> dict[str, Any]:
            shapes = jax.eval_shape(lambda s, b: nonfinite_flags(*raw(s, b)), state, batch)
            return {
                "first_bad": jnp.asarray(-1, jnp.int32),
                "skipped": jnp.asarray(skipped, jnp.int32),
                "flags": {k: jnp.zeros((), jnp.bool_) for k in shapes},
            }

        fn = jax.jit(guarded, donate_argnums=(0, 1)) if jit else guarded
        return GuardedStep(fn, init_guard, on_nonfinite)


@dataclass
class GuardedStep:
    """A guarded training step (see :meth:`Compiled.make_guarded_step`)."""

    step: Any
    init_guard: Any
    on_nonfinite: str

    def __call__(self, state: TrainState, guard: Mapping[str, Any], batch: Mapping[str, Any]):
        return self.step(state, guard, batch)


def part_name(path: tuple[Any, ...], names: Mapping[str, Mapping[str, str]]) -> str:
    """Which factor a state leaf belongs to, in words: ``discriminator x|h``, ``generator x``, ..."""
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    side = "discriminator side" if keys and keys[0].startswith("d_") else "generator side"
    for index, key in enumerate(keys[:-1]):
        if key in names:
            return f"{key[:-1]} {names[key].get(keys[index + 1], keys[index + 1])}"
        if key == "log_std":
            return f"learned std {keys[index + 1]}"
    if keys and keys[0] == "baseline":
        return "generator side (REINFORCE baseline)"
    return f"{side} ({keys[0] if keys else '?'})"


def compile_spec(spec: Spec) -> Compiled:
    """Plan and build a spec's networks and optimisers (parameters come from ``init_state``)."""
    plan = plan_model(spec)
    generative, critics = nnx.eval_shape(lambda: build_modules(plan, 0))
    g_def = nnx.split(generative, nnx.Param, ...)[0]
    d_def = nnx.split(critics, nnx.Param, ...)[0]
    g_tx = make_optimizer(spec.train.optimizer)
    critic_config = spec.train.critic_optimizer or spec.train.optimizer
    d_tx = make_optimizer(critic_config, "train.critic_optimizer")
    compiled = Compiled(spec, plan, settings_of(plan), g_def, d_def, g_tx, d_tx)
    if spec.train.pretrain is not None:
        from ggdsl.pretrain import check_pretrain

        check_pretrain(compiled)
    return compiled
