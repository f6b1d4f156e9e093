"""The time plate compiled: tied templates traced once, whatever T; every bundled SSGAN spec steps or traces.

A template's copies (frame generator, frame extractor) run as one stacked call and the
transition chain as one ``lax.scan``; ``stack_steps=False`` is the one-call-per-step
reference they must agree with.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ggdsl.build import build_modules
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.objective import reconstruct, sample_p, sample_q, settings_of
from ggdsl.plan import plan_model
from ggdsl.spec.load import load_spec

SSGAN_SPECS = sorted(p.stem for p in BUNDLED.glob("ssgan_*.yaml"))
# GGDSL_TEST_ALL_SPECS=1 (on demand) steps every CPU-budget spec and one full-size spec
# with them. By default none steps here: ssgan_moving_digits_t4_cpu trains in
# tests/test_eval_video.py, the 3-D convolution its 3DCNN twin adds is compiled with its
# gradients in tests/test_nets_conv.py, and every spec here has its whole step traced,
# which keeps the suite short (the full-size 64x64 specs are traced too: the same step
# code over larger presets). Either way every bundled SSGAN spec is in one of the two tests.
ALL_SPECS = os.environ.get("GGDSL_TEST_ALL_SPECS", "0") == "1"
STEPPED_SPECS = [n for n in SSGAN_SPECS if "_cpu" in n or n == "ssgan_moving_mnist_t4"] if ALL_SPECS else []
TRACED_SPECS = [n for n in SSGAN_SPECS if n not in STEPPED_SPECS]


def tiny_ssgan(steps: int, family: str = "mean_field", divergence: str = "local"):
    """h -> x[t] <- v[t] <- v[t-1], vectors only (MLP networks), so it compiles in seconds."""
    text = f"""
name: tiny-ssgan
data: {{source: toy, observe: {{x: x}}}}
time: {{steps: {steps}}}
model:
  h: {{type: normal, shape: [6]}}
  v: {{type: implicit, steps: true, shape: [3], given: ["v[t-1]"], net: transition, noise: 3,
      first: {{type: normal, shape: [3]}}}}
  x: {{type: implicit, steps: true, observed: true, shape: [5], given: [h, v], net: mlp_generator}}
inference: {{family: {family}, nets: {{h: mlp_extractor, v: mlp_extractor}}}}
objective: {{divergence: {divergence}}}
"""
    return load_spec(text)


def _param_count(module) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _close(a: dict, b: dict, rtol: float = 1e-4) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        scale = float(jnp.max(jnp.abs(b[key]))) + 1e-6
        assert float(jnp.max(jnp.abs(a[key] - b[key]))) <= rtol * scale, key


@pytest.mark.parametrize("family", ["mean_field", "inverse"])
def test_stacked_and_scanned_steps_equal_one_call_per_step(family):
    spec = tiny_ssgan(5, family)
    plan = plan_model(spec)
    gen, _ = build_modules(plan, 0)
    settings = settings_of(plan)
    key = jax.random.key(3)
    p_stacked = sample_p(gen, plan, 7, key, train=False, settings=settings)
    p_single = sample_p(gen, plan, 7, key, train=False, settings=settings, stack_steps=False)
    _close(p_stacked, p_single)
    observed = {n: p_stacked[n] for n in plan.analysis.observed}
    q_stacked = sample_q(gen, plan, observed, key, train=False, settings=settings)[0]
    q_single = sample_q(gen, plan, observed, key, train=False, settings=settings, stack_steps=False)[0]
    _close(q_stacked, q_single)
    _close(
        reconstruct(gen, plan, q_stacked, key, train=False),
        reconstruct(gen, plan, q_stacked, key, train=False, stack_steps=False),
    )


def test_clamped_steps_are_kept_and_the_rest_follows():
    spec = tiny_ssgan(4)
    plan = plan_model(spec)
    gen, _ = build_modules(plan, 0)
    settings = settings_of(plan)
    fixed = {"v[2]": jnp.full((3, 3), 0.5)}
    values = sample_p(gen, plan, 3, jax.random.key(0), train=False, settings=settings, fixed=fixed)
    single = sample_p(gen, plan, 3, jax.random.key(0), train=False, settings=settings, fixed=fixed, stack_steps=False)
    np.testing.assert_array_equal(values["v[2]"], fixed["v[2]"])
    _close(values, single)


def _tied_counts(plan) -> dict[str, int]:
    """Parameters of every network but the ones that read a whole video (q(h | x_1:T), a global D)."""
    nets = {f"G {k}": n for k, n in plan.generators.items()} | {f"E {k}": n for k, n in plan.extractors.items()}
    nets |= {f"D {k}": n for k, n in plan.discriminators.items()}
    return {k: n.params for k, n in nets.items() if k not in ("E h|x", "D global")}


@pytest.mark.parametrize("divergence", ["local", "global"])
def test_parameter_count_does_not_change_with_t(divergence):
    """Tied templates have one set of parameters whatever T; so do the built modules."""
    counts = []
    for steps in (2, 4, 16):
        plan = plan_model(tiny_ssgan(steps, divergence=divergence))
        gen, critics = build_modules(plan, 0)
        assert _param_count(gen) == sum(n.params for n in (*plan.generators.values(), *plan.extractors.values()))
        assert _param_count(critics) == sum(n.params for n in plan.discriminators.values())
        counts.append(_tied_counts(plan))
    assert counts[0] == counts[1] == counts[2]
    expected = {"G v", "G x", "E v|x"} | ({"D x|h,v", "D v|v[t-1]"} if divergence == "local" else set())
    assert set(counts[0]) == expected


def test_bundled_ssgan_parameter_counts_do_not_change_with_t():
    for name in ("ssgan_moving_mnist_t16", "ssgan_moving_digits_t16_cpu"):
        counts = [
            _tied_counts(plan_model(load_spec(BUNDLED / f"{name}.yaml", overrides=[f"time.steps={t}"])))
            for t in (4, 16, 31)
        ]
        assert counts[0] == counts[1] == counts[2], name


def _loss_program(steps: int, stack: bool):
    spec = tiny_ssgan(steps, "inverse")
    compiled = compile_spec(spec)
    compiled = dataclasses.replace(compiled, settings=dataclasses.replace(compiled.settings, stack_steps=stack))
    state = jax.eval_shape(lambda: compiled.init_state(0))
    batch = {"x": jax.ShapeDtypeStruct((4, steps, 5), jnp.float32)}
    return jax.make_jaxpr(compiled.make_step(jax.random.key(0), jit=False))(state, batch)


def _subjaxprs(value):
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):  # a closed jaxpr
        yield value.jaxpr
    elif hasattr(value, "eqns"):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _subjaxprs(item)


def _count(jaxpr, primitive: str) -> int:
    """Occurrences of a primitive in the traced program, nested programs (scan, jvp) included."""
    total = 0
    for eqn in jaxpr.eqns:
        total += eqn.primitive.name == primitive
        for value in eqn.params.values():
            for sub in _subjaxprs(value):
                total += _count(sub, primitive)
    return total


def test_one_trace_serves_every_step():
    """The step's matrix products are the same in number for T = 3 and T = 12: each template is
    traced once; one call per step makes them grow with T."""
    stacked = {t: _count(_loss_program(t, True).jaxpr, "dot_general") for t in (3, 12)}
    single = {t: _count(_loss_program(t, False).jaxpr, "dot_general") for t in (3, 12)}
    assert stacked[3] == stacked[12]
    assert single[12] > single[3]
    assert any(eqn.primitive.name == "scan" for eqn in _loss_program(3, True).jaxpr.eqns)


def _video_batch(spec, batch: int, rng: np.random.Generator) -> dict[str, jax.Array]:
    out = {}
    for name, feature in spec.data.observe.items():
        steps = (spec.time.steps,) if feature == "video" else ()
        low, high = spec.data.range
        shape = (batch, *steps, *spec.model[name].shape)
        out[name] = jnp.asarray(rng.uniform(low, high, shape).astype(np.float32))
    return out


def test_bundled_ssgan_specs_found():
    for base in ("ssgan_moving_mnist_t4", "ssgan_moving_mnist_t16", "ssgan_chairs_t31"):
        for variant in (
            base,
            f"{base.replace('moving_mnist', 'moving_digits')}_cpu" if "mnist" in base else f"{base}_cpu",
        ):
            for kind in ("", "_global", "_3dcnn"):
                assert f"{variant}{kind}" in SSGAN_SPECS
    for name in SSGAN_SPECS:
        spec = load_spec(BUNDLED / f"{name}.yaml")
        if name.endswith("_3dcnn"):
            assert (spec.objective.divergence, spec.objective.video) == ("global", "conv3d")
        elif name.endswith("_global"):
            assert (spec.objective.divergence, spec.objective.video) == ("global", "concat")
        else:
            assert spec.objective.divergence == "local"


def test_3dcnn_discriminator_convolves_over_time():
    plan = plan_model(load_spec(BUNDLED / "ssgan_moving_digits_t4_cpu_3dcnn.yaml"))
    kinds = [layer.kind for branch in plan.discriminators["global"].plan.branches for layer in branch.layers]
    assert "conv3d" in kinds and "conv" not in kinds
    plan = plan_model(load_spec(BUNDLED / "ssgan_moving_digits_t4_cpu_global.yaml"))
    kinds = [layer.kind for branch in plan.discriminators["global"].plan.branches for layer in branch.layers]
    assert "conv" in kinds and "conv3d" not in kinds


def _groups(spec) -> list[str]:
    return ["global"] if spec.objective.divergence == "global" else ["x|h,v", "v|v[t-1]"]


@pytest.mark.parametrize(
    "name",
    STEPPED_SPECS
    or [pytest.param("-", marks=pytest.mark.skip(reason="on demand: GGDSL_TEST_ALL_SPECS=1 steps the CPU specs"))],
)
def test_ssgan_spec_trains_three_steps(name):
    spec = load_spec(BUNDLED / f"{name}.yaml", overrides=["train.batch_size=2"])
    compiled = compile_spec(spec)
    state = compiled.init_state(0)
    step = compiled.make_step(jax.random.key(0))
    rng = np.random.default_rng(0)
    for _ in range(3):
        state, metrics = step(state, _video_batch(spec, 2, rng))
        metrics = {k: float(v) for k, v in metrics.items()}
        assert {f"d_acc/{g}" for g in _groups(spec)} | {"d_loss", "g_loss"} <= set(metrics)
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert int(state["step"]) == 3


@pytest.mark.parametrize("name", TRACED_SPECS)
def test_ssgan_spec_traces_its_step(name):
    """The other specs' step is traced, not compiled (the stepped specs above run the same
    presets): the state keeps its exact structure, shapes and dtypes through the step, and
    the metrics are the expected scalars."""
    spec = load_spec(BUNDLED / f"{name}.yaml", overrides=["train.batch_size=2"])
    compiled = compile_spec(spec)
    state = jax.eval_shape(lambda: compiled.init_state(0))  # shapes only: no parameter is drawn
    step = compiled.make_step(jax.random.key(0), jit=False)
    batch = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _video_batch(spec, 2, np.random.default_rng(0))
    )
    out_state, metrics = jax.eval_shape(step, state, batch)
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), state)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), out_state) == shapes
    assert {f"d_acc/{g}" for g in _groups(spec)} | {"d_loss", "g_loss"} <= set(metrics)
    assert all(m.shape == () and m.dtype == jnp.float32 for m in metrics.values()), metrics


def test_pooled_content_extractor_and_broadcast_generator_train():
    """A content extractor that reads every frame alike and pools (``frames: each``,
    ``pool``) and a spatial-broadcast frame generator (``broadcast``) compile into a step
    on the time plate; the content h of a video does not depend on its frames' order."""
    spec = load_spec(
        """
name: pooled-ssgan
data: {source: toy, observe: {x: x}}
time: {steps: 3}
model:
  h: {type: normal, shape: [4]}
  v: {type: implicit, steps: true, shape: [2], given: ["v[t-1]"], net: transition, noise: 2,
      first: {type: normal, shape: [2]}}
  x: {type: implicit, steps: true, observed: true, shape: [8, 8, 1], given: [h, v], net: broadcaster}
inference: {family: mean_field, nets: {h: pooled, v: frame}}
objective: {divergence: local, reconstruction: 1.0}
networks:
  broadcaster:
    - {broadcast: [4, 4]}
    - {conv: 8, kernel: 3, stride: 1, act: relu}
    - {deconv: 1, kernel: 4, stride: 2, act: sigmoid}
  pooled:
    - {conv: 8, kernel: 3, stride: 2, act: leaky_relu, frames: each}
    - {pool: max}
    - {dense: 4}
  frame:
    - {conv: 8, kernel: 3, stride: 2, act: leaky_relu}
    - {flatten: null}
    - {dense: 2}
train: {batch_size: 2}
"""
    )
    compiled = compile_spec(spec)
    state = compiled.init_state(0)
    step = compiled.make_step(jax.random.key(0))
    rng = np.random.default_rng(0)
    for _ in range(2):
        state, metrics = step(state, {"x": jnp.asarray(rng.uniform(size=(2, 3, 8, 8, 1)), jnp.float32)})
        assert all(math.isfinite(float(v)) for v in metrics.values()), metrics
    assert int(state["step"]) == 2
    gen, _ = build_modules(plan_model(spec), 1)
    (net,) = [gen.extractors[key] for key in gen.extractors if key.startswith("h")]
    assert [shape for _, shape in net.input_shapes] == [(3, 8, 8, 1)]  # the video, one input
    (name, _), video = net.input_shapes[0], jnp.asarray(rng.uniform(size=(2, 3, 8, 8, 1)), jnp.float32)
    forward, backward = net({name: video}), net({name: video[:, ::-1]})
    np.testing.assert_allclose(np.asarray(forward), np.asarray(backward), rtol=1e-5, atol=1e-6)
