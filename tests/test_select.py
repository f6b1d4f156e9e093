"""Model selection without labels: ``train.holdout`` and ``train.select``."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggdsl import SpecError, load_spec
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.data import Batches
from ggdsl.data.dataset import Dataset, split_holdout
from ggdsl.errors import DataError
from ggdsl.run import load_run
from ggdsl.runs import RunDir
from ggdsl.train import compile_and_train, open_training_data, restore_state

TOY = BUNDLED / "gmgan_toy.yaml"


def _rows(n: int) -> Dataset:
    return Dataset("rows", "train", {"x": np.arange(n, dtype=np.float32)[:, None], "label": np.arange(n) % 3})


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 400), data=st.data())
def test_holdout_is_a_fixed_disjoint_subset(n, data):
    held_n = data.draw(st.integers(0, n - 1))
    rest, held = split_holdout(_rows(n), held_n)
    if held_n == 0:
        assert held is None and rest.num_examples == n
        return
    kept, out = rest.features["x"][:, 0], held.features["x"][:, 0]
    assert len(out) == held_n and len(kept) == n - held_n
    assert set(kept).isdisjoint(out) and set(kept) | set(out) == set(range(n))
    assert np.all(np.diff(kept) > 0)  # the rest keep their order
    assert held.split == "holdout"
    np.testing.assert_array_equal(split_holdout(_rows(n), held_n)[1].features["x"], held.features["x"])
    np.testing.assert_array_equal(held.features["label"], out.astype(int) % 3)  # rows stay whole


def test_holdout_never_reaches_a_training_batch():
    spec = load_spec(TOY, overrides=["train.holdout=300", "train.batch_size=50"])
    rest, held = open_training_data(spec)
    full = open_training_data(load_spec(TOY))[0]
    assert rest.num_examples + held.num_examples == full.num_examples and held.num_examples == 300
    held_rows = {tuple(row) for row in held.features["x"]}
    batches = Batches(rest, {"x": "x"}, 50, seed=spec.train.seed)
    seen = set()
    for _ in range(3 * batches.batches_per_epoch):  # three epochs
        seen |= {tuple(row) for row in next(batches)["x"]}
    assert seen.isdisjoint(held_rows)
    assert len(seen) > 0.9 * rest.num_examples  # and the rest of the data is used


def test_select_needs_a_holdout_and_says_where():
    text = TOY.read_text().replace("train:\n", "train:\n  select: reconstruction_mse\n")
    with pytest.raises(SpecError) as error:
        load_spec(text)
    message = str(error.value)
    assert "train.select" in message and "train.holdout" in message
    line = text.splitlines().index("  select: reconstruction_mse") + 1
    assert f":{line}:" in message
    with pytest.raises(SpecError, match="expected one of last, reconstruction_mse, discriminator"):
        load_spec(TOY, overrides=["train.select=accuracy", "train.holdout=10"])


def test_a_holdout_as_large_as_the_data_is_a_data_error():
    spec = load_spec(TOY, overrides=["train.holdout=100000000"])
    with pytest.raises(DataError, match="train.holdout is 100000000"):
        open_training_data(spec)


def _train(out: Path, *overrides: str):
    return compile_and_train(
        TOY,
        out=out,
        progress=False,
        overrides=[
            "train.steps=60",
            "train.checkpoint_every=10",
            "train.log_every=10",
            "train.eval_every=1000",
            *overrides,
        ],
    )


def test_the_best_scored_checkpoint_is_kept_loaded_and_evaluated(tmp_path, monkeypatch):
    import ggdsl.evaluate.run_eval as run_eval

    scores = {10: 0.5, 20: 0.1, 30: 0.4, 40: 0.3, 50: 0.2, 60: 0.6}
    seen = []

    def fake_score(compiled, state, run_dir, step, held):
        seen.append((step, held.num_examples, sorted(held.features)))
        return scores[step]

    monkeypatch.setattr(run_eval, "selection_score", fake_score)
    result = _train(tmp_path, "train.select=discriminator", "train.holdout=100")
    run = RunDir(result.run_dir)
    assert [s for s, _, _ in seen] == sorted(scores) and {n for _, n, _ in seen} == {100}
    # The three newest and the best survive the clean-up.
    assert run.checkpoint_steps() == [20, 40, 50, 60]
    assert run.selected_step() == 20
    records = [r for r in run.read_metrics() if "select/discriminator" in r]
    assert {r["step"]: r["select/discriminator"] for r in records} == scores
    evaluation = json.loads(run.eval_path.read_text())
    assert evaluation["step"] == 20 and evaluation["selected_by"] == "discriminator"
    assert evaluation["select_score"] == 0.1 and evaluation["latest_step"] == 60
    loaded = load_run(result.run_dir)
    assert loaded.step == 20 and loaded.selected["select_score"] == 0.1
    latest = load_run(result.run_dir, step=60)
    assert latest.step == 60 and latest.selected is None
    compiled = compile_spec(loaded.spec)
    best, _ = restore_state(compiled, run, 20)
    for a, b in zip(jax.tree.leaves(best["g_params"]), jax.tree.leaves(loaded.state["g_params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("criterion", ["reconstruction_mse", "discriminator"])
def test_a_real_criterion_picks_the_lowest_score_without_labels(tmp_path, criterion):
    result = _train(tmp_path, f"train.select={criterion}", "train.holdout=200")
    run = RunDir(result.run_dir)
    scores = {r["step"]: r[f"select/{criterion}"] for r in run.read_metrics() if f"select/{criterion}" in r}
    assert sorted(scores) == [10, 20, 30, 40, 50, 60]
    assert all(np.isfinite(v) and v >= 0 for v in scores.values())
    if criterion == "discriminator":
        assert all(v <= 0.5 for v in scores.values())
    best = min(scores.values())
    chosen = max(step for step, v in scores.items() if v == best)
    assert run.selected_step() == chosen and chosen in run.checkpoint_steps()
    assert json.loads(run.eval_path.read_text())["step"] == chosen

    # The score reads only the observed features: held-out data without labels is enough.
    from ggdsl.evaluate.run_eval import selection_score

    loaded = load_run(result.run_dir)
    _, held = open_training_data(loaded.spec)
    unlabelled = Dataset("toy", "holdout", {"x": held.features["x"]})
    again = selection_score(loaded.compiled, loaded.state, run, loaded.step, unlabelled)
    assert again == pytest.approx(scores[chosen], rel=1e-5, abs=1e-6)
