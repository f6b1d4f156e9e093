"""``train.pretrain``: the autoencoder phase before the adversarial steps, and the k-means
initialisation of the component means (VaDE's)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from sklearn.cluster import KMeans

import ggdsl.pretrain as pretrain_module
from ggdsl.build import module_key
from ggdsl.cli import BUNDLED
from ggdsl.compiled import compile_spec
from ggdsl.errors import BuildError, SpecError, TrainError
from ggdsl.explain import explain
from ggdsl.objective import reconstruct, sample_q, split_observed
from ggdsl.pretrain import codes, init_kind, mixtures, pretrain
from ggdsl.runs import RunDir
from ggdsl.spec.load import load_spec
from ggdsl.train import compile_and_train, open_batches, open_training_data


def _spec(*overrides: str, name: str = "gmgan_digits.yaml"):
    return load_spec(BUNDLED / name, overrides=["train.batch_size=16", *overrides])


def _means(compiled, state) -> np.ndarray:
    (mixture,) = mixtures(compiled.plan)
    net = compiled.generative(state).generators[module_key(mixture.generator)]
    (name,) = compiled.plan.generators[mixture.generator].inputs
    return np.asarray(net({name: jnp.eye(mixture.classes)}))


def _recon_error(compiled, state, x: np.ndarray) -> float:
    gen = compiled.generative(state)
    observed = split_observed(compiled.plan, {"x": jnp.asarray(x)})
    values, _, _ = sample_q(gen, compiled.plan, observed, jax.random.key(0), train=False, settings=compiled.settings)
    recon = reconstruct(gen, compiled.plan, values, jax.random.key(1), train=False)
    return float(jnp.mean(jnp.sum((recon["x"] - observed["x"]).reshape(len(x), -1) ** 2, axis=-1)))


def test_pretrain_fills_its_defaults_and_round_trips():
    spec = _spec("train.pretrain={steps: 50}")
    assert dict(spec.train.pretrain) == {
        "steps": 50,
        "init": "auto",
        "optimizer": {"name": "adam", "learning_rate": 1.0e-3},
        "examples": 10000,
        "standardize": False,
        "rescale": "auto",
    }
    assert load_spec(spec.to_yaml()) == spec
    assert _spec().train.pretrain is None and "pretrain" not in _spec().to_yaml()
    assert "first 50 steps of |x - G(E(x))|^2 alone (train.pretrain), then the component means of p(h | k)" in (
        explain(spec)
    )


def test_pretrain_problems_name_the_key_and_its_line(tmp_path):
    text = (BUNDLED / "gmgan_digits.yaml").read_text()
    text = text.replace("train:\n", "train:\n  pretrain: {steps: 0, init: kmean, lr: 1}\n")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    line = text.splitlines().index("  pretrain: {steps: 0, init: kmean, lr: 1}") + 1
    with pytest.raises(SpecError) as error:
        load_spec(path)
    problems = sorted(str(p) for p in error.value.problems)
    assert problems == sorted(
        [
            f"{path}:{line}: train.pretrain.init: expected one of auto, kmeans, none; got 'kmean'",
            f"{path}:{line}: train.pretrain.lr: unknown key 'lr' "
            "(known: augment, contrastive, examples, init, optimizer, rescale, standardize, steps)",
            f"{path}:{line}: train.pretrain.steps: must be >= 1, got 0",
        ]
    )
    with pytest.raises(SpecError, match="train.pretrain: missing required key 'steps'"):
        _spec("train.pretrain={init: none}")


def test_kmeans_needs_a_mixture_and_auto_resolves_by_the_model():
    assert init_kind(compile_spec(_spec("train.pretrain={steps: 5}"))) == "kmeans"
    video = "ssgan_moving_digits_t4_cpu.yaml"
    assert init_kind(compile_spec(_spec("train.pretrain={steps: 5}", name=video))) == "none"
    with pytest.raises(BuildError, match="init: kmeans needs a mixture .* this model has none: use init: none"):
        compile_spec(_spec("train.pretrain={steps: 5, init: kmeans}", name=video))
    with pytest.raises(BuildError, match=r"train.pretrain.optimizer.name: optax has no optimiser 'adamm'"):
        compile_spec(_spec("train.pretrain={steps: 5, optimizer: {name: adamm}}"))


def test_pretraining_fits_the_autoencoder_then_puts_the_means_at_the_kmeans_centres():
    compiled = compile_spec(_spec("train.pretrain={steps: 60, examples: 300, rescale: false}", "train.seed=3"))
    dataset, _ = open_training_data(compiled.spec)
    state = compiled.init_state(3)
    x = np.asarray(dataset.features["image"][:200], np.float32)
    before_error, before_means = _recon_error(compiled, state, x), _means(compiled, state)
    new, summary = pretrain(compiled, state, open_batches(compiled.spec, dataset), dataset)

    assert _recon_error(compiled, new, x) < 0.7 * before_error
    assert new["d_params"] is state["d_params"] and new["d_opt"] is state["d_opt"]  # critics untouched
    assert new["g_opt"] is state["g_opt"]  # the adversarial optimiser starts fresh
    # The means are the k-means centres of the codes of `examples` training images; E(x)
    # does not depend on the means, so the returned state gives those codes again.
    index = np.sort(np.random.default_rng([3, 1 << 30]).choice(dataset.num_examples, 300, replace=False))
    h = codes(compiled, new, {"x": dataset.features["image"][index]})["h"]
    centres = KMeans(n_clusters=10, n_init=10, random_state=3).fit(h.astype(np.float64)).cluster_centers_
    means = _means(compiled, new)
    assert not np.allclose(means, before_means)
    np.testing.assert_allclose(means, centres, rtol=1e-5, atol=1e-5)
    assert set(summary) == {
        "pretrain/recon",
        "pretrain/steps",
        "pretrain/steps_per_s",
        "pretrain/kmeans_rms/h",
        "pretrain/kmeans_smallest/h",
        "pretrain/code_scale/h",
    }
    assert summary["pretrain/code_scale/h"] == 1.0
    assert summary["pretrain/steps"] == 60 and 0 < summary["pretrain/kmeans_smallest/h"] <= 0.1


def test_rescaling_gives_the_codes_the_spread_of_p_and_changes_no_reconstruction():
    runs = {}
    for rescale in ("false", "auto"):
        compiled = compile_spec(_spec(f"train.pretrain={{steps: 40, examples: 300, rescale: {rescale}}}"))
        dataset, _ = open_training_data(compiled.spec)
        new, summary = pretrain(compiled, compiled.init_state(0), open_batches(compiled.spec, dataset), dataset)
        x = np.asarray(dataset.features["image"][:200], np.float32)
        runs[rescale] = compiled, new, summary, x
    compiled, plain, summary, x = runs["false"]
    _, scaled, scaled_summary, _ = runs["auto"]
    scale = scaled_summary["pretrain/code_scale/h"]
    # The codes' rms distance to their k-means centre, per coordinate, becomes p(h | k)'s std.
    spread = summary["pretrain/kmeans_rms/h"] / np.sqrt(16)
    assert scale == pytest.approx(0.1 / spread, rel=1e-6) and scale != 1.0
    h_plain = codes(compiled, plain, {"x": x})["h"]
    h_scaled = codes(compiled, scaled, {"x": x})["h"]
    np.testing.assert_allclose(h_scaled, scale * h_plain, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_means(compiled, scaled), scale * _means(compiled, plain), rtol=1e-4, atol=1e-6)
    # The generator reads the scaled code through its first layer scaled back: G(E(x)) is unchanged.
    assert _recon_error(compiled, scaled, x) == pytest.approx(_recon_error(compiled, plain, x), rel=1e-4)


def test_rescale_true_needs_a_linear_code_layer_and_auto_then_leaves_the_codes():
    tanh = "networks.enc=[{dense: 32, act: relu}, {dense: 16, act: tanh}]"
    with pytest.raises(BuildError, match=r"rescale: true scales h's codes, but the last layer of h's extractor"):
        compile_spec(_spec("train.pretrain={steps: 5, rescale: true}", tanh, "inference.nets.h=enc"))
    compiled = compile_spec(_spec("train.pretrain={steps: 5, examples: 100}", tanh, "inference.nets.h=enc"))
    dataset, _ = open_training_data(compiled.spec)
    _, summary = pretrain(compiled, compiled.init_state(0), open_batches(compiled.spec, dataset), dataset)
    assert summary["pretrain/code_scale/h"] == 1.0


def test_init_none_leaves_the_means_where_they_were_and_the_ema_follows():
    compiled = compile_spec(_spec("train.pretrain={steps: 5, init: none}", "train.ema=0.99"))
    dataset, _ = open_training_data(compiled.spec)
    state = compiled.init_state(0)
    new, summary = pretrain(compiled, state, open_batches(compiled.spec, dataset), dataset)
    np.testing.assert_array_equal(_means(compiled, new), _means(compiled, state))
    assert set(summary) == {"pretrain/recon", "pretrain/steps", "pretrain/steps_per_s"}
    for a, b in zip(jax.tree.leaves(new["g_ema"]), jax.tree.leaves(new["g_params"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_pretraining_stops_with_a_clear_error_before_k_means():
    compiled = compile_spec(_spec("train.pretrain={steps: 4, examples: 100}"))
    dataset, _ = open_training_data(compiled.spec)
    bad = ({"x": np.full((16, 8, 8, 1), np.nan, np.float32)} for _ in range(4))
    with pytest.raises(TrainError, match=r"train.pretrain: .* not finite after 4 steps .* nothing was saved"):
        pretrain(compiled, compiled.init_state(0), bad, dataset)


OVERRIDES = [
    "train.steps=12",
    "train.checkpoint_every=6",
    "train.log_every=6",
    "train.batch_size=16",
    "train.pretrain={steps: 8, examples: 200}",
    "eval=[]",
]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_logs_its_pretraining_at_step_0_and_a_resume_does_not_pretrain_again(tmp_path, monkeypatch):
    overrides = [*OVERRIDES, "eval=[clustering_accuracy]", "train.eval_every=6"]
    result = compile_and_train("gmgan_digits", out=tmp_path, progress=False, evaluate_at_end=False, overrides=overrides)
    run_dir = Path(result.run_dir)
    first, start = _records(run_dir)[:2]
    assert first["step"] == 0 and first["pretrain/steps"] == 8 and "pretrain/kmeans_rms/h" in first
    # The pretrained state is evaluated before the adversarial steps start.
    assert start["step"] == 0 and 0 < start["eval/clustering_accuracy"] <= 1
    assert [(r["step"], "eval/clustering_accuracy" in r) for r in _records(run_dir)] == [
        (0, False),
        (0, True),
        (6, False),
        (6, True),
        (12, False),
    ]

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed run pretrained again")

    monkeypatch.setattr(pretrain_module, "pretrain", refuse)
    compile_and_train(resume=run_dir, progress=False, evaluate_at_end=False, overrides=["train.steps=18"])
    assert [r["step"] for r in _records(run_dir)] == [0, 0, 6, 6, 12, 18]


def test_a_signal_while_pretraining_saves_nothing_and_the_resume_pretrains_from_the_start(tmp_path, monkeypatch):
    made = pretrain_module.make_pretrain_step

    def make_then_signal(compiled, tx):
        step = made(compiled, tx)
        calls = []

        def counted(*args):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return step(*args)

        return counted

    monkeypatch.setattr(pretrain_module, "make_pretrain_step", make_then_signal)
    with pytest.raises(KeyboardInterrupt):
        compile_and_train("gmgan_digits", out=tmp_path, progress=False, evaluate_at_end=False, overrides=OVERRIDES)
    (run_dir,) = tmp_path.glob("gmgan-digits-*")
    assert RunDir(run_dir).latest_step() is None
    assert not (run_dir / "metrics.jsonl").exists() or _records(run_dir) == []
    monkeypatch.setattr(pretrain_module, "make_pretrain_step", made)
    compile_and_train(resume=run_dir, progress=False, evaluate_at_end=False)
    assert [r["step"] for r in _records(run_dir)] == [0, 6, 12]


def test_pretrain_augment_fills_its_defaults_round_trips_and_names_its_problems(tmp_path):
    spec = _spec("train.pretrain={steps: 50, augment: {shift: 2}}")
    assert dict(spec.train.pretrain["augment"]) == {"shift": 2.0, "rotate": 0.0, "scale": 0.0, "target": "transformed"}
    assert load_spec(spec.to_yaml()) == spec
    assert "first 50 steps of |T(x) - G(E(T(x)))|^2, T a random shift of +-2 px" in explain(spec)
    denoise = _spec("train.pretrain={steps: 50, augment: {rotate: 15, target: original}}")
    assert "first 50 steps of |x - G(E(T(x)))|^2" in explain(denoise)

    text = (BUNDLED / "gmgan_digits.yaml").read_text()
    bad = "  pretrain: {steps: 5, augment: {shift: 40, target: input, apply_to: [consistency]}}"
    path = tmp_path / "spec.yaml"
    path.write_text(text.replace("train:\n", f"train:\n{bad}\n"))
    line = path.read_text().splitlines().index(bad) + 1
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert sorted(str(p) for p in error.value.problems) == [
        f"{path}:{line}: train.pretrain.augment.apply_to: unknown key 'apply_to' (known: rotate, scale, shift, target)",
        f"{path}:{line}: train.pretrain.augment.shift: must be <= 16.0, got 40.0",
        f"{path}:{line}: train.pretrain.augment.target: expected transformed or original, got 'input'",
    ]


def _pretrain_step_error(*overrides: str) -> float:
    compiled = compile_spec(_spec(*overrides))
    tx = pretrain_module.make_optimizer(compiled.spec.train.pretrain["optimizer"], "train.pretrain.optimizer")
    state = compiled.init_state(0)
    step = pretrain_module.make_pretrain_step(compiled, tx)
    x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
    *_, error = step(state["g_params"], state["g_rest"], tx.init(state["g_params"]), {"x": x}, jax.random.key(5))
    return float(error)


def test_pretrain_augment_with_identity_maps_is_the_plain_step_and_a_real_map_changes_it():
    plain = _pretrain_step_error("train.pretrain={steps: 5}")
    for target in ("transformed", "original"):
        identity = f"train.pretrain={{steps: 5, augment: {{shift: 0, target: {target}}}}}"
        assert _pretrain_step_error(identity) == pytest.approx(plain, rel=1e-6)
    moved = _pretrain_step_error("train.pretrain={steps: 5, augment: {shift: 2, rotate: 30, target: original}}")
    assert abs(moved - plain) > 1e-3 * plain


def _invariance(compiled, state, x: np.ndarray) -> float:
    """Mean |E(T(x)) - E(x)|^2 over the codes' total variance, T a fixed draw of random maps."""
    from ggdsl.objective import random_affine

    moved = np.asarray(random_affine(jnp.asarray(x), jax.random.key(11), 1.0, 20.0, 0.1))
    h, h_moved = codes(compiled, state, {"x": x})["h"], codes(compiled, state, {"x": moved})["h"]
    return float(np.mean(np.sum((h_moved - h) ** 2, -1)) / np.mean(np.sum((h - h.mean(0)) ** 2, -1)))


def test_a_denoising_pretraining_gives_codes_that_ignore_the_maps():
    ratios = {}
    denoising = ", augment: {shift: 1, rotate: 20, scale: 0.1, target: original}"
    for name, extra in (("plain", ""), ("denoising", denoising)):
        compiled = compile_spec(_spec(f"train.pretrain={{steps: 300, examples: 100, init: none{extra}}}"))
        dataset, _ = open_training_data(compiled.spec)
        new, _ = pretrain(compiled, compiled.init_state(0), open_batches(compiled.spec, dataset), dataset)
        ratios[name] = _invariance(compiled, new, np.asarray(dataset.features["image"][:500], np.float32))
    assert ratios["denoising"] < 0.7 * ratios["plain"], ratios


def test_pretrain_augment_needs_an_image_to_move():
    with pytest.raises(BuildError, match=r"^train.pretrain.augment: no observed variable of this model is an image"):
        compile_spec(_spec("train.pretrain={steps: 5, augment: {shift: 1}}", name="gmgan_toy.yaml"))


TINY_VIDEO = """
name: tiny-video
data: {source: moving_digits, images: digits, canvas: 12, speed: 1.0, num_examples: 120, observe: {x: video},
       range: [0, 1]}
time: {steps: 3}
model:
  h: {type: normal, shape: [6]}
  v: {type: implicit, steps: true, shape: [2], given: ["v[t-1]"], net: transition, noise: 2,
      first: {type: normal, shape: [2]}}
  x: {type: implicit, steps: true, observed: true, shape: [12, 12, 1], given: [h, v], net: gen}
inference: {family: mean_field, nets: {h: mlp_extractor, v: mlp_extractor}}
networks:
  gen: [{dense: 32, act: relu, norm: batch}, {dense: 144, act: sigmoid}, {reshape: [12, 12, 1]}]
train: {batch_size: 16}
"""


def _video_recon(compiled, state, video: np.ndarray) -> np.ndarray:
    gen = compiled.generative(state)
    observed = split_observed(compiled.plan, {"x": jnp.asarray(video)})
    values, _, _ = sample_q(gen, compiled.plan, observed, jax.random.key(0), train=False, settings=compiled.settings)
    recon = reconstruct(gen, compiled.plan, values, jax.random.key(1), train=False)
    return np.stack([np.asarray(recon[node]) for node in sorted(recon, key=lambda n: int(n[2:-1]))], axis=1)


def test_standardize_gives_the_codes_p_s_moments_and_changes_no_reconstruction():
    runs = {}
    for setting in ("false", "true"):
        spec = load_spec(TINY_VIDEO, overrides=[f"train.pretrain={{steps: 20, examples: 120, standardize: {setting}}}"])
        compiled = compile_spec(spec)
        dataset, _ = open_training_data(compiled.spec)
        new, summary = pretrain(compiled, compiled.init_state(0), open_batches(compiled.spec, dataset), dataset)
        runs[setting] = compiled, new, summary
    compiled, plain, summary = runs["false"]
    _, moved, moved_summary = runs["true"]
    assert set(moved_summary) - set(summary) == {
        "pretrain/code_mean/h",
        "pretrain/code_std/h",
        "pretrain/code_mean/v",
        "pretrain/code_std/v",
    }
    video = np.asarray(dataset.features["video"], np.float32)  # all 120 videos: the `examples`
    before, after = codes(compiled, plain, {"x": video}), codes(compiled, moved, {"x": video})
    for name, size in (("h", 6), ("v", 2)):
        z, z_new = before[name].reshape(-1, size), after[name].reshape(-1, size)
        assert after[name].shape == before[name].shape
        np.testing.assert_allclose(z_new.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(z_new.std(axis=0), 1.0, rtol=1e-3)
        np.testing.assert_allclose(z_new, (z - z.mean(axis=0)) / z.std(axis=0), rtol=1e-3, atol=1e-4)
        assert moved_summary[f"pretrain/code_std/{name}"] == pytest.approx(np.sqrt(np.mean(z.var(axis=0))), rel=1e-3)
    # The frame generator reads the moved codes through its first layer moved back: G(E(x)) is unchanged.
    np.testing.assert_allclose(
        _video_recon(compiled, moved, video[:20]), _video_recon(compiled, plain, video[:20]), atol=1e-5
    )
    # p's transition, which generates v and which pretraining does not train, is left as it was.
    a, b = compiled.generative(plain).generators["v"], compiled.generative(moved).generators["v"]
    for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert "codes of h, v shifted and scaled to mean 0, std 1" in explain(runs["true"][0].spec)


def test_standardize_names_latents_that_can_be_standardised(tmp_path):
    spec = load_spec(TINY_VIDEO, overrides=["train.pretrain={steps: 5, standardize: [v]}"])
    assert spec.train.pretrain["standardize"] == ("v",) and load_spec(spec.to_yaml()) == spec
    assert load_spec(TINY_VIDEO, overrides=["train.pretrain={steps: 5}"]).train.pretrain["standardize"] is False
    path = tmp_path / "spec.yaml"
    listed = "train:\n  pretrain: {steps: 5, standardize: [v, w]}"
    path.write_text(TINY_VIDEO.replace("train: {batch_size: 16}", listed))
    with pytest.raises(SpecError, match=r"spec.yaml:\d+.*train.pretrain.standardize\[1\]: 'w' is not a latent"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"train.pretrain.standardize: expected true, false or a list of latents"):
        load_spec(TINY_VIDEO, overrides=["train.pretrain={steps: 5, standardize: 3}"])
    with pytest.raises(BuildError, match=r"standardize: k cannot be standardised: it is categorical"):
        compile_spec(_spec("train.pretrain={steps: 5, standardize: [k]}"))
    with pytest.raises(BuildError, match=r"standardize: h cannot be standardised: it is a mixture's child"):
        compile_spec(_spec("train.pretrain={steps: 5, standardize: [h]}"))
    with pytest.raises(BuildError, match=r"standardize: true finds no continuous latent outside a mixture"):
        compile_spec(_spec("train.pretrain={steps: 5, standardize: true}"))
    tanh = "networks.enc=[{dense: 32, act: relu}, {dense: 6, act: tanh}]"
    with pytest.raises(BuildError, match=r"h cannot be standardised: the last layer of h's extractor"):
        compile_spec(
            load_spec(
                TINY_VIDEO, overrides=["train.pretrain={steps: 5, standardize: true}", tanh, "inference.nets.h=enc"]
            )
        )


def _nt_xent_reference(a: np.ndarray, b: np.ndarray, temperature: float) -> float:
    """SimCLR's loss written out anchor by anchor, in float64."""
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n, total = len(a), 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [j for j in range(2 * n) if j != i]
        logits = np.array([z[i] @ z[j] / temperature for j in others])
        total -= z[i] @ z[positive] / temperature - np.log(np.sum(np.exp(logits)))
    return total / (2 * n)


def test_nt_xent_is_simclr_s_loss_and_reads_only_the_codes_directions():
    from ggdsl.pretrain import nt_xent

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 4)).astype(np.float32)
    for temperature in (0.1, 0.5, 2.0):
        assert float(nt_xent(a, b, temperature)) == pytest.approx(_nt_xent_reference(a, b, temperature), rel=1e-5)
    scaled = float(nt_xent(3.0 * a, np.float32(0.2) * b, 0.5))
    assert scaled == pytest.approx(float(nt_xent(a, b, 0.5)), rel=1e-5)
    # views that agree, of examples far apart: the loss goes to 0 as the temperature falls;
    # swapping which view is whose (a wrong pairing) makes it large
    basis = np.eye(4, dtype=np.float32)
    assert float(nt_xent(basis, basis, 0.05)) < 1e-6
    assert float(nt_xent(basis, basis[::-1], 0.05)) > 10.0


def test_pretrain_contrastive_fills_its_defaults_round_trips_and_names_its_problems(tmp_path):
    base = "train.pretrain={steps: 50, augment: {shift: 2}, contrastive: "
    spec = _spec(base + "2}")
    assert dict(spec.train.pretrain["contrastive"]) == {"weight": 2.0, "temperature": 0.5}
    assert load_spec(spec.to_yaml()) == spec
    assert "plus 2 * NT-Xent of the codes E(T(x)), E(T'(x)) of two such maps (temperature 0.5)" in explain(spec)
    full = _spec(base + "{weight: 0.5, temperature: 0.2}}")
    assert dict(full.train.pretrain["contrastive"]) == {"weight": 0.5, "temperature": 0.2}

    text = (BUNDLED / "gmgan_digits.yaml").read_text()
    path = tmp_path / "spec.yaml"
    cases = {
        "{steps: 5, contrastive: 1}": "train.pretrain.contrastive: needs train.pretrain.augment: the two views of "
        "each image are drawn with its maps",
        "{steps: 5, augment: {shift: 1}, contrastive: {weight: 1, temperature: 0}}": "train.pretrain.contrastive."
        "temperature: expected a positive number; got 0",
        "{steps: 5, augment: {shift: 1}, contrastive: {temperature: 0.1}}": "train.pretrain.contrastive: "
        "missing required key 'weight'",
        "{steps: 5, augment: {shift: 1}, contrastive: {weight: yes}}": "train.pretrain.contrastive.weight: "
        "expected a positive number; got True",
        "{steps: 5, augment: {shift: 1}, contrastive: .inf}": "train.pretrain.contrastive.weight: "
        "expected a positive number; got inf",
        "{steps: 5, augment: {shift: 1}, contrastive: {weight: .nan}}": "train.pretrain.contrastive.weight: "
        "expected a positive number; got nan",
        "{steps: 5, augment: {shift: 1}, contrastive: {weight: 1, tau: 0.1}}": "train.pretrain.contrastive.tau: "
        "unknown key 'tau' (known: temperature, weight)",
        "{steps: 5, augment: {shift: 1}, contrastive: [1]}": "train.pretrain.contrastive: expected a weight or "
        "{weight, temperature}; got [1]",
    }
    for value, message in cases.items():
        bad = f"  pretrain: {value}"
        path.write_text(text.replace("train:\n", f"train:\n{bad}\n"))
        line = path.read_text().splitlines().index(bad) + 1
        with pytest.raises(SpecError) as error:
            load_spec(path)
        assert [str(p) for p in error.value.problems] == [f"{path}:{line}: {message}"]


def test_the_contrastive_term_trains_the_codes_but_the_step_reports_the_reconstruction_error():
    with_augment = "train.pretrain={steps: 5, augment: {shift: 1, rotate: 20}"
    plain = _pretrain_step_error(with_augment + "}")
    paired = _pretrain_step_error(with_augment + ", contrastive: 1}")
    assert paired == pytest.approx(plain, rel=1e-6)

    def _after_one_step(extra: str):
        compiled = compile_spec(_spec(with_augment + extra + "}"))
        tx = pretrain_module.make_optimizer(compiled.spec.train.pretrain["optimizer"], "train.pretrain.optimizer")
        state = compiled.init_state(0)
        step = pretrain_module.make_pretrain_step(compiled, tx)
        x = np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype(np.float32)
        params, *_ = step(state["g_params"], state["g_rest"], tx.init(state["g_params"]), {"x": x}, jax.random.key(5))
        return [np.asarray(leaf) for leaf in jax.tree.leaves(params)]

    plain_params, paired_params = _after_one_step(""), _after_one_step(", contrastive: 1")
    moved = [np.max(np.abs(p - q)) for p, q in zip(plain_params, paired_params, strict=True)]
    assert max(moved) > 0


def test_a_contrastive_pretraining_gives_codes_that_ignore_the_maps():
    ratios = {}
    maps = "augment: {shift: 1, rotate: 20, scale: 0.1}"
    for name, extra in (("plain", ""), ("contrastive", ", contrastive: {weight: 5, temperature: 0.2}")):
        compiled = compile_spec(_spec(f"train.pretrain={{steps: 300, examples: 100, init: none, {maps}{extra}}}"))
        dataset, _ = open_training_data(compiled.spec)
        new, _ = pretrain(compiled, compiled.init_state(0), open_batches(compiled.spec, dataset), dataset)
        ratios[name] = _invariance(compiled, new, np.asarray(dataset.features["image"][:500], np.float32))
    assert ratios["contrastive"] < 0.7 * ratios["plain"], ratios
