"""``report.html``: one self-contained page of a run, written by ``ggdsl eval``.

The page holds the evaluation results as a table, the training curves from
``metrics.jsonl`` (a Matplotlib PNG), every figure in ``figures/`` (sample grids,
reconstructions, t-SNE, ...), the picture of p, q and the discriminators
(:func:`ggdsl.draw.draw`, SVG) and the resolved spec's YAML. Every picture is embedded as a
``data:`` URI and the page has no external reference at all, so it opens offline and can be
mailed or archived as one file. A small inline script marks, once the page has loaded, each
image with ``data-loaded="yes"`` or ``"no"`` and the body with ``data-images="loaded/total"``.

>>> path = write_report("runs/gmgan-digits-20260101-120000")   # doctest: +SKIP
>>> path.name                                                   # doctest: +SKIP
'report.html'
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ggdsl.errors import EvalError
from ggdsl.runs import RunDir, write_text_atomic

MIME_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
}

# Panels of the training curves, in order; "prefix*" groups every metric with that prefix.
CURVE_KEYS = ("d_loss", "g_loss", "g_adv", "d_loss/*", "d_acc/*", "recon", "latent_recon")

_STYLE = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: left; }
td.value { font-family: monospace; text-align: right; }
figure { display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; image-rendering: pixelated; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""

# Records, for each image, whether it decoded (a check that the page is whole).
_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, loaded = 0;
  for (var i = 0; i < images.length; i++) {
    var ok = images[i].complete && images[i].naturalWidth > 0;
    images[i].setAttribute("data-loaded", ok ? "yes" : "no");
    if (ok) { loaded++; }
  }
  document.body.setAttribute("data-images", loaded + "/" + images.length);
});
"""


def data_uri(data: bytes, suffix: str) -> str:
    """``data:<mime>;base64,...`` for the bytes of a file with ``suffix`` (``.png``, ``.svg``, ...).

    >>> data_uri(b"<svg/>", ".svg")
    'data:image/svg+xml;base64,PHN2Zy8+'
    """
    mime = MIME_TYPES.get(suffix.lower())
    if mime is None:
        raise EvalError(f"cannot embed a '{suffix}' file in the report (known: {', '.join(MIME_TYPES)})")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _image(uri: str, alt: str, caption: str | None = None) -> str:
    img = f'<img src="{uri}" alt="{html.escape(alt)}">'
    if caption is None:
        return img
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def format_value(value: Any) -> str:
    """A result as table text: floats to 4 significant digits, lists item by item.

    >>> format_value(0.123456), format_value(7), format_value([0.5, 0.25])
    ('0.1235', '7', '0.5, 0.25')
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(format_value(item) for item in value)
    return str(value)


def _results_table(results: Mapping[str, Any]) -> str:
    if not results:
        return "<p>No evaluation results.</p>"
    rows = "\n".join(
        f'<tr><td class="metric">{html.escape(str(key))}</td>'
        f'<td class="value">{html.escape(format_value(value))}</td></tr>'
        for key, value in results.items()
    )
    return f'<table id="results">\n<tr><th>result</th><th>value</th></tr>\n{rows}\n</table>'


def curve_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The panels of :data:`CURVE_KEYS` that ``records`` have data for.

    >>> curve_keys([{"step": 1, "d_loss": 1.0, "d_acc/x|h": 0.5}, {"step": 2, "eval/mse": 0.1}])
    ['d_loss', 'd_acc/*']
    """
    from ggdsl.compare import metric_names

    names = metric_names(records)
    return [
        key
        for key in CURVE_KEYS
        if (any(name.startswith(key[:-1]) for name in names) if key.endswith("*") else key in names)
    ]


def _curves(records: Sequence[Mapping[str, Any]], run_name: str, workdir: Path) -> str:
    """The losses and accuracies (grouped panels), then the evaluations made during training."""
    from ggdsl.compare import curves_figure, metric_names
    from ggdsl.evaluate.figures import curves_plot

    parts = []
    keys = curve_keys(records)
    if keys:
        path = curves_plot(list(records), keys, workdir / "curves.png")
        parts.append(_image(data_uri(Path(path).read_bytes(), ".png"), "training curves"))
    evaluations = [name for name in metric_names(records) if name.startswith("eval/")]
    if evaluations:
        figure = curves_figure({run_name: records}, evaluations)
        figure.savefig(workdir / "evaluations.png", dpi=100)
        uri = data_uri((workdir / "evaluations.png").read_bytes(), ".png")
        parts.append(_image(uri, "evaluations during training"))
    return "\n".join(parts) or "<p>No training metrics recorded.</p>"


def _figure_order(path: Path) -> tuple[str, int, str]:
    """Figures by name, ``samples_step2`` before ``samples_step10``."""
    match = re.search(r"_step(\d+)$", path.stem)
    base = path.stem[: match.start()] if match else path.stem
    return base, int(match.group(1)) if match else -1, path.name


def _figures(figures_dir: Path) -> str:
    paths = (
        sorted(
            (p for p in figures_dir.glob("*") if p.is_file() and p.suffix.lower() in MIME_TYPES),
            key=_figure_order,
        )
        if figures_dir.is_dir()
        else []
    )
    if not paths:
        return "<p>No figures.</p>"
    return "\n".join(_image(data_uri(p.read_bytes(), p.suffix), p.stem, p.name) for p in paths)


def _graph(spec: Any, workdir: Path) -> str:
    from ggdsl.draw import draw

    path = draw(spec, workdir / "graph.svg", plate=spec.time is not None)
    return _image(data_uri(path.read_bytes(), ".svg"), "p, q and the discriminators")


def render_report(run_dir: str | Path | RunDir, results: Mapping[str, Any] | None = None) -> str:
    """The HTML text of a run's report.

    Args:
        run_dir: The run folder.
        results: The evaluation results; default: the run's ``eval.json`` (none when absent).

    Returns:
        One self-contained HTML document.

    Raises:
        EvalError: ``run_dir`` is not a run folder, or its ``eval.json`` or ``metrics.jsonl``
            cannot be read (the message names the file).
    """
    import json

    from ggdsl.spec.load import load_spec

    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run.is_run():
        raise EvalError(f"{run.path}: not a run folder (no {run.SPEC_FILE})")
    if results is None and run.eval_path.exists():
        try:
            results = json.loads(run.eval_path.read_text(encoding="utf-8"))
        except ValueError as error:
            raise EvalError(f"{run.eval_path}: not valid JSON ({error})") from None
    results = dict(results or {})
    spec_text = run.spec_path.read_text(encoding="utf-8")
    spec = load_spec(run.spec_path)
    records = run.read_metrics()
    reached = records[-1].get("step") if records else None
    step = results.get("step", reached)
    title = f"{spec.name}: {run.path.name}"
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        sections = [
            ("Evaluation", _results_table(results)),
            ("Training curves", _curves(records, run.path.name, workdir)),
            ("Figures", _figures(run.figures_dir)),
            ("Model: p, q and the discriminators", _graph(spec, workdir)),
            ("Spec", f"<pre>{html.escape(spec_text)}</pre>"),
        ]
    body = "\n".join(f"<h2>{html.escape(name)}</h2>\n{content}" for name, content in sections)
    facts = f"run folder <code>{html.escape(run.path.name)}</code>, step {html.escape(str(step))} of {spec.train.steps}"
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(spec.name)}</h1>\n<p>{facts}</p>\n{body}\n<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def write_report(run_dir: str | Path | RunDir, results: Mapping[str, Any] | None = None) -> Path:
    """Writes :func:`render_report` to the run's ``report.html``, atomically.

    Returns:
        The path of ``report.html``.
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    return write_text_atomic(run.report_path, render_report(run, results))


__all__ = ["curve_keys", "data_uri", "format_value", "render_report", "write_report"]
