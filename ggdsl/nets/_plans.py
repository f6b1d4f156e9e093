"""Assembly plans: how named inputs flow through a network, as plain data.

A :class:`Plan` is a few branches and a head. Each branch takes some named inputs, combines
them and applies its layers; the branch outputs are combined and the head's layers apply.
``explain`` counts parameters from a plan without JAX; ``ggdsl.nets.modules`` builds the
same plan into Flax modules, so both agree exactly.

Inputs by rank (per sample, no batch axis): rank 0, 1 and 2 are *vectors* (rank 0 is read
as ``(1,)``, rank 2 is flattened, e.g. per-step latents ``(T, n)``); rank 3 is an *image*
``(H, W, C)``; rank 4 is a *video* ``(T, H, W, C)``.

Combining: within a branch, vectors are flattened and concatenated; images (or videos) of
the same spatial size are concatenated along channels. Across branches, a single branch
passes its output on unchanged; several branches are flattened and concatenated, in order.

The discriminators and extractors follow the paper's Tables 1, 2 and 5::

    >>> plan = discriminator_plan({"x": (28, 28, 1), "h": (64,)})
    >>> [layer.value for layer in plan.branches[0].layers]
    [64, 128, 256, None]
    >>> plan_out_shape(plan, {"x": (28, 28, 1), "h": (64,)})
    (1,)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ggdsl.errors import BuildError
from ggdsl.nets._layers import Shape, network_param_count, network_shapes
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import Layer

HIDDEN_UNITS = 512
TOWER_TOP_CHANNELS = 256
TOWER_MIN_CHANNELS = 32
VIDEO_MODES = ("concat", "conv3d")


@dataclass(frozen=True)
class Branch:
    """Named inputs, combined, then ``layers``."""

    inputs: tuple[str, ...]
    layers: tuple[Layer, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Branches whose outputs are combined, then the ``head`` layers."""

    branches: tuple[Branch, ...]
    head: tuple[Layer, ...] = ()


def input_kind(shape: Sequence[int]) -> str:
    """``"vector"`` (rank 0-2), ``"image"`` (rank 3) or ``"video"`` (rank 4).

    >>> input_kind(()), input_kind((28, 28, 1)), input_kind((4, 64, 64, 1))
    ('vector', 'image', 'video')
    """
    rank = len(shape)
    if rank <= 2:
        return "vector"
    if rank == 3:
        return "image"
    if rank == 4:
        return "video"
    raise BuildError(f"inputs of rank {rank} are not supported (shape {tuple(shape)})")


def branch_in_shape(names: Sequence[str], inputs: Mapping[str, Sequence[int]]) -> Shape:
    """The shape a branch's layers see after its inputs are combined.

    >>> branch_in_shape(["h", "k"], {"h": (64,), "k": (10,)})
    (74,)
    >>> branch_in_shape(["a", "b"], {"a": (8, 8, 1), "b": (8, 8, 2)})
    (8, 8, 3)
    """
    if not names:
        raise BuildError("a branch needs at least one input")
    missing = [name for name in names if name not in inputs]
    if missing:
        raise BuildError(f"unknown input {missing[0]!r} (known: {', '.join(inputs)})")
    shapes = [tuple(int(n) for n in inputs[name]) for name in names]
    kinds = {input_kind(shape) for shape in shapes}
    if kinds == {"vector"}:
        return (sum(math.prod(shape) for shape in shapes),)
    if "vector" in kinds or len({shape[:-1] for shape in shapes}) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in zip(names, shapes, strict=True))
        raise BuildError(f"cannot concatenate inputs along channels: {described}")
    return (*shapes[0][:-1], sum(shape[-1] for shape in shapes))


def _branch_context(plan: Plan, index: int) -> str:
    return f"branch {index} ({', '.join(plan.branches[index].inputs)})"


def plan_shapes(plan: Plan, inputs: Mapping[str, Sequence[int]]) -> tuple[tuple[list[Shape], ...], list[Shape]]:
    """Every intermediate shape: one list per branch, then the head's list.

    Each list starts with the shape its first layer sees (see :func:`network_shapes`).
    """
    branch_shapes = []
    for index, branch in enumerate(plan.branches):
        try:
            in_shape = branch_in_shape(branch.inputs, inputs)
            branch_shapes.append(network_shapes(branch.layers, in_shape))
        except BuildError as error:
            raise BuildError(f"{_branch_context(plan, index)}: {error}") from None
    if len(branch_shapes) == 1:
        head_in = branch_shapes[0][-1]
    else:
        head_in = (sum(math.prod(shapes[-1]) for shapes in branch_shapes),)
    try:
        head_shapes = network_shapes(plan.head, head_in)
    except BuildError as error:
        raise BuildError(f"head: {error}") from None
    return tuple(branch_shapes), head_shapes


def plan_out_shape(plan: Plan, inputs: Mapping[str, Sequence[int]]) -> Shape:
    """The per-sample output shape of a plan."""
    return plan_shapes(plan, inputs)[1][-1]


def plan_param_count(plan: Plan, inputs: Mapping[str, Sequence[int]]) -> int:
    """Trainable parameters of a plan: what the built Flax module holds as ``nnx.Param``.

    >>> plan_param_count(discriminator_plan({"h": (16,), "k": (10,)}), {"h": (16,), "k": (10,)})
    539649
    """
    branch_shapes, head_shapes = plan_shapes(plan, inputs)
    total = sum(
        network_param_count(branch.layers, shapes[0])
        for branch, shapes in zip(plan.branches, branch_shapes, strict=True)
    )
    return total + network_param_count(plan.head, head_shapes[0])


def _split(inputs: Mapping[str, Sequence[int]]) -> tuple[list[str], list[str]]:
    if not inputs:
        raise BuildError("a network needs at least one input")
    images = [name for name, shape in inputs.items() if input_kind(shape) != "vector"]
    vectors = [name for name in inputs if name not in images]
    return images, vectors


def network_plan(layers: Sequence[Layer], inputs: Mapping[str, Sequence[int]]) -> Plan:
    """The plan of a user network (SPEC section 7: a network's input is its parents).

    Vectors are concatenated. Images go through the *image branch*, the layers before the
    first ``flatten`` or ``dense``; its flattened output is concatenated with the vectors
    and the remaining layers apply. Without image inputs every layer applies to the vector.

    >>> layers = [Layer("conv", 8), Layer("flatten", None), Layer("dense", 4)]
    >>> plan = network_plan(layers, {"x": (8, 8, 1), "c": (10,)})
    >>> len(plan.branches[0].layers), len(plan.head)
    (1, 2)
    """
    layers = tuple(layers)
    images, vectors = _split(inputs)
    if not images:
        return Plan((Branch(tuple(vectors)),), layers)
    if not vectors:
        return Plan((Branch(tuple(images), layers),))
    split = next((i for i, layer in enumerate(layers) if layer.kind in ("dense", "flatten")), None)
    if split is None:
        raise BuildError(
            f"vector inputs ({', '.join(vectors)}) need a dense or flatten layer after the image "
            f"branch of ({', '.join(images)}), but the network has none"
        )
    return Plan((Branch(tuple(images), layers[:split]), Branch(tuple(vectors))), layers[split:])


def _lrelu(units: int) -> Layer:
    return Layer("dense", units, FrozenDict(act="leaky_relu", alpha=0.2))


def tower_depth(shape: Sequence[int]) -> int:
    """Stride-2 layers needed to bring the smaller spatial side down to 4 or less (>= 1).

    >>> tower_depth((28, 28, 1)), tower_depth((32, 32, 3)), tower_depth((64, 64, 3))
    (3, 3, 4)
    """
    side = min(shape[-3], shape[-2])
    depth = 1
    while -(-side // 2**depth) > 4:
        depth += 1
    return depth


def conv_tower(shape: Sequence[int], *, video: str = "concat") -> tuple[Layer, ...]:
    """The paper's conv feature tower for an image or video input, ending with flatten.

    5x5 convolutions, stride 2, leaky ReLU 0.2, channels doubling up to 256 at the top
    (64/128/256 for 28x28 and 32x32 as in Table 2; 32/64/128/256 for 64x64 as in Table 5).
    A video's frames are concatenated along channels (ConcatX), or with ``video="conv3d"``
    the tower is 4x4x4 3-D convolutions (the 3DCNN baseline of Table 5).

    >>> [layer.value for layer in conv_tower((64, 64, 3))]
    [32, 64, 128, 256, None]
    """
    if video not in VIDEO_MODES:
        raise BuildError(f"unknown video mode {video!r} (known: {', '.join(VIDEO_MODES)})")
    depth = tower_depth(shape)
    three_d = video == "conv3d" and len(shape) == 4
    options = FrozenDict(kernel=4 if three_d else 5, stride=2, act="leaky_relu", alpha=0.2)
    kind = "conv3d" if three_d else "conv"
    # Tables 2 and 5: 64/128/256 for 28-32 pixels, 32/64/128/256 for 64 pixels; a shallow
    # tower for small images starts at 64 rather than at 256.
    base = TOWER_MIN_CHANNELS if depth >= 4 else 2 * TOWER_MIN_CHANNELS
    channels = [min(TOWER_TOP_CHANNELS, base << i) for i in range(depth)]
    return (*(Layer(kind, c, options) for c in channels), Layer("flatten", None))


def _output(out_shape: Sequence[int]) -> tuple[Layer, ...]:
    out_shape = tuple(int(n) for n in out_shape)
    dense = Layer("dense", max(1, math.prod(out_shape)))
    return (dense,) if len(out_shape) == 1 else (dense, Layer("reshape", out_shape))


def _towers(images: Sequence[str], inputs: Mapping[str, Sequence[int]], video: str) -> list:
    return [Branch((name,), conv_tower(inputs[name], video=video)) for name in images]


def discriminator_plan(inputs: Mapping[str, Sequence[int]], *, video: str = "concat") -> Plan:
    """The discriminator on the joint of ``inputs`` (Tables 2 and 5); outputs one logit.

    Each image or video input gets its own :func:`conv_tower`; all vectors are concatenated
    and go through dense 512 (leaky ReLU 0.2); the features are concatenated, then dense
    512 and dense 1 (a logit, no sigmoid). With vectors only: dense 512 three times, then
    dense 1 (Table 2, D(h, k)).

    >>> plan = discriminator_plan({"h": (16,), "k": (10,)})
    >>> [layer.value for layer in plan.head]
    [512, 512, 512, 1]
    """
    images, vectors = _split(inputs)
    if not images:
        return Plan((Branch(tuple(vectors)),), (*[_lrelu(HIDDEN_UNITS)] * 3, Layer("dense", 1)))
    branches = _towers(images, inputs, video)
    if vectors:
        branches.append(Branch(tuple(vectors), (_lrelu(HIDDEN_UNITS),)))
    return Plan(tuple(branches), (_lrelu(HIDDEN_UNITS), Layer("dense", 1)))


def extractor_plan(inputs: Mapping[str, Sequence[int]], out_shape: Sequence[int], *, video: str = "concat") -> Plan:
    """An extractor (recognition network) producing ``out_shape`` from ``inputs``.

    Images only: conv tower, then a linear dense to the output (Table 1 right, Table 4
    right). Vectors only: dense 512 (leaky ReLU 0.2) twice, then linear. Both: towers and
    a dense 512 on the vectors, concatenated, dense 512, then linear. A non-vector
    ``out_shape`` ends with a reshape.

    >>> plan = extractor_plan({"x": (32, 32, 3)}, (128,))
    >>> [layer.kind for layer in plan.branches[0].layers + plan.head]
    ['conv', 'conv', 'conv', 'flatten', 'dense']
    """
    images, vectors = _split(inputs)
    if not images:
        return Plan((Branch(tuple(vectors)),), (*[_lrelu(HIDDEN_UNITS)] * 2, *_output(out_shape)))
    branches = _towers(images, inputs, video)
    if not vectors:
        return Plan(tuple(branches), _output(out_shape))
    branches.append(Branch(tuple(vectors), (_lrelu(HIDDEN_UNITS),)))
    return Plan(tuple(branches), (_lrelu(HIDDEN_UNITS), *_output(out_shape)))
