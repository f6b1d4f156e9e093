"""im2col / sub-pixel / auto convolutions against lax: values, gradients, the per-shape choice."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ggdsl.nets.conv import (
    conv2d,
    conv3d,
    conv_impl_for,
    conv_transpose2d,
    conv_transpose_impl_for,
    resolve_impl,
)

jax.config.update("jax_default_matmul_precision", "highest")


def _arrays(x_shape, w_shape, seed=0):
    key_x, key_w = jax.random.split(jax.random.key(seed))
    return jax.random.normal(key_x, x_shape), 0.05 * jax.random.normal(key_w, w_shape)


def _relative(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-12))


def _apply(op, stride, padding, impl):
    return jax.jit(lambda x, w: op(x, w, stride, padding, impl=impl))


def _output_and_grads(op, x, w, stride, padding, impl):
    """One compiled call: the output and the gradients of sum(sin(output))."""

    def loss(x, w):
        out = op(x, w, stride, padding, impl=impl)
        return jnp.sum(jnp.sin(out)), out

    grad = jax.grad(loss, argnums=(0, 1), has_aux=True)
    grads, out = jax.jit(grad)(x, w)
    return out, grads


def _check(op, x, w, stride, padding, impls=("im2col",)):
    """Each of ``impls`` against lax: outputs within 1e-5, gradients within 1e-3 relative."""
    reference, reference_grads = _output_and_grads(op, x, w, stride, padding, "lax")
    for impl in impls:
        ours, our_grads = _output_and_grads(op, x, w, stride, padding, impl)
        assert ours.shape == reference.shape
        np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=1e-5, err_msg=impl)
        for a, b in zip(our_grads, reference_grads, strict=True):
            assert _relative(a, b) < 1e-3, impl
    return reference


CONV_CASES = [
    ((2, 28, 28, 1), (5, 5, 1, 64), 2, "same"),  # MNIST D layer 1
    ((2, 14, 14, 64), (5, 5, 64, 128), 2, "same"),  # MNIST D layer 2
    ((2, 32, 32, 3), (5, 5, 3, 64), 2, "same"),  # SVHN D layer 1
    ((2, 9, 9, 3), (3, 3, 3, 4), 1, "same"),
    ((2, 9, 7, 3), (4, 4, 3, 4), 3, "same"),
    ((2, 11, 11, 2), (5, 5, 2, 3), 2, "valid"),
    ((2, 6, 6, 2), (3, 3, 2, 3), 1, ((1, 0), (2, 1))),
    ((2, 7, 7, 8), (5, 5, 8, 16), 2, "same"),  # MNIST D layer 3 (7x7 -> 4x4)
    ((2, 7, 7, 4), (4, 4, 4, 6), 2, "same"),
    ((2, 7, 7, 4), (5, 5, 4, 6), 1, "same"),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding", CONV_CASES)
def test_conv2d_matches_lax(x_shape, w_shape, stride, padding):
    x, w = _arrays(x_shape, w_shape)
    _check(conv2d, x, w, stride, padding)


DECONV_CASES = [
    ((2, 7, 7, 128), (5, 5, 128, 64), 2, "same", (14, 14)),  # MNIST G: 7 -> 14
    ((2, 14, 14, 64), (5, 5, 64, 1), 2, "same", (28, 28)),  # 14 -> 28
    ((2, 4, 4, 256), (5, 5, 256, 128), 2, "same", (8, 8)),  # SVHN G: 4 -> 8
    ((2, 8, 8, 128), (5, 5, 128, 64), 2, "same", (16, 16)),  # 8 -> 16
    ((2, 16, 16, 64), (5, 5, 64, 3), 2, "same", (32, 32)),  # 16 -> 32
    ((2, 5, 6, 3), (3, 3, 3, 2), 1, "same", (5, 6)),
    ((2, 5, 5, 3), (5, 5, 3, 2), 2, "valid", (13, 13)),
    ((2, 4, 4, 3), (2, 2, 3, 2), 3, "valid", (12, 12)),
    ((2, 7, 7, 8), (4, 4, 8, 6), 2, "same", (14, 14)),  # kernel 4, odd size
    ((2, 4, 4, 8), (4, 4, 8, 6), 2, "same", (8, 8)),
    ((2, 7, 7, 6), (4, 4, 6, 3), 1, "same", (7, 7)),
    ((2, 7, 5, 3), (5, 4, 3, 2), (2, 3), "same", (14, 15)),
    ((2, 4, 4, 3), (2, 2, 3, 2), 3, "same", (12, 12)),  # kernel < stride
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, out_hw", DECONV_CASES)
def test_conv_transpose2d_matches_lax(x_shape, w_shape, stride, padding, out_hw):
    x, w = _arrays(x_shape, w_shape)
    ours = _check(conv_transpose2d, x, w, stride, padding, ("im2col", "subpixel"))
    assert ours.shape == (x_shape[0], *out_hw, w_shape[-1])


def _generator28(impl):
    """The MNIST generator's transposed convolutions: 4x4 -> 8x8, crop 7x7, -> 14x14 -> 28x28."""

    def net(x, w1, w2, w3):
        y = jnp.tanh(conv_transpose2d(x, w1, 2, impl=impl))[:, :7, :7]
        y = jnp.tanh(conv_transpose2d(y, w2, 2, impl=impl))
        return jnp.sum(jnp.sin(conv_transpose2d(y, w3, 2, impl=impl)))

    return jax.jit(jax.grad(net, argnums=(0, 1, 2, 3)))


def test_generator_chain_with_crop_matches_lax():
    shapes = [(2, 4, 4, 16), (5, 5, 16, 12), (5, 5, 12, 8), (5, 5, 8, 1)]
    args = [jax.random.normal(jax.random.key(i), s) * (1.0 if i == 0 else 0.1) for i, s in enumerate(shapes)]
    # auto on CPU: sub-pixel, sub-pixel, then the im2col adjoint for 8 -> 1 channels
    for a, b in zip(_generator28("auto")(*args), _generator28("lax")(*args), strict=True):
        assert _relative(a, b) < 1e-3


def test_conv_transpose_is_the_adjoint_of_strided_conv():
    x, w = _arrays((2, 7, 7, 8), (5, 5, 8, 4))
    y = jax.random.normal(jax.random.key(3), (2, 14, 14, 4))
    # <conv_transpose(x), y> == <x, conv(y)> with the channel axes of the kernel swapped
    left = jnp.vdot(_apply(conv_transpose2d, 2, "same", "im2col")(x, w), y)
    right = jnp.vdot(x, conv2d(y, jnp.swapaxes(w, 2, 3), 2, impl="lax"))
    np.testing.assert_allclose(left, right, rtol=1e-5)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride",
    [((1, 4, 8, 8, 2), (4, 4, 4, 2, 4), 2), ((1, 3, 6, 6, 2), (2, 2, 2, 2, 4), 1)],
)
def test_conv3d_matches_lax(x_shape, w_shape, stride):
    x, w = _arrays(x_shape, w_shape)
    _check(conv3d, x, w, stride, "same")


def test_impl_choice():
    assert resolve_impl("auto") == ("cpu" if jax.default_backend() == "cpu" else "lax")
    assert resolve_impl("lax") == "lax"
    with pytest.raises(ValueError, match="known: auto, im2col, lax, subpixel"):
        resolve_impl("fft")
    for impl in ("im2col", "lax"):
        assert conv_impl_for((50, 7, 7, 128), (5, 5, 128, 256), 2, impl=impl) == impl
        assert conv_transpose_impl_for((50, 7, 7, 128), (5, 5, 128, 64), impl=impl) == impl
    assert conv_impl_for((50, 7, 7, 128), (5, 5, 128, 256), 2, impl="subpixel") == "im2col"
    if jax.default_backend() == "cpu":
        # convolutions: lax from 5x5 outputs up, im2col below (MNIST extractor: lax, lax, im2col)
        assert conv_impl_for((50, 28, 28, 1), (5, 5, 1, 64), 2) == "lax"
        assert conv_impl_for((50, 14, 14, 64), (5, 5, 64, 128), 2) == "lax"
        assert conv_impl_for((50, 7, 7, 128), (5, 5, 128, 256), 2) == "im2col"
        assert conv_impl_for((1, 4, 8, 8, 2), (4, 4, 4, 2, 4), 2) == "im2col"  # 3-D
        # transposed: sub-pixel to many channels, the im2col adjoint to few
        assert conv_transpose_impl_for((50, 4, 4, 256), (5, 5, 256, 128)) == "subpixel"
        assert conv_transpose_impl_for((50, 7, 7, 128), (5, 5, 128, 64)) == "subpixel"
        assert conv_transpose_impl_for((50, 14, 14, 64), (5, 5, 64, 1)) == "im2col"
    with pytest.raises(ValueError, match="padding"):
        conv2d(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), 1, "full")
