"""Stabilisers as spec options: spectral normalisation, instance noise, weight averaging, and
the cluster-usage diagnostic."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _objective_errors import objective_line_problems
from flax import nnx

from ggdsl.build import build_modules
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.errors import BuildError, SpecError
from ggdsl.factorize import analyze
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


def test_spectral_norm_and_r1_train_and_the_ema_tracks_the_generator():
    """One compiled step carrying three stabilisers: spectral norm (its vectors move), R1
    (finite) and an EMA of the generator and extractor weights (exact, and what runs use)."""
    decay = 0.9
    compiled = compile_spec(_spec("objective.spectral_norm=true", "objective.r1=1.0", f"train.ema={decay}"))
    state = compiled.init_state(0)
    for a, b in zip(jax.tree.leaves(state["g_ema"]), jax.tree.leaves(state["g_params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    before = [np.array(x) for x in jax.tree.leaves(state["d_rest"])]
    step = compiled.make_step(jax.random.key(0))
    state, _ = step(state, _batch())
    old_ema = jax.tree.map(np.array, state["g_ema"])
    state, metrics = step(state, _batch())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert {"r1/x|h", "r1/h|k"} <= set(metrics)
    after = jax.tree.leaves(state["d_rest"])
    assert len(after) == len(before) > 0 and all(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, old_ema, state["g_params"])
    for a, b in zip(jax.tree.leaves(state["g_ema"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    used = inference_state(state)
    assert used["g_params"] is state["g_ema"]
    plain = jax.eval_shape(lambda: compile_spec(_spec())._init_state(0))
    assert "g_ema" not in plain and inference_state(plain) is plain


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


def test_usage_counts_the_components_q_assigns():
    spec = _spec()
    plan = plan_model(spec)
    gen, critics = build_modules(plan, 0)
    metrics = losses(gen, critics, plan, _batch(32), jax.random.key(0), settings=settings_of(plan))[2]
    usage = float(metrics["usage/k"])
    assert usage == int(usage) and 1 <= usage <= 10
    one = losses(gen, critics, plan, {"x": jnp.zeros((32, 8, 8, 1))}, jax.random.key(0), settings=settings_of(plan))[2]
    assert float(one["usage/k"]) == 1.0  # identical inputs: one component


def _sinkhorn(log_joint: np.ndarray, prior: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Reference: alternate row and column normalisation of exp(log_joint), rows sum to 1."""
    plan = np.exp(log_joint - log_joint.max())
    for _ in range(iterations):
        plan = plan / plan.sum(axis=1, keepdims=True) / len(plan)
        plan = plan / plan.sum(axis=0, keepdims=True) * prior
    return plan / plan.sum(axis=1, keepdims=True)


def test_balanced_assignment_matches_the_batch_to_the_prior():
    from ggdsl.objective import balanced_assignment

    rng = np.random.default_rng(0)
    prior = np.array([0.5, 0.25, 0.25])
    log_joint = rng.normal(size=(40, 3))
    log_joint[:, 0] += 3.0  # q alone would put most of the batch in component 0
    got = np.asarray(balanced_assignment(jnp.asarray(log_joint, jnp.float32), jnp.asarray(prior, jnp.float32)))
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got.mean(axis=0), prior, atol=2e-3)
    np.testing.assert_allclose(got, _sinkhorn(log_joint, prior), atol=1e-4)
    posterior = np.exp(log_joint) / np.exp(log_joint).sum(axis=1, keepdims=True)
    assert posterior.mean(axis=0)[0] > 0.8  # the imbalance the assignment removes
    # A rescaling of q(k | h): log A - log_joint is a row term plus a column term.
    rest = np.log(got) - log_joint
    np.testing.assert_allclose(rest - rest[:, :1] - (rest[0] - rest[0, 0]), 0.0, atol=1e-4)


def test_code_likelihood_scores_q_codes_under_their_balanced_components():
    from scipy.stats import multivariate_normal

    from ggdsl.build import module_key
    from ggdsl.objective import code_log_likelihood, sample_q, split_observed

    spec = _spec("objective.code_likelihood=0.5")
    plan = plan_model(spec)
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    assert settings.code_likelihood == 0.5
    batch = _batch()
    q_values, _, _ = sample_q(gen, plan, split_observed(plan, batch), jax.random.key(2), train=False, settings=settings)
    h = np.asarray(q_values["h"], np.float64)
    # The component means: the linear generator of h applied to each one-hot k.
    net_spec = plan.generators[plan.generator_of["h"]]
    (name,) = net_spec.inputs
    means = np.asarray(gen.generators[module_key(plan.generator_of["h"])]({name: jnp.eye(10)}, train=False), np.float64)
    log_joint = np.array(
        [[multivariate_normal(means[k], 0.1**2 * np.eye(16)).logpdf(row) - np.log(10) for k in range(10)] for row in h]
    )
    weights = _sinkhorn(log_joint - log_joint.max(axis=1, keepdims=True), np.full(10, 0.1))
    expected = np.mean(np.sum(weights * log_joint, axis=1))
    got = float(code_log_likelihood(gen, plan, q_values, train=False))
    assert got == pytest.approx(expected, rel=1e-3)
    # The generator side pays -w * that; the discriminators do not see it.
    metrics = losses(gen, critics, plan, batch, jax.random.key(0), settings=settings)[2]
    off = losses(gen, critics, plan, batch, jax.random.key(0), settings=settings_of(plan_model(_spec())))[2]
    assert "code_nll" not in off
    assert float(metrics["code_nll"]) == pytest.approx(-got, rel=1e-3)
    assert float(metrics["g_loss"]) - float(off["g_loss"]) == pytest.approx(0.5 * float(metrics["code_nll"]), rel=1e-3)
    assert float(metrics["d_loss"]) == pytest.approx(float(off["d_loss"]), rel=1e-6)
    # `ggdsl explain` names the term as computed: balanced assignments, means held fixed.
    from ggdsl.explain import explain

    (line,) = [row for row in explain(spec).splitlines() if "code likelihood" in row]
    assert line.strip() == (
        "+ 0.5 * E_q [ -log p(h | k) - log p(k) ] at h = E(x), k by q(k | h) balanced over the batch "
        "(Sinkhorn), the means held fixed (code likelihood)"
    )
    assert "code likelihood" not in explain(_spec())


def test_code_likelihood_moves_the_extractor_not_the_means():
    from ggdsl.objective import code_log_likelihood, sample_q, split_observed

    plan = plan_model(_spec("objective.code_likelihood=1.0"))
    gen, _ = build_modules(plan, 0)
    settings = settings_of(plan)
    observed = split_observed(plan, _batch())
    graphdef, params, rest = nnx.split(gen, nnx.Param, ...)

    def objective(params):
        model = nnx.merge(graphdef, params, rest, copy=True)
        values, _, _ = sample_q(model, plan, observed, jax.random.key(0), train=False, settings=settings)
        return code_log_likelihood(model, plan, values, train=False)

    grads = nnx.State(jax.grad(objective)(params))
    flat = dict(nnx.to_flat_state(grads))
    means = [v for path, v in flat.items() if "generators" in map(str, path)]
    extractor = [v for path, v in flat.items() if "extractors" in map(str, path)]
    assert means and all(float(jnp.max(jnp.abs(v[...]))) == 0.0 for v in means)
    assert extractor and any(float(jnp.max(jnp.abs(v[...]))) > 0.0 for v in extractor)


def test_code_likelihood_needs_a_closed_form_density():
    with pytest.raises(SpecError, match="code_likelihood"):
        _spec("objective.code_likelihood=-1")
    mean_field = _spec("objective.code_likelihood=1.0", "inference.family=mean_field")
    assert analyze(mean_field).exact == ()  # mean field: q(k | x) is a network
    with pytest.raises(BuildError, match="objective.code_likelihood: no latent"):
        plan_model(mean_field)


def test_naming_the_component_in_inference_nets_learns_q_k_given_h():
    """`inference.nets: {k: net}` replaces the exact q(k | h) with a network on h. The mixture
    stays p's: k-means initialisation and `code_likelihood` (p's own posterior assigns) still
    apply, and the network trains."""
    from ggdsl.build import module_key
    from ggdsl.explain import explain
    from ggdsl.objective import code_log_likelihood, exact_logits, sample_q, split_observed
    from ggdsl.pretrain import resolve_init

    exact, learned = (
        _spec("objective.code_likelihood=0.5"),
        _spec("objective.code_likelihood=0.5", "inference.nets.k=mlp_extractor"),
    )
    a, b = analyze(exact), analyze(learned)
    assert (a.exact, a.mixtures) == (("k",), ("k",))
    assert (b.exact, b.mixtures) == ((), ("k",))
    assert b.q_parents == a.q_parents and b.factors == a.factors
    assert resolve_init({"init": "auto"}, b) == "kmeans"
    plan, plan_exact = plan_model(learned), plan_model(exact)
    assert plan_exact.extractor_of["k"] is None and sorted(plan_exact.extractors) == ["h|x"]
    net = plan.extractors[plan.extractor_of["k"]]
    assert (plan.extractor_of["k"], dict(net.inputs), net.out_shape, net.source) == (
        "k|h",
        {"h": (16,)},
        (10,),
        "mlp_extractor",
    )
    q_lines = explain(learned).split("q(Z | X)")[1].split("\n\n")[0]
    assert "k = E(h)" in q_lines and "exact" not in q_lines
    assert "k by p(k | h) balanced" in explain(learned) and "k by q(k | h) balanced" in explain(exact)
    # code_likelihood scores the same codes alike: it reads p's mixture, not q's network.
    gen, _ = build_modules(plan, 0)
    gen_exact, _ = build_modules(plan_exact, 0)
    nnx.update(gen.generators, nnx.state(gen_exact.generators))
    settings = settings_of(plan)
    q_values, probs, _ = sample_q(
        gen, plan, split_observed(plan, _batch()), jax.random.key(2), train=False, settings=settings
    )
    assert float(code_log_likelihood(gen, plan, q_values, train=False)) == pytest.approx(
        float(code_log_likelihood(gen_exact, plan_exact, q_values, train=False)), rel=1e-6
    )
    # q(k | h) is now the network's softmax, which is not p's posterior at initialisation.
    posterior = jax.nn.softmax(exact_logits(gen, plan, "k", q_values, train=False))
    assert probs["k"].shape == (8, 10) and not np.allclose(probs["k"], posterior, atol=1e-3)
    # The network trains with the rest.
    compiled = compile_spec(learned)
    state = compiled.init_state(0)
    step = compiled.make_step(jax.random.key(0))
    flat = dict(nnx.to_flat_state(state["g_params"]))
    k_net = {path: np.array(v[...]) for path, v in flat.items() if module_key("k|h") in map(str, path)}
    assert k_net
    for _ in range(2):
        state, metrics = step(state, _batch())
    assert all(np.isfinite(float(v)) for v in metrics.values())
    after = dict(nnx.to_flat_state(state["g_params"]))
    assert all(not np.array_equal(before, np.asarray(after[path][...])) for path, before in k_net.items())


def test_latent_reconstruction_per_latent_weights_split_the_term():
    def latent_recon(*overrides: str) -> float:
        plan = plan_model(_spec(*overrides))
        gen, critics = build_modules(plan, 0)
        metrics = losses(gen, critics, plan, _batch(), jax.random.key(3), settings=settings_of(plan))[2]
        return float(metrics["latent_recon"])

    both = latent_recon("objective.latent_reconstruction=1.0")
    k_only = latent_recon("objective.latent_reconstruction={k: 1.0}")
    h_only = latent_recon("objective.latent_reconstruction={h: 1.0}")
    assert k_only > 0 and h_only > 0
    assert k_only + h_only == pytest.approx(both, rel=1e-5)
    weighted = latent_recon("objective.latent_reconstruction={k: 2.0, h: 0.5}")
    assert weighted == pytest.approx(2.0 * k_only + 0.5 * h_only, rel=1e-5)
    plan = plan_model(_spec("objective.latent_reconstruction={k: 0.0}"))
    assert settings_of(plan).latent_reconstruction == 0.0  # nothing left to recover: no term


def test_latent_reconstruction_weights_name_latents_and_round_trip(tmp_path):
    spec = _spec("objective.latent_reconstruction={k: 1.0}")
    assert spec.objective.latent_reconstruction == {"k": 1.0}
    assert load_spec(spec.to_yaml()) == spec
    path, line, problems = objective_line_problems(tmp_path, "latent_reconstruction: {x: 1, h: -2}")
    assert problems == [
        f"{path}:{line}: objective.latent_reconstruction.h: must be >= 0.0, got -2.0",
        f"{path}:{line}: objective.latent_reconstruction.x: 'x' is not a latent variable (latents: h, k)",
    ]


def test_code_likelihood_is_written_only_when_set_so_older_runs_keep_their_model_hash():
    assert "code_likelihood" not in _spec().to_dict()["objective"]
    spec = _spec("objective.code_likelihood=0.1")
    assert spec.to_dict()["objective"]["code_likelihood"] == 0.1
    assert load_spec(spec.to_yaml()) == spec


def test_r1_per_factor_penalises_only_the_listed_discriminators():
    """``r1: {x|h: gamma}`` adds gamma/2 * w * E|grad D[x|h]|^2 to the discriminators' loss and
    nothing for D[h|k]; one number adds the same term for every discriminator."""

    def run(*overrides: str):
        plan = plan_model(_spec(*overrides))
        gen, critics = build_modules(plan, 0)
        d_loss, g_loss, metrics = losses(gen, critics, plan, _batch(), jax.random.key(5), settings=settings_of(plan))
        return float(d_loss), float(g_loss), metrics

    d_plain, g_plain, plain = run()
    d_x, g_x, only_x = run("objective.r1={x|h: 2.0, h|k: 0.0}")
    d_all, _, both = run("objective.r1=2.0")
    assert not any(name.startswith("r1/") for name in plain)
    assert {name for name in only_x if name.startswith("r1/")} == {"r1/x|h"}
    assert {name for name in both if name.startswith("r1/")} == {"r1/x|h", "r1/h|k"}
    penalty_x, penalty_k = float(both["r1/x|h"]), float(both["r1/h|k"])
    assert penalty_x > 0 and penalty_k > 0
    assert float(only_x["r1/x|h"]) == pytest.approx(penalty_x, rel=1e-6)
    w = 0.5  # uniform over the two factors
    assert d_x - d_plain == pytest.approx(w * 0.5 * 2.0 * penalty_x, rel=1e-4)
    assert d_all - d_plain == pytest.approx(w * 0.5 * 2.0 * (penalty_x + penalty_k), rel=1e-4)
    assert g_x == pytest.approx(g_plain, rel=1e-6)  # the generators never pay R1
    assert settings_of(plan_model(_spec("objective.r1={h|k: 0}"))).r1 == 0.0  # nothing penalised: no term


def test_r1_per_factor_names_factors_round_trips_and_is_explained(tmp_path):
    from ggdsl.explain import explain

    spec = _spec("objective.r1={x|h: 1.0}")
    assert spec.objective.r1 == {"x|h": 1.0}
    assert load_spec(spec.to_yaml()) == spec
    assert _spec("objective.r1=1.0").to_dict()["objective"]["r1"] == 1.0  # one number stays one number
    text = explain(spec)
    assert "discriminators also pay R1: + gamma/2 * E_q |grad_A D_A(A)|^2, gamma 1 on x|h; none on h|k" in text
    path, line, problems = objective_line_problems(tmp_path, "r1: {x|k: 1}")
    assert problems == [f"{path}:{line}: objective.r1.x|k: unknown factor 'x|k' (factors: h|k, x|h)"]
    path, line, problems = objective_line_problems(tmp_path, "r1: {x|h: -1}")
    assert problems == [f"{path}:{line}: objective.r1.x|h: must be >= 0.0, got -1.0"]
    path, line, problems = objective_line_problems(tmp_path, "r1: [1]")
    assert len(problems) == 1 and problems[0].startswith(f"{path}:{line}: objective.r1: expected a number or a mapping")
