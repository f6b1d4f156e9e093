"""compile-and-train: the training loop around the compiled step.

The host loop only feeds batches (prefetched on a thread), logs every ``log_every``
steps, checkpoints every ``checkpoint_every`` steps (orbax, written to a temporary name
and renamed), and evaluates every ``eval_every`` steps. The PRNG key of step ``s`` is
``fold_in(key(seed), s)`` and the data order is a function of (seed, epoch), so a resumed
run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ggdsl.compiled import Compiled, TrainState, compile_spec, enable_compilation_cache
from ggdsl.errors import DataError, TrainError
from ggdsl.runs import RunDir
from ggdsl.spec.ir import Spec
from ggdsl.spec.load import load_spec


@dataclass
class TrainResult:
    """What a training run leaves: its folder, its last step and its last metrics."""

    run_dir: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


def data_options(spec: Spec) -> dict[str, Any]:
    """The ``data:`` section as source options; video sources get the frame count from time."""
    options = {**dict(spec.data.options), "observe": dict(spec.data.observe), "range": list(spec.data.range)}
    if spec.time is not None and spec.data.source in ("moving_digits", "chairs"):
        options["steps"] = spec.time.steps
    return options


def open_dataset(spec: Spec, split: str):
    """One split of the spec's data, checked against the observed variables' shapes."""
    from ggdsl.data import load_dataset

    if spec.data is None:
        raise DataError(f"{spec.name}: the spec has no `data:` section, so there is nothing to train on")
    dataset = load_dataset(spec.data.source, data_options(spec), split)
    for var_name, feature in spec.data.observe.items():
        var = spec.model[var_name]
        expected = ((spec.time.steps,) if var.steps else ()) + tuple(var.shape)
        got = dataset.feature_shapes.get(feature)
        if got != expected:
            raise DataError(
                f"data.observe.{var_name}: feature '{feature}' of {spec.data.source} has shape "
                f"{list(got) if got is not None else None}, but model.{var_name} needs {list(expected)}"
            )
    return dataset


def model_part(spec: Spec) -> dict[str, Any]:
    """The part of a spec that defines the model (a resume must not change it)."""
    full = spec.to_dict()
    return {k: v for k, v in full.items() if k not in ("train", "eval", "name")} | {
        "train": {
            k: full["train"][k]
            for k in ("optimizer", "critic_optimizer", "critic_steps", "seed", "batch_size")
            if k in full["train"]
        }
    }


def flatten_state(state: TrainState) -> dict[str, np.ndarray]:
    """The train state as named numpy leaves, for a checkpoint."""
    leaves = jax.tree.leaves(state)
    return {f"leaf{index:05d}": np.asarray(leaf) for index, leaf in enumerate(leaves)}


def unflatten_state(template: TrainState, flat: Mapping[str, np.ndarray]) -> TrainState:
    treedef = jax.tree.structure(template)
    leaves = [flat[f"leaf{index:05d}"] for index in range(treedef.num_leaves)]
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(leaf) for leaf in leaves])


def restore_state(compiled: Compiled, run: RunDir, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
    template = compiled.init_state(compiled.spec.train.seed)
    flat_template = flatten_state(template)
    flat, extra = run.restore_checkpoint(step, target=flat_template)
    return unflatten_state(template, flat), extra


class _Stop(Exception):
    """Raised by the SIGTERM handler so the loop saves and exits like on Ctrl-C."""


def _host_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}


def compile_and_train(
    spec: Spec | str | Path | None = None,
    *,
    out: str | Path = "runs",
    overrides: Iterable[str] = (),
    resume: str | Path | None = None,
    progress: bool = True,
    evaluate_at_end: bool = True,
) -> TrainResult:
    """Compile a spec and train it, writing a run folder; or continue one with ``resume``.

    >>> result = compile_and_train("gmgan_digits", overrides=["train.steps=10"])  # doctest: +SKIP
    >>> result.run_dir                                                            # doctest: +SKIP
    """
    overrides = list(overrides)
    if resume is not None:
        run = RunDir(resume)
        if not run.spec_path.exists():
            raise TrainError(f"--resume {resume}: not a run folder (no {run.spec_path.name})")
        saved = load_spec(run.spec_path)
        spec = load_spec(run.spec_path, overrides=overrides)
        if model_part(saved) != model_part(spec):
            changed = sorted(k for k in model_part(spec) if model_part(spec).get(k) != model_part(saved).get(k))
            raise TrainError(
                f"--resume {resume}: the overrides change the model ({', '.join(changed)}); "
                "only training-loop settings (steps, logging, evaluation) may change on resume"
            )
        if overrides:
            run.write_spec(spec.to_yaml())
    else:
        if spec is None:
            raise TrainError("compile_and_train needs a spec or resume=RUN_DIR")
        if isinstance(spec, str) and "\n" not in spec:
            from ggdsl.cli import resolve_spec_path

            spec = resolve_spec_path(spec)  # a bundled spec's name, as the docstring shows
        if not isinstance(spec, Spec):
            spec = load_spec(spec, overrides=overrides)
        elif overrides:
            spec = load_spec(spec.to_dict(), overrides=overrides)
        # Data and networks are checked before the run folder exists, so a bad spec or a
        # missing dataset leaves nothing behind.
        enable_compilation_cache()
        dataset, compiled = open_dataset(spec, "train"), compile_spec(spec)
        run = RunDir.create(out, spec.name)
        run.write_spec(spec.to_yaml())
        return _train(spec, run, False, progress, evaluate_at_end, dataset, compiled)
    return _train(spec, run, True, progress, evaluate_at_end)


def _train(
    spec: Spec, run: RunDir, resuming: bool, progress: bool, evaluate_at_end: bool, dataset=None, compiled=None
) -> TrainResult:
    from ggdsl.data import Batches, prefetch

    train_cfg = spec.train
    enable_compilation_cache()
    dataset = dataset if dataset is not None else open_dataset(spec, "train")
    batches = Batches(dataset, dict(spec.data.observe), train_cfg.batch_size, seed=train_cfg.seed)
    compiled = compiled if compiled is not None else compile_spec(spec)
    start = 0
    if resuming and run.latest_step() is not None:
        state, extra = restore_state(compiled, run)
        start = int(extra["step"])
        batches.restore(extra["data"])
    else:
        state = compiled.init_state(train_cfg.seed)
    step_fn = compiled.make_step(jax.random.key(train_cfg.seed))
    feed = prefetch(batches, size=3)
    previous_handler = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        raise _Stop()

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        previous_handler = None

    def checkpoint(at: int) -> None:
        run.save_checkpoint(
            at, flatten_state(state), {"step": at, "data": feed.state() or batches.state(), "time": time.time()}
        )

    bar = _Progress(train_cfg.steps, start) if progress else None
    step = start
    last: dict[str, float] = {}
    t_log, s_log = time.perf_counter(), start
    try:
        while step < train_cfg.steps:
            batch = next(feed)
            state, metrics = step_fn(state, batch)
            step += 1
            if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                last = _host_metrics(metrics)
                now = time.perf_counter()
                rate = (step - s_log) / max(now - t_log, 1e-9)
                t_log, s_log = now, step
                bad = [k for k, v in last.items() if not np.isfinite(v)]
                if bad:
                    raise TrainError(
                        f"step {step}: non-finite {', '.join(bad)}; the last good checkpoint is kept "
                        f"in {run.checkpoints_dir}"
                    )
                run.append_metrics({"step": step, "steps_per_s": rate, **last})
                if bar is not None:
                    bar.update(step, rate, last)
            if step % train_cfg.checkpoint_every == 0:
                checkpoint(step)
            if step % train_cfg.eval_every == 0 and step < train_cfg.steps:
                _periodic_eval(compiled, state, run, step)
        checkpoint(step)
    except (KeyboardInterrupt, _Stop):
        checkpoint(step)
        if bar is not None:
            bar.close()
        print(f"stopped at step {step}; checkpoint saved; continue with: ggdsl compile-and-train --resume {run.path}")
        raise KeyboardInterrupt from None
    finally:
        feed.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if bar is not None:
        bar.close()
    evaluation = {}
    if evaluate_at_end and spec.eval:
        from ggdsl.evaluate.run_eval import evaluate_state

        evaluation = evaluate_state(compiled, state, run, step=step)
        run.write_eval(evaluation)
    result = TrainResult(run.path, step, last, evaluation)
    if progress:
        _print_summary(result, run)
    return result


def _periodic_eval(compiled: Compiled, state: TrainState, run: RunDir, step: int) -> None:
    from ggdsl.evaluate.run_eval import quick_eval

    record = quick_eval(compiled, state, run, step)
    if record:
        run.append_metrics({"step": step, **{f"eval/{k}": v for k, v in record.items()}})


def _print_summary(result: TrainResult, run: RunDir) -> None:
    print(f"trained {result.step} steps")
    for key, value in result.evaluation.items():
        if isinstance(value, (int, float)):
            print(f"  {key}: {value:.4f}")
    print(f"metrics: {run.metrics_path}")
    print(f"figures: {run.figures_dir}")
    if run.eval_path.exists():
        print(f"evaluation: {run.eval_path}")


class _Progress:
    """A rich progress bar with steps/s and the main losses."""

    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, info="")
        self.progress.start()

    def update(self, step: int, rate: float, metrics: Mapping[str, float]) -> None:
        acc = " ".join(f"{k[6:]}={v:.2f}" for k, v in metrics.items() if k.startswith("d_acc/"))
        info = f"{rate:.1f} steps/s d={metrics.get('d_loss', 0):.3f} g={metrics.get('g_loss', 0):.3f} acc[{acc}]"
        self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        self.progress.stop()


__all__ = ["TrainResult", "compile_and_train", "open_dataset", "restore_state"]
