"""Procedural 3D chairs and a small numpy rasteriser: the ``chairs`` data source.

A stand-in for the rendered 3D chairs of the paper (2786 chairs, 31 views each around the
azimuth): every chair is a set of boxes (a seat; a solid back or a frame back; four legs
or a pedestal; optional arms) with random proportions, recline and colours. A video turns
one chair through a full circle on a turntable in front of a fixed orthographic camera
and a fixed light, one view per step.

Rendering, for a batch of frames at once:

1. each box's 8 corners are turned (azimuth about the vertical axis, then the camera's
   elevation) and projected orthographically to pixels;
2. faces turned away from the camera are culled; each remaining face is a parallelogram
   ``O + u E1 + v E2`` (``0 <= u, v <= 1``), whose inverse affine map gives, per pixel
   row, the interval of pixel centres inside it, and its depth as a linear function of
   the pixel position;
3. the intervals are expanded into fragments (frame, pixel, depth, face) and a z-buffer
   keeps the nearest one per pixel (``np.minimum.at`` on depth and face packed into one
   integer);
4. a face's colour is its part's colour times a Lambert term with a fixed light,
   ``AMBIENT + (1 - AMBIENT) max(0, n . l)``; the picture is rendered at
   ``SUPERSAMPLE`` times the size and averaged down (antialiased edges).

>>> chairs = make_chairs(np.random.default_rng(0).random((2, PARAMETERS)))
>>> video = render_turns(chairs, steps=4, size=32)
>>> video.shape, video.dtype
((2, 4, 32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUND",
    "GENERATOR_VERSION",
    "PARAMETERS",
    "Chairs",
    "chair_videos",
    "make_chairs",
    "render",
    "render_turns",
]

#: Changes whenever the same options would give different pixels (cache keys use it).
GENERATOR_VERSION = 1
#: Uniform numbers that define one chair (columns of the matrix :func:`make_chairs` reads).
PARAMETERS = 32
#: Background colour (white, as the rendered chairs of the paper).
BACKGROUND = (1.0, 1.0, 1.0)
#: Light direction in camera coordinates (x right, y up, z towards the camera).
LIGHT = np.array([-0.45, 0.65, 0.62]) / np.linalg.norm([-0.45, 0.65, 0.62])
#: Share of a face's colour it keeps when the light does not reach it.
AMBIENT = 0.35
#: Each picture is rendered this many times larger per side and averaged down.
SUPERSAMPLE = 2
#: Fraction of the frame the chair's bounding cylinder fills.
FILL = 0.9

#: Boxes per chair (unused ones are flagged absent): seat, back panel or top rail, two
#: back posts, four legs (or a pedestal's column and two base bars), two arms and two arm
#: posts.
BOXES = 12
_SEAT, _BACK, _POSTS, _LEGS, _ARMS, _ARM_POSTS = 0, 1, (2, 3), (4, 5, 6, 7), (8, 9), (10, 11)

# Corner i of a box has the high x if bit 0 of i is set, high y for bit 1, high z for bit 2.
_CORNER_BITS = np.array([[(i >> axis) & 1 for axis in range(3)] for i in range(8)], np.float64)
# Per face (origin, a, b): cross(corner[a] - corner[o], corner[b] - corner[o]) points out.
_FACES = np.array([[1, 3, 5], [0, 4, 2], [2, 6, 3], [0, 1, 4], [4, 5, 6], [0, 2, 1]])
_EDGE_SLACK = 1e-4  # faces of one box share edges: keep pixel centres on an edge in both
_SLOT_BITS = 7  # a face's slot in its frame, box * 6 + face < 2**7, packed under its depth
_DEPTH_LEVELS = 1 << 23
_EMPTY = (_DEPTH_LEVELS << _SLOT_BITS) | (BOXES * 6)  # behind everything; the background slot
_DEPTH_EXTENT = 4.0  # every corner is closer than this to the turning axis's foot


@dataclass(frozen=True)
class Chairs:
    """Chairs as boxes, ready to render.

    Attributes:
        corners: ``(N, BOXES, 8, 3)`` corner positions (x right, y up, z to the front of
            the chair), the floor at ``y = 0`` and the turning axis at ``x = z = 0``.
        present: ``(N, BOXES)`` whether each box is part of the chair.
        colours: ``(N, BOXES, 3)`` RGB in ``[0, 1]`` of each box before shading.
    """

    corners: np.ndarray
    present: np.ndarray
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.corners)


def _box(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(N, 3)`` low and high corners -> ``(N, 8, 3)`` corners."""
    return lo[:, None, :] + _CORNER_BITS[None] * (hi - lo)[:, None, :]


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb

    return hsv_to_rgb(np.stack([hue, saturation, value], axis=-1))


def make_chairs(uniform: np.ndarray) -> Chairs:
    """Builds chairs from uniform random numbers, one row per chair.

    Row ``i`` alone decides chair ``i``, so the first ``n`` chairs of a larger matrix are
    the chairs of its first ``n`` rows. Proportions (seat width 0.8-1.3 units, depth
    0.75-1.2, height 0.75-1.1; back 0.5-1.2 high, reclined 0-18 degrees, solid in 60% of
    chairs, else two posts and a top rail; four legs in 80%, else a pedestal; arms in
    35%) and colours (the seat, back and arms share one hue; the legs take a dark wood,
    metal or the seat's colour) are all drawn from the row.

    Args:
        uniform: ``(N, PARAMETERS)`` numbers in ``[0, 1)``.

    Returns:
        The chairs.

    Example:
        >>> len(make_chairs(np.full((3, PARAMETERS), 0.5)))
        3
    """
    u = np.asarray(uniform, np.float64)
    if u.ndim != 2 or u.shape[1] != PARAMETERS:
        raise ValueError(f"expected uniform numbers of shape (N, {PARAMETERS}), got {u.shape}")
    n = len(u)

    def span(column: int, low: float, high: float) -> np.ndarray:
        return low + (high - low) * u[:, column]

    zero = np.zeros(n)
    width, depth, height = span(0, 0.8, 1.3), span(1, 0.75, 1.2), span(2, 0.75, 1.1)
    seat_thickness = span(3, 0.06, 0.16)
    back_height, back_thickness = span(4, 0.5, 1.2), span(5, 0.05, 0.12)
    back_width = width * span(6, 0.75, 1.0)
    recline = np.radians(span(7, 0.0, 18.0))
    solid_back = u[:, 8] < 0.6
    post_width, rail_height = span(9, 0.06, 0.12), span(10, 0.12, 0.3)
    four_legs = u[:, 11] < 0.8
    leg_thickness, leg_inset = span(12, 0.05, 0.12), span(13, 0.0, 0.08)
    column_width = span(14, 0.08, 0.16)
    has_arms = u[:, 15] < 0.35
    arm_height, arm_width, arm_reach = span(16, 0.18, 0.35), span(17, 0.06, 0.12), span(18, 0.6, 1.0)

    corners = np.zeros((n, BOXES, 8, 3))
    present = np.ones((n, BOXES), bool)
    under_seat = height - seat_thickness
    half_w, half_d = width / 2, depth / 2
    corners[:, _SEAT] = _box(np.stack([-half_w, under_seat, -half_d], 1), np.stack([half_w, height, half_d], 1))

    # the back: a panel, or a top rail on two posts; reclined about the seat's back edge
    back_z = np.stack([-half_d, -half_d + back_thickness], 1)
    top = height + back_height
    rail_low = np.where(solid_back, height, top - rail_height)
    corners[:, _BACK] = _box(
        np.stack([-back_width / 2, rail_low, back_z[:, 0]], 1), np.stack([back_width / 2, top, back_z[:, 1]], 1)
    )
    for side, slot in zip((-1, 1), _POSTS, strict=True):
        outer = side * back_width / 2
        inner = outer - side * post_width
        corners[:, slot] = _box(
            np.stack([np.minimum(outer, inner), height, back_z[:, 0]], 1),
            np.stack([np.maximum(outer, inner), rail_low, back_z[:, 1]], 1),
        )
        present[:, slot] = ~solid_back
    pivot_y, pivot_z = height[:, None], -half_d[:, None]
    for slot in (_BACK, *_POSTS):
        dy, dz = corners[:, slot, :, 1] - pivot_y, corners[:, slot, :, 2] - pivot_z
        cos, sin = np.cos(recline)[:, None], np.sin(recline)[:, None]
        corners[:, slot, :, 1] = pivot_y + dy * cos + dz * sin
        corners[:, slot, :, 2] = pivot_z + dz * cos - dy * sin

    # four legs at the seat's corners, or a pedestal: a column on two crossed bars
    leg_x, leg_z = half_w - leg_inset - leg_thickness / 2, half_d - leg_inset - leg_thickness / 2
    half_leg = leg_thickness / 2
    for slot, (sx, sz) in zip(_LEGS, ((-1, -1), (1, -1), (-1, 1), (1, 1)), strict=True):
        centre_x, centre_z = sx * leg_x, sz * leg_z
        corners[:, slot] = _box(
            np.stack([centre_x - half_leg, zero, centre_z - half_leg], 1),
            np.stack([centre_x + half_leg, under_seat, centre_z + half_leg], 1),
        )
    base, bar = 0.08, 0.05
    half_col, reach = column_width / 2, 0.45 * np.minimum(width, depth)
    pedestal = [
        _box(np.stack([-half_col, zero + base, -half_col], 1), np.stack([half_col, under_seat, half_col], 1)),
        _box(np.stack([-reach, zero, zero - bar], 1), np.stack([reach, zero + base, zero + bar], 1)),
        _box(np.stack([zero - bar, zero, -reach], 1), np.stack([zero + bar, zero + base, reach], 1)),
    ]
    for slot, box in zip(_LEGS[:3], pedestal, strict=True):
        corners[:, slot] = np.where(four_legs[:, None, None], corners[:, slot], box)
    present[:, _LEGS[3]] = four_legs

    # arms along the seat's sides, each on a post near its front end
    arm_top = height + arm_height
    arm_front = -half_d + depth * arm_reach
    for side, arm_slot, post_slot in zip((-1, 1), _ARMS, _ARM_POSTS, strict=True):
        outer = side * half_w
        inner = outer - side * arm_width
        x_lo, x_hi = np.minimum(outer, inner), np.maximum(outer, inner)
        corners[:, arm_slot] = _box(
            np.stack([x_lo, arm_top - 0.06, -half_d + back_thickness], 1), np.stack([x_hi, arm_top, arm_front], 1)
        )
        corners[:, post_slot] = _box(
            np.stack([x_lo, height, arm_front - arm_width], 1), np.stack([x_hi, arm_top - 0.06, arm_front], 1)
        )
        present[:, arm_slot] = present[:, post_slot] = has_arms

    # colours: one hue for the seat, back and arms; legs dark wood, grey metal or the same
    body = _hsv_to_rgb(u[:, 19], span(20, 0.35, 1.0), span(21, 0.35, 0.9))
    wood = _hsv_to_rgb(span(22, 0.05, 0.1), span(23, 0.5, 0.8), span(24, 0.25, 0.5))
    metal = _hsv_to_rgb(zero, zero, span(25, 0.3, 0.6))
    leg_kind = u[:, 26]
    legs = np.where((leg_kind < 0.4)[:, None], wood, np.where((leg_kind < 0.7)[:, None], metal, body))
    colours = np.repeat(body[:, None, :], BOXES, axis=1)
    colours[:, list(_LEGS)] = legs[:, None, :]
    colours[:, list(_ARM_POSTS)] = legs[:, None, :]
    return Chairs(corners=corners, present=present, colours=colours)


def _camera(azimuth: np.ndarray, elevation: float) -> np.ndarray:
    """``(F, 3, 3)`` rotations world -> camera: turn about y by the azimuth, tilt by the elevation."""
    cos_a, sin_a = np.cos(azimuth), np.sin(azimuth)
    cos_e, sin_e = math.cos(elevation), math.sin(elevation)
    zero, one = np.zeros_like(azimuth), np.ones_like(azimuth)
    turn = np.stack(
        [np.stack([cos_a, zero, sin_a], -1), np.stack([zero, one, zero], -1), np.stack([-sin_a, zero, cos_a], -1)], -2
    )
    tilt = np.array([[1.0, 0.0, 0.0], [0.0, cos_e, -sin_e], [0.0, sin_e, cos_e]])
    return tilt[None] @ turn


def _framing(chairs: Chairs, elevation: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per chair, a scale (pixels per unit) and the pixel row of ``y = 0``, such that every
    view of the chair fits in the frame with the same size and position."""
    corners = chairs.corners.reshape(len(chairs), -1, 3)
    present = np.repeat(chairs.present, 8, axis=1)
    radius = np.where(present, np.hypot(corners[..., 0], corners[..., 2]), 0.0).max(1)
    y_top = np.where(present, corners[..., 1], 0.0).max(1)
    cos_e, sin_e = math.cos(elevation), math.sin(elevation)
    # the screen's up coordinate is y cos(e) - z sin(e), with z anywhere in [-radius, radius]
    low, high = -radius * sin_e, y_top * cos_e + radius * sin_e
    scale = FILL * size / np.maximum(2 * radius, high - low)
    floor_row = size / 2 + scale * (high + low) / 2
    return scale, floor_row


def render(
    chairs: Chairs, azimuth: np.ndarray, *, size: int = 64, elevation: float = 20.0, chunk: int = 512
) -> np.ndarray:
    """Renders views of chairs.

    Args:
        chairs: ``N`` chairs.
        azimuth: ``(N, V)`` turning angles in radians, ``V`` views of each chair.
        size: Height and width of a picture in pixels.
        elevation: Angle in degrees the camera looks down at the chair from.
        chunk: Frames rendered at a time (bounds the memory of the fragment lists).

    Returns:
        ``(N, V, size, size, 3)`` uint8 RGB pictures.

    Example:
        >>> chairs = make_chairs(np.random.default_rng(1).random((1, PARAMETERS)))
        >>> image = render(chairs, np.zeros((1, 1)), size=16)[0, 0]
        >>> image.shape, bool((image[0, 0] == 255).all()), bool((image[8, 8] < 255).any())
        ((16, 16, 3), True, True)
    """
    azimuth = np.asarray(azimuth, np.float64)
    n = len(chairs)
    if azimuth.ndim != 2 or len(azimuth) != n:
        raise ValueError(f"expected azimuths of shape ({n}, views), got {azimuth.shape}")
    elevation = math.radians(elevation)
    scale, floor_row = _framing(chairs, elevation, size)
    views = azimuth.shape[1]
    frames = np.empty((n * views, size, size, 3), np.uint8)
    chair_of = np.repeat(np.arange(n), views)
    flat_azimuth = azimuth.reshape(-1)
    for start in range(0, n * views, chunk):
        pick = chair_of[start : start + chunk]
        frames[start : start + chunk] = _render_frames(
            chairs.corners[pick],
            chairs.present[pick],
            chairs.colours[pick],
            _camera(flat_azimuth[start : start + chunk], elevation),
            scale[pick],
            floor_row[pick],
            size,
        )
    return frames.reshape(n, views, size, size, 3)


def _render_frames(
    corners: np.ndarray,
    present: np.ndarray,
    colours: np.ndarray,
    rotation: np.ndarray,
    scale: np.ndarray,
    floor_row: np.ndarray,
    size: int,
) -> np.ndarray:
    """One chunk: ``F`` frames, each of its own chair and rotation -> ``(F, size, size, 3)`` uint8."""
    frames = len(corners)
    big = size * SUPERSAMPLE
    camera = np.einsum("fij,fbkj->fbki", rotation, corners)  # (F, B, 8, 3)
    origin, corner_a, corner_b = (camera[:, :, _FACES[:, i]] for i in range(3))  # (F, B, 6, 3)
    edge_1, edge_2 = corner_a - origin, corner_b - origin
    normal = np.cross(edge_1, edge_2)
    normal /= np.maximum(np.linalg.norm(normal, axis=-1, keepdims=True), 1e-12)
    facing = present[:, :, None] & (normal[..., 2] > 1e-6)
    shade = AMBIENT + (1.0 - AMBIENT) * np.maximum(normal @ LIGHT, 0.0)
    face_colour = colours[:, :, None, :] * shade[..., None]  # (F, B, 6, 3)

    frame_id, box_id, face_id = np.nonzero(facing)
    pixel_scale = (scale * SUPERSAMPLE)[frame_id]
    # pixel coordinates: column = centre + s x, row = floor_row - s y; depth = -z (smaller is nearer)
    ox = big / 2 + pixel_scale * origin[frame_id, box_id, face_id, 0]
    oy = floor_row[frame_id] * SUPERSAMPLE - pixel_scale * origin[frame_id, box_id, face_id, 1]
    oz = -origin[frame_id, box_id, face_id, 2]
    e1, e2 = edge_1[frame_id, box_id, face_id], edge_2[frame_id, box_id, face_id]
    e1x, e1y, e1z = pixel_scale * e1[:, 0], -pixel_scale * e1[:, 1], -e1[:, 2]
    e2x, e2y, e2z = pixel_scale * e2[:, 0], -pixel_scale * e2[:, 1], -e2[:, 2]
    det = e1x * e2y - e1y * e2x
    keep = np.abs(det) > 1e-9
    # (u, v) = inverse of [E1 E2] applied to (p - O): u = au px + bu py + cu, likewise v
    with np.errstate(divide="ignore", invalid="ignore"):
        au, bu = e2y / det, -e2x / det
        av, bv = -e1y / det, e1x / det
    cu, cv = -(au * ox + bu * oy), -(av * ox + bv * oy)
    depth_x, depth_y = au * e1z + av * e2z, bu * e1z + bv * e2z
    depth_c = oz + cu * e1z + cv * e2z

    # rows each face spans
    ys = oy[:, None] + np.stack([np.zeros_like(e1y), e1y, e2y, e1y + e2y], 1)
    row_lo = np.clip(np.ceil(ys.min(1) - 0.5), 0, big).astype(np.int32)
    row_hi = np.clip(np.floor(ys.max(1) - 0.5), -1, big - 1).astype(np.int32)
    rows = np.where(keep, np.maximum(row_hi - row_lo + 1, 0), 0)
    owner = np.repeat(np.arange(len(rows)), rows)
    row = row_lo[owner] + _ranks(rows)
    centre_y = row + 0.5
    lo_u, hi_u = _interval(au[owner], bu[owner] * centre_y + cu[owner])
    lo_v, hi_v = _interval(av[owner], bv[owner] * centre_y + cv[owner])
    col_lo = np.clip(np.ceil(np.maximum(lo_u, lo_v) - 0.5), 0, big).astype(np.int32)
    col_hi = np.clip(np.floor(np.minimum(hi_u, hi_v) - 0.5), -1, big - 1).astype(np.int32)

    # each row splits into SUPERSAMPLE runs of every SUPERSAMPLE-th column; the buffer is laid
    # out (frame, row % S, col % S, row // S, col // S), so that a run is contiguous and the
    # S * S samples of an output pixel lie size**2 apart
    slot = (box_id * 6 + face_id).astype(np.int32)  # the face's place among its frame's faces
    parity = np.arange(SUPERSAMPLE)[None, :]
    first = col_lo[:, None] + np.mod(parity - col_lo[:, None], SUPERSAMPLE)
    counts = np.maximum((col_hi[:, None] - first) // SUPERSAMPLE + 1, 0).reshape(-1)
    coarse_row, sub_row = np.divmod(row, SUPERSAMPLE)
    plane = (frame_id[owner] * SUPERSAMPLE + sub_row)[:, None] * SUPERSAMPLE + parity
    start = ((plane * size + coarse_row[:, None]) * size + first // SUPERSAMPLE).reshape(-1)
    # depth along a run, in quantisation levels (depth / extent in [-1, 1] -> [0, levels))
    to_level = 0.5 * _DEPTH_LEVELS / _DEPTH_EXTENT
    row_depth = depth_c[owner] + depth_y[owner] * centre_y
    level_start = (row_depth[:, None] + depth_x[owner][:, None] * (first + 0.5)) * to_level
    level_start = (level_start + 0.5 * _DEPTH_LEVELS).reshape(-1)
    level_step = np.repeat(depth_x[owner] * SUPERSAMPLE * to_level, SUPERSAMPLE)
    run_slot = np.repeat(slot[owner], SUPERSAMPLE)

    # fragments: one per sample inside a face; the z-buffer keeps the nearest
    run = np.repeat(np.arange(len(counts)), counts)
    rank = _ranks(counts)
    level = (level_start[run] + level_step[run] * rank).astype(np.int32)
    code = (level << _SLOT_BITS) | run_slot[run]
    buffer = np.full(frames * big * big, _EMPTY, np.int32)
    np.minimum.at(buffer, start[run] + rank, code)

    # colours by frame and slot (slot BOXES * 6 is the background), as RGBA uint8 packed in
    # uint32 so that one gather fetches a whole colour; then 2x2 (SUPERSAMPLE) averages
    slots = BOXES * 6 + 1
    palette = np.empty((frames, slots, 4), np.uint8)
    palette[:] = np.round(np.array([*BACKGROUND, 0.0]) * 255.0)
    palette[frame_id, slot, :3] = np.round(face_colour[frame_id, box_id, face_id] * 255.0)
    nearest = buffer & ((1 << _SLOT_BITS) - 1)
    nearest += np.repeat(np.arange(frames, dtype=np.int32) * slots, big * big)
    fine = np.take(palette.view("<u4").reshape(-1), nearest).reshape(frames, SUPERSAMPLE**2, size, size)
    # add the samples two channels at a time (red and blue, green and alpha) in 16-bit lanes
    lanes = np.uint32(0x00FF00FF)
    red_blue = (fine[:, 0] & lanes).copy()
    green_alpha = ((fine[:, 0] >> 8) & lanes).copy()
    for index in range(1, SUPERSAMPLE**2):
        red_blue += fine[:, index] & lanes
        green_alpha += (fine[:, index] >> 8) & lanes
    total = np.stack([red_blue & 0xFFFF, green_alpha & 0xFFFF, red_blue >> 16], axis=-1)
    return ((total + SUPERSAMPLE**2 // 2) // SUPERSAMPLE**2).astype(np.uint8)


def _ranks(counts: np.ndarray) -> np.ndarray:
    """``0, 1, ..., c - 1`` for each count ``c``, concatenated."""
    total = int(counts.sum())
    starts = np.repeat((np.cumsum(counts) - counts).astype(np.int32), counts)
    return np.arange(total, dtype=np.int32) - starts


def _interval(slope: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ``x`` with ``0 <= slope x + offset <= 1`` (slightly widened), as ``(low, high)``."""
    low_value, high_value = -_EDGE_SLACK - offset, 1.0 + _EDGE_SLACK - offset
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = low_value / slope, high_value / slope
    flat = slope == 0
    inside = (offset >= -_EDGE_SLACK) & (offset <= 1.0 + _EDGE_SLACK)
    low = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(a, b))
    high = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(a, b))
    return low, high


def render_turns(
    chairs: Chairs, *, steps: int, size: int = 64, elevation: float = 20.0, start: np.ndarray | None = None
) -> np.ndarray:
    """Renders each chair turning once around: ``steps`` views ``start + 2 pi t / steps``.

    Args:
        chairs: ``N`` chairs.
        steps: Views per chair, evenly spaced over a full turn.
        size: Picture height and width.
        elevation: Camera elevation in degrees.
        start: ``(N,)`` azimuth of the first view in radians (default 0).

    Returns:
        ``(N, steps, size, size, 3)`` uint8.
    """
    start = np.zeros(len(chairs)) if start is None else np.asarray(start, np.float64)
    azimuth = start[:, None] + 2.0 * np.pi * np.arange(steps)[None, :] / steps
    return render(chairs, azimuth, size=size, elevation=elevation)


def chair_videos(
    num_videos: int,
    *,
    steps: int,
    seed: int,
    split_index: int,
    count: int | None = None,
    size: int = 64,
    elevation: float = 20.0,
    random_start: bool = True,
) -> np.ndarray:
    """The ``chairs`` source's videos: ``(num_videos, steps, size, size, 3)`` uint8.

    The chairs are ``make_chairs(default_rng([seed, split_index]).random((count,
    PARAMETERS)))`` and the start azimuths ``2 pi default_rng([seed, split_index,
    1]).random(num_videos)`` (0 for all when ``random_start`` is false); video ``i`` shows
    chair ``i mod count`` (``count`` defaults to ``num_videos``: every video its own
    chair). So the first videos do not depend on ``num_videos`` when ``count`` is left to
    its default.

    Example:
        >>> chair_videos(3, steps=2, seed=0, split_index=0, size=16).shape
        (3, 2, 16, 16, 3)
    """
    count = num_videos if count is None else count
    chairs = make_chairs(np.random.default_rng([seed, split_index]).random((count, PARAMETERS)))
    turns = np.random.default_rng([seed, split_index, 1]).random(num_videos)
    start = 2.0 * np.pi * turns if random_start else np.zeros(num_videos)
    pick = np.arange(num_videos) % count
    chosen = Chairs(chairs.corners[pick], chairs.present[pick], chairs.colours[pick])
    return render_turns(chosen, steps=steps, size=size, elevation=elevation, start=start)
