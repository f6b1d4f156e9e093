"""``objective.marginals``: a unary discriminator D(x) beside the local factors, real
against generated x."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _objective_errors import objective_line_problems
from flax import nnx

from ggdsl.build import build_modules
from ggdsl.cli import BUNDLED
from ggdsl.errors import SpecError
from ggdsl.explain import explain
from ggdsl.factorize import analyze
from ggdsl.objective import group_weights, losses, settings_of
from ggdsl.plan import plan_model
from ggdsl.spec.load import load_spec


def _spec(*overrides: str, name: str = "gmgan_digits.yaml"):
    return load_spec(BUNDLED / name, overrides=["train.batch_size=8", *overrides])


def _batch(seed: int = 0, n: int = 8):
    return {"x": jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 1)).astype(np.float32))}


def test_a_marginal_adds_one_factor_and_one_discriminator_on_x_alone():
    plain, marginal = _spec(), _spec("objective.marginals=[x]")
    assert [f.name for f in analyze(plain).factors] == ["h|k", "x|h"]
    factors = analyze(marginal).factors
    assert [(f.name, f.variables, f.group, f.child) for f in factors] == [
        ("h|k", ("h", "k"), "h|k", "h"),
        ("x|h", ("x", "h"), "x|h", "x"),
        ("x", ("x",), "x", "x"),
    ]
    plan = plan_model(marginal)
    assert list(plan.discriminators) == ["h|k", "x|h", "x"]
    assert plan.discriminators["x"].inputs == {"x": (8, 8, 1)}
    assert plan.discriminators["x"].bindings == ({"x": ("x",)},)
    assert group_weights(plan) == pytest.approx({"h|k": 1 / 3, "x|h": 1 / 3, "x": 1 / 3})
    weighted = plan_model(_spec("objective.marginals=[x]", 'objective.weights={"h|k": 0.5, "x|h": 0.5, x: 0.25}'))
    assert group_weights(weighted) == {"h|k": 0.5, "x|h": 0.5, "x": 0.25}
    assert "the marginals {x}" in explain(marginal)
    assert "D[x]  w=0.333  1 copy: (x)" in explain(marginal)


def test_the_steps_of_a_time_variable_share_one_marginal_discriminator():
    spec = load_spec(BUNDLED / "ssgan_moving_digits_t4_cpu.yaml", overrides=["objective.marginals=[x]"])
    groups = analyze(spec).groups()
    assert [f.variables for f in groups["x"]] == [("x[1]",), ("x[2]",), ("x[3]",), ("x[4]",)]
    plain = analyze(load_spec(BUNDLED / "ssgan_moving_digits_t4_cpu.yaml")).groups()
    assert set(groups) - set(plain) == {"x"}


def test_the_marginal_reads_real_images_against_p_s_images_and_never_q_s_codes():
    plan = plan_model(_spec("objective.marginals=[x]"))
    settings, key = settings_of(plan), jax.random.key(2)

    traced = nnx.jit(lambda gen, critics, batch: losses(gen, critics, plan, batch, key, settings=settings)[2])

    def metrics(moved: str | None = None, batch=None):
        gen, critics = build_modules(plan, 0)
        if moved is not None:
            nets = getattr(gen, moved)
            nnx.update(nets, jax.tree.map(lambda a: a * 1.5 + 0.1, nnx.state(nets)))
        return traced(gen, critics, _batch() if batch is None else batch)

    before = metrics()
    assert {"d_loss/x", "d_acc/x"} <= set(before)
    assert float(metrics()["d_loss/x"]) == float(before["d_loss/x"])  # same seed, same key: same value
    # q's extractor moves D(x, h)'s q side and leaves D(x) alone.
    moved_q = metrics("extractors")
    assert float(moved_q["d_loss/x"]) == pytest.approx(float(before["d_loss/x"]), rel=1e-6)
    assert float(moved_q["d_loss/x|h"]) != pytest.approx(float(before["d_loss/x|h"]), rel=1e-4)
    # Other real images, or another generator, move it.
    assert float(metrics(batch=_batch(seed=1))["d_loss/x"]) != pytest.approx(float(before["d_loss/x"]), rel=1e-4)
    assert float(metrics("generators")["d_loss/x"]) != pytest.approx(float(before["d_loss/x"]), rel=1e-4)


def test_marginals_name_observed_variables_once_under_the_local_divergence(tmp_path):
    path, line, problems = objective_line_problems(tmp_path, "marginals: [h, x, x]")
    assert problems == [
        f"{path}:{line}: objective.marginals[0]: 'h' is not an observed variable (observed: x)",
        f"{path}:{line}: objective.marginals[2]: 'x' is listed twice",
    ]
    path, line, problems = objective_line_problems(tmp_path, "marginals: x")
    assert problems == [f"{path}:{line}: objective.marginals: expected a list of observed variables, got 'x'"]
    with pytest.raises(SpecError, match="objective.marginals: marginal discriminators sit beside local factors"):
        _spec("objective.marginals=[x]", "objective.divergence=global")


def test_marginals_round_trip_and_are_written_only_when_set():
    assert "marginals" not in _spec().to_dict()["objective"]
    spec = _spec("objective.marginals=[x]")
    assert spec.objective.marginals == ("x",)
    assert spec.to_dict()["objective"]["marginals"] == ["x"]
    assert load_spec(spec.to_yaml()) == spec


def test_a_factor_of_weight_0_gets_no_discriminator_and_the_image_alone_trains():
    # D(x) alone, the local factors weighted 0 (a GAN on the images with q learned from
    # p's samples, as ClusterGAN): only D(x) is built, trained and reported.
    spec = _spec("objective.marginals=[x]", "objective.weights={x: 1}", "objective.r1=1.0")
    plan = plan_model(spec)
    assert list(plan.discriminators) == ["x"]
    assert group_weights(plan) == {"x": 1.0}
    text = explain(spec)
    assert "D[x|h]  w=0  1 copy: (x, h)   [weight 0: no discriminator]" in text
    assert "D[h|k]  w=0  1 copy: (h, k)   [weight 0: no discriminator]" in text
    gen, critics = build_modules(plan, 0)
    assert set(critics.discriminators) == {"x"}
    d_loss, g_loss, metrics = losses(gen, critics, plan, _batch(), jax.random.key(0), settings=settings_of(plan))[:3]
    assert {k for k in metrics if k.startswith(("d_loss/", "d_acc/", "r1/"))} == {"d_loss/x", "d_acc/x", "r1/x"}
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
    # Every factor at weight 0 leaves nothing adversarial: a spec error, not an empty model.
    with pytest.raises(SpecError, match=r"objective.weights: every factor has weight 0"):
        _spec('objective.weights={"x|h": 0, "h|k": 0}')
