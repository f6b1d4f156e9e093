"""Video evaluations of an SSGAN: reconstruction per frame, sample strips and GIFs, motion
analogies; and the digit classifier that scores analogies, on real canvases.

One tiny SSGAN (the bundled 32-pixel moving-digits T=4 spec, 3 training steps) is trained
for the whole module: compiling it dominates the cost.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from ggdsl.data import load_dataset
from ggdsl.errors import EvalError
from ggdsl.evaluate import run_eval
from ggdsl.evaluate.figures import labelled_strips
from ggdsl.evaluate.video import analogy_pairs, crop_digits, digit_classifier, majority_vote, to_unit
from ggdsl.run import Run, load_run
from ggdsl.train import compile_and_train

SPEC = "ssgan_moving_digits_t4_cpu"
STEPS = 4  # frames per video in SPEC
SIZE = 32  # its frames are SIZE x SIZE
H, V = 32, 4  # its content and motion sizes
VIDEOS = 16  # per split
FRAME = 2 * SIZE + 1  # a frame, upscaled to at least 64 pixels, and its separator in a strip
DATA = {"images": "digits", "canvas": SIZE, "speed": 1.8}  # SPEC's data options


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    result = compile_and_train(
        SPEC,
        out=tmp_path_factory.mktemp("ssgan"),
        progress=False,
        evaluate_at_end=False,
        overrides=[
            f"data.num_examples={VIDEOS}",
            "train.batch_size=4",
            "train.steps=3",
            "train.log_every=1",
            "train.eval_every=2",  # one evaluation during training, at step 2
            "train.checkpoint_every=3",
        ],
    )
    return load_run(result.run_dir)


@pytest.fixture(scope="module")
def evaluated(run: Run) -> tuple[dict, dict]:
    """The three video evaluations, and the cache they filled (test data, reconstructions)."""
    cache: dict = {}
    results = {}
    for name in ("video_reconstruction", "samples", "motion_analogy"):
        results.update(run_eval.EVALUATIONS[name](run, cache))
    return results, cache


def test_training_logs_video_evaluations(run: Run) -> None:
    """Every ``eval_every`` steps the video evaluations of the spec's list reach metrics.jsonl."""
    records = [r for r in run.dir.read_metrics() if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in records] == [2]
    assert set(records[0]) == {
        "step",
        "eval/video_reconstruction_mse",
        "eval/motion_analogy_pairs",
        "eval/motion_analogy_content_accuracy",
        "eval/motion_analogy_motion_accuracy",
        "eval/motion_analogy_classifier_accuracy",
    }
    assert 0.0 < records[0]["eval/video_reconstruction_mse"] < 1.0
    assert records[0]["eval/motion_analogy_pairs"] == VIDEOS // 2
    assert 0.0 <= records[0]["eval/motion_analogy_content_accuracy"] <= 1.0


def test_the_spec_trains_with_finite_losses_on_both_factors(run: Run) -> None:
    """The training records of SPEC (the one 32-pixel local SSGAN that test_time does not
    step itself): every step logged, each factor's discriminator reported, all finite."""
    records = [r for r in run.dir.read_metrics() if "d_loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert {"d_loss", "g_loss", "d_acc/x|h,v", "d_acc/v|v[t-1]", "d_loss/x|h,v", "d_loss/v|v[t-1]"} <= set(record)
        assert all(np.isfinite(v) for k, v in record.items() if k != "step"), record


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_video_reconstruction(run: Run, evaluated) -> None:
    results, cache = evaluated
    x, recon = cache["recon"]
    assert x.shape == recon.shape == (VIDEOS, STEPS, SIZE, SIZE, 1)
    per_frame = results["video_reconstruction_mse_per_frame"]
    assert len(per_frame) == STEPS and all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in per_frame)
    np.testing.assert_allclose(per_frame, ((x - recon) ** 2).mean((0, 2, 3, 4)), rtol=1e-6)
    assert results["video_reconstruction_mse"] == pytest.approx(np.mean(per_frame), rel=1e-6)
    # held-out videos: the test split
    test = load_dataset("moving_digits", {**DATA, "steps": STEPS, "num_examples": VIDEOS}, "test")
    np.testing.assert_array_equal(x, test.features["video"])
    path = run.dir.figures_dir / results["video_reconstruction_figure"]
    pixels = _pixels(path)
    assert pixels.shape[0] == 2 * 4 * FRAME + 1  # 4 originals, each with its reconstruction
    assert pixels.shape[1] > STEPS * FRAME + 1  # and labels on the left


def test_sample_strip_and_animation(run: Run, evaluated) -> None:
    results, _ = evaluated
    strip = run.dir.figures_dir / results["samples_figure"]
    assert results["samples_figure"] == f"samples_step{run.step}.png"
    assert _pixels(strip).shape == (8 * FRAME + 1, STEPS * FRAME + 1, 3)  # a row per sample, a column per step
    animation = run.dir.figures_dir / results["samples_animation"]
    assert animation.suffix == ".gif"
    with Image.open(animation) as gif:
        assert gif.n_frames == STEPS and gif.is_animated
        assert gif.size == (4 * FRAME + 1, 4 * FRAME + 1)  # a 4x4 grid of samples
        assert gif.info["loop"] == 0


def test_motion_analogy_result(run: Run, evaluated) -> None:
    results, cache = evaluated
    _, labels = cache["test"]
    content, motion = analogy_pairs(VIDEOS, labels)
    assert results["motion_analogy_pairs"] == len(content) == VIDEOS // 2
    assert (labels[content] != labels[motion]).all()
    content_accuracy = results["motion_analogy_content_accuracy"]
    motion_accuracy = results["motion_analogy_motion_accuracy"]
    assert 0.0 <= content_accuracy <= 1.0 and 0.0 <= motion_accuracy <= 1.0
    assert content_accuracy + motion_accuracy <= 1.0  # the two labels always differ
    assert results["motion_analogy_classifier_accuracy"] > 0.8  # it reads real test videos
    pixels = _pixels(run.dir.figures_dir / results["motion_analogy_figure"])
    assert pixels.shape[0] == 3 * 4 * FRAME + 1  # content, motion, analogy for 4 pairs
    assert "motion_analogy_score_skipped" not in results


def test_analogy_takes_content_and_motion_from_q(run: Run, evaluated) -> None:
    _, cache = evaluated
    videos = cache["test"][0]["x"]
    a, b = videos[:3], videos[3:6]
    made = run.analogy(a, b, key=7)
    assert made["x"].shape == (3, STEPS, SIZE, SIZE, 1)
    assert made["h"].shape == (3, H) and made["v"].shape == (3, STEPS, V)
    # the same as inferring each part and generating with it clamped
    import jax

    key = jax.random.key(7)
    content = run.infer(a, jax.random.fold_in(key, 0))
    motion = run.infer(b, jax.random.fold_in(key, 1))
    np.testing.assert_array_equal(made["h"], content["h"])
    np.testing.assert_array_equal(made["v"], motion["v"])
    again = run.generate({"h": content["h"], "v": motion["v"]}, jax.random.fold_in(key, 2))
    np.testing.assert_allclose(again["x"], made["x"], atol=1e-6)
    # swapping the motion changes the frames
    other = run.generate({"h": content["h"], "v": content["v"]}, 0)["x"]
    assert np.abs(other - made["x"]).max() > 0


def test_generate_checks_what_it_is_given(run: Run) -> None:
    h = np.zeros((2, H), np.float32)
    with pytest.raises(EvalError, match="'x' is not a latent variable"):
        run.generate({"x": np.zeros((2, STEPS, SIZE, SIZE, 1))})
    with pytest.raises(EvalError, match=rf"'v' has shape \(2, {V}\), expected \(n, {STEPS}, {V}\)"):
        run.generate({"h": h, "v": np.zeros((2, V))})
    with pytest.raises(EvalError, match=r"different first dimensions \[2, 3\]"):
        run.generate({"h": h, "v": np.zeros((3, STEPS, V))})
    with pytest.raises(EvalError, match="nothing is fixed"):
        run.generate({})
    with pytest.raises(EvalError, match="pass as many of each"):
        run.analogy(np.zeros((2, STEPS, SIZE, SIZE, 1)), np.zeros((3, STEPS, SIZE, SIZE, 1)))
    clamped = run.generate({"h": h}, 1)
    np.testing.assert_array_equal(clamped["h"], h)
    assert clamped["v"].shape == (2, STEPS, V) and clamped["x"].shape == (2, STEPS, SIZE, SIZE, 1)


def _with_data(run: Run, **changes) -> Run:
    """The same model, with its spec's data section changed."""
    other = Run.from_state(run.compiled, run.state, run.dir, run.step)
    other.spec = dataclasses.replace(run.spec, data=dataclasses.replace(run.spec.data, **changes))
    return other


def test_motion_analogy_without_a_score(run: Run, evaluated) -> None:
    options = {k: v for k, v in run.spec.data.options.items() if k != "labels"}
    unlabelled = _with_data(run, options=type(run.spec.data.options)(options))
    results = run_eval.motion_analogy(unlabelled, {})
    assert set(results) == {"motion_analogy_figure", "motion_analogy_pairs", "motion_analogy_score_skipped"}
    assert results["motion_analogy_score_skipped"].startswith("no score without data.labels: ")
    assert results["motion_analogy_pairs"] == VIDEOS // 2
    assert (run.dir.figures_dir / results["motion_analogy_figure"]).is_file()
    # other data (e.g. chairs, which have no labels): the figure, and why there is no score
    x, _ = evaluated[1]["test"]
    results = run_eval.motion_analogy(_with_data(run, source="chairs"), {"test": (x, None)})
    assert results["motion_analogy_score_skipped"] == (
        "no score for data source 'chairs': analogies are scored by reading the content video's digit, "
        "so they need moving_digits videos"
    )
    assert results["motion_analogy_figure"] == "motion_analogy.png"


# --------------------------------------------------------------------------- no model needed


def test_digit_classifier_reads_real_canvases() -> None:
    classifier = digit_classifier("digits")
    assert classifier.size == (8, 8) and classifier.source == "digits"
    test = load_dataset("moving_digits", {"images": "digits", "steps": 5, "num_examples": 300, "seed": 4}, "test")
    videos, labels = test.features["video"], test.features["label"]
    frames = classifier.predict_frames(videos.reshape(-1, 64, 64, 1))
    assert (frames == np.repeat(labels, 5)).mean() > 0.85
    assert (classifier.predict_videos(videos) == labels).mean() > 0.85
    # the same in the [-1, 1] range, once mapped back
    wide = load_dataset(
        "moving_digits", {"images": "digits", "steps": 5, "num_examples": 300, "seed": 4, "range": [-1, 1]}, "test"
    )
    np.testing.assert_array_equal(
        classifier.predict_videos(to_unit(wide.features["video"], (-1, 1))), classifier.predict_videos(videos)
    )
    assert digit_classifier("digits") is classifier  # trained once


def test_crop_finds_the_digit() -> None:
    test = load_dataset("moving_digits", {"images": "digits", "steps": 1, "num_examples": 200, "seed": 1}, "test")
    frames = test.features["video"][:, 0]
    crops = crop_digits(frames, (8, 8))
    assert crops.shape == (200, 8, 8, 1)
    np.testing.assert_allclose(crops.sum((1, 2, 3)), frames.sum((1, 2, 3)), rtol=1e-5)  # all the ink
    blob = np.zeros((3, 20, 30, 1), np.float32)
    for i, (r, c) in enumerate([(0, 0), (12, 22), (5, 9)]):
        blob[i, r : r + 8, c : c + 8] = np.pad(np.ones((4, 4, 1)), ((2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(crop_digits(blob, (8, 8)), np.broadcast_to(blob[0, :8, :8], (3, 8, 8, 1)))
    with pytest.raises(EvalError, match="cannot cut 28x28 digits out of 20x30 frames"):
        crop_digits(blob, (28, 28))


def test_pairs_and_votes() -> None:
    content, motion = analogy_pairs(7, [0, 0, 0, 0, 1, 0, 2])
    assert content.tolist() == [0, 1, 2] and motion.tolist() == [4, 4, 4]
    content, motion = analogy_pairs(6)
    assert content.tolist() == [0, 1, 2] and motion.tolist() == [3, 4, 5]
    with pytest.raises(EvalError, match="at least 2 videos"):
        analogy_pairs(1)
    assert majority_vote([[1, 2, 2, 1], [0, 0, 5, 5], [7, 7, 7, 3]]).tolist() == [1, 0, 7]


def test_labelled_strips(tmp_path) -> None:
    videos = np.linspace(0, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4, 1)
    pixels = _pixels(labelled_strips(videos, ["a", "b"], tmp_path / "s.png", scale=2))
    assert pixels.shape[0] == 2 * (8 + 1) + 1
    with pytest.raises(EvalError, match="got 1 labels for 2 videos"):
        labelled_strips(videos, ["a"], tmp_path / "t.png")
    with pytest.raises(EvalError, match=r"shape \(N, T, H, W, C\)"):
        labelled_strips(videos[0], ["a", "b", "c"], tmp_path / "u.png")
