"""Flax NNX modules: shapes, parameter counts, batch norm, dropout and split/merge."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ggdsl.errors import BuildError
from ggdsl.nets.modules import Discriminator, Extractor, Network, param_count
from ggdsl.nets.shapes import (
    discriminator_plan,
    extractor_plan,
    get_preset,
    network_plan,
    plan_param_count,
)
from ggdsl.spec.frozen import FrozenDict
from ggdsl.spec.ir import Layer


def _abstract_output(make, inputs, batch=3):
    """Build ``make()`` abstractly and return (module, per-call output shape) via eval_shape."""
    module = nnx.eval_shape(make)
    graphdef, state = nnx.split(module)
    arrays = {name: jax.ShapeDtypeStruct((batch, *shape), jnp.float32) for name, shape in inputs.items()}
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, arrays)
    return module, out.shape


def _call(module, inputs, *, train=False):
    """Apply a module under jit, as training does (split outside, merge inside)."""
    graphdef, state = nnx.split(module)
    return jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, train=train))(state, inputs)


def _batch(inputs, batch=4, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(inputs))
    return {
        name: jax.random.uniform(key, (batch, *shape)) for key, (name, shape) in zip(keys, inputs.items(), strict=True)
    }


PRESET_CASES = [
    ("generator28", {"h": (64,)}, (28, 28, 1)),
    ("dcgan_generator_32", {"h": (128,)}, (32, 32, 3)),
    ("dcgan_generator_64", {"h": (128,)}, (64, 64, 3)),
    ("frame_generator_64", {"h": (128,), "v": (8,)}, (64, 64, 3)),
    ("mlp_generator", {"h": (16,), "k": ()}, (28, 28, 1)),
    ("extractor28", {"x": (28, 28, 1)}, (64,)),
    ("dcgan_extractor_32", {"x": (32, 32, 3)}, (128,)),
    ("dcgan_extractor_64", {"x": (64, 64, 3)}, (128,)),
    ("frame_extractor_64", {"x": (64, 64, 3)}, (8,)),
    ("video_extractor_64", {"x": (16, 64, 64, 1)}, (128,)),
    ("mlp_extractor", {"x": (28, 28, 1)}, (64,)),
    ("transition", {"v": (8,), "eps": (8,)}, (8,)),
    ("linear", {"k": (10,)}, (64,)),
]


@pytest.mark.parametrize("name, inputs, out_shape", PRESET_CASES)
def test_preset_modules(name, inputs, out_shape):
    layers = get_preset(name, out_shape)
    module, shape = _abstract_output(lambda: Network(layers, inputs, rngs=nnx.Rngs(0), out_shape=out_shape), inputs)
    assert shape == (3, *out_shape)
    assert param_count(module) == plan_param_count(network_plan(layers, inputs), inputs)


@pytest.mark.parametrize(
    "inputs, video",
    [
        ({"x": (28, 28, 1), "h": (64,)}, "concat"),
        ({"h": (16,), "k": (10,)}, "concat"),
        ({"x": (32, 32, 3), "h": (128,), "k": (10,)}, "concat"),
        ({"x": (4, 64, 64, 1), "h": (128,), "v": (4, 8)}, "concat"),
        ({"x": (4, 64, 64, 1), "h": (128,), "v": (4, 8)}, "conv3d"),
        ({"a": (8, 8, 1), "b": (8, 8, 1)}, "concat"),
    ],
)
def test_discriminator_shapes_and_counts(inputs, video):
    module, shape = _abstract_output(lambda: Discriminator(inputs, rngs=nnx.Rngs(0), video=video), inputs)
    assert shape == (3,)
    assert param_count(module) == plan_param_count(discriminator_plan(inputs, video=video), inputs)


@pytest.mark.parametrize(
    "inputs, out_shape",
    [
        ({"x": (28, 28, 1)}, (64,)),
        ({"x": (16, 64, 64, 1)}, (128,)),
        ({"h": (8,), "v": (8,)}, (4, 4)),
        ({"x": (28, 28, 1), "k": (10,)}, ()),
    ],
)
def test_extractor_shapes_and_counts(inputs, out_shape):
    module, shape = _abstract_output(lambda: Extractor(inputs, out_shape, rngs=nnx.Rngs(0)), inputs)
    assert shape == (3, *out_shape)
    assert param_count(module) == plan_param_count(extractor_plan(inputs, out_shape), inputs)


def test_discriminator_runs_on_image_and_vector():
    inputs = {"x": (28, 28, 1), "h": (64,)}
    discriminator = Discriminator(inputs, rngs=nnx.Rngs(0), conv_impl="lax")
    logits = _call(discriminator, _batch(inputs), train=True)
    assert logits.shape == (4,) and bool(jnp.all(jnp.isfinite(logits)))
    assert len(discriminator_plan({"h": (16,), "k": (10,)}).branches) == 1


def test_network_image_branch_with_vectors():
    layers = get_preset("extractor28", (16,))
    inputs = {"x": (28, 28, 1), "c": (10,)}
    net = Network(layers, inputs, rngs=nnx.Rngs(0), conv_impl="lax")
    assert _call(net, _batch(inputs)).shape == (4, 16)
    with pytest.raises(BuildError, match=r"input 'c' has shape \(4, 3\)"):
        net({"x": jnp.zeros((4, 28, 28, 1)), "c": jnp.zeros((4, 3))})
    with pytest.raises(BuildError, match=r"produces shape \(16,\), expected \(8,\)"):
        Network(layers, inputs, rngs=nnx.Rngs(0), out_shape=(8,))


@pytest.mark.parametrize("impl", ["im2col", "subpixel", "auto"])
def test_conv_impls_agree_in_a_network(impl):
    layers = [
        Layer("dense", 7 * 7 * 8, FrozenDict(act="relu")),
        Layer("reshape", (7, 7, 8)),
        Layer("deconv", 4, FrozenDict(norm="batch", act="relu")),
        Layer("deconv", 2, FrozenDict(act="sigmoid")),
        Layer("conv", 4, FrozenDict(act="leaky_relu")),
    ]
    ours = Network(layers, {"h": (8,)}, rngs=nnx.Rngs(1), conv_impl=impl)
    reference = Network(layers, {"h": (8,)}, rngs=nnx.Rngs(1), conv_impl="lax")
    h = _batch({"h": (8,)})
    out = _call(ours, h, train=True)
    assert out.shape == (4, 14, 14, 4)
    np.testing.assert_allclose(out, _call(reference, h, train=True), atol=1e-5)


def _batch_norm_net():
    layers = [
        Layer("dense", 16, FrozenDict(act="relu", norm="batch")),
        Layer("dropout", 0.5),
        Layer("dense", 4),
    ]
    return Network(layers, {"h": (8,)}, rngs=nnx.Rngs(0, dropout=1))


def test_batch_norm_and_dropout_through_split_merge():
    net = _batch_norm_net()
    graphdef, state = nnx.split(net)
    h = {"h": jax.random.normal(jax.random.key(0), (32, 8)) * 3 + 1}

    def apply(state, inputs, train):
        model = nnx.merge(graphdef, state)
        return model(inputs, train=train), nnx.state(model)

    apply = jax.jit(apply, static_argnums=2)
    mean_before = state["head"][0]["norm"]["mean"][...]
    train_out, new_state = apply(state, h, True)
    mean_after = new_state["head"][0]["norm"]["mean"][...]
    assert not np.allclose(mean_before, mean_after)  # running stats moved
    np.testing.assert_allclose(
        mean_after, 0.1 * jnp.mean(nnx.merge(graphdef, state).head[0].op(h["h"]), axis=0), rtol=1e-5, atol=1e-6
    )
    eval_out, eval_state = apply(new_state, h, False)
    assert not np.allclose(train_out, eval_out)  # batch stats vs running averages
    np.testing.assert_allclose(eval_state["head"][0]["norm"]["mean"][...], mean_after)  # eval leaves the averages alone
    eval_again, _ = apply(eval_state, h, False)
    np.testing.assert_allclose(eval_out, eval_again)  # no dropout in eval
    train_again, _ = apply(new_state, h, True)
    assert not np.allclose(train_out, train_again)  # a fresh dropout mask each call


def test_dropout_only_in_training():
    layers = [Layer("dense", 64), Layer("dropout", 0.5)]
    net = Network(layers, {"h": (8,)}, rngs=nnx.Rngs(0, dropout=1))
    h = _batch({"h": (8,)})
    assert np.allclose(net(h, train=False), net(h, train=False))
    trained = net(h, train=True)
    assert float(jnp.mean(trained == 0)) > 0.2
    assert not np.allclose(trained, net(h, train=True))


def test_layer_norm_counts():
    layers = [Layer("conv", 8, FrozenDict(norm="layer", act="leaky_relu")), Layer("flatten", None)]
    inputs = {"x": (8, 8, 2)}
    net = Network(layers, inputs, rngs=nnx.Rngs(0))
    assert _call(net, _batch(inputs), train=True).shape == (4, 4 * 4 * 8)
    assert param_count(net) == plan_param_count(network_plan(layers, inputs), inputs)


def test_minibatch_std_appends_the_batch_spread():
    layers = [Layer("conv", 4, FrozenDict(kernel=3, stride=2)), Layer("minibatch_std", None), Layer("flatten", None)]
    inputs = {"x": (8, 8, 1)}
    net = Network(layers, inputs, rngs=nnx.Rngs(0))
    assert param_count(net) == plan_param_count(network_plan(layers, inputs), inputs) == 3 * 3 * 4 + 4
    x = _batch(inputs, batch=6)
    out = np.asarray(_call(net, x)).reshape(6, 4, 4, 5)
    features = np.asarray(net.branches[0][0].op(x["x"]))
    expected = np.mean(np.sqrt(np.var(features, axis=0) + 1e-8))
    np.testing.assert_allclose(out[..., 4], expected, rtol=1e-5)  # one value, every example and position
    np.testing.assert_allclose(out[..., :4], features, rtol=1e-5, atol=1e-6)  # the features pass unchanged
    same = {"x": jnp.broadcast_to(x["x"][:1], x["x"].shape)}
    np.testing.assert_allclose(np.asarray(_call(net, same)).reshape(6, 4, 4, 5)[..., 4], 1e-4, rtol=1e-3)  # no spread


def test_minibatch_std_on_vectors_adds_one_feature():
    layers = [Layer("dense", 5), Layer("minibatch_std", None), Layer("dense", 1)]
    net = Network(layers, {"h": (3,)}, rngs=nnx.Rngs(0))
    assert param_count(net) == (3 * 5 + 5) + (6 * 1 + 1)
    assert _call(net, _batch({"h": (3,)})).shape == (4, 1)


def test_per_frame_conv_is_the_image_conv_on_every_frame():
    each = Layer("conv", 6, FrozenDict(kernel=3, frames="each", act="leaky_relu", norm="batch"))
    video = {"x": (5, 8, 8, 2)}
    net = Network([each], video, rngs=nnx.Rngs(0))
    image = Network([each], {"x": (8, 8, 2)}, rngs=nnx.Rngs(0))  # the same weights, on single frames
    assert param_count(net) == param_count(image) == plan_param_count(network_plan([each], video), video)
    x = _batch(video, batch=3)
    out = np.asarray(_call(net, x))
    assert out.shape == (3, 5, 4, 4, 6)
    frames = np.asarray(_call(image, {"x": x["x"].reshape(15, 8, 8, 2)})).reshape(3, 5, 4, 4, 6)
    np.testing.assert_allclose(out, frames, rtol=1e-5, atol=1e-6)
    # frames move with their outputs: the convolution sees no order
    order = np.array([4, 0, 3, 1, 2])
    moved = np.asarray(_call(net, {"x": x["x"][:, order]}))
    np.testing.assert_allclose(moved, out[:, order], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("op", "over", "reduce_axes"),
    [("max", "all", (1, 2, 3)), ("mean", "space", (2, 3)), ("mean", "frames", (1,)), ("max", "frames", (1,))],
)
def test_pool_reduces_the_named_axes(op, over, reduce_axes):
    layers = [Layer("pool", op, FrozenDict(over=over))]
    video = {"x": (4, 3, 3, 2)}
    net = Network(layers, video, rngs=nnx.Rngs(0))
    assert param_count(net) == 0
    x = _batch(video, batch=2)
    expected = (np.max if op == "max" else np.mean)(np.asarray(x["x"]), axis=reduce_axes)
    np.testing.assert_allclose(np.asarray(_call(net, x)), expected, rtol=1e-6)


def test_pooled_video_extractor_ignores_frame_order():
    layers = [
        Layer("conv", 8, FrozenDict(kernel=4, frames="each", act="leaky_relu")),
        Layer("pool", "max"),
        Layer("dense", 3),
    ]
    video = {"x": (6, 8, 8, 1)}
    net = Network(layers, video, rngs=nnx.Rngs(1))
    x = _batch(video, batch=2)
    reversed_ = {"x": x["x"][:, ::-1]}
    np.testing.assert_allclose(np.asarray(_call(net, x)), np.asarray(_call(net, reversed_)), rtol=1e-5, atol=1e-6)


def test_broadcast_tiles_the_vector_and_appends_coordinates():
    net = Network([Layer("broadcast", (3, 4))], {"h": (2,), "v": (1,)}, rngs=nnx.Rngs(0))
    assert param_count(net) == 0
    h, v = jnp.asarray([[1.0, 2.0], [3.0, 4.0]]), jnp.asarray([[5.0], [6.0]])
    out = np.asarray(_call(net, {"h": h, "v": v}))
    assert out.shape == (2, 3, 4, 5)
    np.testing.assert_array_equal(out[0, :, :, :3], np.broadcast_to([1.0, 2.0, 5.0], (3, 4, 3)))
    np.testing.assert_array_equal(out[1, :, :, :3], np.broadcast_to([3.0, 4.0, 6.0], (3, 4, 3)))
    np.testing.assert_allclose(out[1, :, 0, 3], [-1.0, 0.0, 1.0])  # rows
    np.testing.assert_allclose(out[1, 0, :, 4], [-1.0, -1 / 3, 1 / 3, 1.0], rtol=1e-6)  # columns
    np.testing.assert_array_equal(out[0, ..., 3:], out[1, ..., 3:])  # the same grid for every example
