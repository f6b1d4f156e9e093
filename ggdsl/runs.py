"""The run folder: everything one training run writes, and reads back on resume or eval.

::

    runs/gmgan-digits-20250101-120000/
        spec.yaml          the resolved spec (every default filled in)
        metrics.jsonl      one JSON object per logged step, appended as training goes
        checkpoints/       orbax checkpoints, one folder per step (the last few kept)
        figures/           PNG and GIF figures written by evaluation
        tb/                TensorBoard event files: the metrics and figures (ggdsl.tensorboard_log)
        eval.json          the evaluation results
        report.html        one self-contained page of the run, written by ``ggdsl eval``

Writes are crash-safe: a metrics record is one ``write`` plus ``fsync`` of a full line, and
a reader ignores a cut last line; a checkpoint is written to a temporary folder that orbax
renames to its step number only when complete, so a crash mid-save leaves the previous
checkpoints as they were; ``eval.json`` and ``spec.yaml`` are written to a temporary file and
moved into place with ``os.replace``.

Checkpoints hold two items per step: ``state``, a pytree of arrays (JAX or numpy, typed
PRNG keys included) saved with orbax's ``StandardSave``, and ``extra``, a small JSON dict
(data position, configuration hashes, anything a resume needs). Saving is synchronous:
:meth:`RunDir.save_checkpoint` returns once the checkpoint is on disk.

>>> import tempfile
>>> run = RunDir.create(tempfile.mkdtemp(), "demo")
>>> run.append_metrics({"step": 1, "loss_d": 1.38})
>>> run.read_metrics()
[{'step': 1, 'loss_d': 1.38}]

This module imports orbax and JAX only when a checkpoint is saved or restored.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ggdsl.errors import EvalError, TrainError

PathLike = str | os.PathLike[str]

_STATE = "state"
_EXTRA = "extra"
# Orbax writes this file into a step's temporary folder just before renaming it into place.
_COMMIT_FILE = "commit_success.txt"
#: Key of a checkpoint's selection score, in its ``extra`` dict and its orbax metrics.
SELECT_METRIC = "select"
_WORST = 1e300  # a non-finite score, stored as a finite number (JSON)


def _select_metric(metrics: dict[str, Any]) -> float:
    return float(metrics[SELECT_METRIC])


def _json_default(value: Any) -> Any:
    """Makes numpy and JAX scalars and arrays, and paths, JSON-serialisable."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__"):
        array = np.asarray(value)
        return array.item() if array.ndim == 0 else array.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def to_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that also accepts numpy/JAX scalars and arrays and paths.

    Example:
        >>> to_json({"acc": np.float32(0.5), "counts": np.arange(3)})
        '{"acc": 0.5, "counts": [0, 1, 2]}'
    """
    return json.dumps(obj, default=_json_default, **kwargs)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Writes ``text`` so that ``path`` holds either the old content or all of the new.

    The text goes to a temporary file in the same folder, is flushed and fsynced, and then
    replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows).

    Args:
        path: Destination; parent folders are created.
        text: The full new content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, os
        >>> out = write_text_atomic(os.path.join(tempfile.mkdtemp(), "a.txt"), "hi")
        >>> out.read_text()
        'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def write_json_atomic(path: PathLike, obj: Any) -> Path:
    """Writes ``obj`` as indented JSON, atomically (see :func:`write_text_atomic`).

    numpy and JAX scalars and arrays are converted to numbers and lists.

    Example:
        >>> import tempfile, os
        >>> out = write_json_atomic(os.path.join(tempfile.mkdtemp(), "e.json"), {"a": 1})
        >>> json.loads(out.read_text())
        {'a': 1}
    """
    return write_text_atomic(path, to_json(obj, indent=2) + "\n")


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned or "run"


def _normalise_leaves(tree: Any) -> Any:
    """Orbax rejects numpy scalars (``np.float32(1.0)``); 0-d arrays are fine."""
    import jax

    return jax.tree_util.tree_map(lambda leaf: np.asarray(leaf) if isinstance(leaf, np.generic) else leaf, tree)


def _path_name(path: tuple[Any, ...]) -> str:
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _leaf_names(tree: Any) -> set[str]:
    import jax

    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_name(path) for path, _ in leaves}


class RunDir:
    """One run folder: paths, metrics log, checkpoints and atomic JSON outputs.

    ``RunDir(path)`` only names a folder (nothing is created or checked); use
    :meth:`create` for a new run.

    Args:
        path: The run folder.

    Example:
        >>> import tempfile
        >>> run = RunDir.create(tempfile.mkdtemp(), "gmgan digits")
        >>> run.path.name.startswith("gmgan-digits-")
        True
        >>> run.latest_step() is None
        True
    """

    SPEC_FILE = "spec.yaml"
    METRICS_FILE = "metrics.jsonl"
    CHECKPOINTS_DIR = "checkpoints"
    FIGURES_DIR = "figures"
    EVAL_FILE = "eval.json"
    TB_DIR = "tb"
    REPORT_FILE = "report.html"

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, root: PathLike, name: str) -> RunDir:
        """Creates a new, uniquely named run folder ``root/name-YYYYmmdd-HHMMSS[-n]``.

        Two runs started in the same second get ``-1``, ``-2``, ... suffixes; ``mkdir`` is
        atomic, so concurrent processes never share a folder. Characters other than
        letters, digits, ``.``, ``_`` and ``-`` in ``name`` become ``-``.

        Args:
            root: Parent folder (created if needed).
            name: Run name, usually the spec's name.

        Returns:
            The new run, with its ``checkpoints/`` and ``figures/`` folders.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        base = f"{_safe_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        for attempt in range(10_000):
            path = root / (base if attempt == 0 else f"{base}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.checkpoints_dir.mkdir()
            run.figures_dir.mkdir()
            return run
        raise TrainError(f"could not create a unique run folder for {base!r} in {root}")

    @property
    def spec_path(self) -> Path:
        """The resolved spec, ``spec.yaml``."""
        return self.path / self.SPEC_FILE

    @property
    def metrics_path(self) -> Path:
        """The metrics log, ``metrics.jsonl``."""
        return self.path / self.METRICS_FILE

    @property
    def checkpoints_dir(self) -> Path:
        """The orbax checkpoint folder, ``checkpoints/``."""
        return self.path / self.CHECKPOINTS_DIR

    @property
    def figures_dir(self) -> Path:
        """The figure folder, ``figures/``."""
        return self.path / self.FIGURES_DIR

    @property
    def eval_path(self) -> Path:
        """The evaluation results, ``eval.json``."""
        return self.path / self.EVAL_FILE

    @property
    def tb_dir(self) -> Path:
        """The TensorBoard event files, ``tb/`` (see :mod:`ggdsl.tensorboard_log`)."""
        return self.path / self.TB_DIR

    @property
    def report_path(self) -> Path:
        """The run's self-contained page, ``report.html``."""
        return self.path / self.REPORT_FILE

    def is_run(self) -> bool:
        """Whether the folder holds a run (its ``spec.yaml``)."""
        return self.spec_path.is_file()

    def write_spec(self, text: str) -> Path:
        """Writes the resolved spec's YAML text to ``spec.yaml``, atomically."""
        return write_text_atomic(self.spec_path, text)

    def write_eval(self, results: dict[str, Any]) -> Path:
        """Writes evaluation results to ``eval.json``, atomically."""
        return write_json_atomic(self.eval_path, results)

    # ----------------------------------------------------------------------------- metrics

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Appends one record as one JSON line, flushed and fsynced before returning.

        A record counts once its newline is on disk. If the file ends in a cut line (a
        crash mid-write), that fragment is removed first, so the log stays one valid
        record per line after a resume.

        Args:
            record: A dict of JSON-serialisable values (numpy/JAX scalars are converted).

        Raises:
            TypeError: A value cannot be serialised.
        """
        line = to_json(record).encode("utf-8") + b"\n"
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a+b") as stream:
            _drop_cut_line(stream)
            stream.write(line)
            stream.flush()
            os.fsync(stream.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """Reads every complete record of ``metrics.jsonl``, in order.

        Returns:
            The records; empty when the file does not exist. A last line without its
            newline (a write cut short) is ignored.

        Raises:
            EvalError: A complete line is not a JSON object (the message gives its line).
        """
        if not self.metrics_path.exists():
            return []
        lines = self.metrics_path.read_bytes().split(b"\n")
        records = []
        # The segment after the last newline is either empty or a cut record.
        for number, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise EvalError(f"{self.metrics_path}:{number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise EvalError(f"{self.metrics_path}:{number}: expected a JSON object")
            records.append(record)
        return records

    def truncate_metrics(self, step: int) -> int:
        """Drops the records logged after ``step`` (and a cut last line), atomically.

        A resume from the checkpoint of ``step`` logs the later steps again; without this
        they would appear twice. The kept lines are left byte for byte as they were.

        Returns:
            How many records were dropped.
        """
        if not self.metrics_path.exists():
            return 0
        lines = self.metrics_path.read_bytes().split(b"\n")
        kept, dropped = [], 0
        for line in lines[:-1]:  # the segment after the last newline is empty or cut
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            later = isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and record["step"] > step
            if later:
                dropped += 1
            else:
                kept.append(line + b"\n")
        if dropped or lines[-1]:
            write_text_atomic(self.metrics_path, b"".join(kept).decode("utf-8"))
        return dropped

    # -------------------------------------------------------------------------- checkpoints

    def _manager(self, *, max_to_keep: int | None = None, writing: bool = False, keep_best: bool = False) -> Any:
        import orbax.checkpoint as ocp

        registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
        registry.add(_STATE, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(_STATE, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
        registry.add(_EXTRA, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(_EXTRA, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
        policy = None
        if max_to_keep is not None:
            policy = ocp.checkpoint_managers.LatestN(n=max_to_keep)
            if keep_best:
                # The checkpoint with the lowest selection score stays too (train.select).
                best = ocp.checkpoint_managers.BestN(
                    get_metric_fn=_select_metric,
                    reverse=True,
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
                policy = ocp.checkpoint_managers.AnyPreservationPolicy([policy, best])
        import jax

        extra_options = {}
        if jax.process_count() > 1:
            # In a multi-process run, process 0 saves alone (the state is replicated) and
            # each process restores on its own: no process waits for the others here.
            me = jax.process_index()
            extra_options["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}
            )
        options = ocp.CheckpointManagerOptions(
            **extra_options,
            enable_async_checkpointing=False,
            create=writing and not extra_options,  # the run folder made checkpoints/ already
            # Removes temporary folders a crashed save left behind, so that step can be
            # saved again (the temporary name is derived from the step).
            cleanup_tmp_directories=writing,
            preservation_policy=policy,
            # With best_fn set, orbax writes each save's metrics and reads them back.
            **({"best_fn": _select_metric, "best_mode": "min"} if keep_best else {}),
        )
        return ocp.CheckpointManager(self.checkpoints_dir.absolute(), options=options, handler_registry=registry)

    def checkpoint_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending (read from disk, without orbax).

        A folder counts when its name is a step number and it holds orbax's commit marker,
        so temporary folders of an interrupted save never count.
        """
        if not self.checkpoints_dir.is_dir():
            return []
        steps = []
        for entry in self.checkpoints_dir.iterdir():
            if entry.name.isdigit() and (entry / _COMMIT_FILE).is_file():
                steps.append(int(entry.name))
        return sorted(steps)

    def selected_step(self) -> int | None:
        """The checkpoint with the lowest selection score (ties: the later), else the latest.

        Scores are written by training when the spec sets ``train.select``; checkpoints
        without one (e.g. saved before ``select`` was set) are not candidates.
        """
        best: tuple[float, int] | None = None
        for step in self.checkpoint_steps():
            score = self.read_checkpoint_extra(step).get(SELECT_METRIC)
            if score is None:
                continue
            score = float(score)  # written finite by save_checkpoint
            if best is None or score <= best[0]:
                best = (score, step)
        return best[1] if best is not None else self.latest_step()

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or ``None`` when there is none."""
        steps = self.checkpoint_steps()
        return steps[-1] if steps else None

    def save_checkpoint(
        self,
        step: int,
        state: Any,
        extra: dict[str, Any] | None = None,
        *,
        max_to_keep: int | None = 3,
        score: float | None = None,
    ) -> bool:
        """Saves ``state`` and ``extra`` as the checkpoint of ``step``; returns when on disk.

        Orbax writes to ``checkpoints/<step>.orbax-checkpoint-tmp`` and renames it to
        ``checkpoints/<step>`` once complete. Afterwards only the ``max_to_keep`` newest
        checkpoints are kept (``None`` keeps all).

        Args:
            step: The training step (a non-negative int).
            state: A pytree of JAX/numpy arrays and Python scalars (typed PRNG keys work).
            extra: A JSON-serialisable dict saved beside the arrays.
            max_to_keep: How many checkpoints to keep.
            score: A selection score (lower is better; ``train.select``), stored in
                ``extra`` under ``"select"`` and as the checkpoint's orbax metric. With a
                score, the best-scored checkpoint is kept as well as the ``max_to_keep``
                newest, and :meth:`selected_step` can find it.

        Returns:
            True when written; False when ``step`` already has a checkpoint (it is kept as
            it is, e.g. saving again right after resuming from it).

        Raises:
            TrainError: ``extra`` is not JSON-serialisable, or the save failed.
        """
        step = int(step)
        if step < 0:
            raise TrainError(f"checkpoint step must be non-negative, got {step}")
        if max_to_keep is not None and max_to_keep < 1:
            raise TrainError(f"max_to_keep must be at least 1 (or None), got {max_to_keep}")
        if step in self.checkpoint_steps():
            return False
        metrics = None
        if score is not None:
            metrics = {SELECT_METRIC: float(score) if np.isfinite(score) else _WORST}
            extra = {**(extra or {}), **metrics}  # selected_step and Run read it from here
        try:
            extra_json = json.loads(to_json(extra or {}))
        except (TypeError, ValueError) as error:
            raise TrainError(f"checkpoint extra data must be JSON-serialisable: {error}") from None
        import orbax.checkpoint as ocp

        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardSave(_normalise_leaves(state)),
                _EXTRA: ocp.args.JsonSave(extra_json),
            }
        )
        try:
            with self._manager(max_to_keep=max_to_keep, writing=True, keep_best=score is not None) as manager:
                saved = manager.save(step, args=args, force=True, metrics=metrics)
        except Exception as error:
            raise TrainError(f"could not save checkpoint step {step} to {self.checkpoints_dir}: {error}") from error
        if not saved:
            raise TrainError(f"orbax declined to save checkpoint step {step}")
        return True

    def restore_checkpoint(self, step: int | None = None, target: Any = None) -> tuple[Any, dict[str, Any]]:
        """Restores a checkpoint's state and extra data.

        Args:
            step: The step; ``None`` for the latest complete checkpoint.
            target: A pytree like the saved state (arrays, ``jax.ShapeDtypeStruct``s or
                Python scalars) giving the structure, and each leaf's type: numpy leaves
                come back as numpy arrays, JAX leaves as JAX arrays with the leaf's
                sharding. ``None`` restores the saved tree as JAX arrays, with orbax's
                container types (dicts and lists).

        Returns:
            ``(state, extra)``.

        Raises:
            TrainError: No such run or checkpoint, or ``target`` does not match the saved
                state (structure or shapes); the message says what differs.
        """
        steps = self.checkpoint_steps()
        if not steps:
            where = (
                f"run folder {self.path} does not exist"
                if not self.path.exists()
                else f"{self.checkpoints_dir} holds no complete checkpoint"
            )
            raise TrainError(f"cannot restore a checkpoint: {where}")
        if step is None:
            step = steps[-1]
        elif int(step) not in steps:
            raise TrainError(
                f"no checkpoint for step {step} in {self.checkpoints_dir}; "
                f"available steps: {', '.join(map(str, steps))}"
            )
        import orbax.checkpoint as ocp

        template = None if target is None else _normalise_leaves(target)
        args = ocp.args.Composite(
            **{
                _STATE: ocp.args.StandardRestore(template),
                _EXTRA: ocp.args.JsonRestore(),
            }
        )
        with self._manager() as manager:
            if template is not None:
                _check_dtypes(manager, int(step), template, self.checkpoints_dir)
            try:
                restored = manager.restore(int(step), args=args)
            except Exception as error:
                detail = self._structure_difference(manager, int(step), template) or str(error)
                raise TrainError(
                    f"checkpoint step {step} in {self.checkpoints_dir} does not match the expected state: {detail}"
                ) from error
        state = restored[_STATE]
        if template is not None:
            _check_shapes(template, state, step, self.checkpoints_dir)
        return state, dict(restored[_EXTRA] or {})

    def read_checkpoint_extra(self, step: int | None = None) -> dict[str, Any]:
        """The ``extra`` dict of a checkpoint (the latest when ``step`` is None), without its arrays.

        Raises:
            TrainError: No such checkpoint, or it cannot be read.
        """
        steps = self.checkpoint_steps()
        if not steps or (step is not None and int(step) not in steps):
            which = "(latest)" if step is None else step
            raise TrainError(f"no checkpoint for step {which} in {self.checkpoints_dir}")
        step = steps[-1] if step is None else int(step)
        import orbax.checkpoint as ocp

        try:
            with self._manager() as manager:
                restored = manager.restore(step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))
        except Exception as error:
            raise TrainError(f"cannot read checkpoint step {step} in {self.checkpoints_dir}: {error}") from error
        return dict(restored[_EXTRA] or {})

    def _structure_difference(self, manager: Any, step: int, template: Any) -> str | None:
        if template is None:
            return None
        try:
            saved = manager.item_metadata(step)[_STATE].tree
        except Exception:
            return None
        saved_names, expected_names = _leaf_names(saved), _leaf_names(template)
        missing = sorted(expected_names - saved_names)
        unexpected = sorted(saved_names - expected_names)
        if not missing and not unexpected:
            return None
        parts = []
        if missing:
            parts.append(f"not in the checkpoint: {', '.join(missing[:10])}")
        if unexpected:
            parts.append(f"in the checkpoint but not expected: {', '.join(unexpected[:10])}")
        return "; ".join(parts)


def _check_dtypes(manager: Any, step: int, template: Any, where: Path) -> None:
    """Orbax casts to the template's dtype; a different dtype means a different model."""
    import jax

    try:
        saved_tree = manager.item_metadata(step)[_STATE].tree
    except Exception:
        return  # the restore itself reports an unreadable checkpoint
    saved = {
        _path_name(path): np.dtype(leaf.dtype)
        for path, leaf in jax.tree_util.tree_flatten_with_path(saved_tree)[0]
        if getattr(leaf, "dtype", None) is not None
    }
    wrong = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        dtype = getattr(leaf, "dtype", None)
        name = _path_name(path)
        if dtype is None or name not in saved or jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
            continue
        if np.dtype(dtype) != saved[name]:
            wrong.append(f"{name}: saved {saved[name]}, expected {np.dtype(dtype)}")
    if wrong:
        raise TrainError(
            f"checkpoint step {step} in {where} does not match the expected state: " + "; ".join(wrong[:10])
        )


def _check_shapes(template: Any, state: Any, step: int, where: Path) -> None:
    """Orbax restores a saved array's own shape even when the template's differs."""
    import jax

    expected, _ = jax.tree_util.tree_flatten_with_path(template)
    restored = jax.tree_util.tree_leaves(state)
    if len(restored) != len(expected):
        raise TrainError(
            f"checkpoint step {step} in {where} does not match the expected state: "
            f"{len(restored)} arrays restored, {len(expected)} expected"
        )
    wrong = [
        f"{_path_name(path)}: saved {np.shape(got)}, expected {np.shape(leaf)}"
        for (path, leaf), got in zip(expected, restored, strict=True)
        if np.shape(leaf) != np.shape(got)
    ]
    if wrong:
        raise TrainError(
            f"checkpoint step {step} in {where} does not match the expected state: " + "; ".join(wrong[:10])
        )


def _drop_cut_line(stream: Any) -> None:
    """Truncates a binary file opened ``a+b`` back to just after its last newline."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    if size == 0:
        return
    stream.seek(size - 1)
    if stream.read(1) == b"\n":
        return
    position, chunk = size, 4096
    while position > 0:
        start = max(0, position - chunk)
        stream.seek(start)
        block = stream.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            stream.truncate(start + newline + 1)
            return
        position = start
    stream.truncate(0)
