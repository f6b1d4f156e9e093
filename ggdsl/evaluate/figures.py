"""Figures written to a run folder: image grids, t-SNE, loss curves, video strips and GIFs.

Image grids are composed as pixel arrays (each image upscaled by an integer factor with
nearest-neighbour repetition, one padding line between images) and written as PNG, so a
pixel of the file is a pixel of the data; only plots (t-SNE, curves) and titled grids go
through a Matplotlib :class:`~matplotlib.figure.Figure` with the Agg canvas. Nothing here
imports ``pyplot`` or changes Matplotlib's global backend.

Images are numpy arrays ``(N, H, W, C)`` with ``C`` 1 (grayscale) or 3 (RGB), with values in
``value_range`` (the data's declared range, e.g. ``(-1, 1)``); values outside are clipped.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "grid.png")
>>> image_grid(np.zeros((4, 8, 8, 1)), path, ncols=2) == path
True
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from ggdsl.errors import EvalError

PathLike = str | os.PathLike[str]

_PAD_VALUE = 0.5  # mid-grey separators read on both dark and light images


def _to_unit(images: Any, value_range: tuple[float, float]) -> np.ndarray:
    """Checks ``(N, H, W, C)`` and maps ``value_range`` to ``[0, 1]`` as float32 RGB."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise EvalError(f"expected images of shape (N, H, W, C) with C = 1 or 3, got shape {images.shape}")
    lo, hi = value_range
    if not hi > lo:
        raise EvalError(f"value_range must be (low, high) with high > low, got {value_range}")
    unit = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    unit = np.nan_to_num(unit, nan=0.0)
    if unit.shape[-1] == 1:
        unit = np.repeat(unit, 3, axis=-1)
    return unit


def _auto_scale(height: int) -> int:
    return max(1, math.ceil(64 / max(height, 1)))


def tile(
    images: Any,
    *,
    ncols: int,
    value_range: tuple[float, float] = (0.0, 1.0),
    scale: int | None = None,
    pad: int = 1,
) -> np.ndarray:
    """Lays images out row by row in a grid and returns it as a uint8 RGB array.

    Args:
        images: ``(N, H, W, C)``, ``C`` in {1, 3}, values in ``value_range``.
        ncols: Images per row; the last row is filled with padding when ``N`` is not a
            multiple of ``ncols``.
        value_range: The range mapped to black..white.
        scale: Integer upscaling of every image (nearest neighbour); default: enough for
            each image to be at least 64 pixels high.
        pad: Padding pixels (mid-grey) around and between images, after scaling.

    Returns:
        ``(rows * (H*scale + pad) + pad, ncols * (W*scale + pad) + pad, 3)`` uint8 array.

    Example:
        >>> tile(np.ones((3, 2, 2, 1)), ncols=2, scale=1).shape
        (7, 7, 3)
    """
    unit = _to_unit(images, value_range)
    if ncols < 1:
        raise EvalError(f"ncols must be at least 1, got {ncols}")
    n, height, width, _ = unit.shape
    scale = _auto_scale(height) if scale is None else int(scale)
    if scale < 1:
        raise EvalError(f"scale must be at least 1, got {scale}")
    unit = unit.repeat(scale, axis=1).repeat(scale, axis=2)
    height, width = height * scale, width * scale
    ncols = min(ncols, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    grid = np.full((nrows * (height + pad) + pad, ncols * (width + pad) + pad, 3), _PAD_VALUE, np.float32)
    for index in range(n):
        row, col = divmod(index, ncols)
        top, left = pad + row * (height + pad), pad + col * (width + pad)
        grid[top : top + height, left : left + width] = unit[index]
    return np.round(grid * 255.0).astype(np.uint8)


def _prepare(path: PathLike) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return path


def _save_pixels(pixels: np.ndarray, path: PathLike) -> str:
    path = _prepare(path)
    imsave(path, pixels, format="png")
    return path


def _save_figure(figure: Figure, path: PathLike, dpi: int = 100) -> str:
    path = _prepare(path)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=dpi, format="png")
    return path


def image_grid(
    images: Any,
    path: PathLike,
    *,
    ncols: int,
    value_range: tuple[float, float] = (0.0, 1.0),
    titles: Sequence[str] | None = None,
    scale: int | None = None,
) -> str:
    """Saves images as a PNG grid, row by row; grayscale for ``C=1``, colour for ``C=3``.

    Args:
        images: ``(N, H, W, C)`` in ``value_range``.
        path: Output PNG path (parent folders are created).
        ncols: Images per row.
        value_range: The data range mapped to black..white.
        titles: Optional one title per image; the grid is then drawn with Matplotlib axes
            (pixels are no longer one-to-one with the file).
        scale: Integer upscaling for the untitled grid (default: images >= 64 px high).

    Returns:
        ``path`` as a string.

    Raises:
        EvalError: Bad shapes, ranges, or a titles list of the wrong length.

    Example:
        >>> import tempfile, os
        >>> out = image_grid(np.ones((2, 4, 4, 3)), os.path.join(tempfile.mkdtemp(), "g.png"),
        ...                  ncols=2, titles=["a", "b"])
        >>> out.endswith("g.png")
        True
    """
    if titles is None:
        return _save_pixels(tile(images, ncols=ncols, value_range=value_range, scale=scale), path)
    unit = _to_unit(images, value_range)
    if len(titles) != unit.shape[0]:
        raise EvalError(f"got {len(titles)} titles for {unit.shape[0]} images")
    ncols = max(1, min(ncols, unit.shape[0]))
    nrows = max(1, math.ceil(unit.shape[0] / ncols))
    figure = Figure(figsize=(1.4 * ncols, 1.6 * nrows))
    for index, (image, title) in enumerate(zip(unit, titles, strict=True)):
        axes = figure.add_subplot(nrows, ncols, index + 1)
        axes.imshow(image, interpolation="nearest", vmin=0.0, vmax=1.0)
        axes.set_title(str(title), fontsize=8)
        axes.set_axis_off()
    figure.tight_layout()
    return _save_figure(figure, path)


def component_grid(
    samples: Any,
    path: PathLike,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    scale: int | None = None,
) -> str:
    """Saves samples of a mixture as a grid with one column per component.

    Args:
        samples: ``(K, n_per, H, W, C)``: ``n_per`` samples from each of ``K`` components.
        path: Output PNG path.
        value_range: The data range.
        scale: Integer upscaling (default: images >= 64 px high).

    Returns:
        ``path`` as a string. Column ``k`` holds the samples of component ``k``.

    Example:
        >>> import tempfile, os
        >>> out = component_grid(np.zeros((3, 2, 4, 4, 1)),
        ...                      os.path.join(tempfile.mkdtemp(), "c.png"))
        >>> out.endswith("c.png")
        True
    """
    samples = np.asarray(samples)
    if samples.ndim != 5:
        raise EvalError(f"expected samples of shape (K, n_per, H, W, C), got shape {samples.shape}")
    components = samples.shape[0]
    row_major = samples.transpose(1, 0, 2, 3, 4).reshape(-1, *samples.shape[2:])
    return image_grid(row_major, path, ncols=components, value_range=value_range, scale=scale)


def interpolation_grid(
    rows: Any,
    path: PathLike,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    scale: int | None = None,
) -> str:
    """Saves interpolations, one row per path through latent space.

    Args:
        rows: ``(R, S, H, W, C)``: ``R`` paths of ``S`` images each, in path order.
        path: Output PNG path.
        value_range: The data range.
        scale: Integer upscaling (default: images >= 64 px high).

    Returns:
        ``path`` as a string.

    Example:
        >>> import tempfile, os
        >>> out = interpolation_grid(np.zeros((2, 5, 4, 4, 1)),
        ...                          os.path.join(tempfile.mkdtemp(), "i.png"))
        >>> out.endswith("i.png")
        True
    """
    rows = np.asarray(rows)
    if rows.ndim != 5:
        raise EvalError(f"expected rows of shape (R, S, H, W, C), got shape {rows.shape}")
    steps = rows.shape[1]
    flat = rows.reshape(-1, *rows.shape[2:])
    return image_grid(flat, path, ncols=steps, value_range=value_range, scale=scale)


def frame_strip(
    video: Any,
    path: PathLike,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    scale: int | None = None,
) -> str:
    """Saves videos as strips of frames: one row per video, one column per time step.

    Args:
        video: ``(N, T, H, W, C)``.
        path: Output PNG path.
        value_range: The data range.
        scale: Integer upscaling (default: frames >= 64 px high).

    Returns:
        ``path`` as a string.

    Example:
        >>> import tempfile, os
        >>> out = frame_strip(np.zeros((2, 3, 4, 4, 3)),
        ...                   os.path.join(tempfile.mkdtemp(), "v.png"))
        >>> out.endswith("v.png")
        True
    """
    return interpolation_grid(video, path, value_range, scale=scale)


def save_gif(
    video: Any,
    path: PathLike,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    fps: float = 8.0,
    ncols: int | None = None,
    scale: int | None = None,
) -> str | None:
    """Saves a video, or a batch of videos tiled per frame, as a looping GIF.

    Needs Pillow (a dependency of Matplotlib); without it, warns and writes nothing.

    Args:
        video: ``(T, H, W, C)``, or ``(N, T, H, W, C)`` shown as a grid per frame.
        path: Output GIF path.
        value_range: The data range.
        fps: Frames per second.
        ncols: Videos per row for a batch (default: about square).
        scale: Integer upscaling (default: frames >= 64 px high).

    Returns:
        ``path`` as a string, or ``None`` when Pillow is missing.

    Example:
        >>> import tempfile, os
        >>> out = save_gif(np.zeros((3, 4, 4, 1)), os.path.join(tempfile.mkdtemp(), "v.gif"))
        >>> out.endswith("v.gif")
        True
    """
    try:
        from PIL import Image
    except ImportError:
        warnings.warn(
            f"Pillow is not installed, so the GIF {os.fspath(path)} was not written; "
            "install it with `pip install pillow`",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    video = np.asarray(video)
    if video.ndim == 4:
        video = video[None]
    if video.ndim != 5:
        raise EvalError(f"expected a video (T, H, W, C) or videos (N, T, H, W, C), got shape {video.shape}")
    count = video.shape[0]
    ncols = ncols or math.ceil(math.sqrt(count))
    pad = 0 if count == 1 else 1
    frames = [
        Image.fromarray(tile(video[:, t], ncols=ncols, value_range=value_range, scale=scale, pad=pad))
        for t in range(video.shape[1])
    ]
    path = _prepare(path)
    frames[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=max(1, round(1000.0 / fps)),
        loop=0,
    )
    return path


def labelled_strips(
    videos: Any,
    labels: Sequence[str],
    path: PathLike,
    value_range: tuple[float, float] = (0.0, 1.0),
    *,
    scale: int | None = None,
) -> str:
    """Saves videos as strips of frames (one row per video) with a label left of each row.

    Used for motion analogies: rows ``content``, ``motion``, ``analogy`` repeated.
    The strips are composed as pixels (:func:`tile`) and shown in one Matplotlib axes
    whose y ticks carry the labels, with one axes pixel per grid pixel.

    Args:
        videos: ``(N, T, H, W, C)``.
        labels: ``N`` row labels.
        path: Output PNG path.
        value_range: The data range.
        scale: Integer upscaling (default: frames >= 64 px high).

    Returns:
        ``path`` as a string.

    Raises:
        EvalError: Bad shapes, or a labels list of the wrong length.

    Example:
        >>> import tempfile, os
        >>> out = labelled_strips(np.zeros((2, 3, 4, 4, 1)), ["content", "analogy"],
        ...                       os.path.join(tempfile.mkdtemp(), "a.png"))
        >>> out.endswith("a.png")
        True
    """
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise EvalError(f"expected videos of shape (N, T, H, W, C), got shape {videos.shape}")
    if len(labels) != len(videos):
        raise EvalError(f"got {len(labels)} labels for {len(videos)} videos")
    count, steps, height = videos.shape[:3]
    scale = _auto_scale(height) if scale is None else int(scale)
    grid = tile(videos.reshape(-1, *videos.shape[2:]), ncols=steps, value_range=value_range, scale=scale)
    dpi, margin = 100, 90  # pixels left of the grid for the labels
    figure = Figure(figsize=((grid.shape[1] + margin) / dpi, grid.shape[0] / dpi), dpi=dpi)
    axes = figure.add_axes((margin / (grid.shape[1] + margin), 0.0, grid.shape[1] / (grid.shape[1] + margin), 1.0))
    axes.imshow(grid, interpolation="nearest", aspect="equal")
    pitch = height * scale + 1
    axes.set_yticks([1 + pitch * row + (pitch - 1) / 2 for row in range(count)], [str(x) for x in labels], fontsize=8)
    axes.set_xticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.tick_params(length=0)
    return _save_figure(figure, path, dpi=dpi)


def tsne_plot(
    features: Any,
    labels: Any,
    path: PathLike,
    seed: int = 0,
    *,
    max_points: int = 2000,
    perplexity: float = 30.0,
    title: str | None = None,
) -> str:
    """Embeds features in 2-D with t-SNE and saves a scatter plot coloured by label.

    Args:
        features: ``(N, D)`` (higher ranks are flattened per point).
        labels: ``(N,)`` integer labels, or ``None`` for one colour.
        path: Output PNG path.
        seed: Seed of the subsample and of t-SNE.
        max_points: At most this many points (a random subsample) are embedded; t-SNE is
            quadratic-ish in N.
        perplexity: t-SNE perplexity, lowered for small N (it must stay below N).
        title: Optional plot title.

    Returns:
        ``path`` as a string.

    Example:
        >>> import tempfile, os
        >>> rng = np.random.default_rng(0)
        >>> out = tsne_plot(rng.normal(size=(40, 5)), np.arange(40) % 2,
        ...                 os.path.join(tempfile.mkdtemp(), "t.png"))
        >>> out.endswith("t.png")
        True
    """
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    features = features.reshape(features.shape[0], -1)
    n = features.shape[0]
    if n < 3:
        raise EvalError(f"t-SNE needs at least 3 points, got {n}")
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    if labels is not None and labels.size != n:
        raise EvalError(f"got {labels.size} labels for {n} feature vectors")
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        features = features[keep]
        labels = None if labels is None else labels[keep]
        n = max_points
    embedding = TSNE(
        n_components=2,
        perplexity=min(perplexity, max(1.0, (n - 1) / 3)),
        init="pca",
        random_state=seed,
    ).fit_transform(features)
    figure = Figure(figsize=(6, 6))
    axes = figure.add_subplot(1, 1, 1)
    if labels is None:
        axes.scatter(embedding[:, 0], embedding[:, 1], s=4)
    else:
        classes = np.unique(labels)
        colours = _colours(len(classes))
        for colour, value in zip(colours, classes, strict=True):
            mask = labels == value
            axes.scatter(embedding[mask, 0], embedding[mask, 1], s=4, color=colour, label=value)
        if len(classes) <= 20:
            axes.legend(markerscale=3, fontsize=7, loc="best")
    axes.set_xticks([])
    axes.set_yticks([])
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _save_figure(figure, path)


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    name = "tab10" if count <= 10 else "tab20" if count <= 20 else "hsv"
    cmap = colormaps[name]
    if name == "hsv":
        return [cmap(i / count) for i in range(count)]
    return [cmap(i) for i in range(count)]


def _expand_keys(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[list[str]]:
    """One group of metric names per requested key; ``"prefix*"`` matches by prefix."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    groups = []
    for key in keys:
        if key.endswith("*"):
            groups.append([name for name in seen if name.startswith(key[:-1])])
        else:
            groups.append([key] if key in seen else [])
    return groups


def curves_plot(
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
    path: PathLike,
    *,
    x_key: str = "step",
) -> str:
    """Plots training curves from metric records, one panel per key.

    Args:
        records: Dicts as read from ``metrics.jsonl`` (see :meth:`ggdsl.runs.RunDir.read_metrics`).
            A record without a key, or with a non-numeric value, is skipped for that key.
        keys: Metric names; ``"name*"`` puts every metric starting with ``name`` in one
            panel (e.g. ``"d_acc/*"`` for each local discriminator's accuracy).
        path: Output PNG path.
        x_key: The x axis (the record's position when a record lacks it).

    Returns:
        ``path`` as a string.

    Raises:
        EvalError: None of ``keys`` occurs in the records (the message lists those that do).

    Example:
        >>> import tempfile, os
        >>> records = [{"step": s, "loss_d": 1.0 / (s + 1)} for s in range(10)]
        >>> out = curves_plot(records, ["loss_d"], os.path.join(tempfile.mkdtemp(), "c.png"))
        >>> out.endswith("c.png")
        True
    """
    groups = _expand_keys(records, keys)
    if not any(groups):
        available = sorted({name for record in records for name in record} - {x_key})
        raise EvalError(
            f"none of the metrics {list(keys)} occurs in the records; "
            f"available: {', '.join(available) or '(no records)'}"
        )
    figure = Figure(figsize=(7, 2.2 * len(keys)))
    for panel, (key, names) in enumerate(zip(keys, groups, strict=True)):
        axes = figure.add_subplot(len(keys), 1, panel + 1)
        for name in names:
            xs, ys = [], []
            for position, record in enumerate(records):
                value = record.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    xs.append(record.get(x_key, position))
                    ys.append(value)
            axes.plot(xs, ys, label=name, linewidth=1)
        if not names:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)
        elif len(names) > 1:
            axes.legend(fontsize=7, loc="best")
        axes.set_ylabel(key, fontsize=8)
        axes.grid(alpha=0.3)
    figure.axes[-1].set_xlabel(x_key)
    figure.tight_layout()
    return _save_figure(figure, path)
