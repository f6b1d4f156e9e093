"""Named network presets: the paper's Tables 1-5 and a few small defaults.

A preset is a function ``(out_shape, *, data_range=(0, 1)) -> tuple[Layer, ...]`` giving
the layer list of a generator or extractor that produces ``out_shape``. ``data_range``
picks a generator's output activation: ``(0, 1)`` sigmoid, ``(-1, 1)`` tanh, ``None``
linear (an unbounded output such as a Gaussian mean).

Batch norm: the tables leave it out ("the usage of batch normalization depends on the
data"); the image generators here use it on every hidden layer, as DCGAN does, and the
extractors and discriminators do not, except ``extractor28`` (the MNIST code's style).

>>> [layer.kind for layer in get_preset("generator28", (28, 28, 1))]
['dense', 'dense', 'reshape', 'deconv', 'deconv']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from ggdsl.errors import BuildError
from ggdsl.nets._layers import Shape, network_shapes
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import Layer

Preset = Callable[..., tuple[Layer, ...]]

PRESETS: dict[str, Preset] = {}
PRESET_RESIDUAL: set[str] = set()


def register_preset(name: str, *, residual: bool = False) -> Callable[[Preset], Preset]:
    """Register a preset under ``name`` (a decorator).

    Args:
        name: The name specs use in ``net:``.
        residual: The network is a residual update: the caller adds its input back,
            ``v_t = v_{t-1} + f(v_{t-1}, eps)``. Such names are kept in ``PRESET_RESIDUAL``.

    Example:
        >>> @register_preset("tiny")
        ... def tiny(out_shape, *, data_range=(0, 1)):
        ...     return (Layer("dense", out_shape[0]),)
        >>> get_preset("tiny", (3,))
        (Layer(kind='dense', value=3, options=FrozenDict({})),)
        >>> _ = PRESETS.pop("tiny")
    """

    def decorate(function: Preset) -> Preset:
        PRESETS[name] = function
        if residual:
            PRESET_RESIDUAL.add(name)
        else:
            PRESET_RESIDUAL.discard(name)
        return function

    return decorate


def preset_names() -> list[str]:
    """The registered preset names, sorted."""
    return sorted(PRESETS)


def get_preset(
    name: str, out_shape: Sequence[int], *, data_range: tuple[float, float] | None = (0, 1)
) -> tuple[Layer, ...]:
    """The layer list of preset ``name`` producing ``out_shape``.

    Raises:
        BuildError: Unknown name (listing the known ones), or a shape the preset cannot make.
    """
    if name not in PRESETS:
        raise BuildError(f"unknown network preset {name!r} (known: {', '.join(preset_names())})")
    return PRESETS[name](tuple(int(n) for n in out_shape), data_range=data_range)


def output_activation(data_range: tuple[float, float] | None) -> str:
    """The activation that maps onto ``data_range``.

    >>> output_activation((0, 1)), output_activation((-1, 1)), output_activation(None)
    ('sigmoid', 'tanh', 'linear')
    """
    if data_range is None:
        return "linear"
    low, high = (float(v) for v in data_range)
    if (low, high) == (0.0, 1.0):
        return "sigmoid"
    if (low, high) == (-1.0, 1.0):
        return "tanh"
    raise BuildError(f"data range must be [0, 1] or [-1, 1], got [{low:g}, {high:g}]")


def _layer(kind: str, value: Any, **options: Any) -> Layer:
    return Layer(kind, value, FrozenDict(options))


def _lrelu(units: int) -> Layer:
    return _layer("dense", units, act="leaky_relu", alpha=0.2)


def _dense_out(out_shape: Shape, act: str = "linear") -> tuple[Layer, ...]:
    options = {} if act == "linear" else {"act": act}
    dense = _layer("dense", max(1, math.prod(out_shape)), **options)
    return (dense,) if len(out_shape) == 1 else (dense, _layer("reshape", out_shape))


def _vector_out(name: str, out_shape: Shape) -> Shape:
    if any(n < 1 for n in out_shape):
        raise BuildError(f"preset {name!r} cannot produce shape {out_shape}")
    return out_shape


def _image_generator(
    name: str,
    out_shape: Shape,
    data_range: tuple[float, float] | None,
    stem: tuple[Layer, ...],
    channels: Sequence[int],
    size: int,
) -> tuple[Layer, ...]:
    if len(out_shape) != 3 or out_shape[:2] != (size, size):
        raise BuildError(
            f"preset {name!r} produces {size}x{size}xC images (shape ({size}, {size}, C)), not {out_shape}"
        )
    hidden = [_layer("deconv", c, kernel=5, stride=2, act="relu", norm="batch") for c in channels]
    out = _layer("deconv", out_shape[2], kernel=5, stride=2, act=output_activation(data_range))
    layers = (*stem, *hidden, out)
    produced = network_shapes(layers, (1,))[-1]
    if produced != out_shape:
        raise BuildError(f"preset {name!r} produces {produced}, not {out_shape}")
    return layers


def _image_extractor(name: str, out_shape: Shape, channels: Sequence[int], norm_from: int = 99) -> tuple[Layer, ...]:
    tower = tuple(
        _layer("conv", c, kernel=5, stride=2, act="leaky_relu", alpha=0.2)
        if i < norm_from
        else _layer("conv", c, kernel=5, stride=2, act="leaky_relu", alpha=0.2, norm="batch")
        for i, c in enumerate(channels)
    )
    return (*tower, _layer("flatten", None), *_dense_out(_vector_out(name, out_shape)))


@register_preset("mlp_generator")
def mlp_generator(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Dense 512 ReLU twice, then dense to ``prod(out_shape)`` with the range's activation."""
    out_shape = _vector_out("mlp_generator", out_shape)
    act = output_activation(data_range)
    return (_layer("dense", 512, act="relu"), _layer("dense", 512, act="relu"), *_dense_out(out_shape, act))


@register_preset("mlp_extractor")
def mlp_extractor(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Dense 512 leaky ReLU twice, then a linear dense to ``out_shape``."""
    return (_lrelu(512), _lrelu(512), *_dense_out(_vector_out("mlp_extractor", out_shape)))


@register_preset("linear")
def linear(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """One linear dense layer (GMGAN's component means p(h | k) with a one-hot k)."""
    return _dense_out(_vector_out("linear", out_shape))


@register_preset("transition", residual=True)
def transition(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 4 left, the SSGAN transition: dense 256 lReLU twice, then linear to ``out_shape``.

    Residual: the caller computes ``v_t = v_{t-1} + f([v_{t-1}, eps])``.
    """
    return (_lrelu(256), _lrelu(256), *_dense_out(_vector_out("transition", out_shape)))


@register_preset("generator28")
def generator28(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """The paper's MNIST generator (SPEC section 7): dense 4096, reshape 4x4x256, deconv 128,
    crop to 7x7, deconv 64, deconv C, batch norm on the hidden layers (28x28xC)."""
    if len(out_shape) != 3 or out_shape[:2] != (28, 28):
        raise BuildError(f"preset 'generator28' produces 28x28xC images (shape (28, 28, C)), not {out_shape}")
    return (
        _layer("dense", 4096, act="relu", norm="batch"),
        _layer("reshape", (4, 4, 256)),
        _layer("deconv", 128, kernel=5, stride=2, act="relu", norm="batch"),
        _layer("crop", (7, 7)),
        _layer("deconv", 64, kernel=5, stride=2, act="relu", norm="batch"),
        _layer("deconv", out_shape[2], kernel=5, stride=2, act=output_activation(data_range)),
    )


@register_preset("extractor28")
def extractor28(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """The paper's MNIST extractor (Table 1 on 28x28): conv 64, 128, 256 (stride 2, leaky
    ReLU 0.2), flatten, linear out."""
    return _image_extractor("extractor28", out_shape, (64, 128, 256))


@register_preset("encoder28")
def encoder28(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Another name for :func:`extractor28`."""
    return extractor28(out_shape, data_range=data_range)


@register_preset("frame_generator")
def frame_generator(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """The frame generator of Table 3 for the frame size asked for (64x64, or 32x32 / 28x28
    through the DCGAN and MNIST generators)."""
    size = out_shape[0] if len(out_shape) == 3 else None
    chosen = {64: "frame_generator_64", 32: "dcgan_generator_32", 28: "generator28"}.get(size)
    if chosen is None:
        raise BuildError(f"preset 'frame_generator' makes 28x28, 32x32 or 64x64 frames, not {out_shape}")
    return PRESETS[chosen](out_shape, data_range=data_range)


def _dcgan_stem(size: int, channels: int) -> tuple[Layer, ...]:
    return (
        _layer("dense", size * size * channels, act="relu", norm="batch"),
        _layer("reshape", (size, size, channels)),
    )


@register_preset("dcgan_generator_32")
def dcgan_generator_32(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 1 left (SVHN, CIFAR10): dense 4096, 4x4x256, deconv 128, 64, C (32x32xC)."""
    return _image_generator("dcgan_generator_32", out_shape, data_range, _dcgan_stem(4, 256), (128, 64), 32)


@register_preset("dcgan_extractor_32")
def dcgan_extractor_32(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 1 right: conv 64, 128, 256 (5x5, stride 2, lReLU), flatten, linear out."""
    return _image_extractor("dcgan_extractor_32", out_shape, (64, 128, 256))


@register_preset("dcgan_generator_64")
def dcgan_generator_64(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """CelebA 64x64: dense 4*4*512, deconv 256, 128, 64, C."""
    return _image_generator("dcgan_generator_64", out_shape, data_range, _dcgan_stem(4, 512), (256, 128, 64), 64)


@register_preset("dcgan_extractor_64")
def dcgan_extractor_64(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """CelebA 64x64: conv 64, 128, 256, 512, flatten, linear out."""
    return _image_extractor("dcgan_extractor_64", out_shape, (64, 128, 256, 512))


@register_preset("frame_generator_64")
def frame_generator_64(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 3 left (3D chairs frames): dense 4096, 4x4x256, deconv 128, 64, 32, C."""
    return _image_generator("frame_generator_64", out_shape, data_range, _dcgan_stem(4, 256), (128, 64, 32), 64)


@register_preset("frame_extractor_64")
def frame_extractor_64(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 3 right: conv 32, 64, 128, 256, flatten (4096), linear out (v_t)."""
    return _image_extractor("frame_extractor_64", out_shape, (32, 64, 128, 256))


@register_preset("video_extractor_64")
def video_extractor_64(out_shape: Shape, *, data_range=(0, 1)) -> tuple[Layer, ...]:
    """Table 4 right: a video's frames concatenated along channels, then Table 3's tower.

    The first ``conv`` does the concatenation: on a ``(T, H, W, C)`` input it sees
    ``(H, W, T*C)``.
    """
    return _image_extractor("video_extractor_64", out_shape, (32, 64, 128, 256))
