"""compile-and-train: the training loop around the compiled step.

The host loop only feeds batches (prefetched on a thread), logs every ``log_every``
steps, checkpoints every ``checkpoint_every`` steps (orbax, written to a temporary name
and renamed), and evaluates every ``eval_every`` steps. The PRNG key of step ``s`` is
``fold_in(key(seed), s)`` and the data order is a function of (seed, epoch), so a resumed
run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ggdsl.compiled import Compiled, TrainState, compile_spec, enable_compilation_cache
from ggdsl.errors import DataError, TrainError
from ggdsl.parallel import DataParallel, broadcast_text, is_primary, to_host, wait_for_primary
from ggdsl.runs import RunDir
from ggdsl.spec.ir import Spec
from ggdsl.spec.load import load_spec
from ggdsl.tensorboard_log import EventLog


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
                f"data.observe.{var_name}: feature '{feature}' of {dataset.name} has shape "
                f"{list(got) if got is not None else None}, but model.{var_name} needs {list(expected)}"
            )
    return dataset


def model_part(spec: Spec) -> dict[str, Any]:
    """The part of a spec that defines the model (a resume must not change it)."""
    full = spec.to_dict()
    return {k: v for k, v in full.items() if k not in ("train", "eval", "name")} | {
        "train": {
            k: full["train"][k]
            for k in ("optimizer", "critic_optimizer", "critic_steps", "seed", "batch_size", "holdout")
            if k in full["train"]
        }
    }


#: Spec keys a resume may change: they steer the loop, not the model or its random stream.
TRAINING_ONLY_KEYS = (
    "name",
    "eval",
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.on_nonfinite",
    "train.devices",
    "train.select",
)


def model_hash(spec: Spec) -> str:
    """SHA-256 of :func:`model_part` (canonical JSON), stored with every checkpoint."""
    text = json.dumps(model_part(spec), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _show(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False) if value is not _ABSENT else "(absent)"


_ABSENT = object()


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The differences between two nested dicts, one ``dotted.key: old -> new`` line each.

    >>> spec_changes({"model": {"h": {"shape": [16]}}}, {"model": {"h": {"shape": [8]}}})
    ['model.h.shape: [16] -> [8]']
    """
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changes += spec_changes(a, b, path)
        elif a != b:
            changes.append(f"{path}: {_show(a)} -> {_show(b)}")
    return changes


def _refuse_model_change(resume: Any, changes: list[str], why: str) -> TrainError:
    allowed = ", ".join(TRAINING_ONLY_KEYS)
    return TrainError(
        f"--resume {resume}: {why} change the model: {'; '.join(changes)}. "
        f"Only training-loop settings may change on resume ({allowed})"
    )


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


def _differences(mine: Any, theirs: Any) -> list[str]:
    """Paths whose shape or presence differ between two state trees (empty when they match)."""
    ours = {jax.tree_util.keystr(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(mine)}
    other = {jax.tree_util.keystr(path): np.shape(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(theirs)}
    out = [f"{p}: {other[p]} there, {ours[p]} here" for p in ours if p in other and other[p] != ours[p]]
    out += [f"{p}: only here" for p in ours if p not in other]
    out += [f"{p}: only there" for p in other if p not in ours]
    return out


def initial_weights(compiled: Compiled, state: TrainState, config: Mapping[str, Any]) -> tuple[TrainState, str]:
    """``train.init_from``: ``state`` with the generators and extractors of another run's
    checkpoint, and its discriminators where theirs have the same structure and shapes.

    Optimiser states, the step and the data order stay fresh. Returns the state and a line
    that says what was taken.

    Raises:
        TrainError: No such run or checkpoint, or its generators and extractors differ from
            this spec's (the message lists the first differences).
    """
    source = RunDir(config["run"])
    if not source.spec_path.exists():
        raise TrainError(f"train.init_from: {source.path} is not a run folder (no {source.spec_path.name})")
    theirs_spec = load_spec(source.spec_path)
    theirs, extra = restore_state(compile_spec(theirs_spec), source, config.get("step"))
    where = f"{source.path}, step {extra['step']}"
    differ = _differences(state["g_params"], theirs["g_params"]) + _differences(state["g_rest"], theirs["g_rest"])
    if differ:
        shown = "; ".join(differ[:5]) + (f"; and {len(differ) - 5} more" if len(differ) > 5 else "")
        raise TrainError(f"train.init_from: the generators and extractors of {where} differ from this spec's: {shown}")
    taken = {"g_params": theirs["g_params"], "g_rest": theirs["g_rest"]}
    if "g_ema" in state:
        taken["g_ema"] = theirs.get("g_ema", theirs["g_params"])
    critics = not (
        _differences(state["d_params"], theirs["d_params"]) or _differences(state["d_rest"], theirs["d_rest"])
    )
    if critics:
        taken |= {"d_params": theirs["d_params"], "d_rest": theirs["d_rest"]}
    state = {**state, **jax.tree.map(jax.numpy.asarray, taken)}
    state["g_opt"] = compiled.g_tx.init(state["g_params"])
    state["d_opt"] = compiled.d_tx.init(state["d_params"])
    what = (
        "generators, extractors and discriminators"
        if critics
        else "generators and extractors (fresh discriminators: theirs differ)"
    )
    return state, f"init_from: {what} of {where}"


def open_training_data(spec: Spec):
    """The training split less ``train.holdout`` examples, and those held out (or ``None``)."""
    from ggdsl.data.dataset import split_holdout

    return split_holdout(open_dataset(spec, "train"), spec.train.holdout)


def open_batches(spec: Spec, dataset):
    """The spec's minibatches over ``dataset`` (checks the batch size against the data)."""
    from ggdsl.data import Batches

    return Batches(dataset, dict(spec.data.observe), spec.train.batch_size, seed=spec.train.seed)


class _Signals:
    """SIGINT and SIGTERM set a flag that the loop reads between steps.

    The loop then says so, saves a checkpoint of the step it finished and stops; with at most
    one step queued behind the running one, that is within about two steps' time. A second
    signal before that raises :class:`KeyboardInterrupt` at once (no checkpoint is written).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


_GENERATOR_METRICS = ("g_loss", "g_adv", "recon", "latent_recon")


def _describe_metric(name: str) -> str:
    head, _, group = name.partition("/")
    if group:
        return f"{name} (discriminator {group})"
    if name == "d_loss":
        return "d_loss (the discriminators' weighted sum)"
    if name in _GENERATOR_METRICS:
        return f"{name} (the generator side)"
    return name


def nonfinite_message(step: int, flags: Mapping[str, bool], metric_names: Iterable[str]) -> str:
    """``step N: non-finite d_loss/x|h (discriminator x|h), ...; parameters: ...``."""
    metric_names = set(metric_names)
    metrics = [_describe_metric(k) for k, bad in flags.items() if bad and k in metric_names]
    parts = [k for k, bad in flags.items() if bad and k not in metric_names]
    found = []
    if metrics:
        found.append(", ".join(metrics))
    if parts:
        found.append(f"parameters or optimiser state of {', '.join(parts)}")
    return f"step {step}: non-finite {'; '.join(found) or 'values'}"


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
    profile: int = 0,
) -> TrainResult:
    """Compile a spec and train it, writing a run folder; or continue one with ``resume``.

    ``profile=N`` records a JAX profiler trace of N steps (after the first, compiled, step)
    into ``RUN/profile/``, readable by TensorBoard's profile plugin or Perfetto.

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
        changes = spec_changes(model_part(saved), model_part(spec))
        if changes:
            raise _refuse_model_change(resume, changes, "the overrides would")
        if run.latest_step() is not None:
            # spec.yaml may have been edited since the checkpoint was written: compare the
            # model the checkpoint was trained with (its hash, and the model part itself).
            extra = run.read_checkpoint_extra()
            if extra.get("model_hash") not in (None, model_hash(spec)):
                changes = spec_changes(extra.get("model") or {}, model_part(spec)) or ["(details not recorded)"]
                why = f"{run.spec_path} differs from the model of checkpoint {extra.get('step')}; the edits"
                raise _refuse_model_change(resume, changes, why)
        if overrides and is_primary():
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
        dataset, held = open_training_data(spec)
        open_batches(spec, dataset)  # e.g. a dataset smaller than one batch
        compiled = compile_spec(spec)
        DataParallel(spec.train.devices, spec.train.batch_size)  # a bad device count fails here too
        if is_primary():
            run = RunDir.create(out, spec.name)
            run.write_spec(spec.to_yaml())
        run = RunDir(broadcast_text(str(run.path) if is_primary() else ""))
        return _train(spec, run, False, progress, evaluate_at_end, (dataset, held), compiled, profile=profile)
    return _train(spec, run, True, progress, evaluate_at_end, profile=profile)


class _Profile:
    """A ``jax.profiler`` trace of ``steps`` steps, from the second step this process runs."""

    def __init__(self, steps: int, folder: Path):
        self.steps, self.folder, self.seen, self.active = steps, folder, 0, False

    def after_step(self, state: Any) -> None:
        if self.steps <= 0:
            return
        self.seen += 1
        if self.seen == 1:
            jax.block_until_ready(state)
            self.folder.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.folder))
            self.active = True
        elif self.active and self.seen == self.steps + 1:
            self.stop(state)

    def stop(self, state: Any = None) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            print(f"profile: {self.folder}", flush=True)


def _train(
    spec: Spec,
    run: RunDir,
    resuming: bool,
    progress: bool,
    evaluate_at_end: bool,
    data=None,
    compiled=None,
    *,
    profile: int = 0,
) -> TrainResult:
    from ggdsl.data import prefetch

    train_cfg = spec.train
    primary = is_primary()  # in a multi-process run, process 0 alone writes the run folder
    progress = progress and primary
    enable_compilation_cache()
    dataset, held = data if data is not None else open_training_data(spec)
    batches = open_batches(spec, dataset)
    compiled = compiled if compiled is not None else compile_spec(spec)
    start, skipped, restored = 0, 0, False
    if resuming and run.latest_step() is not None:
        restored = True
        state, extra = restore_state(compiled, run)
        start, skipped = int(extra["step"]), int(extra.get("skipped", 0))
        batches.restore(extra["data"])
    else:
        state = compiled.init_state(train_cfg.seed)
        if train_cfg.init_from is not None:
            state, note = initial_weights(compiled, state, train_cfg.init_from)
            if primary and progress:
                print(note, flush=True)
    parallel = DataParallel(train_cfg.devices, train_cfg.batch_size)
    state = parallel.state(state)
    if resuming and primary:
        # Records logged after the checkpoint are logged again as training repeats those steps.
        run.truncate_metrics(start)
    # TensorBoard mirrors metrics.jsonl (and drops the same later events on resume).
    events = EventLog(run.tb_dir, resume_step=start if resuming else None) if primary else None
    step_fn = compiled.make_guarded_step(jax.random.key(train_cfg.seed), train_cfg.on_nonfinite)
    skip = train_cfg.on_nonfinite == "skip"
    hash_, model = model_hash(spec), model_part(spec)
    feed = prefetch(batches, size=3)
    guard: dict[str, Any] | None = None
    metric_names: list[str] = []

    def check_guard() -> None:
        """Raises (stop mode) when a step so far was non-finite; one host sync."""
        if guard is None or skip:
            return
        first_bad = int(guard["first_bad"])
        if first_bad < 0:
            return
        flags = {k: bool(v) for k, v in jax.device_get(guard["flags"]).items()}
        latest = run.latest_step()
        kept = (
            f"the last good checkpoint, step {latest}, is kept in {run.checkpoints_dir}"
            if latest is not None
            else "no checkpoint had been saved yet"
        )
        raise TrainError(
            f"{nonfinite_message(first_bad, flags, metric_names)}; training stopped "
            f"(train.on_nonfinite: stop) and {kept}. To skip such steps instead, resume with "
            f"--set train.on_nonfinite=skip"
        )

    def checkpoint(at: int) -> None:
        check_guard()  # a non-finite state is never saved
        total_skipped = int(guard["skipped"]) if guard is not None else skipped
        if not primary or at in run.checkpoint_steps():
            return
        score = None
        if train_cfg.select != "last":
            from ggdsl.evaluate.run_eval import selection_score

            score = selection_score(compiled, to_host(state), run, at, held)
            record = {"step": at, f"select/{train_cfg.select}": score}
            run.append_metrics(record)
            events.add_record(record)
        run.save_checkpoint(
            at,
            flatten_state(state),
            {
                "step": at,
                "data": feed.state() or batches.state(),
                "time": time.time(),
                "model_hash": hash_,
                "model": model,
                "skipped": total_skipped,
            },
            score=score,
        )

    pretraining = train_cfg.pretrain is not None and not restored
    bar = _Progress(train_cfg.steps, start) if progress and not pretraining else None
    step = start
    last: dict[str, float] = {}
    t_log, s_log = time.perf_counter(), start
    signals = _Signals()
    in_flight: Any = None  # the previous step's metrics (never donated, so safe to wait on)
    profiler = _Profile(profile if primary else 0, run.path / "profile")
    try:
        with signals:
            if pretraining:
                state = _pretrain(compiled, state, feed, parallel, dataset, run, events, signals, progress)
                bar = _Progress(train_cfg.steps, start) if progress else None
            while step < train_cfg.steps and signals.received is None:
                batch = parallel.batch(next(feed))
                if guard is None:
                    guard = step_fn.init_guard(state, batch, skipped)
                    metric_names = [k for k in guard["flags"] if " " not in k]
                state, guard, metrics = step_fn(state, guard, batch)
                # JAX dispatches steps ahead of the computation (a dozen or more on CPU). Waiting for
                # the previous step keeps one queued behind the running one, so a signal, a log line
                # or a checkpoint is at most one step behind the loop's count.
                jax.block_until_ready(in_flight)
                in_flight = metrics
                step += 1
                profiler.after_step(state)
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    last = _host_metrics(metrics)
                    check_guard()
                    now = time.perf_counter()
                    rate = (step - s_log) / max(now - t_log, 1e-9)
                    t_log, s_log = now, step
                    record = {"step": step, "steps_per_s": rate, **last}
                    if skip:
                        # A skipped step's own losses are not finite: they are left out.
                        record = {k: v for k, v in record.items() if np.isfinite(v)}
                        record["skipped_steps"] = int(guard["skipped"])
                        last = {k: v for k, v in record.items() if k not in ("step", "steps_per_s")}
                    if primary:
                        run.append_metrics(record)
                        events.add_record(record)
                    if bar is not None:
                        bar.update(step, rate, last)
                if step % train_cfg.checkpoint_every == 0:
                    checkpoint(step)
                if step % train_cfg.eval_every == 0 and step < train_cfg.steps and primary:
                    _periodic_eval(compiled, to_host(state), run, step, events)
            profiler.stop(state)
            name = signal.Signals(signals.received).name if signals.received is not None else None
            if name is not None and primary:
                print(f"{name}: saving step {step} (a second signal stops without saving)", flush=True)
            checkpoint(step)
            if name is not None:
                print(
                    f"{name}: stopped at step {step}; checkpoint saved; continue with: "
                    f"ggdsl compile-and-train --resume {run.path}",
                    flush=True,
                )
                raise KeyboardInterrupt
    except KeyboardInterrupt as stopped:
        if bar is not None:
            bar.close()
        if signals.received is not None and run.latest_step() != step and not isinstance(stopped, _StoppedEarly):
            print(
                f"stopped at step {step} without a checkpoint; the latest is step {run.latest_step()}",
                flush=True,
            )
        raise
    finally:
        feed.close()
    if bar is not None:
        bar.close()
    evaluation = {}
    if evaluate_at_end and spec.eval and primary:
        from ggdsl.evaluate.run_eval import evaluate_state, run_evaluations

        with events.watch_figures(run.figures_dir, step):
            if train_cfg.select != "last":
                # The checkpoint the selection score picked, as `ggdsl eval` would.
                from ggdsl.run import Run

                evaluation = run_evaluations(Run(run.path), spec.eval)
            else:
                evaluation = evaluate_state(compiled, to_host(state), run, step=step)
        run.write_eval(evaluation)
    wait_for_primary("evaluation")
    result = TrainResult(run.path, step, last, evaluation)
    if progress:
        _print_summary(result, run)
    return result


def _pretrain(compiled, state, feed, parallel, dataset, run, events, signals, progress: bool) -> TrainState:
    """``train.pretrain`` on a fresh state: its summary, and the evaluations of ``eval_every``
    on the pretrained state, go to metrics.jsonl at step 0.

    Interrupted, it saves nothing (a resumed run pretrains again from the start).
    """
    from ggdsl.pretrain import pretrain

    config = compiled.spec.train.pretrain
    bar = _Progress(config["steps"], 0, label="pretrain") if progress else None
    log_every = compiled.spec.train.log_every

    def on_step(step: int, error: Any) -> None:
        if bar is not None and (step % log_every == 0 or step == config["steps"]):
            bar.update_text(step, f"|x - G(E(x))|^2 = {float(error):.3f}")

    batches = (parallel.batch(batch) for batch in feed)
    state, summary = pretrain(
        compiled, to_host(state), batches, dataset, stop=lambda: signals.received is not None, on_step=on_step
    )
    if bar is not None:
        bar.close()
    if summary is None:
        name = signal.Signals(signals.received).name
        print(f"{name}: stopped while pretraining; nothing was saved", flush=True)
        raise _StoppedEarly
    if is_primary():
        record = {"step": 0, **summary}
        run.append_metrics(record)
        events.add_record(record)
        if progress:
            shown = ", ".join(f"{k.removeprefix('pretrain/')} {v:.4g}" for k, v in summary.items())
            print(f"pretrained: {shown}", flush=True)
        _periodic_eval(compiled, state, run, 0, events)  # where the adversarial steps start from
    return parallel.state(state)


class _StoppedEarly(KeyboardInterrupt):
    """A signal during ``train.pretrain``: nothing to save, nothing more to say."""


def _periodic_eval(compiled: Compiled, state: TrainState, run: RunDir, step: int, events: EventLog) -> None:
    from ggdsl.evaluate.run_eval import quick_eval

    with events.watch_figures(run.figures_dir, step):
        record = quick_eval(compiled, state, run, step)
    if record:
        record = {"step": step, **{f"eval/{k}": v for k, v in record.items()}}
        run.append_metrics(record)
        events.add_record(record)


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

    def __init__(self, total: int, start: int, label: str = "train"):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(f"[bold]{label}"),
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
        usage = " ".join(f"{k[6:]}={v:.0f}" for k, v in metrics.items() if k.startswith("usage/"))
        if usage:
            info += f" used[{usage}]"
        self.update_text(step, info)

    def update_text(self, step: int, info: str) -> None:
        self.progress.update(self.task, completed=step, info=info)

    def close(self) -> None:
        self.progress.stop()


__all__ = ["TrainResult", "compile_and_train", "open_dataset", "restore_state"]
