"""What happens when things go wrong: kills, interrupts, resumes, NaNs, bad data, bad YAML.

Each training here is gmgan_digits for a few dozen steps with batch 16 (the MLP model:
compiles in seconds, and XLA's persistent cache makes the later processes start fast).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggdsl import GGDSLError, load_spec
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.data.idx import IMAGES_MAGIC, LABELS_MAGIC, write_idx
from ggdsl.errors import DataError, TrainError
from ggdsl.run import load_run
from ggdsl.runs import RunDir
from ggdsl.train import compile_and_train, model_hash, nonfinite_message, spec_changes

STEPS = 40
OVERRIDES = [
    f"train.steps={STEPS}",
    "train.checkpoint_every=5",
    "train.log_every=5",
    "train.batch_size=16",
    "eval=[]",
]


def _train(out: Path, *overrides: str, **kwargs):
    return compile_and_train(
        "gmgan_digits", out=out, progress=False, evaluate_at_end=False, overrides=[*OVERRIDES, *overrides], **kwargs
    )


def _resume(run_dir: Path, *overrides: str):
    return compile_and_train(resume=run_dir, progress=False, evaluate_at_end=False, overrides=list(overrides))


def _leaves(run_dir: Path) -> list[np.ndarray]:
    return [np.asarray(leaf) for leaf in jax.tree.leaves(load_run(run_dir).state)]


def _assert_same_state(run_a: Path, run_b: Path) -> None:
    a, b = _leaves(run_a), _leaves(run_b)
    assert len(a) == len(b)
    different = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if not np.array_equal(x, y)]
    assert not different, f"{len(different)} of {len(a)} leaves differ"


def _log(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in RunDir(run_dir).read_metrics()]


def _cli(out: Path, *extra: str) -> subprocess.Popen:
    sets = [arg for override in OVERRIDES for arg in ("--set", override)]
    command = [sys.executable, "-m", "ggdsl.cli", "compile-and-train", "gmgan_digits", "--out", str(out), "--quiet"]
    return subprocess.Popen([*command, *sets, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"training exited ({process.returncode}) too early:\n{out}\n{err}")
        time.sleep(0.01)
    process.kill()
    raise AssertionError("timed out waiting for the training process")


def _run_dir(out: Path) -> Path | None:
    runs = list(out.glob("gmgan-digits-*")) if out.exists() else []
    return runs[0] if runs else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must reproduce exactly."""
    result = _train(tmp_path_factory.mktemp("reference"))
    assert result.step == STEPS
    return Path(result.run_dir)


# ----------------------------------------------------------------------------- SIGKILL


#: Kills per run of the test (each a fresh process: import, compile, train, resume); a
#: different random point each time unless GGDSL_KILL_SEED fixes them. One by default, so
#: each run of the suite tries another point; GGDSL_KILL_TRIALS=N tries N (on demand).
KILL_TRIALS = int(os.environ.get("GGDSL_KILL_TRIALS", "1"))


def test_sigkill_at_random_points_leaves_a_resumable_run(reference, tmp_path):
    """SIGKILL anywhere after the first checkpoint; --resume gives the uninterrupted result."""
    rng = random.Random(int(os.environ.get("GGDSL_KILL_SEED", "0")) or None)
    landed_mid_run = 0
    for trial in range(KILL_TRIALS):
        out = tmp_path / f"trial{trial}"
        process = _cli(out)

        def first_checkpoint(out=out):
            run = _run_dir(out)
            return run if run is not None and RunDir(run).latest_step() is not None else None

        run_dir = _wait_for(first_checkpoint, process)
        time.sleep(rng.uniform(0.0, 1.5))
        landed_mid_run += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.communicate()
        run = RunDir(run_dir)
        assert run.latest_step() is not None
        result = _resume(run_dir)
        assert result.step == STEPS
        _assert_same_state(reference, run_dir)
        # Records logged between the last checkpoint and the kill are not duplicated.
        assert _log(run_dir) == _log(reference), f"trial {trial}"
        if trial == 0:  # a second resume of a finished run changes nothing
            _resume(run_dir)
            _assert_same_state(reference, run_dir)
    print(f"{landed_mid_run} of {KILL_TRIALS} kills landed while training ran")


def test_truncate_metrics_drops_later_records_and_a_cut_line(tmp_path):
    run = RunDir.create(tmp_path, "m")
    for step in (5, 10, 15):
        run.append_metrics({"step": step, "loss": float(step)})
    with open(run.metrics_path, "ab") as stream:
        stream.write(b'{"step": 20, "lo')
    assert run.truncate_metrics(10) == 1
    assert run.read_metrics() == [{"step": 5, "loss": 5.0}, {"step": 10, "loss": 10.0}]
    assert run.metrics_path.read_bytes().endswith(b"\n")
    assert run.truncate_metrics(10) == 0


# ----------------------------------------------------------------------------- SIGINT / SIGTERM


def test_sigint_saves_the_current_step_and_exits_130(tmp_path):
    out = tmp_path / "int"
    # Checkpoints are far apart, so the saved step can only be the interrupted one.
    process = _cli(out, "--set", "train.steps=100000", "--set", "train.checkpoint_every=100000")

    def logging():
        run = _run_dir(out)
        return run if run is not None and RunDir(run).read_metrics() else None

    run_dir = _wait_for(logging, process)
    time.sleep(random.uniform(0.0, 0.5))
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    line = next(line for line in stdout.splitlines() if "stopped at step" in line)
    stopped = int(line.split("stopped at step ")[1].split(";")[0])
    assert line.startswith("SIGINT:") and f"--resume {run_dir}" in line
    assert stopped > 0 and stopped % 100000 != 0
    run = RunDir(run_dir)
    assert run.latest_step() == stopped
    extra = run.read_checkpoint_extra()
    assert extra["step"] == stopped and int(load_run(run_dir).state["step"]) == stopped
    assert all(record["step"] <= stopped for record in run.read_metrics())


def test_sigterm_in_process_saves_and_raises_keyboard_interrupt(tmp_path, monkeypatch):
    """The signal arrives while the loop logs (its handler is installed then): the loop
    finishes that step, saves it and raises KeyboardInterrupt; the handlers are restored."""
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    original = RunDir.append_metrics

    def append_then_signal(self, record):
        original(self, record)
        if record["step"] == 10:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunDir, "append_metrics", append_then_signal)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "train.checkpoint_every=7")
    run_dir = _run_dir(tmp_path)
    assert RunDir(run_dir).latest_step() == 10
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_the_loop_keeps_at_most_one_step_queued(tmp_path, monkeypatch):
    """JAX returns from a step before computing it, and would queue a dozen or more; the loop
    waits for step n - 1 once step n is queued, so when it dispatches step n + 1, step n - 1
    has finished: a signal is heard, and a checkpoint written, within about two steps."""
    from ggdsl.compiled import Compiled, GuardedStep

    make = Compiled.make_guarded_step
    finished_before_next: list[bool] = []
    outputs: list = []

    def recorded(self, *args, **kwargs):
        guarded = make(self, *args, **kwargs)

        def step(state, guard, batch):
            if len(outputs) >= 2:
                finished_before_next.append(all(leaf.is_ready() for leaf in jax.tree.leaves(outputs[-2])))
            state, guard, metrics = guarded(state, guard, batch)
            outputs.append(metrics)
            return state, guard, metrics

        return GuardedStep(step, guarded.init_guard, guarded.on_nonfinite)

    monkeypatch.setattr(Compiled, "make_guarded_step", recorded)
    # No log line or checkpoint between the first step and the last: nothing else waits.
    _train(tmp_path, "train.log_every=1000", "train.checkpoint_every=1000")
    assert len(finished_before_next) == STEPS - 2
    assert all(finished_before_next)


# ----------------------------------------------------------------------------- resume compatibility


def test_resume_names_what_changed_and_allows_training_settings(reference, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(reference, run_dir)
    with pytest.raises(TrainError) as info:
        _resume(run_dir, "model.h.shape=[8]", "train.optimizer.learning_rate=0.001")
    message = str(info.value)
    assert "change the model" in message
    assert "model.h.shape: [16] -> [8]" in message
    assert "train.optimizer.learning_rate: 0.0002 -> 0.001" in message
    # Training-loop settings may change: more steps, other logging, checkpoints, evaluations.
    result = _resume(
        run_dir,
        f"train.steps={STEPS + 4}",
        "train.log_every=2",
        "train.eval_every=1000",
        "train.checkpoint_every=3",
        "train.on_nonfinite=skip",
        "eval=[reconstruction_mse]",
    )
    assert result.step == STEPS + 4
    assert RunDir(run_dir).latest_step() == STEPS + 4
    assert [r["step"] for r in RunDir(run_dir).read_metrics()][-2:] == [STEPS + 2, STEPS + 4]


def test_resume_refuses_an_edited_spec_yaml_by_the_checkpoint_hash(reference, tmp_path):
    run_dir = tmp_path / "edited"
    shutil.copytree(reference, run_dir)
    run = RunDir(run_dir)
    extra = run.read_checkpoint_extra()
    assert extra["model_hash"] == model_hash(load_spec(run.spec_path))
    run.spec_path.write_text(run.spec_path.read_text().replace("std: 0.1", "std: 0.5"))
    with pytest.raises(TrainError) as info:
        _resume(run_dir)
    message = str(info.value)
    assert "differs from the model of checkpoint 40" in message
    assert "model.h.std: 0.1 -> 0.5" in message


def test_spec_changes_lists_dotted_keys():
    old = {"model": {"h": {"shape": [16], "std": 0.1}}, "train": {"seed": 0}}
    new = {"model": {"h": {"shape": [16]}, "z": {"type": "normal"}}, "train": {"seed": 1}}
    assert spec_changes(old, new) == [
        "model.h.std: 0.1 -> (absent)",
        'model.z: (absent) -> {"type": "normal"}',
        "train.seed: 0 -> 1",
    ]


# ----------------------------------------------------------------------------- numerical guard

# The critics' plain SGD with a huge step makes the discriminators' outputs explode after a
# few steps, and the generator's gradients become NaN (deterministic: same seed, same data).
BLOW_UP = ["train.critic_optimizer={name: sgd, learning_rate: 3.0}", "train.checkpoint_every=2"]


def test_nonfinite_stops_naming_step_and_factor_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainError) as info:
        _train(tmp_path, *BLOW_UP)
    message = str(info.value)
    assert message.startswith("step 7: non-finite g_adv (the generator side), g_loss (the generator side)")
    assert "generator h" in message and "train.on_nonfinite: stop" in message
    assert "the last good checkpoint, step 6, is kept" in message
    run_dir = _run_dir(tmp_path)
    run = RunDir(run_dir)
    assert run.checkpoint_steps() == [2, 4, 6]
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(run_dir) if leaf.dtype.kind == "f")
    assert all(r["step"] <= 6 for r in run.read_metrics())
    # The same run, resumed with on_nonfinite=skip, gets past it: bad steps are discarded.
    result = _resume(run_dir, "train.on_nonfinite=skip", "train.steps=12", "train.log_every=1")
    assert result.step == 12
    records = run.read_metrics()
    assert records[-1]["skipped_steps"] >= 1
    assert all(np.isfinite(v) for r in records for v in r.values())
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(run_dir) if leaf.dtype.kind == "f")
    assert run.read_checkpoint_extra()["skipped"] == records[-1]["skipped_steps"]


def test_guarded_step_names_the_discriminator_and_skip_keeps_the_state():
    """An infinite weight on factor x|h: its discriminator's parameters become NaN at step 1."""
    import jax.numpy as jnp

    overrides = ['objective.weights={"x|h": 1.0e+39, "h|k": 1.0}', "train.batch_size=4"]
    spec = load_spec(BUNDLED / "gmgan_digits.yaml", overrides=overrides)
    compiled = compile_spec(spec)
    batch = {"x": jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32))}
    for mode in ("stop", "skip"):
        state = compiled.init_state(0)
        before = [np.array(leaf) for leaf in jax.tree.leaves(state["d_params"])]
        step = compiled.make_guarded_step(jax.random.key(0), mode)
        guard = step.init_guard(state, batch)
        names = [k for k in guard["flags"] if " " not in k]
        state, guard, metrics = step(state, guard, batch)
        assert int(guard["first_bad"]) == 1 and int(guard["skipped"]) == 1
        flags = {k: bool(v) for k, v in guard["flags"].items()}
        message = nonfinite_message(1, flags, names)
        assert "d_loss (the discriminators' weighted sum)" in message
        assert "discriminator x|h" in message and "discriminator h|k" not in message
        after = [np.array(leaf) for leaf in jax.tree.leaves(state["d_params"])]
        same = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert same == (mode == "skip")
        assert int(state["step"]) == 1


# ----------------------------------------------------------------------------- data checks


def _data_override(source: str, path) -> str:
    return f"data={{source: {source}, path: {json.dumps(path)}, observe: {{x: image}}, range: [0, 1], labels: label}}"


def _images(n: int = 32, size: int = 8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size), dtype=np.uint8)


def _check_refused(tmp_path: Path, override: str, pattern: str, *extra: str) -> None:
    out = tmp_path / "runs"
    with pytest.raises(DataError, match=pattern):
        _train(out, override, *extra)
    assert not out.exists() or not any(out.iterdir()), "a run folder was created"


def _idx_files(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> list[str]:
    paths = [tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"]
    write_idx(paths[0], images)
    write_idx(paths[1], labels)
    return [str(p) for p in paths]


def test_idx_problems_name_the_file_before_any_folder(tmp_path):
    labels = np.arange(32, dtype=np.uint8) % 10
    images, label_file = _idx_files(tmp_path, _images(), labels)
    # Wrong magic: the images file holds labels.
    shutil.copy(label_file, images)
    _check_refused(
        tmp_path,
        _data_override("idx", [images, label_file]),
        rf"{images}: not an IDX image file: magic number 0x{LABELS_MAGIC:08x}",
    )
    # Wrong shapes: 28x28 images for a model of 8x8 ones.
    images, label_file = _idx_files(tmp_path, _images(size=28), labels)
    _check_refused(
        tmp_path,
        _data_override("idx", [images, label_file]),
        rf"data\.observe\.x: feature 'image' of idx:{images} has shape \[28, 28, 1\], .* \[8, 8, 1\]",
    )
    # Truncated: the header promises more bytes than the file holds (gzip too).
    images, label_file = _idx_files(tmp_path, _images(), labels)
    data = Path(images).read_bytes()
    Path(images).write_bytes(data[:-10])
    _check_refused(tmp_path, _data_override("idx", [images, label_file]), rf"{images}: IDX header says shape")
    gz = tmp_path / "t-images-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(data)[:-20])
    _check_refused(tmp_path, _data_override("idx", [str(gz), label_file]), rf"{gz} is not a valid gzip file")
    assert IMAGES_MAGIC == 0x803


def test_npz_problems_name_the_file_before_any_folder(tmp_path):
    labels = np.arange(32) % 10
    path = tmp_path / "d.npz"
    override = _data_override("npz", str(path))
    np.savez(path, image=np.zeros((32, 64)), label=labels)
    _check_refused(tmp_path, override, rf"{path}: array 'image' has shape \(32, 64\)")
    np.savez(path, pixels=_images(), label=labels)
    _check_refused(tmp_path, override, rf"npz:{path} \(train\): data\.observe\.x: unknown feature 'image'")
    np.savez(path, image=_images(n=10), label=labels[:10])
    _check_refused(tmp_path, override, rf"npz:{path} \(train\): batch_size 16 is larger than the dataset \(10")
    np.savez(path, image=np.full((32, 8, 8), 2.0, np.float32), label=labels)
    _check_refused(tmp_path, override, rf"npz:{path} \(train\): feature 'image' has values in \[2, 2\], outside")
    np.savez(path, image=_images(), label=labels, extra=np.full((32, 3), np.nan))
    _check_refused(tmp_path, override, rf"npz:{path} \(train\): feature 'extra' holds 96 NaN or infinite")


# ----------------------------------------------------------------------------- YAML fuzzing

SPEC_WORDS = [
    "name",
    "data",
    "model",
    "time",
    "inference",
    "objective",
    "networks",
    "train",
    "eval",
    "type",
    "given",
    "shape",
    "net",
    "classes",
    "observed",
    "steps",
    "first",
    "source",
    "observe",
    "range",
    "noise",
    "std",
    "probs",
    "k",
    "h",
    "x",
    "v",
    "v[t-1]",
    "categorical",
    "normal",
    "implicit",
    "uniform",
    "linear",
    "mlp_generator",
    "dense",
    "act",
    "batch_size",
    "optimizer",
    "seed",
    "x|h",
    "digits",
    "image",
]
SPECIAL_SCALARS = [
    "~",
    "null",
    "yes",
    "No",
    "on",
    "true",
    ".inf",
    "-.inf",
    ".nan",
    "0x1F",
    "0o17",
    "0b101",
    "1e400",
    "-1e-400",
    "1_000",
    "12:30:45",
    "2001-12-14t21:59:43.10-05:00",
    "2001-02-30",
    "!!binary aGVsbG8=",
    "!!python/object:os.system",
    "!!float abc",
    "!!int x",
    "!!str 3",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "'quoted'",
    '"esc\\u00e9\\x41"',
    '"bad \\q"',
    "*undefined",
    "[",
    "{",
    "]",
    "- -",
    ": :",
    "%",
    "@x",
    "`x`",
    "<<",
    "=",
    "? x",
    "|",
    ">",
    "'",
    '"',
    "#",
    "&",
    "*",
    "!",
    "!!",
    "...",
    "---",
]
names = st.one_of(
    st.sampled_from(SPEC_WORDS),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=6),
)
scalar_text = st.one_of(
    st.integers(-(10**60), 10**60).map(str),
    st.floats().map(repr),
    st.sampled_from(SPECIAL_SCALARS),
    names,
    names.map(json.dumps),
    st.lists(st.integers(0, 10**12), max_size=4).map(str),
)


def _yaml_node(draw, depth: int, indent: int, anchors: list[str]) -> tuple[str, bool]:
    """YAML text of one random node: ``(text, is_block)``; a block starts on a new line."""
    kind = draw(st.sampled_from(["scalar", "scalar", "alias", "map", "seq", "flow"] if depth < 6 else ["scalar"]))
    anchor = ""
    if draw(st.integers(0, 9)) == 0:
        anchor = f"&a{len(anchors)} "
        anchors.append(anchor)
    if kind == "scalar":
        return anchor + draw(scalar_text), False
    if kind == "alias":
        return f"*a{draw(st.integers(0, max(len(anchors), 1)))}", False
    if kind == "flow":
        items = [draw(scalar_text) for _ in range(draw(st.integers(0, 4)))]
        if draw(st.booleans()):
            return anchor + "[" + ", ".join(items) + "]", False
        return anchor + "{" + ", ".join(f"{draw(names)}: {item}" for item in items) + "}", False
    pad = " " * indent
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        text, block = _yaml_node(draw, depth + 1, indent + 2, anchors)
        head = f"{pad}- " if kind == "seq" else f"{pad}{draw(names)}:"  # repeated names: duplicate keys
        if block:
            lines.append(head.rstrip() + "\n" + text)
        else:
            lines.append(f"{head} {text}" if kind == "map" else head + text)
    body = "\n".join(lines)
    if anchor:
        return f"{anchor.strip()}\n{body}", True
    return body, True


@st.composite
def yaml_documents(draw) -> str:
    shape = draw(st.sampled_from(["tree", "tree", "spec", "deep", "laughs"]))
    if shape == "deep":  # nesting far beyond any spec, in flow and in block style
        n = draw(st.integers(50, 3000))
        if draw(st.booleans()):
            return "name: x\nmodel: " + "[" * n + "]" * n + "\n"
        return "".join(" " * i + f"k{i}:\n" for i in range(min(n, 400))) + " " * min(n, 400) + "v\n"
    if shape == "laughs":  # aliases multiplying the document (and one that refers to itself)
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, draw(st.integers(2, 9)))]
        lines.append("self: &s [*s]" if draw(st.booleans()) else "name: laughs")
        return "\n".join(lines) + "\n"
    text, block = _yaml_node(draw, 0, 0, [])
    if shape == "spec":  # a valid start, so the loader's later stages see the noise
        prefix = "name: fuzz\ndata: {source: digits, observe: {x: image}}\nmodel:\n"
        text, block = _yaml_node(draw, 1, 2, [])
        return prefix + (text if block else f"  x: {text}") + "\n"
    return text + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(yaml_documents())
def test_random_yaml_text_only_raises_ggdsl_error(text):
    try:
        load_spec(text)
    except GGDSLError:
        pass
