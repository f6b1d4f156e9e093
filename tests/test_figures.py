"""Figures: files are written, readable, and grids put each image where it belongs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from matplotlib.image import imread

from ggdsl.errors import EvalError
from ggdsl.evaluate import figures


def _rgb(path):
    pixels = imread(path)
    assert pixels.dtype == np.float32
    return np.round(pixels[..., :3] * 255).astype(int)


def test_tile_layout_and_padding():
    images = np.stack([np.full((2, 3, 1), v) for v in (0.0, 1.0, 0.2)])
    grid = figures.tile(images, ncols=2, scale=1, pad=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 3)
    assert (grid[1:3, 1:4] == 0).all()
    assert (grid[1:3, 5:8] == 255).all()
    assert (grid[4:6, 1:4] == 51).all()
    assert (grid[4:6, 5:8] == 128).all()  # the empty slot is padding
    assert (grid[0] == 128).all() and (grid[:, 4] == 128).all()


def test_value_range_and_clipping():
    images = np.array([-1.0, 0.0, 1.0, 3.0]).reshape(4, 1, 1, 1)
    grid = figures.tile(images, ncols=4, value_range=(-1, 1), scale=1, pad=0)
    assert grid[0, :, 0].tolist() == [0, 128, 255, 255]


def test_image_grid_gray_and_rgb(tmp_path):
    gray = figures.image_grid(np.zeros((5, 8, 8, 1)), tmp_path / "a" / "g.png", ncols=3)
    pixels = imread(gray)
    scale = 8  # auto: 8-pixel images become 64 pixels high
    assert pixels.shape[:2] == (2 * (8 * scale + 1) + 1, 3 * (8 * scale + 1) + 1)
    rgb = np.zeros((1, 4, 4, 3))
    rgb[..., 0] = 1.0
    path = figures.image_grid(rgb, tmp_path / "rgb.png", ncols=1, scale=2)
    assert (_rgb(path)[1:9, 1:9] == [255, 0, 0]).all()
    with pytest.raises(EvalError, match="C = 1 or 3"):
        figures.image_grid(np.zeros((2, 4, 4, 2)), tmp_path / "bad.png", ncols=1)


def test_titled_grid(tmp_path):
    path = figures.image_grid(np.zeros((3, 4, 4, 1)), tmp_path / "t.png", ncols=3, titles=["k=0", "k=1", "k=2"])
    assert imread(path).ndim == 3
    with pytest.raises(EvalError, match="titles"):
        figures.image_grid(np.zeros((3, 4, 4, 1)), tmp_path / "t.png", ncols=3, titles=["a"])


def test_component_grid_has_one_column_per_component(tmp_path):
    k, n_per, size = 4, 3, 5
    levels = np.array([0.0, 0.25, 0.5, 1.0])
    samples = np.broadcast_to(levels[:, None, None, None, None], (k, n_per, size, size, 1))
    pixels = _rgb(figures.component_grid(samples, tmp_path / "c.png", (0, 1), scale=1))
    assert pixels.shape[:2] == (n_per * (size + 1) + 1, k * (size + 1) + 1)
    for component, level in enumerate(levels):
        left = 1 + component * (size + 1)
        column = pixels[:, left : left + size]
        for row in range(n_per):
            top = 1 + row * (size + 1)
            assert (column[top : top + size] == round(level * 255)).all()


def test_interpolation_and_frame_strip(tmp_path):
    rows = np.linspace(0, 1, 6).reshape(1, 6, 1, 1, 1) * np.ones((2, 6, 3, 3, 1))
    pixels = _rgb(figures.interpolation_grid(rows, tmp_path / "i.png", scale=1))
    assert pixels.shape[:2] == (2 * 4 + 1, 6 * 4 + 1)
    assert [pixels[5, 1 + 4 * s, 0] for s in range(6)] == [0, 51, 102, 153, 204, 255]
    video = np.random.default_rng(0).uniform(-1, 1, size=(2, 4, 6, 6, 3))
    pixels = imread(figures.frame_strip(video, tmp_path / "v.png", (-1, 1), scale=1))
    assert pixels.shape[:2] == (2 * 7 + 1, 4 * 7 + 1)


def test_save_gif(tmp_path):
    from PIL import Image

    video = np.linspace(0, 1, 5).reshape(5, 1, 1, 1) * np.ones((5, 4, 4, 1))
    path = figures.save_gif(video, tmp_path / "v.gif", fps=10, scale=2)
    with Image.open(path) as gif:
        assert gif.n_frames == 5
        assert gif.size == (8, 8)
    videos = np.zeros((3, 2, 4, 4, 3))
    videos[:, 1] = 1.0  # Pillow merges identical consecutive frames
    batch = figures.save_gif(videos, tmp_path / "b.gif", ncols=3, scale=1)
    with Image.open(batch) as gif:
        assert gif.n_frames == 2
        assert gif.size == (3 * 5 + 1, 6)


def test_save_gif_without_pillow(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert figures.save_gif(np.zeros((2, 4, 4, 1)), tmp_path / "x.gif") is None
    assert any("Pillow" in str(w.message) for w in caught)
    assert not (tmp_path / "x.gif").exists()


def test_tsne_plot(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    features = rng.normal(size=(200, 16)) + labels[:, None] * 3.0
    path = figures.tsne_plot(features, labels, tmp_path / "t.png", seed=0, max_points=150)
    assert imread(path).shape[0] > 100
    figures.tsne_plot(features[:20], None, tmp_path / "u.png", seed=1)


def test_curves_plot(tmp_path):
    records = [{"step": s, "loss_g": 1.0 + s, "d_acc/x,h": 0.5, "d_acc/h,k": 0.6} for s in range(20)]
    records.append({"step": 20, "note": "resumed"})
    path = figures.curves_plot(records, ["loss_g", "d_acc/*", "missing"], tmp_path / "c.png")
    assert imread(path).ndim == 3
    with pytest.raises(EvalError, match="available: d_acc/h,k"):
        figures.curves_plot(records, ["nope"], tmp_path / "n.png")
