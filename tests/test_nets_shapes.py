"""Layer validation, shape rules, presets and plans: pure Python, no JAX."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggdsl.errors import BuildError
from ggdsl.nets.shapes import (
    PRESET_RESIDUAL,
    Branch,
    Plan,
    check_layer,
    conv_tower,
    discriminator_plan,
    extractor_plan,
    get_preset,
    layer_out_shape,
    layer_param_count,
    network_plan,
    network_shapes,
    plan_out_shape,
    plan_param_count,
    preset_names,
)
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import Layer

KNOWN = "broadcast, conv, conv3d, crop, deconv, dense, dropout, flatten, minibatch_std, pool, reshape"


def test_importing_shapes_does_not_import_jax():
    code = "import sys, ggdsl.nets, ggdsl.nets.shapes; print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_check_layer_keeps_what_was_written():
    layer, problems = check_layer({"deconv": 128, "kernel": 5, "stride": 2, "act": "relu"})
    assert problems == []
    assert layer == Layer("deconv", 128, FrozenDict(kernel=5, stride=2, act="relu"))
    assert layer.to_dict() == {"deconv": 128, "kernel": 5, "stride": 2, "act": "relu"}
    assert check_layer(layer.to_dict())[0] == layer
    reshape, _ = check_layer({"reshape": [7, 7, 128]})
    assert reshape.value == (7, 7, 128) and reshape.to_dict() == {"reshape": [7, 7, 128]}


@pytest.mark.parametrize(
    "obj, expected",
    [
        ({"conv": 64, "kernel": "five"}, [("kernel", "expected an int, got 'five'")]),
        ({"dnse": 512, "act": "relu"}, [("", f"unknown layer 'dnse' (known: {KNOWN})")]),
        (
            {"dense": 8, "kernel": 3},
            [("kernel", "unknown key 'kernel' for dense (known: act, alpha, norm)")],
        ),
        ({"dense": 0}, [("dense", "expected a positive int, got 0")]),
        ({"dense": True}, [("dense", "expected an int, got True")]),
        (
            {"dense": 8, "act": "gelu"},
            [("act", "expected one of leaky_relu, linear, relu, sigmoid, tanh, got 'gelu'")],
        ),
        (
            {"dense": 8, "norm": "group"},
            [("norm", "expected one of batch, layer, spectral, none, got 'group'")],
        ),
        ({"crop": [7]}, [("crop", "expected a list of 2 ints, got 1 items")]),
        ({"conv": 8, "frames": "stack"}, [("frames", "expected one of concat, each, got 'stack'")]),
        ({"broadcast": [8]}, [("broadcast", "expected a list of 2 ints, got 1 items")]),
        ({"pool": "sum"}, [("pool", "expected one of mean, max, got 'sum'")]),
        ({"pool": "max", "over": "time"}, [("over", "expected one of space, frames, all, got 'time'")]),
        (
            {"deconv": 8, "frames": "each"},
            [("frames", "unknown key 'frames' for deconv (known: act, alpha, kernel, norm, padding, stride)")],
        ),
        ({"dropout": 1.5}, [("dropout", "expected a rate in [0, 1), got 1.5")]),
        ({"flatten": False}, [("flatten", "expected null or true, got False")]),
        ({"act": "relu"}, [("", f"a layer needs a kind key (known: {KNOWN})")]),
        ({"dense": 8, "conv": 3}, [("", "a layer has one kind key, got dense, conv")]),
        ([1, 2], [("", "expected a mapping like {dense: 512}, got list [1, 2]")]),
        (None, [("", "expected a mapping like {dense: 512}, got NoneType None")]),
    ],
)
def test_check_layer_messages(obj, expected):
    layer, problems = check_layer(obj)
    assert layer is None
    assert problems == expected


def test_check_layer_reports_every_problem():
    _, problems = check_layer({"conv": -1, "kernel": 2.5, "padding": "full"})
    assert [path for path, _ in problems] == ["conv", "kernel", "padding"]


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)
layer_like = st.fixed_dictionaries(
    {
        st.sampled_from(
            [
                "dense",
                "conv",
                "deconv",
                "conv3d",
                "reshape",
                "crop",
                "dropout",
                "flatten",
                "minibatch_std",
                "pool",
                "broadcast",
            ]
        ): json_like
    },
    optional={
        "kernel": json_like,
        "stride": json_like,
        "act": json_like,
        "alpha": json_like,
        "norm": json_like,
        "padding": json_like,
        "frames": json_like,
        "over": json_like,
        "ünï": json_like,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_like, layer_like))
def test_check_layer_never_raises(obj):
    layer, problems = check_layer(obj)
    assert (layer is None) != (problems == [])
    for path, message in problems:
        assert isinstance(path, str) and isinstance(message, str) and message
    if layer is not None:
        assert check_layer(layer.to_dict()) == (layer, [])


def test_shape_rules():
    assert layer_out_shape(Layer("conv", 64), (28, 28, 1)) == (14, 14, 64)
    assert layer_out_shape(Layer("conv", 8, FrozenDict(padding="valid")), (28, 28, 1)) == (
        12,
        12,
        8,
    )
    assert layer_out_shape(Layer("deconv", 1), (14, 14, 64)) == (28, 28, 1)
    assert layer_out_shape(Layer("conv", 32), (4, 64, 64, 1)) == (32, 32, 32)  # ConcatX
    assert layer_out_shape(Layer("conv3d", 32), (16, 64, 64, 1)) == (8, 32, 32, 32)
    assert layer_out_shape(Layer("crop", (7, 7)), (8, 8, 3)) == (7, 7, 3)
    assert layer_out_shape(Layer("dense", 10), (7, 7, 3)) == (10,)
    assert layer_out_shape(Layer("reshape", ()), (1,)) == ()
    assert layer_param_count(Layer("conv", 64), (28, 28, 1)) == 5 * 5 * 64 + 64
    assert layer_param_count(Layer("conv", 32), (4, 64, 64, 1)) == 5 * 5 * 4 * 32 + 32
    assert layer_param_count(Layer("conv3d", 32), (16, 64, 64, 1)) == 4**3 * 32 + 32
    assert layer_param_count(Layer("dense", 10, FrozenDict(norm="batch")), (5,)) == 60 + 20


def test_per_frame_conv_and_pool_shapes():
    each = Layer("conv", 32, FrozenDict(kernel=4, frames="each"))
    assert layer_out_shape(each, (16, 32, 32, 1)) == (16, 16, 16, 32)
    assert layer_param_count(each, (16, 32, 32, 1)) == 4 * 4 * 1 * 32 + 32  # one kernel for every frame
    assert layer_out_shape(each, (32, 32, 3)) == (16, 16, 32)  # an image is one frame
    assert layer_out_shape(Layer("conv", 32, FrozenDict(frames="concat")), (4, 8, 8, 1)) == (4, 4, 32)
    video = (16, 8, 8, 64)
    assert layer_out_shape(Layer("pool", "max"), video) == (64,)
    assert layer_out_shape(Layer("pool", "mean", FrozenDict(over="space")), video) == (16, 64)
    assert layer_out_shape(Layer("pool", "mean", FrozenDict(over="frames")), video) == (8, 8, 64)
    assert layer_out_shape(Layer("pool", "max", FrozenDict(over="space")), (8, 8, 64)) == (64,)
    assert layer_out_shape(Layer("pool", "max"), (8, 8, 64)) == (64,)
    assert layer_param_count(Layer("pool", "max"), video) == 0
    shapes = network_shapes([each, Layer("conv", 64, FrozenDict(frames="each")), Layer("pool", "max")], (16, 32, 32, 1))
    assert shapes == [(16, 32, 32, 1), (16, 16, 16, 32), (16, 8, 8, 64), (64,)]
    with pytest.raises(BuildError, match=r"layer 0 \(pool: 'max'\): pool over frames expects a video"):
        network_shapes([Layer("pool", "max", FrozenDict(over="frames"))], (8, 8, 3))
    assert layer_out_shape(Layer("broadcast", (16, 8)), (36,)) == (16, 8, 38)
    with pytest.raises(BuildError, match=r"broadcast expects a vector \(n,\), got shape \(4, 4, 1\)"):
        network_shapes([Layer("broadcast", (8, 8))], (4, 4, 1))
    with pytest.raises(BuildError, match="pool expects an image .* or a video"):
        network_shapes([Layer("pool", "mean")], (8,))


def test_shape_errors_name_the_layer():
    layers = [Layer("dense", 49), Layer("reshape", (7, 7, 2))]
    with pytest.raises(BuildError, match=r"layer 1 \(reshape: \(7, 7, 2\)\): cannot reshape"):
        network_shapes(layers, (8,))
    with pytest.raises(BuildError, match="layer 0 .*expects an image"):
        network_shapes([Layer("deconv", 3)], (16,))
    with pytest.raises(BuildError, match="cannot crop 4x4 to 7x7"):
        network_shapes([Layer("crop", (7, 7))], (4, 4, 1))
    with pytest.raises(BuildError, match="unknown layer 'unpool'"):
        network_shapes([Layer("unpool", 2)], (4, 4, 1))


EXPECTED_PRESETS = {
    "mlp_generator",
    "mlp_extractor",
    "linear",
    "transition",
    "generator28",
    "extractor28",
    "dcgan_generator_32",
    "dcgan_extractor_32",
    "dcgan_generator_64",
    "dcgan_extractor_64",
    "frame_generator_64",
    "frame_extractor_64",
    "video_extractor_64",
}


def test_preset_registry():
    assert EXPECTED_PRESETS <= set(preset_names())
    assert PRESET_RESIDUAL == {"transition"}
    with pytest.raises(BuildError, match=r"unknown network preset 'dcgan' \(known: .*generator28"):
        get_preset("dcgan", (28, 28, 1))


@pytest.mark.parametrize(
    "name, in_shape, out_shape",
    [
        ("generator28", (64,), (28, 28, 1)),
        ("dcgan_generator_32", (128,), (32, 32, 3)),
        ("dcgan_generator_64", (128,), (64, 64, 3)),
        ("frame_generator_64", (136,), (64, 64, 3)),
        ("mlp_generator", (16,), (28, 28, 1)),
        ("extractor28", (28, 28, 1), (64,)),
        ("dcgan_extractor_32", (32, 32, 3), (128,)),
        ("frame_extractor_64", (64, 64, 3), (8,)),
        ("video_extractor_64", (16, 64, 64, 1), (128,)),
        ("transition", (16,), (8,)),
        ("linear", (10,), (64,)),
    ],
)
def test_presets_produce_their_shape(name, in_shape, out_shape):
    assert network_shapes(get_preset(name, out_shape), in_shape)[-1] == out_shape


def test_preset_tables():
    table3 = get_preset("frame_extractor_64", (8,))
    assert network_shapes(table3, (64, 64, 3))[-2] == (4096,)  # "Reshape to 4096"
    table1 = get_preset("dcgan_generator_32", (32, 32, 3), data_range=(-1, 1))
    assert table1[0].value == 4096 and table1[-1].get("act") == "tanh"
    assert get_preset("generator28", (28, 28, 1))[-1].get("act") == "sigmoid"


def test_preset_shape_errors():
    with pytest.raises(BuildError, match=r"'dcgan_generator_32' produces 32x32xC .*not \(28, 28, 1\)"):
        get_preset("dcgan_generator_32", (28, 28, 1))
    with pytest.raises(BuildError, match="'generator28' produces 28x28xC"):
        get_preset("generator28", (64,))
    with pytest.raises(BuildError, match="data range"):
        get_preset("mlp_generator", (4,), data_range=(0, 255))


def test_towers_follow_the_tables():
    assert [layer.value for layer in conv_tower((32, 32, 3))] == [64, 128, 256, None]
    assert [layer.value for layer in conv_tower((64, 64, 3))] == [32, 64, 128, 256, None]
    assert [layer.value for layer in conv_tower((8, 8, 1))] == [64, None]
    assert [layer.value for layer in conv_tower((16, 16, 1))] == [64, 128, None]
    tower3d = conv_tower((16, 64, 64, 1), video="conv3d")
    assert {layer.kind for layer in tower3d[:-1]} == {"conv3d"}
    assert network_shapes(tower3d, (16, 64, 64, 1))[-1] == (4096,)
    assert network_shapes(conv_tower((16, 64, 64, 1)), (16, 64, 64, 1))[-1] == (4096,)


def test_discriminator_plans():
    local = discriminator_plan({"x": (32, 32, 3), "h": (128,)})  # Table 2, D(x, h)
    assert [b.inputs for b in local.branches] == [("x",), ("h",)]
    assert [layer.value for layer in local.branches[1].layers + local.head] == [512, 512, 1]
    assert local.head[-1].get("act", "linear") == "linear"
    vectors = discriminator_plan({"h": (128,), "k": (10,)})  # Table 2, D(h, k)
    assert len(vectors.branches) == 1 and [layer.value for layer in vectors.head] == [512] * 3 + [1]
    inputs = {"x": (16, 64, 64, 1), "h": (128,), "v": (16, 8)}  # Table 5, ConcatX
    assert plan_out_shape(discriminator_plan(inputs), inputs) == (1,)
    assert discriminator_plan(inputs).branches[1].inputs == ("h", "v")
    count = (26 * 512 + 512) + 2 * (512 * 512 + 512) + 513
    assert plan_param_count(vectors, {"h": (16,), "k": (10,)}) == count


def test_extractor_plans():
    assert plan_out_shape(extractor_plan({"x": (28, 28, 1)}, (64,)), {"x": (28, 28, 1)}) == (64,)
    assert plan_out_shape(extractor_plan({"h": (8,)}, (4, 4)), {"h": (8,)}) == (4, 4)
    assert plan_out_shape(extractor_plan({"h": (8,)}, ()), {"h": (8,)}) == ()
    mixed = {"x": (28, 28, 1), "k": (10,)}
    assert plan_out_shape(extractor_plan(mixed, (16,)), mixed) == (16,)


def test_network_plan_image_branch():
    layers = get_preset("extractor28", (16,))
    plan = network_plan(layers, {"x": (28, 28, 1), "c": (10,)})
    assert plan.branches == (Branch(("x",), layers[:3]), Branch(("c",)))
    assert plan.head == layers[3:]
    assert plan_out_shape(plan, {"x": (28, 28, 1), "c": (10,)}) == (16,)
    two_images = {"a": (28, 28, 1), "b": (28, 28, 2)}
    assert network_plan(layers, two_images) == Plan((Branch(("a", "b"), layers),))
    with pytest.raises(BuildError, match="cannot concatenate inputs along channels"):
        plan_out_shape(
            network_plan(layers, {"a": (28, 28, 1), "b": (14, 14, 1)}),
            {"a": (28, 28, 1), "b": (14, 14, 1)},
        )
    with pytest.raises(BuildError, match="need a dense or flatten layer"):
        network_plan([Layer("conv", 4)], {"x": (8, 8, 1), "c": (3,)})
    with pytest.raises(BuildError, match="rank 5"):
        network_plan([Layer("dense", 4)], {"x": (1, 2, 3, 4, 5)})
