"""objective.augment: q reads p's images under random affine maps where it recovers p's latents."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _objective_errors import objective_line_problems
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ggdsl.build import build_modules
from ggdsl.cli import BUNDLED
from ggdsl.errors import BuildError, SpecError
from ggdsl.explain import explain
from ggdsl.objective import (
    affine_resample,
    augment_images,
    balanced_assignment,
    consistency,
    latent_reconstruction,
    losses,
    random_affine,
    sample_q,
    settings_of,
)
from ggdsl.plan import plan_model
from ggdsl.spec.load import load_spec
from ggdsl.train import model_hash

AUGMENT = "objective.augment={shift: 2, rotate: 15, scale: 0.1}"


def _spec(*overrides: str):
    return load_spec(
        BUNDLED / "gmgan_digits.yaml",
        overrides=["train.batch_size=8", "objective.latent_reconstruction=1.0", *overrides],
    )


def _images(n: int = 3, size: int = 9) -> np.ndarray:
    return np.random.default_rng(0).random((n, size, size, 2)).astype(np.float32)


def _scipy_affine(image: np.ndarray, angle: float, zoom: float, offset) -> np.ndarray:
    """The same map through SciPy: input coordinate = M @ output + o."""
    centre = (np.array(image.shape[:2]) - 1) / 2.0
    inverse = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]]) / zoom
    o = centre - inverse @ (centre + np.asarray(offset))
    return np.stack(
        [ndimage.affine_transform(image[..., c], inverse, offset=o, order=1, mode="nearest") for c in range(2)], -1
    )


@settings(max_examples=25, deadline=None)
@given(
    angle=st.floats(-np.pi, np.pi),
    zoom=st.floats(0.5, 1.5),
    dy=st.floats(-4, 4),
    dx=st.floats(-4, 4),
)
def test_affine_resample_matches_scipy(angle, zoom, dy, dx):
    images = _images(2)
    got = np.asarray(
        affine_resample(
            jnp.asarray(images), jnp.array([0.0, angle]), jnp.array([1.0, zoom]), jnp.array([[0.0, 0.0], [dy, dx]])
        )
    )
    np.testing.assert_array_equal(got[0], images[0])  # the identity map leaves an image alone
    np.testing.assert_allclose(got[1], _scipy_affine(images[1], angle, zoom, (dy, dx)), atol=1e-5)


def test_affine_resample_shifts_and_rotates_as_displayed():
    images = _images(1)
    shifted = affine_resample(jnp.asarray(images), jnp.zeros(1), jnp.ones(1), jnp.array([[2.0, -3.0]]))
    # Two rows down, three columns left; the edge pixels fill in.
    np.testing.assert_allclose(np.asarray(shifted)[0, 2:, :-3], images[0, :-2, 3:], atol=1e-6)
    np.testing.assert_allclose(np.asarray(shifted)[0, 0, :-3], images[0, 0, 3:], atol=1e-6)
    turned = affine_resample(jnp.asarray(images), jnp.array([np.pi / 2]), jnp.ones(1), jnp.zeros((1, 2)))
    np.testing.assert_allclose(np.asarray(turned)[0], np.rot90(images[0]), atol=1e-5)  # counter-clockwise


def test_random_affine_draws_one_map_per_image_within_the_bounds():
    image = np.zeros((9, 9, 1), np.float32)
    image[4, 4] = 1.0  # one bright pixel at the centre: its image under the map shows the shift
    images = jnp.asarray(np.repeat(image[None], 64, axis=0))
    out = np.asarray(random_affine(images, jax.random.key(0), 3.0, 0.0, 0.0))
    np.testing.assert_array_equal(out, np.asarray(random_affine(images, jax.random.key(0), 3.0, 0.0, 0.0)))
    rows, cols = np.arange(9)[:, None], np.arange(9)[None, :]
    centres = np.array([[np.sum(o[..., 0] * rows), np.sum(o[..., 0] * cols)] / np.sum(o) for o in out])
    assert np.all(np.abs(centres - 4.0) <= 3.0 + 1e-5)
    assert len({tuple(np.round(c, 3)) for c in centres}) == 64  # each image its own shift
    assert np.std(centres) > 1.0  # spread over the range, not stuck near 0
    np.testing.assert_array_equal(np.asarray(random_affine(images, jax.random.key(1), 0.0, 0.0, 0.0)), images)


def test_augment_images_touches_only_image_nodes_and_a_video_shares_one_map():
    spec = load_spec(BUNDLED / "ssgan_moving_digits_t4_cpu.yaml", overrides=["objective.latent_reconstruction=1.0"])
    plan = plan_model(spec)
    frames = [node for node in plan.analysis.observed]
    assert len(frames) == 4
    video = np.repeat(_images(5, 16)[:, None, ..., :1], 4, axis=1)  # one image repeated over the frames
    values = {node: jnp.asarray(video[:, t]) for t, node in enumerate(frames)}
    values["other"] = jnp.ones((5, 3))
    out = augment_images(plan, values, jax.random.key(0), (2.0, 15.0, 0.1))
    for node in frames[1:]:
        np.testing.assert_array_equal(np.asarray(out[node]), np.asarray(out[frames[0]]))
    assert not np.allclose(np.asarray(out[frames[0]]), video[:, 0])
    assert out["other"] is values["other"]


def test_latent_reconstruction_reads_p_images_through_the_augmentation():
    plan = plan_model(_spec(AUGMENT))
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    assert settings.augment == (2.0, 15.0, 0.1)
    plain = settings_of(plan_model(_spec()))
    from ggdsl.objective import sample_p

    p_values = sample_p(gen, plan, 8, jax.random.key(1), train=False, settings=settings)
    key = jax.random.key(4)
    got = latent_reconstruction(gen, plan, p_values, key, settings=settings, train=False)
    # The same term without augmentation, on images augmented by hand with the same key.
    key_q, key_augment = jax.random.split(key)
    moved = augment_images(plan, p_values, key_augment, settings.augment)
    expected = latent_reconstruction(gen, plan, moved, key_q, settings=plain, train=False)
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    assert float(got) != pytest.approx(
        float(latent_reconstruction(gen, plan, p_values, key_q, settings=plain, train=False)), rel=1e-3
    )
    # Only the latent reconstruction changes; what the discriminators see does not.
    batch = {"x": jnp.asarray(_images(8, 8)[..., :1])}
    on = losses(gen, critics, plan, batch, jax.random.key(0), settings=settings)[2]
    off = losses(gen, critics, plan, batch, jax.random.key(0), settings=plain)[2]
    assert float(on["d_loss"]) == pytest.approx(float(off["d_loss"]), rel=1e-6)
    assert float(on["latent_recon"]) != pytest.approx(float(off["latent_recon"]), rel=1e-3)


def test_augment_spec_errors_name_the_key_and_line(tmp_path):
    spec = _spec(AUGMENT)
    assert spec.objective.augment == {
        "shift": 2.0,
        "rotate": 15.0,
        "scale": 0.1,
        "apply_to": ("latent_reconstruction",),
    }
    both = _spec("objective.augment={rotate: 10, apply_to: [discriminators, latent_reconstruction]}")
    assert both.objective.augment == {
        "shift": 0.0,
        "rotate": 10.0,
        "scale": 0.0,
        "apply_to": ("latent_reconstruction", "discriminators"),
    }
    assert load_spec(both.to_yaml()) == both
    assert load_spec(spec.to_yaml()) == spec
    assert "augment" not in _spec().to_dict()["objective"]  # unset: older runs keep their model hash
    assert model_hash(_spec()) != model_hash(spec)
    assert (
        "images under random affine maps (shift +-2 px, rotation +-15 deg, zoom 1 +- 0.1): "
        "q reads p's images in the latent reconstruction\n" in explain(spec)
    )
    path, line, problems = objective_line_problems(tmp_path, "augment: {shift: -1, turn: 5}")
    assert problems == [
        f"{path}:{line}: objective.augment.shift: must be >= 0.0, got -1.0",
        f"{path}:{line}: objective.augment.turn: unknown key 'turn' (known: apply_to, rotate, scale, shift)",
    ]
    with pytest.raises(SpecError, match=r"objective.augment.apply_to: expected a list of latent_reconstruction, disc"):
        _spec("objective.augment={shift: 1, apply_to: [generator]}")
    with pytest.raises(SpecError, match=r"objective.augment.scale: must be <= 0.9, got 2.0"):
        _spec("objective.augment={scale: 2}")
    with pytest.raises(SpecError, match="objective.augment: expected a mapping"):
        _spec("objective.augment=3")


def test_augment_for_discriminators_transforms_both_sides_and_nothing_else():
    overrides = ("objective.augment={shift: 2, rotate: 15, apply_to: [discriminators]}", "objective.r1=1.0")
    plan = plan_model(_spec(*overrides))
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    assert settings.augment_targets == ("discriminators",)
    plain = settings_of(plan_model(_spec("objective.r1=1.0")))
    batch = {"x": jnp.asarray(_images(8, 8)[..., :1])}
    on = losses(gen, critics, plan, batch, jax.random.key(0), settings=settings)[2]
    off = losses(gen, critics, plan, batch, jax.random.key(0), settings=plain)[2]
    # Every discriminator reading x sees other images; D(h, k) and the q-side recovery do not.
    assert float(on["d_loss/x|h"]) != pytest.approx(float(off["d_loss/x|h"]), rel=1e-4)
    assert float(on["r1/x|h"]) != pytest.approx(float(off["r1/x|h"]), rel=1e-4)
    assert float(on["d_loss/h|k"]) == pytest.approx(float(off["d_loss/h|k"]), rel=1e-6)
    assert float(on["latent_recon"]) == pytest.approx(float(off["latent_recon"]), rel=1e-6)
    # Without latent reconstruction this target is still valid.
    plan_model(_spec("objective.augment={shift: 2, apply_to: [discriminators]}", "objective.latent_reconstruction=0"))


def test_augment_needs_latent_reconstruction_and_an_image():
    with pytest.raises(BuildError, match="objective.augment: .* objective.latent_reconstruction is 0"):
        plan_model(_spec(AUGMENT, "objective.latent_reconstruction=0"))
    with pytest.raises(BuildError, match="objective.augment: .* objective.latent_reconstruction is 0"):
        plan_model(_spec(AUGMENT, "objective.latent_reconstruction={k: 0}"))
    toy = load_spec(BUNDLED / "gmgan_toy.yaml", overrides=["objective.latent_reconstruction=1.0", AUGMENT])
    with pytest.raises(BuildError, match=r"no observed variable of this model is an image"):
        plan_model(toy)


CONSISTENCY = (
    "objective.augment={shift: 2, rotate: 15, scale: 0.1, apply_to: [consistency]}",
    "objective.consistency=0.5",
)


def _q(gen, plan, settings, images):
    values, probs, _ = sample_q(gen, plan, {"x": images}, jax.random.key(2), train=False, settings=settings)
    return values, probs


def test_consistency_compares_q_on_real_images_and_their_transformed_copies():
    plan = plan_model(_spec(*CONSISTENCY))
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    assert (settings.consistency, settings.consistency_weights, settings.augment_targets) == (
        0.5,
        None,
        ("consistency",),
    )
    images = jnp.asarray(_images(8, 8)[..., :1])
    q_values, q_probs = _q(gen, plan, settings, images)
    key = jax.random.key(5)
    got = consistency(gen, plan, {"x": images}, q_values, q_probs, key, settings=settings, train=False)
    # By hand: the same map on each image; q's code of the copy against q's code of the
    # original, and q(k | copy) against q(k | original) balanced over the batch.
    key_augment, key_q = jax.random.split(key)
    moved = augment_images(plan, {"x": images}, key_augment, settings.augment)
    codes, probs, _ = sample_q(gen, plan, moved, key_q, train=False, settings=settings)
    squares = np.mean(np.sum((np.asarray(codes["h"]) - np.asarray(q_values["h"])) ** 2, axis=-1))
    target = np.asarray(balanced_assignment(jnp.log(q_probs["k"] + 1e-8), jnp.full((10,), 0.1)))
    cross = -np.mean(np.sum(target * np.log(np.asarray(probs["k"]) + 1e-8), axis=-1))
    assert float(got) == pytest.approx(float(squares + cross), rel=1e-5)
    only_k = settings_of(plan_model(_spec(CONSISTENCY[0], "objective.consistency={k: 2.0}")))
    assert (only_k.consistency, only_k.consistency_weights) == (1.0, (("k", 2.0),))
    got_k = consistency(gen, plan, {"x": images}, q_values, q_probs, key, settings=only_k, train=False)
    assert float(got_k) == pytest.approx(2.0 * float(cross), rel=1e-5)
    # The balanced target uses every component equally over the batch, whatever q(k | x) says.
    np.testing.assert_allclose(target.sum(axis=0), np.full(10, 0.8), rtol=5e-3)
    np.testing.assert_allclose(target.sum(axis=1), np.ones(8), rtol=1e-5)


def test_consistency_of_identical_copies_is_zero_for_codes():
    plan = plan_model(_spec(CONSISTENCY[0], "objective.consistency={h: 1.0}"))
    gen, _ = build_modules(plan, 0)
    settings = dataclasses.replace(settings_of(plan), augment=(0.0, 0.0, 0.0))  # every map the identity
    images = jnp.asarray(_images(8, 8)[..., :1])
    q_values, q_probs = _q(gen, plan, settings, images)
    got = consistency(gen, plan, {"x": images}, q_values, q_probs, jax.random.key(5), settings=settings, train=False)
    assert float(got) == pytest.approx(0.0, abs=1e-10)


def test_consistency_trains_q_towards_its_fixed_reading_of_the_original():
    plan = plan_model(_spec(*CONSISTENCY))
    gen, critics = build_modules(plan, 0)
    settings = settings_of(plan)
    images = jnp.asarray(_images(8, 8)[..., :1])
    q_values, q_probs = _q(gen, plan, settings, images)

    def term(codes, posteriors):
        return consistency(
            gen, plan, {"x": images}, codes, posteriors, jax.random.key(5), settings=settings, train=False
        )

    # No gradient reaches q's reading of the originals: it is the target, not a second moving side.
    grad_codes, grad_probs = jax.grad(term, argnums=(0, 1))(q_values, q_probs)
    assert float(jnp.max(jnp.abs(grad_codes["h"]))) == 0.0
    assert float(jnp.max(jnp.abs(grad_probs["k"]))) == 0.0
    # Only the extractor moves: the generators get no gradient from this term.
    grads = nnx.grad(
        lambda g: consistency(
            g, plan, {"x": images}, q_values, q_probs, jax.random.key(5), settings=settings, train=False
        )
    )(gen)
    norms = {
        part: sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(nnx.state(getattr(grads, part))))
        for part in ("extractors", "generators")
    }
    assert norms["extractors"] > 0 and norms["generators"] == 0.0
    # In the loss it is its own metric and adds weight * term to the generator side only.
    batch = {"x": images}
    plain = dataclasses.replace(settings, consistency=0.0)
    d_on, g_on, on = losses(gen, critics, plan, batch, jax.random.key(0), settings=settings)
    d_off, g_off, off = losses(gen, critics, plan, batch, jax.random.key(0), settings=plain)
    assert "consistency" in on and "consistency" not in off
    assert float(d_on) == pytest.approx(float(d_off), rel=1e-6)
    assert float(g_on - g_off) == pytest.approx(0.5 * float(on["consistency"]), rel=1e-4)


def test_consistency_spec_round_trip_errors_and_build_checks(tmp_path):
    spec = _spec(*CONSISTENCY)
    assert spec.objective.consistency == 0.5
    assert load_spec(spec.to_yaml()) == spec
    per_latent = _spec(CONSISTENCY[0], "objective.consistency={k: 1.0}")
    assert per_latent.objective.consistency == {"k": 1.0}
    assert load_spec(per_latent.to_yaml()) == per_latent
    assert "consistency" not in _spec().to_dict()["objective"]
    assert model_hash(per_latent) != model_hash(spec)
    assert "+ E_data [ 1 * -q(k | x) . log q(k | T(x)) ]  (consistency; q's reading of x held fixed)" in explain(
        per_latent
    )
    assert "q reads real images and their transformed copies alike" in explain(spec)
    path, line, problems = objective_line_problems(tmp_path, "consistency: {k: -2, z: 1}")
    assert problems == [
        f"{path}:{line}: objective.consistency.k: must be >= 0.0, got -2.0",
        f"{path}:{line}: objective.consistency.z: 'z' is not a latent variable (latents: h, k)",
    ]
    with pytest.raises(BuildError, match=r"objective.consistency: needs the maps of objective.augment"):
        plan_model(_spec("objective.consistency=1.0"))
    with pytest.raises(BuildError, match=r"objective.consistency: needs the maps"):
        plan_model(_spec(AUGMENT, "objective.consistency=1.0"))
    with pytest.raises(BuildError, match=r"applies to consistency, but objective.consistency \(its weight\) is 0"):
        plan_model(_spec(CONSISTENCY[0]))
    with pytest.raises(BuildError, match=r"applies to consistency, but"):
        plan_model(_spec(CONSISTENCY[0], "objective.consistency={k: 0}"))
