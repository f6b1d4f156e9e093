"""The in-memory dataset every source produces, and the common post-processing.

Conventions (all sources):

- ``image``: float32, NHWC, ``(N, H, W, C)``, values in the declared ``range``.
- ``video``: float32, ``(N, T, H, W, C)``, values in the declared ``range``.
- ``label`` and any other integer feature: int64, ``(N,)``.
- other float features (e.g. the toy source's ``x``): float32, left unscaled.

A loader may hand over pixel features as uint8 (0-255) or floats in ``[0, 1]``; rank-3
images ``(N, H, W)`` and rank-4 videos ``(N, T, H, W)`` get a channel axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ggdsl.errors import DataError

#: ``Dataset.info`` key of ``epoch -> features`` for a source that draws new examples each
#: epoch (:class:`~ggdsl.data.batches.Batches` uses it for epochs after the first).
EPOCH_FEATURES = "epoch_features"

#: Feature names that hold pixels: converted to float32, resized and scaled to ``range``.
PIXEL_FEATURES = {"image": 4, "video": 5}


@dataclass(frozen=True)
class Dataset:
    """One split of a data source, held in memory as numpy arrays.

    Attributes:
        name: Source name (``"mnist"``, ``"tfds:mnist"``, ...).
        split: ``"train"`` or ``"test"``.
        features: Feature name -> array whose first axis is the example axis.
        range: Pixel range of the ``image`` / ``video`` features.
    """

    name: str
    split: str
    features: dict[str, np.ndarray]
    range: tuple[float, float] = (0.0, 1.0)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.features:
            raise DataError(f"{self.name} ({self.split}): the dataset has no features")
        lengths = {name: len(array) for name, array in self.features.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(
                f"{self.name} ({self.split}): features have different numbers of examples: "
                + ", ".join(f"{name} {n}" for name, n in lengths.items())
            )

    @property
    def num_examples(self) -> int:
        """Number of examples (the length of every feature's first axis)."""
        return len(next(iter(self.features.values())))

    @property
    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of ONE example of each feature (the example axis dropped)."""
        return {name: tuple(array.shape[1:]) for name, array in self.features.items()}

    def take(self, indices: np.ndarray, split: str | None = None) -> Dataset:
        """The examples at ``indices`` (in that order), as a dataset of its own."""
        return Dataset(
            name=self.name,
            split=split or self.split,
            features={k: v[indices] for k, v in self.features.items()},
            range=self.range,
            # A subset keeps its examples: new draws per epoch would not respect it.
            info={k: v for k, v in self.info.items() if k != EPOCH_FEATURES},
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}: {array.dtype}{list(array.shape[1:])}" for name, array in self.features.items())
        return f"Dataset({self.name!r}, split={self.split!r}, n={self.num_examples}, {shapes})"


def finalise(
    name: str,
    split: str,
    raw: Mapping[str, Any],
    *,
    range_: tuple[float, float] = (0.0, 1.0),
    resize: tuple[int, int] | None = None,
) -> Dataset:
    """Turns a loader's arrays into a :class:`Dataset` following the conventions above.

    Args:
        name: Source name, for messages.
        split: Split name, for messages.
        raw: Feature name -> array-like.
        range_: Target pixel range, ``(0, 1)`` or ``(-1, 1)``.
        resize: Optional ``(height, width)`` for pixel features (bilinear, see
            :func:`resize_pixels`).

    Returns:
        The dataset.

    Raises:
        DataError: On a wrong rank, pixel values outside ``[0, 1]`` (floats) or a
            non-integer label.
    """
    where = f"{name} ({split})"
    features: dict[str, np.ndarray] = {}
    for feature, value in raw.items():
        array = np.asarray(value)
        if array.ndim == 0:
            raise DataError(f"{where}: feature {feature!r} is a scalar, expected one per example")
        if feature in PIXEL_FEATURES:
            array = _pixels(where, feature, array, PIXEL_FEATURES[feature], range_, resize)
        elif feature == "label" or np.issubdtype(array.dtype, np.integer):
            array = _integers(where, feature, array)
        elif np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32, copy=False)
            if not np.all(np.isfinite(array)):
                bad = int(np.sum(~np.isfinite(array)))
                raise DataError(f"{where}: feature {feature!r} holds {bad} NaN or infinite values")
        features[feature] = array
    return Dataset(name=name, split=split, features=features, range=range_)


def _integers(where: str, feature: str, array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return array.astype(np.int64, copy=False)
    if np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0):
        return array.astype(np.int64)
    raise DataError(f"{where}: feature {feature!r} must hold integers, got dtype {array.dtype}")


def _pixels(
    where: str,
    feature: str,
    array: np.ndarray,
    rank: int,
    range_: tuple[float, float],
    resize: tuple[int, int] | None,
) -> np.ndarray:
    if array.ndim == rank - 1:
        array = array[..., None]
    if array.ndim != rank:
        layout = "(N, H, W, C)" if rank == 4 else "(N, T, H, W, C)"
        raise DataError(
            f"{where}: feature {feature!r} has shape {array.shape}; expected {layout} (or without the channel axis)"
        )
    if array.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{where}: feature {feature!r} has {array.shape[-1]} channels (shape {array.shape}); "
            "expected 1, 3 or 4 in the last axis (NHWC)"
        )
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
        check_pixel_range(where, feature, array, (0.0, 1.0), hint=True)
    else:
        raise DataError(
            f"{where}: feature {feature!r} has dtype {array.dtype}; pixels must be uint8 (0-255) or floats in [0, 1]"
        )
    if resize is not None and tuple(array.shape[-3:-1]) != tuple(resize):
        array = resize_pixels(array, resize)
    if tuple(range_) == (-1.0, 1.0):
        array = array * np.float32(2.0) - np.float32(1.0)
    elif tuple(range_) != (0.0, 1.0):
        raise DataError(f"{where}: range must be [0, 1] or [-1, 1], got {list(range_)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_pixel_range(
    where: str,
    feature: str,
    array: np.ndarray,
    range_: tuple[float, float],
    *,
    hint: bool = False,
) -> None:
    """Raises a :class:`DataError` if an array has values outside ``range_`` (or NaNs).

    Args:
        where: Dataset description for the message.
        feature: Feature name for the message.
        array: The values.
        range_: Allowed ``(low, high)``, inclusive.
        hint: Add advice for loaders' input (uint8 or [0, 1] floats).
    """
    if array.size == 0:
        return
    low, high = float(np.min(array)), float(np.max(array))
    if not (np.isfinite(low) and np.isfinite(high)) or low < range_[0] or high > range_[1]:
        message = (
            f"{where}: feature {feature!r} has values in [{low:g}, {high:g}], outside the "
            f"expected range [{range_[0]:g}, {range_[1]:g}]"
        )
        if hint:
            message += "; store pixels as uint8 (0-255) or as floats in [0, 1]"
        raise DataError(message)


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of the triangle (bilinear) filter, widened when shrinking."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale
    inputs = np.arange(n_in) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(inputs[None, :] - centres[:, None]) / support)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize_pixels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes images ``(..., H, W, C)`` to ``size`` with bilinear interpolation.

    Pixel centres are aligned (half-pixel convention); when shrinking, the triangle filter is
    widened by the shrink factor so that it averages (antialiasing), as PIL's ``BILINEAR``
    does. Each output pixel is a convex combination of input pixels, so values stay in the
    input's range. Implemented as two small matrix products (fast for whole datasets).

    Args:
        array: Float array with the height and width in axes -3 and -2.
        size: Target ``(height, width)``.

    Returns:
        The resized float32 array.
    """
    height, width = array.shape[-3], array.shape[-2]
    rows = _resize_weights(height, size[0])
    cols = _resize_weights(width, size[1])
    # (..., H, W, C) -> (..., h, W, C) -> (..., h, w, C)
    out = np.einsum("hH,...HWC->...hWC", rows, array.astype(np.float32, copy=False))
    out = np.einsum("wW,...hWC->...hwC", cols, out)
    return np.ascontiguousarray(out, dtype=np.float32)


def split_holdout(dataset: Dataset, n: int) -> tuple[Dataset, Dataset | None]:
    """``(rest, held)``: ``n`` examples chosen by a fixed permutation (numpy seed 0) held out.

    The same examples are held out for every run seed, so runs that differ in seed select
    on the same data; the rest keep their original order. ``n = 0`` holds nothing out.

    >>> ds = Dataset("demo", "train", {"x": np.arange(10, dtype=np.float32)[:, None]})
    >>> rest, held = split_holdout(ds, 3)
    >>> rest.num_examples, held.num_examples, held.split
    (7, 3, 'holdout')
    """
    if n <= 0:
        return dataset, None
    if n >= dataset.num_examples:
        raise DataError(
            f"{dataset.name} ({dataset.split}): train.holdout is {n}, but the split has only "
            f"{dataset.num_examples} examples; hold out fewer"
        )
    order = np.random.default_rng(0).permutation(dataset.num_examples)
    held = np.sort(order[:n])
    keep = np.ones(dataset.num_examples, dtype=bool)
    keep[held] = False
    return dataset.take(np.flatnonzero(keep)), dataset.take(held, split="holdout")
