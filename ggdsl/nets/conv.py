"""Convolutions that are fast on CPU and exact everywhere.

XLA's CPU convolution is slow for the DCGAN shapes (5x5 kernels, stride 2, batch ~50),
forward and above all backward. On CPU the convolutions here are written as *im2col*: pad,
take one strided slice per kernel offset, concatenate them into patches and do one matrix
product. The transposed convolution is defined as the exact adjoint (``jax.linear_transpose``)
of that strided convolution, so every gradient is pads, slices, adds and matrix products.
On GPU and TPU the ``lax`` convolutions are used; ``impl=`` overrides the choice.

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
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ggdsl.nets._layers import deconv_out_size

Padding = str | Sequence[tuple[int, int]]
IMPLS = ("auto", "im2col", "lax")
_DIMENSIONS = {
    1: ("NWC", "WIO", "NWC"),
    2: ("NHWC", "HWIO", "NHWC"),
    3: ("NDHWC", "DHWIO", "NDHWC"),
}


def resolve_impl(impl: str = "auto") -> str:
    """``"im2col"`` or ``"lax"``: ``auto`` picks im2col on CPU and lax elsewhere.

    >>> resolve_impl("lax")
    'lax'
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown convolution impl {impl!r} (known: {', '.join(IMPLS)})")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "lax"
    return impl


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
        impl: ``"auto"``, ``"im2col"`` or ``"lax"``.

    Returns:
        ``(B, *out_spatial, C_out)``.
    """
    ndim = x.ndim - 2
    strides = _strides(stride, ndim)
    pads = _padding_pairs(x.shape[1:-1], w.shape[:ndim], strides, padding)
    if resolve_impl(impl) == "im2col":
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
        impl: ``"auto"``, ``"im2col"`` or ``"lax"``.

    Returns:
        ``(B, H_out, W_out, C_out)``.
    """
    if x.ndim != 4:
        raise ValueError(f"conv_transpose2d expects NHWC input, got shape {x.shape}")
    strides = _strides(stride, 2)
    mode = padding.lower()
    forward_kernel = jnp.swapaxes(w, 2, 3)
    if resolve_impl(impl) == "lax":
        return lax.conv_transpose(
            x,
            forward_kernel,
            strides,
            mode.upper(),
            dimension_numbers=_DIMENSIONS[2],
            transpose_kernel=True,
        ).astype(jnp.result_type(x, w))
    kernel = w.shape[:2]
    out = [deconv_out_size(n, k, s, mode) for n, k, s in zip(x.shape[1:3], kernel, strides, strict=True)]
    pads = _padding_pairs(out, kernel, strides, mode)
    dtype = jnp.result_type(x, w)
    target = jax.ShapeDtypeStruct((x.shape[0], *out, w.shape[3]), dtype)
    (y,) = jax.linear_transpose(lambda image: _im2col(image, forward_kernel, strides, pads), target)(x.astype(dtype))
    return y
