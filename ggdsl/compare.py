"""``ggdsl compare``: the training curves of several runs on shared axes.

One subplot per metric, one line per run, the runs named in a legend. Curves come from
each run's ``metrics.jsonl``; a metric name may be a pattern (``d_acc/*``), which stands
for every metric it matches, each in its own subplot.

>>> figure = compare_runs(["runs/a", "runs/b"], "curves.png", metrics=["d_loss", "eval/*"])  # doctest: +SKIP
>>> len(figure.axes)                                                                          # doctest: +SKIP
3
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ggdsl.errors import EvalError
from ggdsl.runs import RunDir

PathLike = str | os.PathLike[str]

#: Plotted when no metric is asked for: the two players' losses and every ``eval/`` metric.
DEFAULT_METRICS = ("d_loss", "g_loss", "eval/*")

# Series this short are drawn with markers, so a single evaluation still shows.
_MARKER_BELOW = 30


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_names(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric metrics of some records, in order of first appearance (``step`` left out).

    >>> metric_names([{"step": 1, "d_loss": 1.0}, {"step": 2, "eval/mse": 0.1, "note": "x"}])
    ['d_loss', 'eval/mse']
    """
    names: dict[str, None] = {}
    for record in records:
        names.update((name, None) for name, value in record.items() if name != "step" and _is_number(value))
    return list(names)


def expand_metrics(patterns: Sequence[str], available: Sequence[str], *, strict: bool = True) -> list[str]:
    """The metrics that ``patterns`` (names or ``fnmatch`` patterns) pick from ``available``.

    Args:
        patterns: Names or patterns, in the order wanted.
        available: The metrics there are.
        strict: Raise when a pattern matches nothing (else it is left out).

    Raises:
        EvalError: A pattern matches no metric (the message lists the metrics there are).

    >>> expand_metrics(["g_loss", "d_acc/*"], ["d_loss", "g_loss", "d_acc/x|h", "d_acc/h|k"])
    ['g_loss', 'd_acc/x|h', 'd_acc/h|k']
    """
    chosen: dict[str, None] = {}
    for pattern in patterns:
        matched = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not matched and strict:
            raise EvalError(f"no metric '{pattern}' in the runs; there are: {', '.join(available) or '(none)'}")
        chosen.update(dict.fromkeys(matched))
    return list(chosen)


def series(records: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of one metric (records without it, or with a non-number, are skipped).

    >>> series([{"step": 1, "a": 2.0}, {"step": 2}, {"step": 3, "a": 1.0}], "a")
    ([1, 3], [2.0, 1.0])
    """
    steps, values = [], []
    for position, record in enumerate(records):
        value = record.get(metric)
        if _is_number(value):
            steps.append(record.get("step", position))
            values.append(value)
    return steps, values


def curves_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str]) -> Figure:
    """A figure with one subplot per metric and one line per run, on a shared step axis.

    Args:
        runs: Metric records (as in ``metrics.jsonl``) by run name; the names go in the legend.
        metrics: Metric names, one subplot each, in this order.

    Returns:
        A :class:`~matplotlib.figure.Figure` on the Agg canvas, with ``len(metrics)`` axes.

    >>> figure = curves_figure({"a": [{"step": 1, "d_loss": 1.0}]}, ["d_loss"])
    >>> len(figure.axes), [text.get_text() for text in figure.legends[0].get_texts()]
    (1, ['a'])
    """
    from matplotlib import colormaps

    if not metrics:
        raise EvalError("no metrics to plot")
    columns = 1 if len(metrics) <= 3 else 2
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(6.5 * columns, 2.4 * rows + 0.6))
    FigureCanvasAgg(figure)
    grid = figure.subplots(rows, columns, sharex=True, squeeze=False)
    axes_list = [axes for row in grid for axes in row]
    for extra in axes_list[len(metrics) :]:
        figure.delaxes(extra)
    cmap = colormaps["tab10" if len(runs) <= 10 else "tab20"]
    colours = {name: cmap(index % cmap.N) for index, name in enumerate(runs)}
    for axes, metric in zip(axes_list, metrics, strict=False):
        for name, records in runs.items():
            steps, values = series(records, metric)
            if steps:
                marker = "o" if len(steps) < _MARKER_BELOW else None
                axes.plot(steps, values, color=colours[name], marker=marker, markersize=3, linewidth=1)
        axes.set_title(metric, fontsize=9)
        axes.grid(alpha=0.3)
        axes.tick_params(labelsize=8, labelbottom=True)
    for axes in axes_list[max(0, len(metrics) - columns) : len(metrics)]:
        axes.set_xlabel("step", fontsize=8)
    handles = [Line2D([], [], color=colours[name], linewidth=2) for name in runs]
    figure.legend(handles, list(runs), loc="upper center", ncol=min(len(runs), 3), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.45 / figure.get_figheight() * math.ceil(len(runs) / 3)))
    return figure


def _run_records(path: PathLike) -> list[dict[str, Any]]:
    run = RunDir(path)
    if not run.path.is_dir():
        raise EvalError(f"{run.path}: no such run folder")
    if not run.is_run():
        raise EvalError(f"{run.path}: not a run folder (no {run.SPEC_FILE})")
    records = run.read_metrics()
    if not records:
        raise EvalError(f"{run.metrics_path}: no metrics recorded")
    return records


def _labels(paths: Sequence[PathLike]) -> list[str]:
    """Run folder names; the full paths where two runs share a name."""
    names = [Path(path).name or str(path) for path in paths]
    if len(set(names)) == len(names):
        return names
    return [os.fspath(path) for path in paths]


def compare_runs(
    run_dirs: Sequence[PathLike], output: PathLike | None = None, metrics: Sequence[str] | None = None
) -> Figure:
    """Plots the curves of several runs on shared axes and writes the picture.

    Args:
        run_dirs: Run folders (at least one).
        output: The picture (``.png``, ``.svg``, ``.pdf``); ``None`` writes nothing.
        metrics: Metric names or patterns (``d_acc/*``), one subplot per metric matched;
            default :data:`DEFAULT_METRICS` (those the runs have).

    Returns:
        The figure, one axes per metric.

    Raises:
        EvalError: A folder is not a run or has no metrics, or a metric is in none of the
            runs (the message names the folder, file or metric).
    """
    if not run_dirs:
        raise EvalError("compare needs at least one run folder")
    runs = {label: _run_records(path) for label, path in zip(_labels(run_dirs), run_dirs, strict=True)}
    available = metric_names([record for records in runs.values() for record in records])
    if metrics:
        chosen = expand_metrics(metrics, available)
    else:
        chosen = expand_metrics(DEFAULT_METRICS, available, strict=False)
        if not chosen:
            raise EvalError(
                f"none of {', '.join(DEFAULT_METRICS)} in the runs; choose with --metric from: {', '.join(available)}"
            )
    figure = curves_figure(runs, chosen)
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            figure.savefig(output, dpi=100)
        except ValueError as error:  # an unknown picture format
            raise EvalError(f"{output}: {error}") from None
    return figure


__all__ = ["DEFAULT_METRICS", "compare_runs", "curves_figure", "expand_metrics", "metric_names", "series"]
