"""Scoring videos: pairs for motion analogies and a digit classifier for moving digits.

A motion analogy (the paper's Figures 5-7) generates the content of video ``A`` moving as
video ``B`` moves. On moving digits it is scored by recognising ``A``'s digit in the result:
:func:`digit_classifier` trains a logistic regression on digits cut out of canvases of
the data's own image source (train split), and :func:`crop_digits` cuts a digit out of
any frame the same way (the window of the digit's size holding the most ink; among several,
the one centred on the ink), so real and generated frames are read alike.

>>> frames = np.zeros((1, 12, 12, 1), np.float32)
>>> frames[0, 5:8, 2:5] = 1.0
>>> crop_digits(frames, (3, 3))[0, ..., 0].tolist()
[[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ggdsl.errors import EvalError

__all__ = ["DigitClassifier", "analogy_pairs", "crop_digits", "digit_classifier", "majority_vote", "to_unit"]

#: Canvases the digit classifier is trained on.
CLASSIFIER_CANVASES = 10_000
#: Windows holding this fraction less ink than the most still count as holding the digit.
_INK_TOLERANCE = 1e-3


def to_unit(frames: Any, value_range: tuple[float, float]) -> np.ndarray:
    """Pixels in ``value_range`` -> float32 in ``[0, 1]`` (clipped)."""
    low, high = value_range
    return np.clip((np.asarray(frames, np.float32) - low) / (high - low), 0.0, 1.0)


def crop_digits(frames: Any, size: tuple[int, int]) -> np.ndarray:
    """Cuts the digit out of each frame.

    The ``size`` windows with the most ink (sum of pixels) are found with cumulative
    sums; where several hold it all (a digit with blank margins), the one centred
    nearest the centre of mass of that ink is taken, as MNIST centres its digits.

    Args:
        frames: ``(N, H, W, C)`` in ``[0, 1]``, dark background.
        size: ``(height, width)`` of the digit images.

    Returns:
        ``(N, height, width, C)`` crops.

    Raises:
        EvalError: The frames are smaller than ``size``.
    """
    frames = np.asarray(frames, np.float32)
    n, height, width, _ = frames.shape
    if size[0] > height or size[1] > width:
        raise EvalError(f"cannot cut {size[0]}x{size[1]} digits out of {height}x{width} frames")
    chunk = 1024  # keeps the window sums in cache
    return np.concatenate(
        [_crop(frames[i : i + chunk], size) for i in range(0, n, chunk)] or [np.zeros((0, *size, frames.shape[-1]))]
    )


def _crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    n, height, width, _ = frames.shape
    crop_h, crop_w = size
    ink = frames.sum(-1, dtype=np.float64)
    # window sums, one axis at a time: cumulative sums and their differences
    rows = np.zeros((n, height + 1, width))
    np.cumsum(ink, axis=1, out=rows[:, 1:])
    rows = rows[:, crop_h:] - rows[:, :-crop_h]
    windows = np.zeros((n, rows.shape[1], width + 1))
    np.cumsum(rows, axis=2, out=windows[:, :, 1:])
    windows = windows[:, :, crop_w:] - windows[:, :, :-crop_w]
    top, left = np.divmod(windows.reshape(n, -1).argmax(1), windows.shape[2])
    index = np.arange(n)[:, None, None]
    inside = ink[index, (top[:, None] + np.arange(crop_h))[:, :, None], (left[:, None] + np.arange(crop_w))[:, None, :]]
    mass = np.maximum(inside.sum((1, 2)), 1e-12)
    # among the windows holding (almost) as much ink, the one centred nearest the ink's centre
    target_top = top + (inside.sum(2) * np.arange(crop_h)).sum(1) / mass - (crop_h - 1) / 2
    target_left = left + (inside.sum(1) * np.arange(crop_w)).sum(1) / mass - (crop_w - 1) / 2
    distance = (np.arange(windows.shape[1])[None, :, None] - target_top[:, None, None]) ** 2 + (
        np.arange(windows.shape[2])[None, None, :] - target_left[:, None, None]
    ) ** 2
    full = windows >= windows.max((1, 2), keepdims=True) * (1 - _INK_TOLERANCE) - 1e-9
    top, left = np.divmod(np.where(full, -distance, -np.inf).reshape(n, -1).argmax(1), windows.shape[2])
    return frames[
        index, (top[:, None] + np.arange(crop_h))[:, :, None], (left[:, None] + np.arange(crop_w))[:, None, :]
    ]


@dataclass(frozen=True)
class DigitClassifier:
    """A classifier of digits cut out of canvases with :func:`crop_digits`.

    Attributes:
        model: The fitted scikit-learn classifier (on flattened crops in ``[0, 1]``).
        size: ``(height, width)`` of the crops.
        source: The image source it was trained on.
    """

    model: Any
    size: tuple[int, int]
    source: str

    def predict_frames(self, frames: Any) -> np.ndarray:
        """Labels of ``(N, H, W, C)`` frames in ``[0, 1]``: ``(N,)``."""
        crops = crop_digits(frames, self.size)
        return self.model.predict(crops.reshape(len(crops), -1))

    def predict_videos(self, videos: Any) -> np.ndarray:
        """One label per video ``(N, T, H, W, C)`` in ``[0, 1]``: the most frequent over its frames."""
        videos = np.asarray(videos, np.float32)
        per_frame = self.predict_frames(videos.reshape(-1, *videos.shape[2:]))
        return majority_vote(per_frame.reshape(videos.shape[:2]))


def majority_vote(labels: Any) -> np.ndarray:
    """The most frequent label of each row of ``(N, T)`` integer labels (ties: the smallest).

    >>> majority_vote([[3, 1, 3], [2, 2, 0]]).tolist()
    [3, 2]
    """
    labels = np.asarray(labels, np.int64)
    counts = np.zeros((len(labels), int(labels.max(initial=0)) + 1), np.int64)
    np.add.at(counts, (np.arange(len(labels))[:, None], labels), 1)
    return counts.argmax(1)


@functools.lru_cache(maxsize=4)
def digit_classifier(images: str, path: str | None = None, canvas: int = 64) -> DigitClassifier:
    """A logistic regression on digits of an image source, cut out of canvases.

    The training canvases are the ``moving_digits`` source's own (one frame each,
    ``CLASSIFIER_CANVASES`` of them, seed 0) from the image source's train split, so the
    digits sit where the data puts them and are cut out exactly as frames under test.
    Cached in memory per ``(images, path, canvas)``.

    Args:
        images: The image source (``mnist``, ``fashion_mnist``, ``digits``).
        path: Its ``path`` option, if any.
        canvas: Frame size.

    Returns:
        The fitted classifier.
    """
    from sklearn.linear_model import LogisticRegression

    from ggdsl.data import load_dataset

    options: dict[str, Any] = {
        "images": images,
        "canvas": canvas,
        "steps": 1,
        "num_examples": CLASSIFIER_CANVASES,
        "seed": 0,
    }
    if path:
        options["path"] = path
    data = load_dataset("moving_digits", options, "train")
    size = tuple(load_dataset(images, {"path": path} if path else {}, "test").feature_shapes["image"][:2])
    crops = crop_digits(data.features["video"][:, 0], size)
    model = LogisticRegression(max_iter=300, C=0.5)
    model.fit(crops.reshape(len(crops), -1), data.features["label"])
    return DigitClassifier(model=model, size=size, source=images)


def analogy_pairs(count: int, labels: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Which videos give the content and which the motion of each analogy.

    The first half of ``count`` videos give the content, the second half the motion: pair
    ``i`` takes its motion from video ``half + i``, or, with labels, from the next video of
    the second half (cyclically) whose label differs from that of content video ``i``, so
    that the content and the motion never share a label.

    Args:
        count: Number of videos available (at least 2).
        labels: Optional ``(count,)`` labels.

    Returns:
        ``(content, motion)`` index arrays of equal length ``count // 2``.

    Example:
        >>> [a.tolist() for a in analogy_pairs(6, [1, 2, 3, 1, 2, 3])]
        [[0, 1, 2], [4, 5, 3]]
    """
    half = count // 2
    if half < 1:
        raise EvalError(f"a motion analogy needs at least 2 videos, got {count}")
    content = np.arange(half)
    motion = half + content
    if labels is None:
        return content, motion
    labels = np.asarray(labels)
    second = np.arange(half, 2 * half)
    for i in content:
        order = np.roll(second, -i)
        differing = order[labels[order] != labels[i]]
        if len(differing):
            motion[i] = differing[0]
    return content, motion
