"""A trained run, loaded for use: ``ggdsl.load_run(dir)``.

>>> run = load_run("runs/gmgan-digits-20260101-120000")     # doctest: +SKIP
>>> samples = run.sample(16, key=0)                          # doctest: +SKIP
>>> samples["x"].shape, samples["k"].shape                   # doctest: +SKIP
((16, 8, 8, 1), (16, 10))
>>> posterior = run.infer(samples["x"], key=1)               # doctest: +SKIP
>>> posterior["k_probs"].shape                               # doctest: +SKIP
(16, 10)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ggdsl.compiled import Compiled, TrainState, compile_spec, enable_compilation_cache
from ggdsl.errors import EvalError
from ggdsl.objective import sample_p, sample_q, split_observed
from ggdsl.runs import RunDir
from ggdsl.spec.load import load_spec


def as_key(key: int | jax.Array) -> jax.Array:
    """An int seed or a JAX key (typed or raw uint32) as a typed key."""
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def stack_steps(compiled: Compiled, values: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """Values by unrolled node -> values by variable (per-step ones stacked on axis 1)."""
    analysis = compiled.plan.analysis
    out: dict[str, list] = {}
    for node in analysis.nodes:
        if node in values:
            out.setdefault(analysis.templates[node], []).append(np.asarray(values[node]))
    return {
        name: arrays[0] if not compiled.spec.model[name].steps else np.stack(arrays, axis=1)
        for name, arrays in out.items()
    }


def inference_state(state: TrainState) -> TrainState:
    """The state sampling and evaluation use: with ``train.ema`` on, the averaged generator and
    extractor weights stand in for the trained ones."""
    if "g_ema" not in state:
        return state
    return {**state, "g_params": state["g_ema"]}


class Run:
    """A run folder with its model restored from a checkpoint.

    Without ``step``: the latest checkpoint, or, when the spec sets ``train.select``, the
    checkpoint with the best selection score (``selected`` then says which and why).
    """

    #: ``{"selected_by", "select_score", "latest_step"}`` when ``train.select`` chose the step.
    selected: dict[str, Any] | None = None

    def __init__(self, path: str | Path, step: int | None = None):
        self.dir = RunDir(path)
        if not self.dir.spec_path.exists():
            raise EvalError(f"{path}: not a run folder (no {self.dir.spec_path.name})")
        self.spec = load_spec(self.dir.spec_path)
        enable_compilation_cache()
        self.compiled = compile_spec(self.spec)
        from ggdsl.train import restore_state

        chosen = step is None and self.spec.train.select != "last"
        if chosen:
            step = self.dir.selected_step()
        self.state, extra = restore_state(self.compiled, self.dir, step)
        self.state = inference_state(self.state)
        self.step = int(extra.get("step", 0))
        if chosen and extra.get("select") is not None:
            self.selected = {
                "selected_by": self.spec.train.select,
                "select_score": float(extra["select"]),
                "latest_step": self.dir.latest_step(),
            }

    @classmethod
    def from_state(cls, compiled: Compiled, state: TrainState, run_dir: RunDir | None, step: int) -> Run:
        """A run around a model in memory (used for evaluation during training)."""
        run = cls.__new__(cls)
        run.dir, run.spec, run.compiled, run.step = run_dir, compiled.spec, compiled, step
        run.state = inference_state(state)
        return run

    @cached_property
    def _sample_fn(self):
        compiled = self.compiled

        def fn(g_params, g_rest, key, n, fixed):
            gen = compiled.generative({"g_params": g_params, "g_rest": g_rest})
            return sample_p(gen, compiled.plan, n, key, train=False, settings=compiled.settings, fixed=fixed)

        return compiled.jitted("sample", fn, static_argnums=3)

    @cached_property
    def _infer_fn(self):
        compiled = self.compiled

        def fn(g_params, g_rest, batch, key):
            gen = compiled.generative({"g_params": g_params, "g_rest": g_rest})
            observed = split_observed(compiled.plan, batch)
            values, probs, _ = sample_q(gen, compiled.plan, observed, key, train=False, settings=compiled.settings)
            latents = {n: values[n] for n in compiled.plan.analysis.latent}
            return latents, probs

        return compiled.jitted("infer", fn)

    def sample(
        self, n: int, key: int | jax.Array = 0, *, fixed: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """``n`` ancestral samples of every variable (per-step ones as (n, T, ...))."""
        fixed_nodes = {k: jnp.asarray(v) for k, v in (fixed or {}).items()}
        values = self._sample_fn(self.state["g_params"], self.state["g_rest"], as_key(key), int(n), fixed_nodes)
        return stack_steps(self.compiled, values)

    def generate(self, fixed: Mapping[str, Any], key: int | jax.Array = 0) -> dict[str, np.ndarray]:
        """Ancestral samples with some variables clamped, given by variable.

        Like :meth:`sample` with ``fixed``, but a per-step variable is given whole, as
        ``(n, T, ...)`` (as :meth:`sample` and :meth:`infer` return it), instead of one
        array per unrolled node. ``n`` is the fixed values' first dimension.

        Example (an SSGAN: the content ``h`` of video ``A``, the motion ``v`` of ``B``)::

            q_a, q_b = run.infer(video_a), run.infer(video_b)
            run.generate({"h": q_a["h"], "v": q_b["v"]})["x"]      # (n, T, H, W, C)

        Raises:
            EvalError: An unknown or observed variable, a wrong shape, or arrays with
                different first dimensions.
        """
        if not fixed:
            raise EvalError("generate: nothing is fixed; use sample(n) for unconditional samples")
        analysis = self.compiled.plan.analysis
        sizes = set()
        nodes: dict[str, Any] = {}
        for name, value in fixed.items():
            if name not in self.spec.latent:
                raise EvalError(f"generate: '{name}' is not a latent variable (latents: {', '.join(self.spec.latent)})")
            var = self.spec.model[name]
            value = np.asarray(value, np.float32)
            expected = ((self.spec.time.steps,) if var.steps else ()) + tuple(var.event_shape)
            if value.ndim < 1 or tuple(value.shape[1:]) != expected:
                raise EvalError(
                    f"generate: '{name}' has shape {tuple(value.shape)}, expected (n, {', '.join(map(str, expected))})"
                )
            sizes.add(value.shape[0])
            if var.steps:
                copies = [node for node in analysis.nodes if analysis.templates[node] == name]
                nodes.update({node: value[:, t] for t, node in enumerate(copies)})
            else:
                nodes[name] = value
        if len(sizes) != 1:
            raise EvalError(f"generate: the fixed values have different first dimensions {sorted(sizes)}")
        return self.sample(sizes.pop(), key, fixed=nodes)

    def analogy(
        self,
        content: np.ndarray | Mapping[str, np.ndarray],
        motion: np.ndarray | Mapping[str, np.ndarray],
        key: int | jax.Array = 0,
    ) -> dict[str, np.ndarray]:
        """Motion analogy: the content of one set of videos moved as another set moves.

        The global latents (``h``) are inferred from ``content``, the per-step latents
        (``v[1..T]``) from ``motion`` (both with q, as :meth:`infer`), and every other
        variable is generated from them (:meth:`generate`); pair ``i`` combines
        ``content[i]`` with ``motion[i]``.

        Args:
            content: Observed videos ``(n, T, ...)`` (or a dict by observed variable).
            motion: As many videos to take the motion from.
            key: Seed or key.

        Returns:
            Every variable, by name; the observed one holds the analogy videos.

        Raises:
            EvalError: The model lacks a global or a per-step latent, or the batches differ
                in size.
        """
        global_latents = [name for name in self.spec.latent if not self.spec.model[name].steps]
        step_latents = [name for name in self.spec.latent if self.spec.model[name].steps]
        if not global_latents or not step_latents:
            raise EvalError(
                "analogy needs a global latent (content) and a per-step latent (motion); "
                f"this model has global: {', '.join(global_latents) or 'none'}, "
                f"per-step: {', '.join(step_latents) or 'none'}"
            )
        key = as_key(key)
        from_content = self.infer(content, jax.random.fold_in(key, 0))
        from_motion = self.infer(motion, jax.random.fold_in(key, 1))
        sizes = {len(from_content[global_latents[0]]), len(from_motion[step_latents[0]])}
        if len(sizes) != 1:
            raise EvalError(f"analogy: {' and '.join(map(str, sorted(sizes)))} videos: pass as many of each")
        fixed = {name: from_content[name] for name in global_latents}
        fixed.update({name: from_motion[name] for name in step_latents})
        return self.generate(fixed, jax.random.fold_in(key, 2))

    def infer(self, x: np.ndarray | Mapping[str, np.ndarray], key: int | jax.Array = 0) -> dict[str, np.ndarray]:
        """Samples of every latent from q given observed data (in the data's range).

        Categorical latents also come with their posterior probabilities as ``<name>_probs``.
        """
        observed = self.spec.observed
        if not isinstance(x, Mapping):
            if len(observed) != 1:
                raise EvalError(f"this model observes {', '.join(observed)}: pass a dict")
            x = {observed[0]: x}
        batch = {name: jnp.asarray(np.asarray(x[name], np.float32)) for name in observed}
        for name in observed:
            var = self.spec.model[name]
            expected = ((self.spec.time.steps,) if var.steps else ()) + tuple(var.shape)
            if tuple(batch[name].shape[1:]) != expected:
                raise EvalError(
                    f"infer: '{name}' has shape {tuple(batch[name].shape)}, expected (n, "
                    f"{', '.join(map(str, expected))})"
                )
        latents, probs = self._infer_fn(self.state["g_params"], self.state["g_rest"], batch, as_key(key))
        out = stack_steps(self.compiled, latents)
        analysis = self.compiled.plan.analysis
        grouped: dict[str, list] = {}
        for node, p in probs.items():
            grouped.setdefault(analysis.templates[node], []).append(np.asarray(p))
        for name, arrays in grouped.items():
            out[f"{name}_probs"] = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=1)
        return out

    def sample_figure(self, n: int, path: str | Path, *, seed: int = 0) -> Path:
        """A grid picture of ``n`` samples of the (first) observed variable."""
        from ggdsl.evaluate.figures import frame_strip, image_grid

        name = self.spec.observed[0]
        samples = self.sample(n, seed)[name]
        value_range = self.spec.data.range if self.spec.data else (0.0, 1.0)
        if samples.ndim == 5:
            return Path(frame_strip(samples[: min(n, 8)], str(path), value_range))
        if samples.ndim != 4:
            raise EvalError(f"'{name}' has shape {samples.shape[1:]}: only images can be drawn")
        return Path(image_grid(samples, str(path), ncols=int(np.ceil(np.sqrt(n))), value_range=value_range))


def load_run(path: str | Path, step: int | None = None) -> Run:
    """Load a run folder: its spec, and its model from the latest checkpoint (or ``step``).

    A spec with ``train.select`` (e.g. ``reconstruction_mse``) loads the checkpoint with the
    best selection score on the held-out training examples instead of the latest.
    """
    return Run(path, step)
