"""The extension examples under examples/: each registers a new piece and trains a model with it.

Each example is loaded in-process with ``runpy`` (its ``main`` is not run on import), and every
registry it touches is restored afterwards, so registrations do not leak into other tests.
"""

from __future__ import annotations

import math
import runpy
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ggdsl
from ggdsl.data import registry as data_registry
from ggdsl.errors import BuildError, DataError, SpecError
from ggdsl.nets import _layers
from ggdsl.nets import modules as net_modules
from ggdsl.nodes import NODE_SAMPLERS, node_sampler, register_sampler
from ggdsl.objective import Settings
from ggdsl.spec import schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS = 40


@pytest.fixture
def registries():
    """Snapshot every registry an example can extend; restore it (same dict objects) after."""
    data_registry.source_names()  # the built-in sources, registered on first use
    tables = [
        schema.NODE_TYPES,
        NODE_SAMPLERS,
        _layers.LAYER_KINDS,
        net_modules.LAYER_BUILDERS,
        data_registry._SOURCES,
    ]
    saved = [dict(table) for table in tables]
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)


def load_example(name: str) -> dict[str, Any]:
    return runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"ggdsl_example_{name}")


def assert_finite_losses(metrics: list[dict[str, Any]]) -> None:
    assert metrics[-1]["step"] == STEPS
    for record in metrics:
        for key, value in record.items():
            assert math.isfinite(value), (record["step"], key, value)


def changed_parameters(run_dir: Path, part: str, module: str) -> dict[str, bool]:
    """For each parameter of ``state[part]`` under ``module`` (e.g. ``['extractors']['c_h']``):
    whether training moved it away from its initial value."""
    run = ggdsl.load_run(run_dir)
    initial = run.compiled.init_state(run.spec.train.seed)[part]
    before = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(initial)[0]}
    after = jax.tree_util.tree_flatten_with_path(run.state[part])[0]
    out = {}
    for path, leaf in after:
        name = jax.tree_util.keystr(path)
        if name.startswith(module):
            out[name] = not np.allclose(np.asarray(before[name]), np.asarray(leaf))
    assert out, f"no parameters under {module} in {part}"
    return out


# -- a new node type -------------------------------------------------------------------------------


def test_bernoulli_node_trains(registries, tmp_path):
    example = load_example("bernoulli_node")
    assert "bernoulli" in schema.NODE_TYPES and "bernoulli" in NODE_SAMPLERS
    summary = example["main"](out=tmp_path, steps=STEPS)
    text = summary["explain"]
    assert "  c ~ bernoulli()   [2] latent" in text
    assert "  h ~ Normal(net(c), 0.25)   [8] latent   [linear, 24 params]" in text
    assert "  c = E(h)   [inline, 706 params]" in text
    assert "D[h|c]  w=0.5  1 copy: (h, c)" in text
    metrics = summary["metrics"]
    assert_finite_losses(metrics)
    assert {"d_acc/h|c", "d_acc/x|h", "recon", "latent_recon"} <= set(metrics[-1])
    # Under p a root draws hard bits; under q the extractor's logits give relaxed ones.
    p_bits, q_bits = summary["p_bits"], summary["q_bits"]
    assert p_bits.shape == q_bits.shape == (256, 2)
    assert set(np.unique(p_bits)) == {0.0, 1.0}
    assert np.all((q_bits >= 0) & (q_bits <= 1)) and not np.all(np.isin(q_bits, (0.0, 1.0)))
    run_dir = summary["run_dir"]
    for part, module in (
        ("g_params", "['extractors']['c_h']"),
        ("g_params", "['generators']['h']"),
        ("d_params", "['discriminators']['h_c']"),
    ):
        moved = changed_parameters(run_dir, part, module)
        assert all(moved.values()), moved


def test_bernoulli_samplers_relax_and_pass_gradients(registries):
    example = load_example("bernoulli_node")
    concrete = example["binary_concrete"]
    logits = jnp.array([[-2.0, 0.0, 3.0]] * 512)
    key = jax.random.key(0)
    soft = concrete(logits, key, 0.5)
    hard = concrete(logits, key, 0.5, hard=True)
    assert np.all((soft >= 0) & (soft <= 1)) and np.mean((soft > 0) & (soft < 1)) > 0.9
    # The hard sample is the soft one rounded (up to the straight-through sum's rounding),
    # and the rate of ones follows sigmoid(logits).
    rounded = np.asarray(soft > 0.5, np.float32)
    np.testing.assert_allclose(np.asarray(hard), rounded, atol=1e-6)
    np.testing.assert_allclose(rounded.mean(0), np.asarray(jax.nn.sigmoid(logits[0])), atol=0.07)
    for make_hard in (False, True):
        grads = jax.grad(lambda z, h=make_hard: jnp.sum(concrete(z, key, 0.5, hard=h)))(logits)
        # d sample / d logit >= 0 everywhere; 0 only where float32's sigmoid saturates.
        assert np.all(np.asarray(grads) >= 0) and np.mean(np.asarray(grads) > 0) > 0.9
    # sample_p: a root draws hard bits with the spec's probs; with parents, the network's logits.
    spec = ggdsl.load_spec(example["SPEC"], overrides=["model.c.probs=0.25"])
    settings = Settings(discrete="gumbel_softmax", temperature=0.5)
    root = node_sampler("bernoulli").sample_p(spec.model["c"], None, key, (4000, 2), settings)
    assert root.shape == (4000, 2) and abs(float(root.mean()) - 0.25) < 0.03
    child = node_sampler("bernoulli").sample_p(spec.model["c"], logits, key, logits.shape, settings)
    np.testing.assert_array_equal(np.asarray(child), np.asarray(soft))


def test_bernoulli_spec_errors_name_the_key(registries):
    example = load_example("bernoulli_node")
    with pytest.raises(SpecError) as error:
        ggdsl.load_spec(example["SPEC"], overrides=["model.c.given=[h]", "model.c.probs=1.5"])
    message = str(error.value)
    assert "model.c.net: a bernoulli with parents needs `net` (the logits network)" in message
    assert "model.c.probs: must be <= 1.0, got 1.5" in message


def test_a_node_type_without_a_sampler_is_a_build_error(registries):
    @ggdsl.register_node("spike", keys={})
    def check_spike(var):
        return []

    with pytest.raises(BuildError, match=r"node type 'spike' has no sampler: register one with ggdsl.register_sampler"):
        node_sampler("spike")
    with pytest.raises(ValueError, match="'normal' is built in"):
        register_sampler("normal", sample_p=lambda *args: None)


# -- a new layer kind ------------------------------------------------------------------------------


def test_custom_layer_trains(registries, tmp_path):
    example = load_example("custom_layer")
    assert "residual" in _layers.LAYER_KINDS and "residual" in net_modules.LAYER_BUILDERS
    summary = example["main"](out=tmp_path, steps=STEPS)
    # dense 8->32 (288), two residual blocks 32->64->32 (4,192 each), dense 32->2 (66)
    assert summary["generator_params"] == 288 + 2 * (32 * 64 + 64 + 64 * 32 + 32) + 66 == 8738
    assert "  x = net(h)   [2] observed   [generator, 8,738 params]" in summary["explain"]
    assert_finite_losses(summary["metrics"])
    run = ggdsl.load_run(summary["run_dir"])
    generator = run.compiled.generative(run.state).generators["x"]
    blocks = [block.op for block in generator.head]
    assert [type(op).__name__ for op in blocks] == ["Dense", "Residual", "Residual", "Dense"]
    assert net_modules.param_count(generator) == 8738
    moved = changed_parameters(summary["run_dir"], "g_params", "['generators']['x']['head'][1]")
    assert set(moved) == {
        f"['generators']['x']['head'][1]['op']['{layer}']['{name}'].value"
        for layer in ("inner", "outer")
        for name in ("kernel", "bias")
    }
    assert all(moved.values()), moved


def test_custom_layer_checks_its_value_and_shape(registries):
    example = load_example("custom_layer")
    with pytest.raises(SpecError) as error:
        ggdsl.load_spec(example["SPEC"], overrides=["networks.generator=[{dense: 32}, {residual: 0, act: gelu}]"])
    message = str(error.value)
    assert "networks.generator[1].residual: expected a positive int (hidden units), got 0" in message
    assert "networks.generator[1].act: expected one of leaky_relu, linear, relu, sigmoid, tanh, got 'gelu'" in message
    layers = [ggdsl.Layer("reshape", (4, 4, 2)), ggdsl.Layer("residual", 8)]
    with pytest.raises(BuildError, match=r"layer 1 \(residual: 8\): residual expects a vector"):
        from ggdsl.nets.shapes import network_shapes

        network_shapes(layers, (32,))


# -- a new data source -----------------------------------------------------------------------------


def test_custom_source_trains(registries, tmp_path):
    example = load_example("custom_source")
    summary = example["main"](out=tmp_path, steps=STEPS)
    dataset = summary["dataset"]
    assert dataset.name == "bars" and dataset.num_examples == 2000
    assert dataset.feature_shapes == {"image": (8, 8, 1), "label": ()}
    assert set(np.unique(dataset.features["label"])) == set(range(16))
    run_dir = Path(summary["run_dir"])
    saved = ggdsl.load_spec(run_dir / "spec.yaml")
    assert saved.data.source == "bars" and saved.data.get("size") == 8
    assert_finite_losses(summary["metrics"])
    evaluation = summary["evaluation"]
    assert set(evaluation) == {
        "step",
        "clustering_accuracy",
        "clustering_accuracy_majority",
        "clusters_used",
        "reconstruction_mse",
    }
    assert 0.0 <= evaluation["clustering_accuracy"] <= 1.0 and evaluation["step"] == STEPS
    for part, module in (("g_params", "['generators']['x']"), ("d_params", "['discriminators']['x_h']")):
        assert all(changed_parameters(run_dir, part, module).values())


def test_custom_source_draws_one_bar_per_image(registries):
    load_example("custom_source")
    from ggdsl.data import load_dataset

    dataset = load_dataset("bars", {"size": 6, "noise": 0.0, "num_examples": 300, "seed": 3}, "test")
    images, labels = dataset.features["image"][..., 0], dataset.features["label"]
    assert images.shape == (300, 6, 6)
    for image, label in zip(images, labels, strict=True):
        expected = np.zeros((6, 6), np.float32)
        if label < 6:
            expected[label, :] = 1.0
        else:
            expected[:, label - 6] = 1.0
        np.testing.assert_array_equal(image, expected)
    with pytest.raises(DataError, match=r"data.size: must be >= 4, got 2"):
        load_dataset("bars", {"size": 2}, "train")
    problems = data_registry.check_source_options("bars", {"sizes": 8})
    assert problems[0][0] == "sizes" and "unknown key for source 'bars'" in problems[0][1]


def test_registries_are_restored_after_each_example():
    assert "bernoulli" not in schema.NODE_TYPES and "bernoulli" not in NODE_SAMPLERS
    assert "residual" not in _layers.LAYER_KINDS and "residual" not in net_modules.LAYER_BUILDERS
    assert "bars" not in data_registry.source_names()
