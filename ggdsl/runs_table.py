"""``ggdsl runs``: a table of the run folders under a folder.

Each row gives the run folder's name, its spec's name, the step reached and the total
steps, the last losses in ``metrics.jsonl``, the main results in ``eval.json`` (when
there is one) and a status:

- ``finished``: the newest checkpoint is of the last step;
- ``running``: the process that writes the run's newest TensorBoard event file (its
  host and pid are in the file name) is alive on this machine;
- ``stopped``: otherwise (interrupted or crashed; ``--resume`` continues it).

>>> rows = list_runs("runs")                      # doctest: +SKIP
>>> rows[0].status, rows[0].step, rows[0].steps   # doctest: +SKIP
('finished', 3000, 3000)
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ggdsl.errors import EvalError
from ggdsl.runs import RunDir
from ggdsl.spec.yamltree import load_value
from ggdsl.tensorboard_log import writer_process

PathLike = str | os.PathLike[str]

#: The losses shown, from the last record of ``metrics.jsonl`` that has them.
LOSS_KEYS = ("d_loss", "g_loss")
#: The results shown from ``eval.json``, when present.
EVAL_KEYS = ("clustering_accuracy", "reconstruction_mse", "video_reconstruction_mse")
# Shorter column titles for the terminal table (the JSON keeps the full names).
_TITLES = {
    "clustering_accuracy": "cluster acc",
    "reconstruction_mse": "recon mse",
    "video_reconstruction_mse": "video mse",
}


@dataclass(frozen=True)
class RunSummary:
    """One row of ``ggdsl runs``."""

    run: str
    path: str
    spec: str | None
    step: int | None
    steps: int | None
    status: str
    losses: dict[str, float] = field(default_factory=dict)
    eval: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready data (what ``ggdsl runs --json`` prints)."""
        return asdict(self)


def _read_spec(run: RunDir) -> tuple[str | None, int | None]:
    """The spec's name and ``train.steps``, read as plain YAML (no defaults, no checks)."""
    try:
        data = load_value(run.spec_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise EvalError(f"{run.spec_path}: cannot be read ({error})") from None
    if not isinstance(data, dict):
        raise EvalError(f"{run.spec_path}: not a spec (expected a mapping)")
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    steps = train.get("steps")
    return data.get("name"), steps if isinstance(steps, int) else None


def _read_eval(run: RunDir) -> dict[str, Any]:
    if not run.eval_path.exists():
        return {}
    try:
        results = json.loads(run.eval_path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise EvalError(f"{run.eval_path}: not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise EvalError(f"{run.eval_path}: expected a JSON object")
    return results


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _running(run: RunDir) -> bool:
    """Whether the process that opened the newest event file still runs here."""
    writer = writer_process(run.tb_dir)
    if writer is None:
        return False
    host, pid = writer
    # This very process is the one listing, so it is not training that run now.
    return host == socket.gethostname() and pid != os.getpid() and _process_alive(pid)


def summarize_run(path: PathLike) -> RunSummary:
    """The :class:`RunSummary` of one run folder.

    Raises:
        EvalError: ``path`` is not a run folder, or a file in it cannot be read (the
            message names it).
    """
    run = RunDir(path)
    if not run.is_run():
        raise EvalError(f"{run.path}: not a run folder (no {run.SPEC_FILE})")
    spec_name, steps = _read_spec(run)
    records = run.read_metrics()
    checkpoint = run.latest_step()
    logged = [int(r["step"]) for r in records if isinstance(r.get("step"), int)]
    reached = max([*logged, *([checkpoint] if checkpoint is not None else [])], default=None)
    losses: dict[str, float] = {}
    for record in records:
        losses.update({k: record[k] for k in LOSS_KEYS if isinstance(record.get(k), int | float)})
    results = _read_eval(run)
    evaluation = {k: results[k] for k in EVAL_KEYS if isinstance(results.get(k), int | float)}
    if checkpoint is not None and steps is not None and checkpoint >= steps:
        status = "finished"
    elif _running(run):
        status = "running"
    else:
        status = "stopped"
    return RunSummary(run.path.name, str(run.path), spec_name, reached, steps, status, losses, evaluation)


def list_runs(folder: PathLike = "runs") -> list[RunSummary]:
    """Every run folder directly in ``folder`` (or ``folder`` itself when it is one), by name.

    Raises:
        EvalError: ``folder`` does not exist, or a run's files cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvalError(f"{folder}: no such folder")
    if RunDir(folder).is_run():
        return [summarize_run(folder)]
    return [summarize_run(entry) for entry in sorted(folder.iterdir()) if entry.is_dir() and RunDir(entry).is_run()]


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def table_rows(summaries: Sequence[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """The table as text: headers, then one row per run (eval columns only where some run has them).

    >>> row = RunSummary("r", "runs/r", "toy", 5, 10, "stopped", {"d_loss": 1.25}, {})
    >>> table_rows([row])
    (['run', 'spec', 'step', 'd_loss', 'g_loss', 'status'], [['r', 'toy', '5/10', '1.25', '', 'stopped']])
    """
    eval_keys = [k for k in EVAL_KEYS if any(k in s.eval for s in summaries)]
    headers = ["run", "spec", "step", *LOSS_KEYS, *eval_keys, "status"]
    rows = []
    for s in summaries:
        step = f"{'' if s.step is None else s.step}/{'' if s.steps is None else s.steps}"
        rows.append(
            [
                s.run,
                s.spec or "",
                step,
                *(_number(s.losses.get(k)) for k in LOSS_KEYS),
                *(_number(s.eval.get(k)) for k in eval_keys),
                s.status,
            ]
        )
    return headers, rows


def runs_table(summaries: Sequence[RunSummary], title: str | None = None):
    """A :class:`rich.table.Table` of :func:`table_rows`."""
    from rich.table import Table

    headers, rows = table_rows(summaries)
    table = Table(title=title)
    for header in headers:
        numeric = header in LOSS_KEYS or header in EVAL_KEYS or header == "step"
        # Narrow terminals fold the long run names rather than cutting the status short.
        table.add_column(
            _TITLES.get(header, header),
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=header in ("step", "status"),
        )
    for row in rows:
        table.add_row(*row)
    return table


__all__ = ["EVAL_KEYS", "LOSS_KEYS", "RunSummary", "list_runs", "runs_table", "summarize_run", "table_rows"]
