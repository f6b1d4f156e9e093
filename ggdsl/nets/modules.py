"""Flax NNX modules built from layer lists and assembly plans.

Every module here is built from the pure data of :mod:`ggdsl.nets.shapes` (a layer list, or
a :class:`~ggdsl.nets.shapes.Plan`) and the per-sample shapes of its named inputs, so
:func:`~ggdsl.nets.shapes.plan_param_count` equals :func:`param_count` of the built module.
Modules are called with a mapping of batched arrays (batch axis first) and ``train=``.

Initialisation: convolution and transposed-convolution kernels are drawn from
``normal(0.02)`` with zero biases (DCGAN); dense layers use the flax defaults (LeCun
normal, zero bias). Batch norm uses momentum 0.9 and epsilon 1e-5 (DCGAN's TF code): in
training it normalises with batch statistics and updates its running averages; in
evaluation it uses the running averages. Every layer keeps its bias, normalised or not.

The modules work as pure functions: split once, merge inside a jitted function, and return
the new state (batch-norm statistics and dropout counters travel in it)::

    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from ggdsl.nets.shapes import get_preset
    >>> net = Network(get_preset("mlp_generator", (4,)), {"h": (8,)}, rngs=nnx.Rngs(0))
    >>> graphdef, state = nnx.split(net)
    >>> @jax.jit
    ... def apply(state, h):
    ...     model = nnx.merge(graphdef, state)
    ...     return model({"h": h}, train=True), nnx.state(model)
    >>> out, state = apply(state, jnp.ones((3, 8)))
    >>> out.shape
    (3, 4)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ggdsl.errors import BuildError
from ggdsl.nets import conv as conv_ops
from ggdsl.nets.shapes import (
    LAYER_KINDS,
    Plan,
    Shape,
    discriminator_plan,
    extractor_plan,
    input_kind,
    layer_option,
    network_plan,
    plan_shapes,
    pool_axes,
)
from ggdsl.spec.ir import Layer

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5
CONV_INIT = nnx.initializers.normal(0.02)

LayerBuilder = Callable[..., nnx.Module]
LAYER_BUILDERS: dict[str, LayerBuilder] = {}


def register_layer_builder(kind: str) -> Callable[[LayerBuilder], LayerBuilder]:
    """Register how a layer kind becomes a module (a decorator).

    The builder is called as ``builder(layer, in_shape, out_shape, *, rngs, conv_impl)``
    and returns a module called as ``module(x, train=...)``; ``x`` is batched. Norm and
    activation keys are applied by the caller, after the module.
    """

    def decorate(builder: LayerBuilder) -> LayerBuilder:
        LAYER_BUILDERS[kind] = builder
        return builder

    return decorate


def activation(name: str, x: jax.Array, alpha: float = 0.2) -> jax.Array:
    """Apply a named activation (``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``linear``)."""
    if name == "relu":
        return jax.nn.relu(x)
    if name == "leaky_relu":
        return jax.nn.leaky_relu(x, negative_slope=alpha)
    if name == "tanh":
        return jnp.tanh(x)
    if name == "sigmoid":
        return jax.nn.sigmoid(x)
    if name == "linear":
        return x
    raise BuildError(f"unknown activation {name!r}")


class SpectralState(nnx.Module):
    """Spectral normalisation of a weight (Miyato et al. 2018): the weight divided by its largest
    singular value, estimated by one power-iteration step per call from a persistent vector
    ``u`` (a ``BatchStat``: updated in training, carried in the model state, never trained)."""

    def __init__(self, out_features: int, *, rngs: nnx.Rngs):
        u = jax.random.normal(rngs.params(), (1, out_features), jnp.float32)
        self.u = nnx.BatchStat(u / jnp.linalg.norm(u))

    def normalise(self, kernel: jax.Array, *, train: bool) -> jax.Array:
        matrix = kernel.reshape(-1, kernel.shape[-1])
        u = self.u[...]
        v = _l2_normalise(u @ matrix.T)
        u = _l2_normalise(v @ matrix)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = (v @ matrix @ u.T)[0, 0]
        if train:
            self.u[...] = u
        return kernel / jnp.where(sigma > 0, sigma, 1.0)


def _l2_normalise(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x), eps))


class Dense(nnx.Module):
    """``nnx.Linear`` that flattens inputs of rank > 1 (per sample) first; optionally spectrally
    normalised."""

    def __init__(self, in_features: int, units: int, *, rngs: nnx.Rngs, spectral: bool = False):
        self.linear = nnx.Linear(in_features, units, rngs=rngs)
        self.spectral = SpectralState(units, rngs=rngs) if spectral else None

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        if self.spectral is None:
            return self.linear(x)
        kernel = self.spectral.normalise(self.linear.kernel[...], train=train)
        return x @ kernel + self.linear.bias[...]


class Conv(nnx.Module):
    """A convolution (2-D or 3-D) or a 2-D transposed convolution via :mod:`ggdsl.nets.conv`.

    A 2-D convolution on a video ``(B, T, H, W, C)`` concatenates its frames along
    channels first, ``(B, H, W, T*C)``, or with ``per_frame`` convolves every frame alike,
    ``(B, T, H', W', c)``.
    """

    def __init__(
        self,
        kind: str,
        in_channels: int,
        channels: int,
        *,
        kernel: int,
        stride: int,
        padding: str,
        rngs: nnx.Rngs,
        conv_impl: str = "auto",
        spectral: bool = False,
        per_frame: bool = False,
    ):
        spatial = 3 if kind == "conv3d" else 2
        shape = (*(kernel,) * spatial, in_channels, channels)
        self.kernel = nnx.Param(CONV_INIT(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.kind = kind
        self.stride = stride
        self.padding = padding
        self.conv_impl = conv_impl
        self.per_frame = per_frame
        self.spectral = SpectralState(channels, rngs=rngs) if spectral else None

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kernel = self.kernel[...]
        if self.spectral is not None:
            kernel = self.spectral.normalise(kernel, train=train)
        if self.kind == "deconv":
            y = conv_ops.conv_transpose2d(x, kernel, self.stride, self.padding, impl=self.conv_impl)
        elif self.kind == "conv3d":
            y = conv_ops.conv3d(x, kernel, self.stride, self.padding, impl=self.conv_impl)
        elif x.ndim == 5 and self.per_frame:
            y = conv_ops.conv2d(x.reshape(-1, *x.shape[2:]), kernel, self.stride, self.padding, impl=self.conv_impl)
            y = y.reshape(*x.shape[:2], *y.shape[1:])
        else:
            if x.ndim == 5:
                x = jnp.moveaxis(x, 1, 3).reshape(*x.shape[:1], *x.shape[2:4], -1)
            y = conv_ops.conv2d(x, kernel, self.stride, self.padding, impl=self.conv_impl)
        return y + self.bias[...]


class Reshape(nnx.Module):
    """Reshape each sample to a static shape (``flatten`` is a reshape to one axis)."""

    def __init__(self, shape: Sequence[int]):
        self.shape = tuple(int(n) for n in shape)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return x.reshape(x.shape[0], *self.shape)


class Crop(nnx.Module):
    """Centre-crop the two spatial axes before the channels."""

    def __init__(self, in_shape: Shape, out_shape: Shape):
        self.top = (in_shape[-3] - out_shape[-3]) // 2
        self.left = (in_shape[-2] - out_shape[-2]) // 2
        self.size = (out_shape[-3], out_shape[-2])

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        height, width = self.size
        return x[..., self.top : self.top + height, self.left : self.left + width, :]


class Dropout(nnx.Module):
    """``nnx.Dropout`` that is active only when ``train=True``."""

    def __init__(self, rate: float, *, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(rate, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.dropout(x, deterministic=not train)


class MinibatchStd(nnx.Module):
    """Minibatch standard deviation (Karras et al., 2018): one more channel, the same for
    every example, holding the std over the batch averaged over all features and positions.

    A discriminator with it can tell a batch of samples that vary less than real data do
    (a generator that draws a narrow part of each class), which a per-example
    discriminator cannot see.
    """

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        spread = jnp.mean(jnp.sqrt(jnp.var(x, axis=0) + 1e-8))
        return jnp.concatenate([x, jnp.broadcast_to(spread, (*x.shape[:-1], 1)).astype(x.dtype)], axis=-1)


@register_layer_builder("minibatch_std")
def _build_minibatch_std(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return MinibatchStd()


@register_layer_builder("dense")
def _build_dense(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Dense(math.prod(in_shape), int(layer.value), rngs=rngs, spectral=layer_option(layer, "norm") == "spectral")


def _build_conv(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    video = layer.kind == "conv" and len(in_shape) == 4
    per_frame = video and layer_option(layer, "frames") == "each"
    in_channels = in_shape[-1] * (in_shape[0] if video and not per_frame else 1)
    return Conv(
        layer.kind,
        in_channels,
        int(layer.value),
        kernel=layer_option(layer, "kernel"),
        stride=layer_option(layer, "stride"),
        padding=layer_option(layer, "padding"),
        rngs=rngs,
        conv_impl=conv_impl,
        spectral=layer_option(layer, "norm") == "spectral",
        per_frame=per_frame,
    )


for _kind in ("conv", "deconv", "conv3d"):
    register_layer_builder(_kind)(_build_conv)


@register_layer_builder("reshape")
@register_layer_builder("flatten")
def _build_reshape(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Reshape(out_shape)


@register_layer_builder("crop")
def _build_crop(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Crop(in_shape, out_shape)


class Broadcast(nnx.Module):
    """A vector tiled over a grid, with two channels of coordinates in [-1, 1] appended:
    the spatial broadcast decoder's input (Watters et al. 2019)."""

    def __init__(self, height: int, width: int):
        self.height = height
        self.width = width

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        rows, cols = jnp.meshgrid(
            jnp.linspace(-1.0, 1.0, self.height, dtype=x.dtype),
            jnp.linspace(-1.0, 1.0, self.width, dtype=x.dtype),
            indexing="ij",
        )
        grid = jnp.broadcast_to(jnp.stack([rows, cols], -1), (x.shape[0], self.height, self.width, 2))
        tiled = jnp.broadcast_to(x[:, None, None, :], (x.shape[0], self.height, self.width, x.shape[-1]))
        return jnp.concatenate([tiled, grid], axis=-1)


@register_layer_builder("broadcast")
def _build_broadcast(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Broadcast(out_shape[0], out_shape[1])


class Pool(nnx.Module):
    """The mean or max over some per-sample axes (``pool``)."""

    def __init__(self, op: str, axes: Sequence[int]):
        self.op = op
        self.axes = tuple(axes)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return (jnp.mean if self.op == "mean" else jnp.max)(x, axis=self.axes)


@register_layer_builder("pool")
def _build_pool(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Pool(str(layer.value), pool_axes(layer, in_shape))


@register_layer_builder("dropout")
def _build_dropout(layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs, conv_impl):
    return Dropout(float(layer.value), rngs=rngs)


class Block(nnx.Module):
    """One layer: its operation, then its ``norm``, then its ``act``."""

    def __init__(self, layer: Layer, in_shape: Shape, out_shape: Shape, *, rngs: nnx.Rngs, conv_impl: str):
        if layer.kind not in LAYER_BUILDERS:
            known = ", ".join(sorted(LAYER_BUILDERS))
            raise BuildError(f"no module for layer kind {layer.kind!r} (known: {known})")
        self.op = LAYER_BUILDERS[layer.kind](layer, in_shape, out_shape, rngs=rngs, conv_impl=conv_impl)
        keys = LAYER_KINDS[layer.kind].keys
        norm = layer_option(layer, "norm") if "norm" in keys else "none"
        if norm == "spectral" and getattr(self.op, "spectral", None) is None:
            raise BuildError(f"layer kind {layer.kind!r} does not support norm: spectral")
        features = out_shape[-1] if out_shape else 1
        if norm == "batch":
            self.norm = nnx.BatchNorm(features, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, rngs=rngs)
        elif norm == "layer":
            self.norm = nnx.LayerNorm(features, epsilon=BATCH_NORM_EPSILON, rngs=rngs)
        else:
            self.norm = None
        self.act = layer_option(layer, "act") if "act" in keys else "linear"
        self.alpha = float(layer_option(layer, "alpha")) if "alpha" in keys else 0.2

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = self.op(x, train=train)
        if isinstance(self.norm, nnx.BatchNorm):
            x = self.norm(x, use_running_average=not train)
        elif self.norm is not None:
            x = self.norm(x)
        return activation(self.act, x, self.alpha)


def _blocks(layers: Sequence[Layer], shapes: Sequence[Shape], **kwargs: Any) -> nnx.List:
    return nnx.List([Block(layer, shapes[i], shapes[i + 1], **kwargs) for i, layer in enumerate(layers)])


class PlanNetwork(nnx.Module):
    """The modules of a :class:`~ggdsl.nets.shapes.Plan`: branches, combined, then the head.

    Args:
        plan: What to build.
        inputs: Per-sample shapes of the named inputs (no batch axis).
        rngs: Parameter (and dropout) randomness.
        conv_impl: ``"auto"``, ``"im2col"``, ``"subpixel"`` or ``"lax"`` (see :mod:`ggdsl.nets.conv`).
    """

    def __init__(
        self,
        plan: Plan,
        inputs: Mapping[str, Sequence[int]],
        *,
        rngs: nnx.Rngs,
        conv_impl: str = "auto",
    ):
        conv_ops.resolve_impl(conv_impl)
        self.input_shapes = tuple((name, tuple(int(n) for n in shape)) for name, shape in inputs.items())
        branch_shapes, head_shapes = plan_shapes(plan, inputs)
        self.branch_inputs = tuple(branch.inputs for branch in plan.branches)
        self.branches = nnx.List(
            [
                _blocks(branch.layers, shapes, rngs=rngs, conv_impl=conv_impl)
                for branch, shapes in zip(plan.branches, branch_shapes, strict=True)
            ]
        )
        self.head = _blocks(plan.head, head_shapes, rngs=rngs, conv_impl=conv_impl)
        self.out_shape = head_shapes[-1]

    def _combine(self, names: Sequence[str], inputs: Mapping[str, jax.Array]) -> jax.Array:
        shapes = dict(self.input_shapes)
        arrays = []
        for name in names:
            if name not in inputs:
                raise BuildError(f"missing input {name!r} (expected: {', '.join(shapes)})")
            array = jnp.asarray(inputs[name])
            if tuple(array.shape[1:]) != shapes[name]:
                raise BuildError(
                    f"input {name!r} has shape {tuple(array.shape)}, expected (batch, "
                    f"{', '.join(map(str, shapes[name]))})"
                )
            arrays.append(array)
        if input_kind(shapes[names[0]]) == "vector":
            arrays = [array.reshape(array.shape[0], -1) for array in arrays]
        return arrays[0] if len(arrays) == 1 else jnp.concatenate(arrays, axis=-1)

    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
        """Apply to a mapping of batched inputs; returns ``(B, *out_shape)``."""
        features = []
        for names, blocks in zip(self.branch_inputs, self.branches, strict=True):
            x = self._combine(names, inputs)
            for block in blocks:
                x = block(x, train=train)
            features.append(x)
        if len(features) == 1:
            x = features[0]
        else:
            x = jnp.concatenate([f.reshape(f.shape[0], -1) for f in features], axis=-1)
        for block in self.head:
            x = block(x, train=train)
        return x


class Network(PlanNetwork):
    """A network from a layer list (a ``networks:`` entry, a preset or an inline list).

    Inputs follow SPEC section 7: vectors are concatenated; images go through the layers
    before the first ``flatten`` / ``dense`` (the image branch), whose flattened output
    joins the vectors for the remaining layers (see :func:`~ggdsl.nets.shapes.network_plan`).

    Args:
        layers: The layer list.
        inputs: Per-sample shapes of the named inputs.
        rngs: Parameter (and dropout) randomness.
        out_shape: If given, the output shape the layer list must produce.
        conv_impl: ``"auto"``, ``"im2col"``, ``"subpixel"`` or ``"lax"``.

    Raises:
        BuildError: Shapes do not fit, or the output is not ``out_shape``.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        inputs: Mapping[str, Sequence[int]],
        *,
        rngs: nnx.Rngs,
        out_shape: Sequence[int] | None = None,
        conv_impl: str = "auto",
    ):
        super().__init__(network_plan(layers, inputs), inputs, rngs=rngs, conv_impl=conv_impl)
        if out_shape is not None and tuple(out_shape) != self.out_shape:
            raise BuildError(f"the network produces shape {self.out_shape}, expected {tuple(out_shape)}")


class Discriminator(PlanNetwork):
    """A discriminator on the joint of ``inputs`` (Tables 2 and 5); returns logits ``(B,)``.

    Args:
        inputs: Per-sample shapes of the named inputs.
        rngs: Parameter randomness.
        video: ``"concat"`` (frames along channels) or ``"conv3d"`` for video inputs.
        conv_impl: ``"auto"``, ``"im2col"``, ``"subpixel"`` or ``"lax"``.
    """

    def __init__(
        self,
        inputs: Mapping[str, Sequence[int]],
        *,
        rngs: nnx.Rngs,
        video: str = "concat",
        conv_impl: str = "auto",
    ):
        plan = discriminator_plan(inputs, video=video)
        super().__init__(plan, inputs, rngs=rngs, conv_impl=conv_impl)

    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool = False) -> jax.Array:
        return super().__call__(inputs, train=train)[:, 0]


class Extractor(PlanNetwork):
    """An extractor producing ``out_shape`` from ``inputs`` (Tables 1, 3 and 4).

    Returns ``(B, *out_shape)``.
    """

    def __init__(
        self,
        inputs: Mapping[str, Sequence[int]],
        out_shape: Sequence[int],
        *,
        rngs: nnx.Rngs,
        video: str = "concat",
        conv_impl: str = "auto",
    ):
        plan = extractor_plan(inputs, out_shape, video=video)
        super().__init__(plan, inputs, rngs=rngs, conv_impl=conv_impl)


def param_count(module: nnx.Module) -> int:
    """Number of trainable values (``nnx.Param``) in a module."""
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))
