"""``objective.loss: hinge``: the hinge divergence estimate beside the paper's ``bce``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _objective_errors import objective_line_problems
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.explain import explain
from ggdsl.objective import _adversarial, losses
from ggdsl.spec.load import load_spec

logits = arrays(np.float32, (2, 5), elements=st.floats(-6, 6, width=32))


def _spec(*overrides: str):
    """The toy mixture (MLPs on 2-d points): the same two local factors, quick to compile."""
    return load_spec(BUNDLED / "gmgan_toy.yaml", overrides=["train.batch_size=8", *overrides])


def _batch(n: int = 8):
    return {"x": jnp.asarray(np.random.default_rng(0).normal(0, 4, (n, 2)).astype(np.float32))}


@settings(max_examples=40, deadline=None)
@given(lq=logits, lp=logits)
def test_hinge_losses_are_the_margins_and_bce_the_softplus(lq, lp):
    d, g = _adversarial("hinge", jnp.asarray(lq), jnp.asarray(lp))
    assert float(d) == pytest.approx(np.mean(np.maximum(0, 1 - lq)) + np.mean(np.maximum(0, 1 + lp)), abs=1e-5)
    np.testing.assert_allclose(g, np.mean(lq - lp, axis=0), atol=1e-5)
    d, g = _adversarial("bce", jnp.asarray(lq), jnp.asarray(lp))
    assert float(d) == pytest.approx(np.mean(np.logaddexp(0, -lq)) + np.mean(np.logaddexp(0, lp)), abs=1e-5)
    np.testing.assert_allclose(g, np.mean(np.logaddexp(0, -lp) + np.logaddexp(0, lq), axis=0), atol=1e-5)


def test_hinge_generators_get_the_same_gradient_however_sure_the_discriminator_is():
    lq = jnp.array([[-8.0, 0.0, 8.0]])

    def generators(lp):
        return jnp.sum(_adversarial("hinge", lq, lp)[1])

    np.testing.assert_array_equal(jax.grad(generators)(jnp.array([[-8.0, 0.0, 8.0]])), [[-1.0, -1.0, -1.0]])
    # The discriminator stops pushing a tuple once it is past its margin.
    d_grad = jax.grad(lambda lp: _adversarial("hinge", lq, lp)[0])(jnp.array([[-2.0, -0.5, 3.0]]))
    np.testing.assert_allclose(d_grad, [[0.0, 1 / 3, 1 / 3]])


def _jitted_metrics(compiled, state) -> dict:
    """The objective's metrics on ``_batch()`` at ``state``, in one compiled call."""

    def metrics(gen, critics):
        return losses(gen, critics, compiled.plan, _batch(), jax.random.key(0), settings=compiled.settings)[2]

    return nnx.jit(metrics)(compiled.generative(state), compiled.critics(state))


def test_a_blind_discriminator_costs_two_under_hinge():
    """Under bce the same blind discriminator would cost 2 log 2 (the test above)."""
    compiled = compile_spec(_spec("objective.loss=hinge"))
    state = compiled.init_state(0)
    # Zero weights everywhere: every logit is 0 whatever the tuple.
    state["d_params"] = jax.tree.map(jnp.zeros_like, state["d_params"])
    metrics = _jitted_metrics(compiled, state)
    for group in ("h|k", "x|h"):
        assert float(metrics[f"d_loss/{group}"]) == pytest.approx(2.0, rel=1e-6)
        assert float(metrics[f"d_acc/{group}"]) == 0.0  # a logit of 0 is right on neither side
    assert float(metrics["g_adv"]) == pytest.approx(0.0, abs=1e-6)


def test_hinge_trains_and_moves_every_player():
    compiled = compile_spec(_spec("objective.loss=hinge"))
    assert compiled.settings.loss == "hinge"
    state = compiled.init_state(0)
    before = {part: [np.array(x) for x in jax.tree.leaves(state[part])] for part in ("g_params", "d_params")}
    step = compiled.make_step(jax.random.key(0))
    for _ in range(2):
        state, metrics = step(state, _batch())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for part, old in before.items():
        new = jax.tree.leaves(state[part])
        assert len(new) == len(old) > 0 and any(not np.array_equal(a, b) for a, b in zip(old, new, strict=True))


def test_explain_writes_the_hinge_objective_and_unknown_losses_are_refused(tmp_path):
    text = explain(_spec("objective.loss=hinge"))
    assert "Objective (hinge):" in text
    assert "E_q[relu(1 - D_A(A))] + E_p[relu(1 + D_A(A))]" in text
    assert "Objective (bce, the JS estimate):" in explain(_spec())
    path, line, problems = objective_line_problems(tmp_path, "loss: wgan")
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:{line}: objective.loss: ")
    assert "'wgan'" in problems[0] and "bce" in problems[0] and "hinge" in problems[0]


def test_the_loss_round_trips_and_bce_stays_the_default():
    assert _spec().objective.loss == "bce"
    spec = _spec("objective.loss=hinge")
    assert spec.to_dict()["objective"]["loss"] == "hinge"
    assert load_spec(spec.to_yaml()) == spec
