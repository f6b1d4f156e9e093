"""Convolutions that are fast on CPU and exact everywhere.

XLA's CPU convolution is slow for some DCGAN shapes (5x5 kernels, stride 2, batch ~50),
above all backward. On CPU (``impl="auto"``) each convolution picks, from its shapes, the
fastest of three exact forms (rules and timings: :func:`conv_impl_for`,
:func:`conv_transpose_impl_for`):

- ``im2col``: pad, take one strided slice per kernel offset, concatenate them into patches
  and do one matrix product. The transposed convolution is then the exact adjoint
  (``jax.linear_transpose``) of that strided convolution, so every gradient is pads,
  slices, adds and matrix products. Used for convolutions with small (< 5x5) outputs and for
  transposed convolutions to few channels (64 -> 1).
- ``subpixel`` (transposed convolutions): the ``s * s`` output phases of a stride-``s``
  transposed convolution as one matrix product over a small window of the input, then
  depth-to-space. Used for transposed convolutions to many channels (256 -> 128).
- ``lax``: XLA's own convolutions. Used for convolutions with outputs of 5x5 and more, and
  for everything on GPU and TPU.

``impl="im2col"``, ``"subpixel"`` or ``"lax"`` forces one (``"subpixel"`` is ``im2col`` for
a plain convolution). All agree with ``lax`` to float32 rounding, gradients included.

Layouts: inputs ``NHWC`` (``NDHWC`` for 3-D), kernels ``HWIO`` (``DHWIO``). Padding
``"same"`` follows TF / DCGAN: a stride-``s`` convolution gives ``ceil(n / s)`` and a
transposed one ``n * s`` (as flax ``ConvTranspose(padding="SAME")``).

>>> import jax.numpy as jnp
>>> x = jnp.ones((2, 7, 7, 128))
>>> conv_transpose2d(x, jnp.ones((5, 5, 128, 64)), 2).shape
(2, 14, 14, 64)
>>> conv2d(jnp.ones((2, 28, 28, 1)), jnp.ones((5, 5, 1, 64)), 2).shape
(2, 14, 14, 64)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ggdsl.nets._layers import deconv_out_size

Padding = str | Sequence[tuple[int, int]]
IMPLS = ("auto", "im2col", "lax", "subpixel")
_DIMENSIONS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}
# The CPU choice per shape (``auto``), from per-layer timings of forward + backward at batch 50
# on 2 cores (``benchmarks/bench_gmgan_layers.py``; see :func:`conv_impl_for`).
CONV_LAX_MIN_OUT = 5
DECONV_SUBPIXEL_MIN_RATIO = 2.0


def resolve_impl(impl: str = "auto") -> str:
    """Check ``impl``; ``auto`` becomes ``"cpu"`` on CPU (chosen per shape) and ``"lax"`` elsewhere.

    >>> resolve_impl("lax")
    'lax'
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown convolution impl {impl!r} (known: {', '.join(IMPLS)})")
    if impl == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "lax"
    return impl


def conv_impl_for(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Padding = "same",
    impl: str = "auto",
) -> str:
    """The implementation a convolution of these shapes runs: ``"im2col"`` or ``"lax"``.

    On CPU (``auto``) a 2-D convolution runs ``lax`` when its output is at least
    ``CONV_LAX_MIN_OUT`` (5) on both spatial axes and ``im2col`` when it is smaller (1-D and 3-D:
    ``im2col``). Measured forward + backward at batch 50: ``lax`` is 1.2-4x faster from 5x5
    outputs up (28x28x1 -> 64 a tie, 14x14x64 -> 128 1.6x, every stride-1 case), while on
    4x4 and smaller outputs of 5x5 kernels its backward is 5-50x slower than im2col
    (7x7x128 -> 256: 90 ms against 530). ``"subpixel"`` means ``im2col`` for a convolution.

    >>> conv_impl_for((50, 28, 28, 1), (5, 5, 1, 64), 2, impl="im2col")
    'im2col'
    """
    chosen = resolve_impl(impl)
    if chosen == "cpu":
        ndim = len(x_shape) - 2
        strides = _strides(stride, ndim)
        pads = _padding_pairs(x_shape[1:-1], w_shape[:ndim], strides, padding)
        out = [
            (n + lo + hi - k) // s + 1
            for n, k, s, (lo, hi) in zip(x_shape[1:-1], w_shape[:ndim], strides, pads, strict=True)
        ]
        return "lax" if ndim == 2 and min(out) >= CONV_LAX_MIN_OUT else "im2col"
    return "im2col" if chosen == "subpixel" else chosen


def conv_transpose_impl_for(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: int | Sequence[int] = 2,
    padding: str = "same",
    impl: str = "auto",
) -> str:
    """The implementation a transposed 2-D convolution runs: ``"subpixel"``, ``"im2col"`` or ``"lax"``.

    On CPU (``auto``) it compares, per input pixel, what the two CPU forms move: the
    ``im2col`` adjoint scatters ``kh * kw * C_out`` products onto an output ``sh * sw``
    times larger (``kh * kw`` interior-padded adds), the sub-pixel form gathers a window of
    ``wh * ww * C_in`` inputs (``wh = 3`` for kernel 5, stride 2). ``subpixel`` when
    ``kh * kw * sh * sw * C_out >= DECONV_SUBPIXEL_MIN_RATIO (2) * wh * ww * C_in``, i.e. for
    kernel 5, stride 2 when ``C_out >= 0.18 * C_in``; the adjoint otherwise. Measured forward
    + backward at batch 50: sub-pixel is 1.5-2x faster for 4x4x256 -> 128, 7x7x128 -> 64,
    8x8x128 -> 64, 14x14x64 -> 16; the adjoint 2-15x faster for 64 -> 1 or 3, 128 -> 8 or 16,
    256 -> 16 (64 -> 8, ratio 1.4, is a tie).

    >>> conv_transpose_impl_for((50, 7, 7, 128), (5, 5, 128, 64), impl="subpixel")
    'subpixel'
    """
    chosen = resolve_impl(impl)
    if chosen != "cpu":
        return chosen
    strides = _strides(stride, 2)
    kernel = w_shape[:2]
    out = [deconv_out_size(n, k, s, padding.lower()) for n, k, s in zip(x_shape[1:3], kernel, strides, strict=True)]
    pads = _padding_pairs(out, kernel, strides, padding)
    scattered = kernel[0] * kernel[1] * strides[0] * strides[1] * w_shape[3]
    window = math.prod(high - low + 1 for low, high in map(_phase_window, kernel, strides, pads))
    return "subpixel" if scattered >= DECONV_SUBPIXEL_MIN_RATIO * window * w_shape[2] else "im2col"


def _phase_window(kernel: int, stride: int, pad: tuple[int, int]) -> tuple[int, int]:
    """``(low, high)``: the input offsets ``d`` that some output phase of a transposed
    convolution reads (``x[m - d]`` times ``w[stride * d + r + pad_lo]``)."""
    lo = pad[0]
    taps = range(-(kernel + lo), kernel + 1)
    offsets = [d for d in taps if any(0 <= stride * d + r + lo < kernel for r in range(stride))]
    return offsets[0], offsets[-1]


def _strides(stride: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    return (int(stride),) * ndim if isinstance(stride, int) else tuple(int(s) for s in stride)


def _padding_pairs(
    sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], padding: Padding
) -> tuple[tuple[int, int], ...]:
    if not isinstance(padding, str):
        return tuple((int(lo), int(hi)) for lo, hi in padding)
    mode = padding.lower()
    if mode == "valid":
        return tuple((0, 0) for _ in sizes)
    if mode != "same":
        raise ValueError(f"unknown padding {padding!r} (known: same, valid, or (lo, hi) pairs)")
    pairs = []
    for size, k, s in zip(sizes, kernel, strides, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _im2col(x: jax.Array, w: jax.Array, strides: Sequence[int], pads: Sequence[tuple[int, int]]):
    """Strided convolution as patches @ kernel; any number of spatial dims."""
    ndim = len(strides)
    kernel = w.shape[:ndim]
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out = [(n - k) // s + 1 for n, k, s in zip(padded.shape[1:-1], kernel, strides, strict=True)]
    if any(n < 1 for n in out):
        raise ValueError(f"kernel {kernel} does not fit input {x.shape} with padding {pads}")
    columns = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        limit = [o + (n - 1) * s + 1 for o, n, s in zip(offset, out, strides, strict=True)]
        columns.append(
            lax.slice(
                padded,
                (0, *offset, 0),
                (padded.shape[0], *limit, padded.shape[-1]),
                (1, *strides, 1),
            )
        )
    patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    return jnp.matmul(patches, w.reshape(-1, w.shape[-1]))


def _subpixel_transpose(x: jax.Array, w: jax.Array, strides, pads, out) -> jax.Array:
    """Transposed 2-D convolution (the adjoint of ``_im2col(., swapaxes(w, 2, 3), strides, pads)``)
    by sub-pixel phases.

    Along an axis with stride ``s`` and low padding ``p``, output ``s * m + r`` is
    ``sum_d x[m - d] w[s * d + r + p]``: for each phase ``r`` a stride-1 correlation of ``x``.
    All ``s * s`` phases read the same small window of ``x`` (``d`` in ``[low, high]``), so
    one patches @ kernel product gives them all (the kernel holds zeros where a phase has
    fewer taps); depth-to-space interleaves them and a crop gives ``out``.
    """
    batch, n1, n2, c_in = x.shape
    c_out = w.shape[3]
    taps, masks, windows, sizes = [], [], [], []
    for n, k, s, (lo, _), size in zip((n1, n2), w.shape[:2], strides, pads, out, strict=True):
        low, high = _phase_window(k, s, (lo, 0))
        steps = -(-size // s)  # output rows per phase
        t = np.array([[s * (high - a) + r + lo for r in range(s)] for a in range(high - low + 1)])
        taps.append(np.clip(t, 0, k - 1))
        masks.append((t >= 0) & (t < k))
        windows.append(high - low + 1)
        # x[m - d] for m in [0, steps), d in [low, high]: rows -high .. steps - 1 - low
        sizes.append((high, steps - 1 - low - (n - 1), steps))
    tap1, tap2 = taps
    mask = masks[0][:, None, :, None] & masks[1][None, :, None, :]  # (a1, a2, r1, r2)
    kernel = jnp.where(mask[..., None, None], w[tap1[:, None, :, None], tap2[None, :, None, :]], 0)
    kernel = kernel.transpose(0, 1, 4, 2, 3, 5).reshape(windows[0] * windows[1] * c_in, -1)
    (lo1, hi1, m1), (lo2, hi2, m2) = sizes
    padded = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (lo1, hi1, 0), (lo2, hi2, 0), (0, 0, 0)))
    columns = [
        lax.slice(padded, (0, a, b, 0), (batch, a + m1, b + m2, c_in))
        for a in range(windows[0])
        for b in range(windows[1])
    ]
    patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
    s1, s2 = strides
    y = jnp.matmul(patches, kernel).reshape(batch, m1, m2, s1, s2, c_out).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(batch, m1 * s1, m2 * s2, c_out)[:, : out[0], : out[1]]


def conv(
    x: jax.Array,
    w: jax.Array,
    stride: int | Sequence[int] = 1,
    padding: Padding = "same",
    *,
    impl: str = "auto",
) -> jax.Array:
    """N-d convolution (1-3 spatial dims), channels last, kernel ``(*k, in, out)``.

    Args:
        x: ``(B, *spatial, C_in)``.
        w: ``(*kernel, C_in, C_out)``.
        stride: One int or one per spatial axis.
        padding: ``"same"``, ``"valid"`` or explicit ``(lo, hi)`` pairs.
        impl: ``"auto"`` (per shape, :func:`conv_impl_for`), ``"im2col"``, ``"lax"`` or
            ``"subpixel"`` (``im2col`` here).

    Returns:
        ``(B, *out_spatial, C_out)``.
    """
    ndim = x.ndim - 2
    strides = _strides(stride, ndim)
    pads = _padding_pairs(x.shape[1:-1], w.shape[:ndim], strides, padding)
    if conv_impl_for(x.shape, w.shape, strides, pads, impl) == "im2col":
        return _im2col(x, w, strides, pads)
    return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_DIMENSIONS[ndim]).astype(
        jnp.result_type(x, w)
    )


def conv2d(
    x: jax.Array,
    w: jax.Array,
    stride: int | Sequence[int] = 1,
    padding: Padding = "same",
    *,
    impl: str = "auto",
) -> jax.Array:
    """2-D convolution, ``x`` NHWC, ``w`` HWIO (see :func:`conv`).

    >>> conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), 1, "valid")[0, :, :, 0].tolist()
    [[9.0, 9.0], [9.0, 9.0]]
    """
    if x.ndim != 4:
        raise ValueError(f"conv2d expects NHWC input, got shape {x.shape}")
    return conv(x, w, stride, padding, impl=impl)


def conv3d(
    x: jax.Array,
    w: jax.Array,
    stride: int | Sequence[int] = 1,
    padding: Padding = "same",
    *,
    impl: str = "auto",
) -> jax.Array:
    """3-D convolution, ``x`` NDHWC, ``w`` DHWIO (see :func:`conv`).

    >>> conv3d(jnp.ones((1, 4, 8, 8, 2)), jnp.ones((4, 4, 4, 2, 3)), 2).shape
    (1, 2, 4, 4, 3)
    """
    if x.ndim != 5:
        raise ValueError(f"conv3d expects NDHWC input, got shape {x.shape}")
    return conv(x, w, stride, padding, impl=impl)


def conv_transpose2d(
    x: jax.Array,
    w: jax.Array,
    stride: int | Sequence[int] = 2,
    padding: str = "same",
    *,
    impl: str = "auto",
) -> jax.Array:
    """Transposed 2-D convolution: the adjoint of a strided :func:`conv2d`.

    ``w`` is ``(kh, kw, C_in, C_out)`` with ``x`` carrying ``C_in`` channels. The result
    is the input-gradient of ``conv2d(y, swapaxes(w, 2, 3), stride, padding)`` contracted
    with ``x``, i.e. ``jax.linear_transpose`` of that convolution (Keras' Conv2DTranspose;
    ``lax.conv_transpose(..., transpose_kernel=True)``).

    Args:
        x: ``(B, H, W, C_in)``.
        w: ``(kh, kw, C_in, C_out)``.
        stride: One int or one per spatial axis.
        padding: ``"same"`` (output ``H * s``) or ``"valid"`` (``H * s + max(k - s, 0)``).
        impl: ``"auto"`` (per shape, :func:`conv_transpose_impl_for`), ``"im2col"`` (the
            adjoint), ``"subpixel"`` or ``"lax"``.

    Returns:
        ``(B, H_out, W_out, C_out)``.
    """
    if x.ndim != 4:
        raise ValueError(f"conv_transpose2d expects NHWC input, got shape {x.shape}")
    strides = _strides(stride, 2)
    mode = padding.lower()
    chosen = conv_transpose_impl_for(x.shape, w.shape, strides, mode, impl)
    dtype = jnp.result_type(x, w)
    if chosen == "lax":
        return lax.conv_transpose(
            x,
            jnp.swapaxes(w, 2, 3),
            strides,
            mode.upper(),
            dimension_numbers=_DIMENSIONS[2],
            transpose_kernel=True,
        ).astype(dtype)
    kernel = w.shape[:2]
    out = [deconv_out_size(n, k, s, mode) for n, k, s in zip(x.shape[1:3], kernel, strides, strict=True)]
    pads = _padding_pairs(out, kernel, strides, mode)
    x, w = x.astype(dtype), w.astype(dtype)
    if chosen == "subpixel":
        return _subpixel_transpose(x, w, strides, pads, out)
    forward_kernel = jnp.swapaxes(w, 2, 3)
    target = jax.ShapeDtypeStruct((x.shape[0], *out, w.shape[3]), dtype)
    (y,) = jax.linear_transpose(lambda image: _im2col(image, forward_kernel, strides, pads), target)(x)
    return y
