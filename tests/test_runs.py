"""Run folder: metrics log, atomic JSON, and orbax checkpoints."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ggdsl.errors import EvalError, TrainError
from ggdsl.runs import RunDir, write_json_atomic


@pytest.fixture
def run(tmp_path):
    return RunDir.create(tmp_path, "gmgan/digits")


def _state(seed: int = 0):
    rng = np.random.default_rng(seed)
    return {
        "params": {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": jnp.asarray(rng.normal(size=(4,)), dtype=jnp.float32),
        },
        "opt": {"count": jnp.asarray(7 + seed, dtype=jnp.int32), "mu": [np.ones(2, np.float32)]},
        "key": jax.random.key_data(jax.random.PRNGKey(seed)),
        "labels": np.arange(5, dtype=np.int32),
        "scale": np.float32(0.5 + seed),
    }


def _assert_same(restored, expected):
    r_leaves, r_def = jax.tree_util.tree_flatten(restored)
    e_leaves, e_def = jax.tree_util.tree_flatten(expected)
    assert r_def == e_def
    for got, want in zip(r_leaves, e_leaves, strict=True):
        assert np.asarray(got).dtype == np.asarray(want).dtype
        assert np.shape(got) == np.shape(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_create_names_and_paths(tmp_path):
    first = RunDir.create(tmp_path, "gmgan/digits")
    second = RunDir.create(tmp_path, "gmgan/digits")
    assert re.fullmatch(r"gmgan-digits-\d{8}-\d{6}", first.path.name)
    assert first.path != second.path and second.path.name.startswith("gmgan-digits-")
    assert first.checkpoints_dir.is_dir() and first.figures_dir.is_dir()
    assert first.spec_path.name == "spec.yaml"
    assert first.metrics_path.name == "metrics.jsonl"
    assert first.eval_path.name == "eval.json"


def test_metrics_append_and_cut_last_line(run):
    run.append_metrics({"step": 1, "loss": np.float32(0.5), "acc": jnp.asarray(0.25)})
    run.append_metrics({"step": 2, "loss": 0.4})
    with open(run.metrics_path, "ab") as stream:
        stream.write(b'{"step": 3, "lo')  # a crash mid-write
    assert run.read_metrics() == [
        {"step": 1, "loss": 0.5, "acc": 0.25},
        {"step": 2, "loss": 0.4},
    ]
    run.append_metrics({"step": 3, "loss": 0.3})  # after a resume: the fragment is dropped
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
    assert run.metrics_path.read_text().count("\n") == 3


def test_metrics_missing_and_corrupt(run):
    assert run.read_metrics() == []
    run.metrics_path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(EvalError, match=r"metrics.jsonl:2"):
        run.read_metrics()


def test_write_json_atomic(run):
    path = write_json_atomic(run.eval_path, {"acc": np.float64(0.9), "counts": np.arange(2)})
    assert json.loads(path.read_text()) == {"acc": 0.9, "counts": [0, 1]}
    write_json_atomic(run.eval_path, {"acc": 1.0})
    assert json.loads(run.eval_path.read_text()) == {"acc": 1.0}
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(TypeError):
        write_json_atomic(run.eval_path, {"bad": object()})
    assert json.loads(run.eval_path.read_text()) == {"acc": 1.0}


def test_checkpoint_round_trip(run):
    state = _state()
    assert run.latest_step() is None
    assert run.save_checkpoint(10, state, {"epoch": 2, "position": np.int64(123)})
    assert run.latest_step() == 10
    template = jax.tree_util.tree_map(np.zeros_like, _state(seed=1))
    restored, extra = run.restore_checkpoint(target=template)
    assert extra == {"epoch": 2, "position": 123}
    expected = jax.tree_util.tree_map(np.asarray, state)
    _assert_same(restored, expected)
    assert isinstance(restored["params"]["w"], np.ndarray)
    # JAX templates give JAX arrays.
    jax_template = jax.tree_util.tree_map(jnp.asarray, template)
    restored, _ = run.restore_checkpoint(10, target=jax_template)
    assert isinstance(restored["params"]["w"], jax.Array)
    _assert_same(restored, expected)
    assert not run.save_checkpoint(10, _state(seed=3))  # an existing step is kept
    _assert_same(run.restore_checkpoint(target=template)[0], expected)


def test_typed_prng_key_round_trip(run):
    key = jax.random.key(42)
    run.save_checkpoint(0, {"key": key})
    restored, extra = run.restore_checkpoint(target={"key": jax.random.key(0)})
    assert extra == {}
    assert jnp.array_equal(jax.random.key_data(restored["key"]), jax.random.key_data(key))


def test_max_to_keep(run):
    for step in range(0, 50, 10):
        run.save_checkpoint(step, _state(), {"step": step}, max_to_keep=3)
    assert run.checkpoint_steps() == [20, 30, 40]
    assert run.restore_checkpoint(20, target=_state())[1] == {"step": 20}


def test_interrupted_save_is_ignored(run):
    run.save_checkpoint(5, _state())
    leftover = run.checkpoints_dir / "8.orbax-checkpoint-tmp"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "junk").write_bytes(b"\0" * 10)
    (run.checkpoints_dir / "9").mkdir()  # a bare folder without orbax's commit marker
    assert run.latest_step() == 5
    assert run.restore_checkpoint(target=_state())[0]["labels"].tolist() == [0, 1, 2, 3, 4]
    assert run.save_checkpoint(8, _state(seed=2))  # the leftover does not block step 8
    assert run.latest_step() == 8
    assert not leftover.exists()


def test_restore_errors(tmp_path, run):
    with pytest.raises(TrainError, match="does not exist"):
        RunDir(tmp_path / "no-such-run").restore_checkpoint()
    with pytest.raises(TrainError, match="no complete checkpoint"):
        run.restore_checkpoint()
    run.save_checkpoint(1, _state())
    with pytest.raises(TrainError, match="available steps: 1"):
        run.restore_checkpoint(2)
    bigger = _state()
    bigger["params"]["w"] = np.zeros((5, 4), np.float32)
    with pytest.raises(TrainError, match=r"params/w: saved \(3, 4\), expected \(5, 4\)"):
        run.restore_checkpoint(target=bigger)
    float_count = _state()
    float_count["opt"]["count"] = jnp.float32(0)
    with pytest.raises(TrainError, match="opt/count: saved int32, expected float32"):
        run.restore_checkpoint(target=float_count)
    extra_leaf = _state()
    extra_leaf["params"]["v"] = np.zeros(2, np.float32)
    with pytest.raises(TrainError, match="not in the checkpoint: params/v"):
        run.restore_checkpoint(target=extra_leaf)
    with pytest.raises(TrainError, match="JSON"):
        run.save_checkpoint(2, _state(), {"bad": object()})
