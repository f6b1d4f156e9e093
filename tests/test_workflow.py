"""Inspecting runs: TensorBoard event files, report.html, ``ggdsl runs`` and ``ggdsl compare``.

One run of gmgan_digits (4 steps, batch 16, an evaluation at step 2) is trained once for
the module; each test works on a copy of its folder.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader, RawEventFileLoader
from tensorboard.compat.proto import event_pb2

from ggdsl.cli import EXAMPLES, build_parser, main
from ggdsl.compare import compare_runs
from ggdsl.errors import EvalError
from ggdsl.evaluate.report import format_value, write_report
from ggdsl.runs import RunDir
from ggdsl.runs_table import RunSummary, list_runs, summarize_run, table_rows
from ggdsl.tensorboard_log import EventLog, event_files, read_scalars
from ggdsl.train import compile_and_train

OVERRIDES = [
    "train.steps=4",
    "train.log_every=1",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.batch_size=16",
    "eval=[clustering_accuracy, reconstruction_mse, samples]",
]
TRAIN_TAGS = {
    "steps_per_s",
    "usage/k",
    "d_loss",
    "d_loss/x|h",
    "d_loss/h|k",
    "d_acc/x|h",
    "d_acc/h|k",
    "g_adv",
    "g_loss",
}
EVAL_TAGS = {
    "eval/clustering_accuracy",
    "eval/clustering_accuracy_majority",
    "eval/clusters_used",
    "eval/reconstruction_mse",
}
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    result = compile_and_train("gmgan_digits", out=out, progress=False, overrides=OVERRIDES)
    assert result.step == 4
    return Path(result.run_dir)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    target = tmp_path / "runs" / trained.name
    shutil.copytree(trained, target)
    return target


def _accumulator(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def _steps(accumulator: EventAccumulator) -> dict[str, list[int]]:
    tags = accumulator.Tags()
    found = {tag: [e.step for e in accumulator.Scalars(tag)] for tag in tags["scalars"]}
    found |= {tag: [e.step for e in accumulator.Images(tag)] for tag in tags["images"]}
    return found


EXPECTED_STEPS = {
    **{tag: [1, 2, 3, 4] for tag in TRAIN_TAGS},
    **{tag: [2] for tag in EVAL_TAGS},
    # quick evaluation at step 2, the final evaluation at step 4
    "figures/samples": [2, 4],
    "figures/reconstruction": [2, 4],
}


def _raw_events(path: Path) -> list[event_pb2.Event]:
    return list(EventFileLoader(str(path)).Load())


# --------------------------------------------------------------------------- TensorBoard


def test_tensorboard_events_mirror_metrics_and_figures(trained):
    run = RunDir(trained)
    accumulator = _accumulator(run.tb_dir)
    assert _steps(accumulator) == EXPECTED_STEPS
    # Every scalar of metrics.jsonl, at its step, with its value (stored as float32).
    logged = {}
    for record in run.read_metrics():
        for key, value in record.items():
            if key != "step":
                logged.setdefault(key, []).append((record["step"], np.float32(value)))
    assert read_scalars(run.tb_dir) == {tag: [(s, float(v)) for s, v in pairs] for tag, pairs in logged.items()}
    # The last samples image is the file training wrote, byte for byte.
    last = accumulator.Images("figures/samples")[-1]
    data = (run.figures_dir / "samples_step4.png").read_bytes()
    assert last.encoded_image_string == data
    assert (last.width, last.height) == Image.open(io.BytesIO(data)).size
    assert [p.name for p in run.tb_dir.iterdir()] == [event_files(run.tb_dir)[0].name]
    if os.path.isdir("/proc/self/fd"):  # each write closes its file: nothing is left open
        open_files = [os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")]
        assert not [name for name in open_files if "tfevents" in name]


def test_resume_drops_later_events_and_tensorboard_shows_each_step_once(run_copy):
    run = RunDir(run_copy)
    before = run.read_metrics()
    # A kill after step 4 was logged but before its checkpoint: the resume restarts from 2.
    shutil.rmtree(run.checkpoints_dir / "4")
    live = _accumulator(run.tb_dir)  # a TensorBoard that had read the old events
    assert _steps(live) == EXPECTED_STEPS
    compile_and_train(resume=run_copy, progress=False)
    assert [r["step"] for r in run.read_metrics()] == [r["step"] for r in before]

    assert _steps(_accumulator(run.tb_dir)) == EXPECTED_STEPS
    live.Reload()
    assert _steps(live) == EXPECTED_STEPS  # SessionLog.START purged what it had read
    first, second = event_files(run.tb_dir)
    assert max(e.step for e in _raw_events(first)) == 2
    opening = _raw_events(second)[:2]
    assert opening[0].file_version == "brain.Event:2"
    assert opening[1].session_log.status == event_pb2.SessionLog.START and opening[1].step == 3
    resumed = read_scalars(run.tb_dir)
    for record in run.read_metrics():
        for key, value in record.items():
            if key != "step":
                assert (record["step"], float(np.float32(value))) in resumed[key]

    # Resuming the finished run again evaluates again at step 4: nothing is written twice.
    compile_and_train(resume=run_copy, progress=False)
    assert _steps(_accumulator(run.tb_dir)) == EXPECTED_STEPS
    assert len(event_files(run.tb_dir)) == 3
    assert sorted(p.name for p in run.tb_dir.iterdir()) == sorted(p.name for p in event_files(run.tb_dir))


def test_resume_removes_a_cut_event_record(tmp_path):
    log = EventLog(tmp_path)
    for step in (1, 2, 3):
        log.add_record({"step": step, "d_loss": float(step)})
    with open(log.path, "ab") as stream:  # a kill in the middle of writing a record
        stream.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    resumed = EventLog(tmp_path, resume_step=2)
    old = [e for e in _raw_events(log.path) if e.HasField("summary")]
    assert [e.step for e in old] == [1, 2]
    records = list(RawEventFileLoader(str(log.path)).Load())
    assert log.path.stat().st_size == sum(len(record) + 16 for record in records)  # no cut tail left
    resumed.add_record({"step": 3, "d_loss": 30.0})
    resumed.add_record({"step": 2, "d_loss": 20.0})  # already there: not written again
    assert read_scalars(tmp_path) == {"d_loss": [(1, 1.0), (2, 2.0), (3, 30.0)]}


# ----------------------------------------------------------------------------- report.html


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []
        self.captions: list[str] = []
        self._caption = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])
        self._caption = tag == "figcaption"

    def handle_data(self, data):
        if self._caption:
            self.captions.append(data)
            self._caption = False


def _decode(source: str) -> tuple[str, bytes]:
    match = re.fullmatch(r"data:(image/png|image/svg\+xml);base64,([A-Za-z0-9+/=]+)", source)
    assert match, source[:60]
    return match.group(1), base64.b64decode(match.group(2), validate=True)


def test_eval_json_output_and_a_self_contained_report(run_copy, capfd):
    assert main(["eval", str(run_copy), "--json"]) == 0
    out, _ = capfd.readouterr()
    results = json.loads(out)  # stdout is the JSON and nothing else
    run = RunDir(run_copy)
    assert results == json.loads(run.eval_path.read_text())
    assert set(results) == {
        "step",
        "clustering_accuracy",
        "clustering_accuracy_majority",
        "clusters_used",
        "reconstruction_mse",
        "samples_figure",
    }

    page = run.report_path.read_text()
    outside_images = re.sub(r"data:[^\"]*", "", page)
    assert not re.search(r"(?i)(https?:|ftp:|//[a-z]|<link|<iframe|url\(|<script[^>]*src)", outside_images)
    images = _Images()
    images.feed(page)
    kinds = []
    for source in images.sources:
        kind, data = _decode(source)
        kinds.append(kind)
        if kind == "image/png":
            with Image.open(io.BytesIO(data)) as picture:
                picture.verify()
                assert picture.format == "PNG"
        else:
            assert ET.fromstring(data).tag == "{http://www.w3.org/2000/svg}svg"
    # curves, evaluations during training, three figures, the graph of p, q and D
    assert kinds == ["image/png"] * 5 + ["image/svg+xml"]
    assert images.captions == ["reconstruction.png", "samples_step2.png", "samples_step4.png"]
    for key, value in results.items():
        cell = f'<td class="metric">{key}</td><td class="value">{format_value(value)}</td>'
        assert cell in page
    assert "name: gmgan-digits" in page and "eval_every: 2" in page  # the spec's YAML


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium")
def test_report_images_load_in_headless_chromium(run_copy, tmp_path):
    page = write_report(run_copy)
    broken = tmp_path / "broken.html"
    text = page.read_text()
    first_png = re.search(r"data:image/png;base64,[A-Za-z0-9+/=]+", text).group(0)
    broken.write_text(text.replace(first_png, "data:image/png;base64," + base64.b64encode(b"not a png").decode()))

    def loaded(path: Path) -> tuple[str, list[str]]:
        command = [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            path.absolute().as_uri(),
        ]
        dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
        return re.search(r'data-images="([^"]*)"', dom).group(1), re.findall(r'data-loaded="(\w+)"', dom)

    assert loaded(page) == ("6/6", ["yes"] * 6)
    assert loaded(broken) == ("5/6", ["no"] + ["yes"] * 5)


# ----------------------------------------------------------------------- ggdsl runs, compare


def _fabricated_run(root: Path) -> Path:
    """A run stopped at step 20 of 100: metrics and an eval.json, no checkpoint."""
    run = RunDir.create(root, "gmgan toy")
    run.write_spec("name: gmgan-toy\ntrain: {steps: 100}\n")
    for step in (10, 20):
        run.append_metrics({"step": step, "d_loss": 1.5 - step / 100, "g_loss": 0.5 + step / 100})
    run.append_metrics({"step": 20, "eval/clustering_accuracy": 0.75})
    run.write_eval({"step": 20, "clustering_accuracy": 0.75, "tsne_figure": "tsne.png"})
    return run.path


def test_runs_lists_each_run_folder(run_copy, capfd):
    root = run_copy.parent
    toy = _fabricated_run(root)
    (root / "notes").mkdir()  # not a run: left out
    trained_metrics = RunDir(run_copy).read_metrics()
    losses = {k: trained_metrics[-1][k] for k in ("d_loss", "g_loss")}
    results = json.loads(RunDir(run_copy).eval_path.read_text())
    trained_eval = {k: results[k] for k in ("clustering_accuracy", "reconstruction_mse")}
    expected = sorted(
        [
            RunSummary(run_copy.name, str(run_copy), "gmgan-digits", 4, 4, "finished", losses, trained_eval),
            RunSummary(
                toy.name,
                str(toy),
                "gmgan-toy",
                20,
                100,
                "stopped",
                {"d_loss": 1.5 - 20 / 100, "g_loss": 0.5 + 20 / 100},
                {"clustering_accuracy": 0.75},
            ),
        ],
        key=lambda s: s.run,
    )
    assert list_runs(root) == expected
    assert list_runs(toy) == [expected[[s.run for s in expected].index(toy.name)]]

    assert main(["runs", str(root), "--json"]) == 0
    out, _ = capfd.readouterr()
    assert json.loads(out) == [summary.to_dict() for summary in expected]

    headers, rows = table_rows(expected)
    assert headers == ["run", "spec", "step", "d_loss", "g_loss", "clustering_accuracy", "reconstruction_mse", "status"]
    by_name = dict(zip([s.run for s in expected], rows, strict=True))
    assert by_name[toy.name] == [toy.name, "gmgan-toy", "20/100", "1.3", "0.7", "0.75", "", "stopped"]
    assert by_name[run_copy.name][2:3] == ["4/4"] and by_name[run_copy.name][-1] == "finished"
    assert main(["runs", str(root)]) == 0
    table = capfd.readouterr().out
    assert all(text in table for text in ("20/100", "stopped", "4/4", "finished", "cluster"))


def test_runs_sees_a_live_training_process(tmp_path):
    run = RunDir(_fabricated_run(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.tb_dir.mkdir()
        (run.tb_dir / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{child.pid}.0").touch()
        assert summarize_run(run.path).status == "running"
    finally:
        child.kill()
        child.wait()
    assert summarize_run(run.path).status == "stopped"


def test_runs_errors_name_the_folder(tmp_path, capfd):
    with pytest.raises(EvalError, match=re.escape(f"{tmp_path / 'missing'}: no such folder")):
        list_runs(tmp_path / "missing")
    with pytest.raises(EvalError, match=re.escape(f"{tmp_path}: not a run folder (no spec.yaml)")):
        summarize_run(tmp_path)
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capfd.readouterr().out) == []


def test_compare_plots_one_subplot_per_metric_and_one_line_per_run(run_copy, tmp_path):
    toy = _fabricated_run(run_copy.parent)
    out = tmp_path / "curves.png"
    figure = compare_runs([run_copy, toy], out, metrics=["d_loss", "d_acc/*"])
    assert [axes.get_title() for axes in figure.axes] == ["d_loss", "d_acc/h|k", "d_acc/x|h"]
    assert [len(axes.lines) for axes in figure.axes] == [2, 1, 1]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [run_copy.name, toy.name]
    assert list(figure.axes[0].lines[1].get_xdata()) == [10, 20]
    width, height = figure.get_size_inches() * 100
    assert imread(out).shape[:2] == (round(height), round(width))

    default = compare_runs([run_copy, toy])
    assert [axes.get_title() for axes in default.axes] == ["d_loss", "g_loss", *sorted(EVAL_TAGS)]
    assert main(["compare", str(run_copy), str(toy), "-o", str(tmp_path / "c.svg"), "--metric", "g_loss"]) == 0
    assert ET.parse(tmp_path / "c.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"


def test_compare_errors_name_the_folder_file_or_metric(run_copy, tmp_path, capfd):
    empty = RunDir.create(tmp_path, "empty")
    empty.write_spec("name: empty\n")
    with pytest.raises(EvalError, match=re.escape(f"{tmp_path}: not a run folder (no spec.yaml)")):
        compare_runs([run_copy, tmp_path])
    with pytest.raises(EvalError, match=re.escape(f"{empty.metrics_path}: no metrics recorded")):
        compare_runs([empty.path])
    assert main(["compare", str(run_copy), "--metric", "loss_q", "-o", str(tmp_path / "x.png")]) == 1
    assert "no metric 'loss_q' in the runs; there are: steps_per_s, " in capfd.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_every_verb_has_an_example_and_the_exit_status():
    parser = build_parser()
    verbs = parser._subparsers._group_actions[0].choices
    assert set(verbs) == set(EXAMPLES)
    for name, sub in verbs.items():
        text = sub.format_help()
        assert f"example: {EXAMPLES[name]}" in text
        assert "exit status: 0 ok; 2 spec error or bad command line; 1 any other ggdsl error" in text
    assert "130 interrupted" in parser.format_help()
