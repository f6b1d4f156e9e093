"""Layer kinds: what a layer mapping may contain, and the shapes and sizes a layer implies.

Pure Python, no JAX: the spec loader and ``ggdsl validate`` / ``explain`` use this module.
Shapes are per sample, without the batch axis: a vector is ``(n,)``, an image ``(H, W, C)``,
a video ``(T, H, W, C)``.

Shape rules of the built-in kinds (``padding: same`` unless stated):

- ``dense: n`` gives ``(n,)``; on an input of rank > 1 it flattens it first.
- ``conv: c`` gives ``(ceil(H/s), ceil(W/s), c)``; on a video ``(T, H, W, C)`` it first
  concatenates the frames along channels, ``(H, W, T*C)`` (the paper's ConcatX), or with
  ``frames: each`` applies the same convolution to every frame, ``(T, ceil(H/s), ceil(W/s), c)``.
  ``padding: valid`` gives ``(H-k)//s + 1`` instead.
- ``deconv: c`` gives ``(H*s, W*s, c)`` (TF / DCGAN ``SAME`` semantics); ``valid`` gives
  ``H*s + max(k-s, 0)``.
- ``conv3d: c`` works on videos, striding time, height and width alike.
- ``pool: mean | max`` reduces ``over`` the spatial axes (``space``), the frames
  (``frames``) or both (``all``, the default): a video ``(T, H, W, C)`` gives ``(T, C)``,
  ``(H, W, C)`` or ``(C,)``, an image ``(H, W, C)`` gives ``(C,)`` over ``space`` or ``all``.
- ``broadcast: [h, w]`` tiles a vector ``(n,)`` over an ``h x w`` grid and appends two
  channels of coordinates in [-1, 1], ``(h, w, n + 2)`` (the spatial broadcast decoder).
- ``reshape: [..]``, ``flatten: null``, ``crop: [h, w]`` (a centre crop of the spatial axes),
  ``dropout: rate``.

Defaults: ``kernel`` 5 (4 for ``conv3d``), ``stride`` 2 for ``conv``, ``deconv`` and
``conv3d`` (every layer of the paper's tables halves or doubles the resolution),
``padding`` same, ``act`` linear, ``alpha`` 0.2, ``norm`` none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ggdsl.errors import BuildError
from ggdsl.spec.frozen import FrozenDict, freeze
from ggdsl.spec.ir import Layer

Shape = tuple[int, ...]
Check = Callable[[Any], "str | None"]

ACTIVATIONS = ("leaky_relu", "linear", "relu", "sigmoid", "tanh")
NORMS = ("batch", "layer", "spectral", "none")
PADDINGS = ("same", "valid")
FRAMES = ("concat", "each")
MAX_SIZE = 2**31 - 1


# ----------------------------------------------------------------------------- checks
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def positive_int(value: Any) -> str | None:
    """Check a positive int (bools are not ints here); return a message or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an int, got {_show(value)}"
    if value < 1:
        return f"expected a positive int, got {value}"
    if value > MAX_SIZE:
        return f"expected an int at most {MAX_SIZE}, got {_show(value)}"
    return None


def int_list(length: int | None = None) -> Check:
    """A check for a list of positive ints, of a given length if ``length`` is set."""

    def check(value: Any) -> str | None:
        what = "a list of ints" if length is None else f"a list of {length} ints"
        if not isinstance(value, (list, tuple)):
            return f"expected {what}, got {_show(value)}"
        if length is not None and len(value) != length:
            return f"expected {what}, got {len(value)} items"
        for item in value:
            problem = positive_int(item)
            if problem is not None:
                return f"expected {what}, got {_show(item)} in it"
        return None

    return check


def one_of(*choices: str) -> Check:
    """A check that the value is one of the given strings."""

    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in choices:
            return None
        return f"expected one of {', '.join(choices)}, got {_show(value)}"

    return check


def non_negative_number(value: Any) -> str | None:
    """Check a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {_show(value)}"
    if not math.isfinite(value) or value < 0:
        return f"expected a number >= 0, got {_show(value)}"
    return None


def rate(value: Any) -> str | None:
    """Check a dropout rate in [0, 1)."""
    problem = non_negative_number(value)
    if problem is None and value >= 1:
        problem = f"expected a rate in [0, 1), got {_show(value)}"
    return problem


def null_or_true(value: Any) -> str | None:
    """Check the value of a key that takes no value (``flatten: null`` or ``flatten: true``)."""
    return None if value is None or value is True else f"expected null or true, got {_show(value)}"


@dataclass(frozen=True)
class Option:
    """One key a layer kind accepts: its check and its default."""

    check: Check
    default: Any


@dataclass(frozen=True)
class LayerKind:
    """A registered layer kind.

    Attributes:
        name: The kind key, e.g. ``"dense"``.
        check_value: Validates the value of the kind key; returns a message or None.
        keys: The option keys the kind accepts.
        out_shape: ``(layer, in_shape) -> out_shape``; raises ValueError when it cannot apply.
        param_count: ``(layer, in_shape) -> int``, trainable parameters of the layer.
        doc: One line for ``explain`` and error messages.
    """

    name: str
    check_value: Check
    keys: Mapping[str, Option] = field(default_factory=dict)
    out_shape: Callable[[Layer, Shape], Shape] = lambda layer, shape: shape
    param_count: Callable[[Layer, Shape], int] = lambda layer, shape: 0
    doc: str = ""


LAYER_KINDS: dict[str, LayerKind] = {}


def register_layer_kind(
    name: str,
    *,
    value: Check,
    keys: Mapping[str, Option] | None = None,
    out_shape: Callable[[Layer, Shape], Shape] | None = None,
    param_count: Callable[[Layer, Shape], int] | None = None,
    doc: str = "",
) -> LayerKind:
    """Register a layer kind so specs may use it.

    Args:
        name: The kind key.
        value: Check of the kind key's value, returning a message or None.
        keys: Accepted option keys with their checks and defaults.
        out_shape: Shape rule; raise ValueError with a message when the input does not fit.
        param_count: Number of trainable parameters for a given input shape.
        doc: A one-line description.

    Returns:
        The registered :class:`LayerKind`.

    Example:
        >>> kind = register_layer_kind("identity", value=null_or_true, doc="does nothing")
        >>> check_layer({"identity": None})[0]
        Layer(kind='identity', value=None, options=FrozenDict({}))
        >>> _ = LAYER_KINDS.pop("identity")
    """
    kind = LayerKind(
        name=name,
        check_value=value,
        keys=dict(keys or {}),
        out_shape=out_shape or (lambda layer, shape: shape),
        param_count=param_count or (lambda layer, shape: 0),
        doc=doc,
    )
    LAYER_KINDS[name] = kind
    return kind


def layer_kind(name: str) -> LayerKind:
    """Look up a registered kind; BuildError listing the known ones if absent."""
    try:
        return LAYER_KINDS[name]
    except KeyError:
        known = ", ".join(sorted(LAYER_KINDS))
        raise BuildError(f"unknown layer {name!r} (known: {known})") from None


def layer_option(layer: Layer, key: str) -> Any:
    """An option of ``layer``, or its kind's default when the spec did not set it.

    >>> layer_option(Layer("conv", 64), "kernel"), layer_option(Layer("conv3d", 32), "kernel")
    (5, 4)
    """
    if key in layer.options:
        return layer.options[key]
    return LAYER_KINDS[layer.kind].keys[key].default


# ----------------------------------------------------------------------------- check_layer
def check_layer(obj: Any) -> tuple[Layer | None, list[tuple[str, str]]]:
    """Validate one layer mapping as written in YAML.

    Never raises. Options keep what the user wrote (defaults are not filled in), so a
    spec dumped back to YAML reads the same.

    Args:
        obj: Anything; a valid layer is a mapping with exactly one kind key plus options.

    Returns:
        ``(layer, [])`` when valid, else ``(None, problems)``, each problem a
        ``(sub_path, message)`` pair; ``sub_path`` is the offending key or ``""``.

    Example:
        >>> check_layer({"deconv": 128, "kernel": 5, "act": "relu"})[0].options
        FrozenDict({'kernel': 5, 'act': 'relu'})
        >>> check_layer({"dense": 8, "kernel": "five"})[1]
        [('kernel', "unknown key 'kernel' for dense (known: act, alpha, norm)")]
    """
    try:
        return _check_layer(obj)
    except Exception as error:  # noqa: BLE001 - validation must report, never raise
        return None, [("", f"invalid layer {_show(obj)}: {type(error).__name__}")]


def _known_kinds() -> str:
    return ", ".join(sorted(LAYER_KINDS))


def _check_layer(obj: Any) -> tuple[Layer | None, list[tuple[str, str]]]:
    if not isinstance(obj, Mapping):
        return None, [("", f"expected a mapping like {{dense: 512}}, got {type(obj).__name__} {_show(obj)}")]
    bad_keys = [key for key in obj if not isinstance(key, str)]
    if bad_keys:
        return None, [("", f"layer keys must be strings, got {_show(bad_keys[0])}")]
    option_names = {key for kind in LAYER_KINDS.values() for key in kind.keys}
    kinds = [key for key in obj if key in LAYER_KINDS]
    if len(kinds) > 1:
        return None, [("", f"a layer has one kind key, got {', '.join(kinds)}")]
    if not kinds:
        unknown = [key for key in obj if key not in option_names]
        if unknown:
            return None, [("", f"unknown layer {unknown[0]!r} (known: {_known_kinds()})")]
        return None, [("", f"a layer needs a kind key (known: {_known_kinds()})")]
    kind = LAYER_KINDS[kinds[0]]
    problems: list[tuple[str, str]] = []
    value = obj[kind.name]
    problem = kind.check_value(value)
    if problem is not None:
        problems.append((kind.name, problem))
    for key, option_value in obj.items():
        if key == kind.name:
            continue
        if key not in kind.keys:
            known = ", ".join(sorted(kind.keys)) or "none"
            problems.append((key, f"unknown key {key!r} for {kind.name} (known: {known})"))
            continue
        problem = kind.keys[key].check(option_value)
        if problem is not None:
            problems.append((key, problem))
    if problems:
        return None, problems
    options = FrozenDict({k: freeze(v) for k, v in obj.items() if k != kind.name})
    return Layer(kind.name, freeze(value), options), []


# ----------------------------------------------------------------------------- shape rules
def _size(shape: Sequence[int]) -> int:
    return math.prod(shape)


def conv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a strided convolution along one axis (TF semantics).

    >>> conv_out_size(28, 5, 2, "same"), conv_out_size(28, 5, 2, "valid")
    (14, 12)
    """
    if padding == "same":
        return -(-size // stride)
    if size < kernel:
        raise ValueError(f"input size {size} is smaller than kernel {kernel} with padding valid")
    return (size - kernel) // stride + 1


def deconv_out_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a transposed convolution along one axis (TF / DCGAN semantics).

    >>> deconv_out_size(7, 5, 2, "same"), deconv_out_size(7, 5, 2, "valid")
    (14, 17)
    """
    if padding == "same":
        return size * stride
    return size * stride + max(kernel - stride, 0)


def _dense_shape(layer: Layer, shape: Shape) -> Shape:
    return (int(layer.value),)


def _dense_params(layer: Layer, shape: Shape) -> int:
    units = int(layer.value)
    return _size(shape) * units + units + _norm_params(layer, units)


def _norm_params(layer: Layer, channels: int) -> int:
    return 2 * channels if layer_option(layer, "norm") in ("batch", "layer") else 0


def _per_frame(layer: Layer, shape: Shape) -> bool:
    """Whether a 2-D conv applies to each frame of a video (``frames: each``)."""
    return len(shape) == 4 and layer.kind == "conv" and layer_option(layer, "frames") == "each"


def _as_image(layer: Layer, shape: Shape) -> Shape:
    """The (H, W, C) a 2-D conv sees: a video's frames are concatenated along channels, or
    with ``frames: each`` each frame is an image of its own."""
    if _per_frame(layer, shape):
        return shape[1:]
    if len(shape) == 4:
        frames, height, width, channels = shape
        return (height, width, frames * channels)
    if len(shape) != 3:
        raise ValueError(f"{layer.kind} expects an image (H, W, C), got shape {shape}; add a reshape before it")
    return shape


def _conv_shape(layer: Layer, shape: Shape) -> Shape:
    height, width, _ = _as_image(layer, shape)
    kernel, stride = layer_option(layer, "kernel"), layer_option(layer, "stride")
    padding = layer_option(layer, "padding")
    out = (
        conv_out_size(height, kernel, stride, padding),
        conv_out_size(width, kernel, stride, padding),
        int(layer.value),
    )
    return (shape[0], *out) if _per_frame(layer, shape) else out


def _conv_params(layer: Layer, shape: Shape) -> int:
    channels_in = _as_image(layer, shape)[-1]
    kernel, channels = layer_option(layer, "kernel"), int(layer.value)
    return kernel * kernel * channels_in * channels + channels + _norm_params(layer, channels)


def _deconv_shape(layer: Layer, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise ValueError(f"deconv expects an image (H, W, C), got shape {shape}; add a reshape before it")
    height, width, _ = shape
    kernel, stride = layer_option(layer, "kernel"), layer_option(layer, "stride")
    padding = layer_option(layer, "padding")
    return (
        deconv_out_size(height, kernel, stride, padding),
        deconv_out_size(width, kernel, stride, padding),
        int(layer.value),
    )


def _conv3d_shape(layer: Layer, shape: Shape) -> Shape:
    if len(shape) != 4:
        raise ValueError(f"conv3d expects a video (T, H, W, C), got shape {shape}")
    kernel, stride = layer_option(layer, "kernel"), layer_option(layer, "stride")
    padding = layer_option(layer, "padding")
    return (*(conv_out_size(n, kernel, stride, padding) for n in shape[:3]), int(layer.value))


def _conv3d_params(layer: Layer, shape: Shape) -> int:
    kernel, channels = layer_option(layer, "kernel"), int(layer.value)
    return kernel**3 * shape[-1] * channels + channels + _norm_params(layer, channels)


def _reshape_shape(layer: Layer, shape: Shape) -> Shape:
    target = tuple(int(n) for n in layer.value)
    if _size(target) != _size(shape):
        raise ValueError(f"cannot reshape {shape} ({_size(shape)} values) to {target} ({_size(target)} values)")
    return target


def _flatten_shape(layer: Layer, shape: Shape) -> Shape:
    return (_size(shape),)


def _minibatch_std_shape(layer: Layer, shape: Shape) -> Shape:
    return (*shape[:-1], shape[-1] + 1)


POOL_AXES = {"space": (-3, -2), "frames": (-4,), "all": (-4, -3, -2)}


def pool_axes(layer: Layer, shape: Shape) -> tuple[int, ...]:
    """The per-sample axes (negative, from the channels) a ``pool`` layer reduces."""
    over = layer_option(layer, "over")
    if len(shape) == 3:
        if over == "frames":
            raise ValueError(f"pool over frames expects a video (T, H, W, C), got shape {shape}")
        return POOL_AXES["space"]
    if len(shape) != 4:
        raise ValueError(f"pool expects an image (H, W, C) or a video (T, H, W, C), got shape {shape}")
    return POOL_AXES[over]


def _pool_shape(layer: Layer, shape: Shape) -> Shape:
    dropped = {len(shape) + axis for axis in pool_axes(layer, shape)}
    return tuple(n for i, n in enumerate(shape) if i not in dropped)


def _broadcast_shape(layer: Layer, shape: Shape) -> Shape:
    if len(shape) != 1:
        raise ValueError(f"broadcast expects a vector (n,), got shape {shape}; add a flatten before it")
    height, width = (int(n) for n in layer.value)
    return (height, width, shape[0] + 2)


def _crop_shape(layer: Layer, shape: Shape) -> Shape:
    if len(shape) not in (3, 4):
        raise ValueError(f"crop expects an image or a video, got shape {shape}")
    height, width = (int(n) for n in layer.value)
    if height > shape[-3] or width > shape[-2]:
        raise ValueError(f"cannot crop {shape[-3]}x{shape[-2]} to {height}x{width}")
    return (*shape[:-3], height, width, shape[-1])


_ACT_KEYS = {
    "act": Option(one_of(*ACTIVATIONS), "linear"),
    "alpha": Option(non_negative_number, 0.2),
    "norm": Option(one_of(*NORMS), "none"),
}


def _conv_keys(kernel: int, **more: Option) -> dict[str, Option]:
    return {
        "kernel": Option(positive_int, kernel),
        "stride": Option(positive_int, 2),
        "padding": Option(one_of(*PADDINGS), "same"),
        **more,
        **_ACT_KEYS,
    }


register_layer_kind(
    "dense",
    value=positive_int,
    keys=_ACT_KEYS,
    out_shape=_dense_shape,
    param_count=_dense_params,
    doc="fully connected layer of n units",
)
register_layer_kind(
    "conv",
    value=positive_int,
    keys=_conv_keys(5, frames=Option(one_of(*FRAMES), "concat")),
    out_shape=_conv_shape,
    param_count=_conv_params,
    doc="2-D convolution with c output channels; on a video, `frames: concat` (the frames along channels) "
    "or `each` (the same convolution on every frame)",
)
register_layer_kind(
    "deconv",
    value=positive_int,
    keys=_conv_keys(5),
    out_shape=_deconv_shape,
    param_count=_conv_params,
    doc="2-D transposed convolution with c output channels",
)
register_layer_kind(
    "conv3d",
    value=positive_int,
    keys=_conv_keys(4),
    out_shape=_conv3d_shape,
    param_count=_conv3d_params,
    doc="3-D convolution over (T, H, W) with c output channels",
)
register_layer_kind("reshape", value=int_list(), out_shape=_reshape_shape, doc="reshape to the given shape")
register_layer_kind("flatten", value=null_or_true, out_shape=_flatten_shape, doc="flatten to a vector")
register_layer_kind(
    "broadcast",
    value=int_list(2),
    out_shape=_broadcast_shape,
    doc="tile a vector over an [h, w] grid with two coordinate channels in [-1, 1] (Watters et al. 2019)",
)
register_layer_kind("crop", value=int_list(2), out_shape=_crop_shape, doc="centre-crop the spatial axes to [h, w]")
register_layer_kind(
    "pool",
    value=one_of("mean", "max"),
    keys={"over": Option(one_of(*POOL_AXES), "all")},
    out_shape=_pool_shape,
    doc="mean or max over the spatial axes (`over: space`), the frames (`frames`) or both (`all`)",
)
register_layer_kind("dropout", value=rate, doc="dropout with the given rate (training only)")
register_layer_kind(
    "minibatch_std",
    value=null_or_true,
    out_shape=_minibatch_std_shape,
    doc="append the batch's mean feature std as one more channel (lets a discriminator see low sample variety)",
)


# ----------------------------------------------------------------------------- public shapes
def _checked(index: int, layer: Layer, shape: Shape, rule: str) -> Any:
    kind = layer_kind(layer.kind)
    try:
        if rule == "shape":
            return tuple(int(n) for n in kind.out_shape(layer, tuple(shape)))
        return int(kind.param_count(layer, tuple(shape)))
    except ValueError as error:
        raise BuildError(f"layer {index} ({layer.kind}: {_show(layer.value)}): {error}") from None


def layer_out_shape(layer: Layer, in_shape: Sequence[int], *, index: int = 0) -> Shape:
    """Per-sample output shape of one layer.

    Raises:
        BuildError: When the layer cannot apply to ``in_shape``; names layer ``index``.

    >>> layer_out_shape(Layer("deconv", 64), (7, 7, 128))
    (14, 14, 64)
    """
    return _checked(index, layer, tuple(in_shape), "shape")


def layer_param_count(layer: Layer, in_shape: Sequence[int], *, index: int = 0) -> int:
    """Trainable parameters of one layer on ``in_shape`` (kernel, bias, norm scale and bias).

    >>> layer_param_count(Layer("dense", 10), (28, 28, 1))
    7850
    """
    _checked(index, layer, tuple(in_shape), "shape")
    return _checked(index, layer, tuple(in_shape), "params")


def network_shapes(layers: Sequence[Layer], in_shape: Sequence[int]) -> list[Shape]:
    """Every intermediate shape of a layer list: ``[in_shape, after layer 0, ...]``.

    Raises:
        BuildError: Naming the first layer whose input does not fit.

    >>> network_shapes([Layer("dense", 49), Layer("reshape", (7, 7, 1))], (16,))
    [(16,), (49,), (7, 7, 1)]
    """
    shapes = [tuple(int(n) for n in in_shape)]
    for index, layer in enumerate(layers):
        shapes.append(layer_out_shape(layer, shapes[-1], index=index))
    return shapes


def network_param_count(layers: Sequence[Layer], in_shape: Sequence[int]) -> int:
    """Trainable parameters of a layer list applied to ``in_shape``.

    >>> network_param_count([Layer("dense", 4), Layer("dense", 1)], (3,))
    21
    """
    shapes = network_shapes(layers, in_shape)
    return sum(
        layer_param_count(layer, shape, index=index)
        for index, (layer, shape) in enumerate(zip(layers, shapes, strict=False))
    )
