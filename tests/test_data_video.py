"""The ``chairs`` source: rendered rotating chairs, checked against an independent ray caster."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ggdsl.cli import BUNDLED
from ggdsl.data import chairs
from ggdsl.data import sources as data_sources
from ggdsl.data.registry import check_source_options
from ggdsl.data.sources import chairs_cache_dir, load_dataset
from ggdsl.errors import DataError
from ggdsl.spec.load import load_spec
from ggdsl.train import open_dataset

STEPS = 8
OPTIONS = {"steps": STEPS, "num_examples": 6, "seed": 3}


@pytest.fixture(scope="module")
def videos() -> np.ndarray:
    return load_dataset("chairs", OPTIONS).features["video"]


def _silhouette(video: np.ndarray) -> np.ndarray:
    """Pixels that are not the white background, from [0, 1] RGB."""
    return (video < 1.0 - 1e-6).any(axis=-1)


def test_options_are_checked() -> None:
    assert check_source_options("chairs", {"canvas": 32, "count": 10, "elevation": 30, "random_start": False}) == []
    # the bundled SSGAN spec's data: 31 views of 64x64 RGB frames, as its x[t] needs
    spec = load_spec(BUNDLED / "ssgan_chairs_t31.yaml", overrides=["data.num_examples=2"])
    dataset = open_dataset(spec, "test")
    assert dataset.feature_shapes == {"video": (31, 64, 64, 3)} and dataset.range == (-1.0, 1.0)
    problems = dict(check_source_options("chairs", {"count": 0, "random_start": "yes", "colour": 1}))
    assert set(problems) == {"count", "random_start", "colour"}
    assert "must be >= 1" in problems["count"] and "true or false" in problems["random_start"]
    with pytest.raises(DataError, match=r"number of views is not set \(data.steps / time.steps\)"):
        load_dataset("chairs", {"num_examples": 2})
    with pytest.raises(DataError, match="data.elevation: must be below 90 degrees, got 90"):
        load_dataset("chairs", {"steps": 2, "num_examples": 2, "elevation": 90})


def test_shape_dtype_and_range(videos: np.ndarray) -> None:
    assert videos.shape == (6, STEPS, 64, 64, 3) and videos.dtype == np.float32
    assert videos.min() >= 0.0 and videos.max() == 1.0  # the background is white
    dataset = load_dataset("chairs", {**OPTIONS, "range": [-1, 1], "canvas": 32}, "train")
    assert list(dataset.features) == ["video"] and dataset.split == "train"
    small = dataset.features["video"]
    assert small.shape == (6, STEPS, 32, 32, 3) and small.dtype == np.float32
    assert small.min() >= -1.0 and small.max() == 1.0 and small.min() < 0.0
    # the pixel values come in 256 levels, as from uint8
    np.testing.assert_allclose(videos * 255, np.round(videos * 255), atol=1e-3)


def test_deterministic_per_seed_and_split(videos: np.ndarray) -> None:
    again = load_dataset("chairs", dict(OPTIONS)).features["video"]
    np.testing.assert_array_equal(videos, again)
    other_seed = load_dataset("chairs", {**OPTIONS, "seed": 4}).features["video"]
    test_split = load_dataset("chairs", OPTIONS, "test").features["video"]
    for other in (other_seed, test_split):
        assert other.shape == videos.shape
        assert np.abs(other - videos).mean() > 0.02
    # the first videos do not depend on how many are asked for
    fewer = load_dataset("chairs", {**OPTIONS, "num_examples": 2}).features["video"]
    np.testing.assert_array_equal(fewer, videos[:2])
    assert load_dataset("chairs", {"steps": 1}, "test").num_examples == data_sources.CHAIRS_DEFAULT_VIDEOS["test"]


def test_views_are_one_turn(videos: np.ndarray) -> None:
    # half as many views are every other view of the same turn
    half = load_dataset("chairs", {**OPTIONS, "steps": STEPS // 2}).features["video"]
    np.testing.assert_array_equal(half, videos[:, ::2])
    # the view a full turn after the first is the first again
    made = chairs.make_chairs(np.random.default_rng(5).random((4, chairs.PARAMETERS)))
    start = np.array([0.0, 0.3, 1.7, 4.0])
    turned = chairs.render(made, np.stack([start, start + 2 * np.pi], 1), size=48)
    differing = np.abs(turned[:, 0].astype(int) - turned[:, 1].astype(int)) > 1
    assert differing.mean() < 1e-3
    # neighbouring views (the last and the first too) are closer than views further apart,
    # compared on 4x4-pooled frames; the distance grows over the first quarter of a turn
    steps = 31
    turn = load_dataset("chairs", {"steps": steps, "num_examples": 4, "canvas": 32}).features["video"]
    pooled = turn.reshape(4, steps, 8, 4, 8, 4, 3).mean((3, 5))

    def distance(shift: int) -> float:
        return float(np.abs(pooled - np.roll(pooled, -shift, axis=1)).mean())

    assert distance(1) < distance(2) < distance(4) < distance(8)
    assert distance(1) < 0.5 * min(distance(shift) for shift in range(6, steps - 5))
    assert not np.array_equal(turn[:, 0], turn[:, 1])


def test_random_start_and_count() -> None:
    fixed = load_dataset("chairs", {**OPTIONS, "random_start": False}).features["video"]
    random = load_dataset("chairs", OPTIONS).features["video"]
    assert not np.array_equal(fixed[:, 0], random[:, 0])
    # with random_start off, every chair starts from the same side: its front
    front = chairs.render(
        chairs.make_chairs(np.random.default_rng([3, 0]).random((6, chairs.PARAMETERS))), np.zeros((6, 1))
    )
    np.testing.assert_array_equal(np.round(fixed[:, 0] * 255).astype(np.uint8), front[:, 0])
    # count: fewer chairs than videos, shown from different start angles
    shared = load_dataset("chairs", {**OPTIONS, "count": 2, "random_start": False}).features["video"]
    np.testing.assert_array_equal(shared[0], shared[2])
    np.testing.assert_array_equal(shared[1], shared[5])
    assert not np.array_equal(shared[0], shared[1])


def test_chairs_differ_in_colour_and_proportion(videos: np.ndarray) -> None:
    many = load_dataset("chairs", {"steps": 1, "num_examples": 40, "random_start": False, "canvas": 48})
    front = many.features["video"][:, 0]
    mask = _silhouette(front)
    colours = np.stack([front[i][mask[i]].mean(0) for i in range(len(front))])
    assert colours.std(0).min() > 0.05  # every channel varies between chairs
    rows, cols = mask.any(2), mask.any(1)
    aspect = rows.sum(1) / cols.sum(1)  # silhouette height / width seen from the front
    assert aspect.max() > 1.3 * aspect.min()
    assert len({mask[i].tobytes() for i in range(len(mask))}) == len(mask)


def test_silhouettes_are_whole_and_centred(videos: np.ndarray) -> None:
    mask = _silhouette(videos)  # (N, T, H, W)
    size = mask.shape[-1]
    assert mask.mean((2, 3)).min() > 0.03
    # inside the frame, with a margin
    assert not mask[..., :2, :].any() and not mask[..., -2:, :].any()
    assert not mask[..., :2].any() and not mask[..., -2:].any()
    rows, cols = np.nonzero(mask.reshape(-1, size, size).sum(0))
    weights = mask.reshape(-1, size, size).sum(0)[rows, cols]
    centre = np.array([np.average(rows, weights=weights), np.average(cols, weights=weights)])
    assert np.abs(centre - (size - 1) / 2).max() < 0.12 * size


def _ray_cast(made: chairs.Chairs, azimuth: np.ndarray, size: int, elevation: float) -> np.ndarray:
    """Reference renderer: a ray per sample, intersected with every box as three slabs."""
    samples = size * chairs.SUPERSAMPLE
    scale, floor_row = chairs._framing(made, math.radians(elevation), size)
    centres = np.arange(samples) + 0.5
    out = np.empty((len(made), len(azimuth[0]), size, size, 3), np.uint8)
    for n in range(len(made)):
        for view, angle in enumerate(azimuth[n]):
            rotation = chairs._camera(np.array([angle]), math.radians(elevation))[0]
            x = (centres[None, :] - samples / 2) / (scale[n] * chairs.SUPERSAMPLE) + 0 * centres[:, None]
            y = (floor_row[n] * chairs.SUPERSAMPLE - centres[:, None]) / (scale[n] * chairs.SUPERSAMPLE) + 0 * x
            nearest = np.full(x.shape, -np.inf)
            colour = np.tile(np.array(chairs.BACKGROUND), (*x.shape, 1))
            for box in np.nonzero(made.present[n])[0]:
                corners = made.corners[n, box] @ rotation.T
                origin, axes = corners[0], np.stack([corners[1], corners[2], corners[4]], 1) - corners[0][:, None]
                inverse = np.linalg.inv(axes)
                # local coordinates along the ray (x, y, z): w = p + z q
                p = np.einsum("ij,hwj->hwi", inverse, np.stack([x - origin[0], y - origin[1], -origin[2] + 0 * x], -1))
                q = inverse[:, 2]
                with np.errstate(divide="ignore", invalid="ignore"):
                    a, b = -p / q, (1 - p) / q
                low = np.where(q == 0, np.where((p >= 0) & (p <= 1), -np.inf, np.inf), np.minimum(a, b))
                high = np.where(q == 0, np.where((p >= 0) & (p <= 1), np.inf, -np.inf), np.maximum(a, b))
                front = high.min(-1)  # the largest z inside the box: nearest to the camera
                hit = (low.max(-1) <= front) & (front > nearest)
                # the face entered through: the slab whose upper bound is the nearest
                axis = high.argmin(-1)
                side = (q > 0)[axis].astype(int)  # z grows towards w = 1: the face on the high side
                face = np.array([[1, 0], [3, 2], [5, 4]])[axis, side]  # _FACES order: +x -x +y -y +z -z
                o, a_, b_ = (corners[chairs._FACES[:, i]] for i in range(3))
                normal = np.cross(a_ - o, b_ - o)
                normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
                shade = chairs.AMBIENT + (1 - chairs.AMBIENT) * np.maximum(normal @ chairs.LIGHT, 0)
                face_colour = made.colours[n, box][None] * shade[:, None]
                nearest = np.where(hit, front, nearest)
                colour = np.where(hit[..., None], face_colour[face], colour)
            fine = np.round(colour * 255).reshape(size, chairs.SUPERSAMPLE, size, chairs.SUPERSAMPLE, 3)
            out[n, view] = np.floor(fine.mean((1, 3)) + 0.5).astype(np.uint8)
    return out


def test_rasteriser_matches_ray_casting() -> None:
    made = chairs.make_chairs(np.random.default_rng(11).random((5, chairs.PARAMETERS)))
    azimuth = np.random.default_rng(12).uniform(0, 2 * np.pi, (5, 3))
    size, elevation = 32, 25.0
    fast = chairs.render(made, azimuth, size=size, elevation=elevation).astype(int)
    reference = _ray_cast(made, azimuth, size, elevation).astype(int)
    close = np.abs(fast - reference).max(-1) <= 2
    assert close.mean() > 0.995
    assert _silhouette(reference / 255.0).mean() > 0.05


def test_render_rejects_bad_azimuths() -> None:
    made = chairs.make_chairs(np.zeros((2, chairs.PARAMETERS)))
    with pytest.raises(ValueError, match=r"azimuths of shape \(2, views\)"):
        chairs.render(made, np.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(N, 32\)"):
        chairs.make_chairs(np.zeros((2, 3)))


def test_disk_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GGDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(data_sources, "CHAIRS_DISK_CACHE_FRAMES", 1)
    data_sources._chair_videos.cache_clear()
    options = {"steps": 3, "num_examples": 2, "canvas": 16, "seed": 9}
    first = load_dataset("chairs", options).features["video"]
    files = list((tmp_path / "chairs").glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith(f"chairs-v{chairs.GENERATOR_VERSION}-")
    data_sources._chair_videos.cache_clear()

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(chairs, "chair_videos", no_render)
    np.testing.assert_array_equal(load_dataset("chairs", options).features["video"], first)
    data_sources._chair_videos.cache_clear()
    monkeypatch.setenv("GGDSL_CACHE_DIR", "off")
    assert chairs_cache_dir() is None
    monkeypatch.delenv("GGDSL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert chairs_cache_dir() == tmp_path / "xdg" / "ggdsl" / "chairs"
