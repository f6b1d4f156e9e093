"""Stabilisers as spec options: spectral normalisation, instance noise, weight averaging, and
the cluster-usage diagnostic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ggdsl.build import build_modules
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.errors import SpecError
from ggdsl.nets.modules import Conv, Dense
from ggdsl.objective import losses, settings_of
from ggdsl.plan import plan_model
from ggdsl.run import inference_state
from ggdsl.spec.load import load_spec


def _spec(*overrides: str):
    return load_spec(BUNDLED / "gmgan_digits.yaml", overrides=["train.batch_size=8", *overrides])


def _batch(n: int = 8):
    return {"x": jnp.asarray(np.random.default_rng(0).uniform(0, 1, (n, 8, 8, 1)).astype(np.float32))}


@pytest.mark.parametrize(
    "make",
    [
        lambda r: Dense(12, 7, rngs=r, spectral=True),
        lambda r: Conv("conv", 3, 5, kernel=3, stride=1, padding="same", rngs=r, spectral=True),
    ],
)
def test_spectral_norm_divides_by_the_largest_singular_value(make):
    layer = make(nnx.Rngs(0))
    kernel = layer.linear.kernel[...] if isinstance(layer, Dense) else layer.kernel[...]
    x = jnp.ones((2, 12)) if isinstance(layer, Dense) else jnp.ones((2, 4, 4, 3))
    for _ in range(50):  # power iteration converges while training
        layer(x, train=True)
    normalised = layer.spectral.normalise(kernel, train=False)
    top = np.linalg.svd(np.asarray(normalised).reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
    assert top == pytest.approx(1.0, rel=1e-3)
    u = np.array(layer.spectral.u[...])
    layer(x, train=False)  # evaluation leaves the power-iteration vector alone
    np.testing.assert_array_equal(u, np.asarray(layer.spectral.u[...]))


def test_spectral_norm_applies_to_every_discriminator_weight_and_nothing_else():
    plan = plan_model(_spec("objective.spectral_norm=true"))
    for net in plan.discriminators.values():
        layers = [*[la for b in net.plan.branches for la in b.layers], *net.plan.head]
        assert all(la.get("norm") == "spectral" for la in layers if la.kind in ("dense", "conv"))
    for net in (*plan.generators.values(), *plan.extractors.values()):
        layers = [*[la for b in net.plan.branches for la in b.layers], *net.plan.head]
        assert all(la.get("norm") != "spectral" for la in layers)
    plain = plan_model(_spec())
    assert [n.params for n in plain.all()] == [n.params for n in plan.all()]  # u is not trained


def test_spectral_norm_trains_with_r1():
    spec = _spec("objective.spectral_norm=true", "objective.r1=1.0")
    compiled = compile_spec(spec)
    state = compiled.init_state(0)
    before = [np.array(x) for x in jax.tree.leaves(state["d_rest"])]
    step = compiled.make_step(jax.random.key(0))
    for _ in range(2):
        state, metrics = step(state, _batch())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    after = jax.tree.leaves(state["d_rest"])
    assert len(after) == len(before) > 0 and all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_instance_noise_decays_linearly_and_reaches_the_discriminators():
    spec = _spec("objective.instance_noise=0.5")
    plan = plan_model(spec)
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    key = jax.random.key(1)
    stds = [
        float(losses(gen, critics, plan, _batch(), key, settings=settings, progress=p)[2]["instance_noise"])
        for p in (0.0, 0.5, 1.0, 1.5)
    ]
    assert stds == pytest.approx([0.5, 0.25, 0.0, 0.0])
    noisy = losses(gen, critics, plan, _batch(), key, settings=settings, progress=0.0)[2]
    clean = losses(gen, critics, plan, _batch(), key, settings=settings, progress=1.0)[2]
    assert float(noisy["d_loss/x|h"]) != float(clean["d_loss/x|h"])
    assert float(noisy["d_loss/h|k"]) == pytest.approx(float(clean["d_loss/h|k"]))  # no observed input there


def test_instance_noise_must_be_non_negative():
    with pytest.raises(SpecError, match="instance_noise"):
        _spec("objective.instance_noise=-1")


def test_ema_tracks_the_generator_and_is_what_runs_use():
    decay = 0.9
    compiled = compile_spec(_spec(f"train.ema={decay}"))
    state = compiled.init_state(0)
    for a, b in zip(jax.tree.leaves(state["g_ema"]), jax.tree.leaves(state["g_params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    step = compiled.make_step(jax.random.key(0), jit=False)
    old_ema = jax.tree.map(np.array, state["g_ema"])
    state, _ = step(state, _batch())
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, old_ema, state["g_params"])
    for a, b in zip(jax.tree.leaves(state["g_ema"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    used = inference_state(state)
    assert used["g_params"] is state["g_ema"]
    plain = compile_spec(_spec()).init_state(0)
    assert "g_ema" not in plain and inference_state(plain) is plain


def test_usage_counts_the_components_q_assigns():
    spec = _spec()
    plan = plan_model(spec)
    gen, critics = build_modules(plan, 0)
    metrics = losses(gen, critics, plan, _batch(32), jax.random.key(0), settings=settings_of(plan))[2]
    usage = float(metrics["usage/k"])
    assert usage == int(usage) and 1 <= usage <= 10
    one = losses(gen, critics, plan, {"x": jnp.zeros((32, 8, 8, 1))}, jax.random.key(0), settings=settings_of(plan))[2]
    assert float(one["usage/k"]) == 1.0  # identical inputs: one component
