"""Compile and train: every bundled GMGAN spec steps, shapes, exact resume, toy recovery, runs.

Cost on CPU is dominated by XLA compiling each spec's training step. Every bundled GMGAN
spec is checked through an abstract step (``jax.eval_shape``: the whole step traced, shapes,
dtypes and metric names checked); one spec per network family is trained for 3 jitted
steps on synthetic batches, and every spec with ``GGDSL_TEST_ALL_SPECS=1`` (on demand).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ggdsl.build import build_modules, module_key
from ggdsl.cli import BUNDLED, main
from ggdsl.compiled import compile_spec
from ggdsl.errors import EvalError
from ggdsl.objective import sample_p, sample_q, split_observed
from ggdsl.plan import plan_model
from ggdsl.run import load_run
from ggdsl.runs import RunDir
from ggdsl.spec.load import load_spec
from ggdsl.train import compile_and_train, open_dataset, restore_state

GMGAN_SPECS = sorted(p.stem for p in BUNDLED.glob("gmgan_*.yaml"))
ALL_SPECS = os.environ.get("GGDSL_TEST_ALL_SPECS", "0") == "1"
# Trained for real by default: the MLP generator with a local and a global discriminator,
# and the CPU-budget conv recipe (convolutions, batch norm). Every spec's step is traced
# (test_spec_step_abstract), the paper-size networks included; gmgan_toy trains below.
QUICK_TRAIN = ["gmgan_digits", "gmgan_digits_global", "gmgan_mnist_cpu_conv"]
BATCH = 4


def _spec(name: str, *overrides: str):
    return load_spec(BUNDLED / f"{name}.yaml", overrides=[f"train.batch_size={BATCH}", *overrides])


def _expected_metrics(spec) -> set[str]:
    groups = ["global"] if spec.objective.divergence == "global" else ["x|h", "h|k"]
    keys = {"d_loss", "g_loss", "g_adv"}
    keys |= {f"d_loss/{g}" for g in groups} | {f"d_acc/{g}" for g in groups}
    if spec.objective.reconstruction:
        keys.add("recon")
    latent = spec.objective.latent_reconstruction
    if any(latent.values()) if isinstance(latent, dict) else latent:
        keys.add("latent_recon")
    if spec.objective.code_likelihood:
        keys.add("code_nll")
    consistency = spec.objective.consistency
    if any(consistency.values()) if isinstance(consistency, dict) else consistency:
        keys.add("consistency")
    r1 = spec.objective.r1
    if isinstance(r1, dict):
        keys |= {f"r1/{g}" for g in groups if r1.get(g)}
    elif r1:
        keys |= {f"r1/{g}" for g in groups}
    if spec.objective.instance_noise:
        keys.add("instance_noise")
    return keys | {"usage/k"}  # components q(k | x) uses in the batch


def _synthetic_batch(spec, rng: np.random.Generator, batch: int = BATCH) -> dict[str, jax.Array]:
    """Random data of the observed variables' shapes: pixels in the declared range."""
    out = {}
    for name, feature in spec.data.observe.items():
        shape = (batch, *spec.model[name].shape)
        if feature in ("image", "video"):
            low, high = spec.data.range
            out[name] = jnp.asarray(rng.uniform(low, high, shape).astype(np.float32))
        else:
            out[name] = jnp.asarray(rng.normal(0.0, 3.0, shape).astype(np.float32))
    return out


def _host_copy(tree):
    return [np.array(leaf, copy=True) for leaf in jax.tree.leaves(tree)]


# ----------------------------------------------------------------------------- every spec


def test_bundled_gmgan_specs_found():
    assert {"gmgan_digits", "gmgan_mnist", "gmgan_celeba", "gmgan_toy"} <= set(GMGAN_SPECS)
    for name in GMGAN_SPECS:
        if not name.endswith("_global") and name != "gmgan_toy":
            assert f"{name}_global" in GMGAN_SPECS, f"{name} has no _global counterpart"


@pytest.mark.parametrize("name", GMGAN_SPECS)
def test_spec_step_abstract(name):
    """The whole training step traces for every spec: state in == state out, exact metrics."""
    spec = _spec(name)
    compiled = compile_spec(spec)
    state = jax.eval_shape(lambda: compiled.init_state(0))
    step = compiled.make_step(jax.random.key(0), jit=False)
    batch = {n: jax.ShapeDtypeStruct((BATCH, *spec.model[n].shape), jnp.float32) for n in spec.observed}
    new_state, metrics = jax.eval_shape(step, state, batch)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
        assert (before.shape, before.dtype) == (after.shape, after.dtype)
    assert set(metrics) == _expected_metrics(spec)
    assert all(m.shape == () for m in metrics.values())


@pytest.mark.parametrize("name", GMGAN_SPECS if ALL_SPECS else QUICK_TRAIN)
def test_spec_trains_three_steps(name):
    """3 jitted steps on synthetic data: finite losses, exact metric keys, parameters move."""
    spec = _spec(name)
    compiled = compile_spec(spec)
    state = compiled.init_state(0)
    before = {part: _host_copy(state[part]) for part in ("g_params", "d_params")}
    step = compiled.make_step(jax.random.key(0))
    rng = np.random.default_rng(0)
    for _ in range(3):
        state, metrics = step(state, _synthetic_batch(spec, rng))
        metrics = {k: float(v) for k, v in metrics.items()}
        assert set(metrics) == _expected_metrics(spec)
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k.startswith("d_acc/"))
    assert int(state["step"]) == 3
    for part in ("g_params", "d_params"):
        after = _host_copy(state[part])
        changed = [not np.array_equal(b, a) for b, a in zip(before[part], after, strict=True)]
        assert all(changed), f"{part}: {changed.count(False)} of {len(changed)} leaves did not move"
        assert all(np.all(np.isfinite(a)) for a in after)


# ----------------------------------------------------------------------------- shapes


def test_mnist_shapes():
    spec = load_spec(BUNDLED / "gmgan_mnist.yaml")
    compiled = compile_spec(spec)
    state = jax.eval_shape(lambda: compiled.init_state(0))
    key = jax.random.key(0)

    def p(state):
        gen = compiled.generative(state)
        return sample_p(gen, compiled.plan, 5, key, train=False, settings=compiled.settings)

    shapes = {k: v.shape for k, v in jax.eval_shape(p, state).items()}
    assert shapes == {"k": (5, 30), "h": (5, 128), "x": (5, 28, 28, 1)}

    def q(state, x):
        gen = compiled.generative(state)
        observed = split_observed(compiled.plan, {"x": x})
        return sample_q(gen, compiled.plan, observed, key, train=False, settings=compiled.settings)

    values, probs, _ = jax.eval_shape(q, state, jax.ShapeDtypeStruct((7, 28, 28, 1), jnp.float32))
    assert {k: v.shape for k, v in values.items()} == {"k": (7, 30), "h": (7, 128), "x": (7, 28, 28, 1)}
    assert {k: v.shape for k, v in probs.items()} == {"k": (7, 30)}


def _param_count(module) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("name", GMGAN_SPECS)
def test_plan_param_counts_match_modules(name):
    """What ``explain`` counts from the plan is what the built NNX modules hold."""
    plan = plan_model(load_spec(BUNDLED / f"{name}.yaml"))
    generative, critics = nnx.eval_shape(lambda: build_modules(plan, 0))
    holders = {
        "generator": generative.generators,
        "extractor": generative.extractors,
        "discriminator": critics.discriminators,
    }
    nets = plan.all()
    assert nets
    for net in nets:
        assert net.params == _param_count(holders[net.role][module_key(net.key)]), (net.role, net.key)
    learned_std = _param_count(generative.log_std)
    total = _param_count(generative) + _param_count(critics)
    assert total == sum(net.params for net in nets) + learned_std


def test_generator_output_activation_follows_the_feature():
    """Pixels get their range's squashing; a vector feature (toy x) gets a linear output."""

    def last_act(spec, var="x"):
        from ggdsl.nets._layers import layer_option

        head = plan_model(spec).generators[var].plan.head
        return layer_option(head[-1] if head[-1].kind != "reshape" else head[-2], "act")

    assert last_act(load_spec(BUNDLED / "gmgan_digits.yaml")) == "sigmoid"
    assert last_act(load_spec(BUNDLED / "gmgan_celeba.yaml")) == "tanh"
    toy_preset = load_spec(BUNDLED / "gmgan_toy.yaml", overrides=["model.x.net=mlp_generator"])
    assert last_act(toy_preset) == "linear"


# ----------------------------------------------------------------------------- resume

RESUME_STEPS = 6
RESUME_OVERRIDES = [
    "train.batch_size=8",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.eval_every=100000",
]


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory):
    """gmgan_digits trained RESUME_STEPS steps in one go, and half of it then resumed."""
    out = tmp_path_factory.mktemp("digits")
    whole = compile_and_train(
        "gmgan_digits",
        out=out / "whole",
        progress=False,
        evaluate_at_end=False,
        overrides=[*RESUME_OVERRIDES, f"train.steps={RESUME_STEPS}"],
    )
    half = compile_and_train(
        "gmgan_digits",
        out=out / "split",
        progress=False,
        evaluate_at_end=False,
        overrides=[*RESUME_OVERRIDES, f"train.steps={RESUME_STEPS // 2}"],
    )
    assert half.step == RESUME_STEPS // 2
    resumed = compile_and_train(
        resume=half.run_dir,
        progress=False,
        evaluate_at_end=False,
        overrides=[f"train.steps={RESUME_STEPS}"],
    )
    return whole, resumed


def test_resume_is_exact(digits_runs):
    whole, resumed = digits_runs
    assert whole.step == resumed.step == RESUME_STEPS
    assert resumed.run_dir != whole.run_dir
    compiled = compile_spec(load_spec(RunDir(whole.run_dir).spec_path))
    state_a, extra_a = restore_state(compiled, RunDir(whole.run_dir))
    state_b, extra_b = restore_state(compiled, RunDir(resumed.run_dir))
    assert extra_a["step"] == extra_b["step"] == RESUME_STEPS
    assert extra_a["data"] == extra_b["data"]
    assert int(state_b["step"]) == RESUME_STEPS
    paths_a, tree_a = jax.tree_util.tree_flatten_with_path(state_a)
    paths_b, tree_b = jax.tree_util.tree_flatten_with_path(state_b)
    assert tree_a == tree_b
    different = [
        jax.tree_util.keystr(path)
        for (path, a), (_, b) in zip(paths_a, paths_b, strict=True)
        if not np.array_equal(np.asarray(a), np.asarray(b))
    ]
    assert not different, f"resume diverged in {different}"
    # The metrics logged after the resume point are the uninterrupted run's, bit for bit.
    log_a = {m["step"]: m for m in RunDir(whole.run_dir).read_metrics()}
    log_b = {m["step"]: m for m in RunDir(resumed.run_dir).read_metrics()}
    for step in range(1, RESUME_STEPS + 1):
        same = {k: v for k, v in log_a[step].items() if k != "steps_per_s"}
        assert same == {k: v for k, v in log_b[step].items() if k != "steps_per_s"}, step
    # load_run restores the same state.
    loaded = load_run(resumed.run_dir)
    assert loaded.step == RESUME_STEPS
    for a, b in zip(jax.tree.leaves(loaded.state), jax.tree.leaves(state_a), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_resume_refuses_a_model_change(digits_runs):
    from ggdsl.errors import TrainError

    _, resumed = digits_runs
    with pytest.raises(TrainError, match="change the model"):
        compile_and_train(resume=resumed.run_dir, overrides=["model.h.shape=[8]"], progress=False)


def _leaves_equal(a, b) -> bool:
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(flat_a) == len(flat_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(flat_a, flat_b, strict=True)
    )


def test_init_from_starts_from_another_runs_weights(digits_runs, tmp_path):
    whole, _ = digits_runs
    source = restore_state(compile_spec(load_spec(RunDir(whole.run_dir).spec_path)), RunDir(whole.run_dir), 2)[0]
    common = [*RESUME_OVERRIDES, "train.steps=0", f"train.init_from={{run: {whole.run_dir}, step: 2}}"]
    # The same networks with another objective: every weight is taken, the rest is fresh.
    same = compile_and_train(
        "gmgan_digits", out=tmp_path, progress=False, evaluate_at_end=False, overrides=[*common, "objective.r1=1.0"]
    )
    state = restore_state(compile_spec(load_spec(RunDir(same.run_dir).spec_path)), RunDir(same.run_dir), 0)[0]
    for part in ("g_params", "g_rest", "d_params", "d_rest"):
        assert _leaves_equal(state[part], source[part]), part
    assert int(state["step"]) == 0 and int(source["step"]) == 2
    assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree.leaves(state["g_opt"]) if np.ndim(leaf) > 0)
    assert load_spec(RunDir(same.run_dir).spec_path).train.init_from["run"] == str(whole.run_dir)
    # The global twin: the same generators and extractors, one discriminator of its own.
    other = compile_and_train(
        "gmgan_digits_global", out=tmp_path, progress=False, evaluate_at_end=False, overrides=common
    )
    state = restore_state(compile_spec(load_spec(RunDir(other.run_dir).spec_path)), RunDir(other.run_dir), 0)[0]
    assert _leaves_equal(state["g_params"], source["g_params"])
    fresh = compile_spec(load_spec(RunDir(other.run_dir).spec_path)).init_state(0)
    assert _leaves_equal(state["d_params"], fresh["d_params"])


def test_pretraining_after_init_from_starts_from_those_weights(digits_runs, tmp_path):
    whole, _ = digits_runs
    source = restore_state(compile_spec(load_spec(RunDir(whole.run_dir).spec_path)), RunDir(whole.run_dir))[0]
    # Another seed than the source's: without init_from the weights start elsewhere.
    pretrain = [*RESUME_OVERRIDES, "train.seed=1", "train.steps=0", "train.pretrain={steps: 2, init: none}"]
    runs = {
        name: compile_and_train(
            "gmgan_digits", out=tmp_path / name, progress=False, evaluate_at_end=False, overrides=pretrain + extra
        )
        for name, extra in (("warm", [f"train.init_from={whole.run_dir}"]), ("cold", []))
    }
    compiled = compile_spec(load_spec(RunDir(runs["warm"].run_dir).spec_path))
    warm, cold = (restore_state(compiled, RunDir(runs[name].run_dir), 0)[0]["g_params"] for name in ("warm", "cold"))

    def distance(a, b) -> float:
        pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in pairs)

    # Two Adam steps of 1e-3 move each weight by about 2e-3: the warm run is the source, moved a little.
    assert 0 < distance(warm, source["g_params"]) < 0.01
    assert distance(cold, source["g_params"]) > 0.05


def test_init_from_refuses_other_networks(digits_runs, tmp_path):
    from ggdsl.errors import SpecError, TrainError

    whole, _ = digits_runs
    differ = r"the generators and extractors of .*, step 6 differ .*: \(512, 16\) there, \(512, 8\) here"
    with pytest.raises(TrainError, match=differ):
        compile_and_train(
            "gmgan_digits",
            out=tmp_path,
            progress=False,
            overrides=["train.steps=0", f"train.init_from={whole.run_dir}", "model.h.shape=[8]"],
        )
    step_5 = f"train.init_from={{run: {whole.run_dir}, step: 5}}"
    with pytest.raises(TrainError, match="no checkpoint for step 5"):
        compile_and_train("gmgan_digits", out=tmp_path, progress=False, overrides=[step_5])
    with pytest.raises(TrainError, match="is not a run folder"):
        compile_and_train("gmgan_digits", out=tmp_path, progress=False, overrides=[f"train.init_from={tmp_path}"])
    with pytest.raises(SpecError, match=r"train.init_from: missing required key 'run'"):
        load_spec(BUNDLED / "gmgan_digits.yaml", overrides=["train.init_from={step: 2}"])


def test_cli_sample_writes_png(digits_runs, tmp_path):
    _, resumed = digits_runs
    out = tmp_path / "f.png"
    assert main(["sample", str(resumed.run_dir), "-n", "16", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- toy recovery


def test_toy_data_is_not_pixel_scaled():
    spec = load_spec(BUNDLED / "gmgan_toy.yaml")
    from ggdsl.data.sources import toy_means

    dataset = open_dataset(spec, "test")
    x, labels = dataset.features["x"], dataset.features["label"]
    assert x.dtype == np.float32 and x.shape[1:] == (2,)
    assert x.min() < -3 and x.max() > 3  # radius 4: far outside any pixel range
    components = int(spec.model["k"].get("classes"))
    assert int(spec.data.options["components"]) == components
    means = toy_means(components, 2, 4.0)
    for k in range(components):
        np.testing.assert_allclose(x[labels == k].mean(0), means[k], atol=0.1)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return compile_and_train("gmgan_toy", out=tmp_path_factory.mktemp("toy"), progress=False)


def test_toy_recovers_the_clusters(toy_run):
    result = toy_run
    spec = load_spec(RunDir(result.run_dir).spec_path)
    assert result.step == spec.train.steps
    assert result.evaluation["clustering_accuracy"] > 0.95, result.evaluation
    assert result.evaluation["clusters_used"] == spec.model["k"].get("classes")


# ----------------------------------------------------------------------------- load_run, eval


def test_load_run_sample_and_infer(toy_run):
    result = toy_run
    run = load_run(result.run_dir)
    samples = run.sample(16, jax.random.key(3))
    assert {k: v.shape for k, v in samples.items()} == {"k": (16, 4), "h": (16, 32), "x": (16, 2)}
    np.testing.assert_array_equal(samples["k"].sum(-1), 1.0)
    again = run.sample(16, 3)
    for name in samples:
        np.testing.assert_array_equal(samples[name], again[name])
    x = open_dataset(run.spec, "test").features["x"][:32]
    posterior = run.infer(x, key=1)
    assert set(posterior) == {"h", "k", "k_probs"}
    assert posterior["h"].shape == (32, 32) and posterior["k"].shape == (32, 4)
    np.testing.assert_allclose(posterior["k_probs"].sum(-1), 1.0, atol=1e-5)
    assert np.all(posterior["k_probs"] >= 0)
    with pytest.raises(EvalError, match="shape"):
        run.infer(np.zeros((3, 5), np.float32))
    with pytest.raises(EvalError, match="shape"):
        run.infer(np.zeros((3, 2, 1), np.float32))


def test_component_purity_on_the_trained_toy(toy_run):
    """On the 4 separated blobs, each component draws one blob, all 4 are drawn, q recovers them."""
    from ggdsl.evaluate.run_eval import run_evaluations

    result = toy_run
    run = load_run(result.run_dir)
    out = run_evaluations(run, ["component_purity"])
    assert out["component_classifier_accuracy"] > 0.99
    assert out["component_purity"] > 0.95 and out["component_recovery"] > 0.95, out
    assert sorted(out["component_classes"]) == [0, 1, 2, 3] and out["component_classes_covered"] == 4


def test_component_purity_names_non_finite_components(toy_run, monkeypatch):
    from ggdsl.evaluate.run_eval import run_evaluations

    result = toy_run
    run = load_run(result.run_dir)
    real_generate = run.generate

    def generate(fixed, key=0):
        out = real_generate(fixed, key)
        out["x"] = np.where(fixed["k"][:, 2:3] == 1, np.nan, out["x"])
        return out

    monkeypatch.setattr(run, "generate", generate)
    out = run_evaluations(run, ["component_purity"])
    assert out["component_purity_skipped"] == "p's samples of component(s) [2] are not finite"
    assert "component_purity" not in out


def test_cli_eval_writes_eval_json(toy_run, capsys):
    result = toy_run
    run_dir = RunDir(result.run_dir)
    run_dir.eval_path.unlink()
    assert main(["eval", str(result.run_dir)]) == 0
    written = json.loads(Path(run_dir.eval_path).read_text())
    assert set(written) == {
        "step",
        "clustering_accuracy",
        "clustering_accuracy_majority",
        "clusters_used",
        "reconstruction_mse",
        "factor_accuracy/h|k",
        "factor_accuracy/x|h",
    }
    assert written["step"] == result.step
    assert written["clustering_accuracy"] == pytest.approx(result.evaluation["clustering_accuracy"])
    assert "clustering_accuracy" in capsys.readouterr().out


def test_stabilisers_add_their_terms():
    """R1 and latent reconstruction show up as metrics and in the losses they belong to."""
    spec = _spec("gmgan_digits", "objective.r1=10.0", "objective.latent_reconstruction=1.0")
    compiled = compile_spec(spec)
    state = compiled.init_state(0)
    step = compiled.make_step(jax.random.key(0), jit=False)
    _, metrics = jax.eval_shape(step, state, _synthetic_batch(spec, np.random.default_rng(0)))
    assert set(metrics) == _expected_metrics(spec)
    assert {"r1/x|h", "r1/h|k", "latent_recon"} <= set(metrics)


def test_a_failing_start_leaves_no_run_folder(tmp_path):
    from ggdsl.errors import BuildError

    with pytest.raises(BuildError, match="optax has no optimiser 'adamm'"):
        compile_and_train("gmgan_digits", out=tmp_path, overrides=["train.optimizer.name=adamm"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_evaluations_of_one_model_reuse_one_compiled_program(toy_run):
    """Evaluating a model again (as every ``eval_every`` steps does, each time with new
    weights) traces nothing new: one program per evaluation function, not one per call."""
    from ggdsl.evaluate.run_eval import run_evaluations
    from ggdsl.run import Run

    loaded = load_run(toy_run.run_dir)
    compiled = loaded.compiled
    names = ["clustering_accuracy", "reconstruction_mse", "factor_divergences"]
    first = run_evaluations(Run.from_state(compiled, loaded.state, loaded.dir, loaded.step), names)
    moved = jax.tree.map(lambda a: a * 0.5 if jnp.issubdtype(a.dtype, jnp.floating) else a, loaded.state)
    second = run_evaluations(Run.from_state(compiled, moved, loaded.dir, loaded.step), names)
    assert second["reconstruction_mse"] != pytest.approx(first["reconstruction_mse"])  # new weights were read
    assert {"infer", "reconstruction", "factor_accuracies"} <= set(compiled._jitted)
    assert {name: fn._cache_size() for name, fn in compiled._jitted.items()} == dict.fromkeys(compiled._jitted, 1)
