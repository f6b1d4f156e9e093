"""Key schemas and the node-type registry.

Every key a spec may hold is declared here with a check and a default, so the loader, the
builder and the generated reference read the same table. New node types are added with
:func:`register_node`::

    @register_node("bernoulli", keys={"probs": Key(check_float(0, 1), default=0.5)})
    def _check_bernoulli(var: dict) -> list[tuple[str, str]]:
        return []
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

_MISSING = object()

# A check returns (normalised value, None) or (None, message).
Check = Callable[[Any], tuple[Any, str | None]]


@dataclass(frozen=True)
class Key:
    """One allowed key: how to check it, its default, and a line of documentation."""

    check: Check
    default: Any = _MISSING
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_int(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"expected an integer, got {_describe(value)}"
        if low is not None and value < low:
            return None, f"must be >= {low}, got {value}"
        if high is not None and value > high:
            return None, f"must be <= {high}, got {value}"
        return value, None

    return check


def check_float(low: float | None = None, high: float | None = None, *, open_low: bool = False) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"expected a number, got {_describe(value)}"
        value = float(value)
        if not math.isfinite(value):
            return None, f"must be finite, got {value}"
        if low is not None and (value <= low if open_low else value < low):
            return None, f"must be {'>' if open_low else '>='} {low}, got {value}"
        if high is not None and value > high:
            return None, f"must be <= {high}, got {value}"
        return value, None

    return check


def check_bool(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, bool):
        return None, f"expected true or false, got {_describe(value)}"
    return value, None


def check_str(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, str) or not value:
        return None, f"expected a non-empty string, got {_describe(value)}"
    return value, None


def check_choice(*choices: str) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        if not isinstance(value, str) or value not in choices:
            return None, f"expected one of {', '.join(choices)}; got {_describe(value)}"
        return value, None

    return check


def check_shape(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, (list, tuple)) or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 or d > 1 << 31 for d in value
    ):
        return None, f"expected a list of positive integers, got {_describe(value)}"
    if len(value) > 4:
        return None, f"at most 4 dimensions are supported, got {len(value)}"
    return tuple(value), None


def check_float_list(value: Any) -> tuple[Any, str | None]:
    if not isinstance(value, (list, tuple)) or not value:
        return None, f"expected a list of numbers, got {_describe(value)}"
    out = []
    for item in value:
        number, message = check_float(0.0)(item)
        if message:
            return None, f"expected a list of non-negative numbers: {message}"
        out.append(number)
    return tuple(out), None


def check_any_of(*checks: Check) -> Check:
    def check(value: Any) -> tuple[Any, str | None]:
        messages = []
        for each in checks:
            result, message = each(value)
            if message is None:
                return result, None
            messages.append(message)
        return None, " or ".join(messages)

    return check


def check_std(value: Any) -> tuple[Any, str | None]:
    if value == "learned":
        return value, None
    number, message = check_float(0.0, open_low=True)(value)
    if message:
        return None, f"expected a positive number or 'learned', got {_describe(value)}"
    return number, None


def check_net_ref(value: Any) -> tuple[Any, str | None]:
    """A network: a name (checked against networks and presets later) or a layer list."""
    if isinstance(value, str) and value:
        return value, None
    if isinstance(value, list):
        return value, None  # layers are checked one by one by the loader
    return None, f"expected a network name or a list of layers, got {_describe(value)}"


@dataclass(frozen=True)
class NodeType:
    """A variable type: its own keys, whether it needs parents, and extra checks."""

    name: str
    keys: Mapping[str, Key]
    needs_given: bool = False
    check: Callable[[Mapping[str, Any]], list[tuple[str, str]]] = field(default=lambda var: [])
    doc: str = ""


NODE_TYPES: dict[str, NodeType] = {}

COMMON_KEYS: dict[str, Key] = {
    "type": Key(check_str, doc="the node type"),
    "shape": Key(check_shape, default=(), doc="event shape, a list of ints (a categorical: index shape)"),
    "given": Key(lambda v: (v, None), default=(), doc="parent names; `v[t-1]` for the previous step"),
    "observed": Key(check_bool, default=False, doc="true: the variable comes from `data.observe`"),
    "steps": Key(check_bool, default=False, doc="true: one copy per time step, parameters shared"),
    "first": Key(lambda v: (v, None), default=None, doc="how step 1 is drawn (a nested variable)"),
}


def register_node(
    name: str,
    *,
    keys: Mapping[str, Key],
    needs_given: bool = False,
    doc: str = "",
) -> Callable[[Callable[[Mapping[str, Any]], list[tuple[str, str]]]], Callable]:
    """Register a node type. The decorated function makes cross-key checks on a variable
    (its keys already checked one by one, defaults filled) and returns (key, message) pairs."""

    def decorate(check: Callable[[Mapping[str, Any]], list[tuple[str, str]]]) -> Callable:
        clash = set(keys) & set(COMMON_KEYS)
        if clash:
            raise ValueError(f"node type {name!r} redefines common keys {sorted(clash)}")
        NODE_TYPES[name] = NodeType(name, dict(keys), needs_given, check, doc or (check.__doc__ or ""))
        return check

    return decorate


@register_node(
    "categorical",
    keys={
        "classes": Key(check_int(2, 1 << 20), doc="number of values"),
        "probs": Key(check_float_list, default=None, doc="fixed prior probabilities (default uniform)"),
        "net": Key(check_net_ref, default=None, doc="with `given`: the network giving the logits"),
    },
    doc="Discrete with `classes` values, carried as a one-hot vector.",
)
def _check_categorical(var: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    probs, classes = var.get("probs"), var.get("classes")
    if probs is not None and classes is not None:
        if len(probs) != classes:
            problems.append(("probs", f"has {len(probs)} entries but classes is {classes}"))
        elif abs(sum(probs) - 1.0) > 1e-6:
            problems.append(("probs", f"must sum to 1, sums to {sum(probs):.6g}"))
    if var.get("given") and var.get("net") is None:
        problems.append(("net", "a categorical with parents needs `net` (the logits network)"))
    if var.get("given") and probs is not None:
        problems.append(("probs", "fixed probs cannot be combined with parents; use `net`"))
    return problems


@register_node(
    "normal",
    keys={
        "mean": Key(check_float(), default=0.0, doc="mean of a root normal"),
        "std": Key(check_std, default=1.0, doc="standard deviation, or `learned`"),
        "net": Key(check_net_ref, default=None, doc="with `given`: the network giving the mean"),
    },
    doc="Gaussian. With `given`, mean = net(parents); `net: linear` on one categorical parent "
    "is a Gaussian mixture with learned component means.",
)
def _check_normal(var: Mapping[str, Any]) -> list[tuple[str, str]]:
    if var.get("given") and var.get("net") is None:
        return [("net", "a normal with parents needs `net` (the mean network)")]
    if not var.get("given") and var.get("net") is not None:
        return [("net", "a root normal takes `mean` and `std`, not `net`")]
    if not var.get("given") and var.get("std") == "learned":
        return [("std", "`learned` needs parents; a root normal takes a fixed std")]
    return []


@register_node(
    "uniform",
    keys={
        "low": Key(check_float(), default=0.0, doc="lower bound"),
        "high": Key(check_float(), default=1.0, doc="upper bound"),
    },
    doc="Uniform on [low, high).",
)
def _check_uniform(var: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = []
    if var.get("given"):
        problems.append(("given", "a uniform variable is a root; it takes no parents"))
    low, high = var.get("low"), var.get("high")
    if isinstance(low, float) and isinstance(high, float) and not low < high:
        problems.append(("high", f"must be greater than low ({low}), got {high}"))
    return problems


@register_node(
    "implicit",
    keys={
        "net": Key(check_net_ref, doc="the network f in v = f(pa(v), eps)"),
        "noise": Key(check_int(0, 1 << 16), default=0, doc="size of the fresh noise eps"),
    },
    needs_given=True,
    doc="Deterministic network of the parents and fresh noise: v = f(pa(v), eps).",
)
def _check_implicit(var: Mapping[str, Any]) -> list[tuple[str, str]]:
    return []


def node_type_names() -> tuple[str, ...]:
    return tuple(sorted(NODE_TYPES))


# objective.augment: each key's largest value (pixels, degrees, fraction of the size), and
# the terms it may apply to (`apply_to`; the first one when unset).
AUGMENT_KEYS: dict[str, float] = {"shift": 16.0, "rotate": 180.0, "scale": 0.9}
AUGMENT_TARGETS: tuple[str, ...] = ("latent_reconstruction", "discriminators", "consistency")
# train.pretrain.augment's `target`: what the autoencoder reconstructs from a transformed image.
PRETRAIN_AUGMENT_TARGETS: tuple[str, ...] = ("transformed", "original")

# Sections other than `model`: key tables shared by the loader, builder and docs.
INFERENCE_KEYS: dict[str, Key] = {
    "family": Key(check_choice("inverse", "mean_field"), default="inverse", doc="q's structure"),
    "discrete": Key(
        check_choice("gumbel_softmax", "straight_through", "reinforce"),
        default="gumbel_softmax",
        doc="estimator for discrete latents",
    ),
    "temperature": Key(check_float(0.0, open_low=True), default=0.1, doc="Gumbel-softmax temperature"),
    "nets": Key(
        lambda v: (v, None),
        default={},
        doc=(
            "per-latent extractor networks; naming a mixture component (GMGAN's `k`) learns "
            "q(k | h) with that network instead of using its exact posterior"
        ),
    ),
}

OBJECTIVE_KEYS: dict[str, Key] = {
    "divergence": Key(check_choice("local", "global"), default="local", doc="local factors or one joint D"),
    "loss": Key(
        check_choice("bce", "hinge"),
        default="bce",
        doc="the divergence estimate: bce (the JS estimate of the paper, non-saturating for the generators) or "
        "hinge (SAGAN, BigGAN and BigBiGAN's: the discriminators minimise relu(1 - D) on q's side and "
        "relu(1 + D) on p's, the generators and extractors D(q) - D(p))",
    ),
    "reconstruction": Key(check_float(0.0), default=0.0, doc="weight of |x - G(E(x))|^2"),
    "latent_reconstruction": Key(
        lambda v: (v, None),
        default=0.0,
        doc="weight of recovering p's latents from its samples: |z - E(x)|^2, and cross-entropy for categoricals; "
        "one number for every latent, or {latent: weight} (unlisted latents 0; `{k: 1}` recovers only the "
        "component, as InfoGAN recovers only its codes)",
    ),
    "code_likelihood": Key(
        check_float(0.0),
        default=0.0,
        doc="weight of -log p(h) at q's codes h = E(x) of real data, for latents with a closed-form "
        "density (GMGAN's mixture; the component means held fixed in this term)",
    ),
    "augment": Key(
        lambda v: (v, None),
        default=None,
        doc="random affine transforms of images, {shift: pixels, rotate: degrees, scale: fraction, apply_to: "
        "[...]}, each drawn uniformly in +-value per image (the frames of one video share one transform). "
        "`apply_to`: `latent_reconstruction` (the default: q recovers p's latents from transformed samples of "
        "p, so the extractor learns from more than p's exact samples) and/or `discriminators` (every "
        "discriminator sees transformed images on both sides, as DiffAugment; Zhao et al. 2020) and/or "
        "`consistency` (the maps of `objective.consistency`); off when unset",
    ),
    "consistency": Key(
        lambda v: (v, None),
        default=0.0,
        doc="weight of q's agreement on a real image and its transformed copy T(x), T a random map of "
        "`objective.augment` (which must list `consistency` in `apply_to`), q's reading of x held fixed: "
        "|z(T(x)) - z(x)|^2 for continuous latents, the cross-entropy of q(k | T(x)) against q(k | x) for "
        "categoricals (consistency training, Xie et al. 2020); one number for every latent, or "
        "{latent: weight} (`{k: 1}`: only the component must agree)",
    ),
    "marginals": Key(
        lambda v: (v, None),
        default=(),
        doc="observed variables whose marginal gets a discriminator of its own beside the local factors, "
        "real against generated (a unary term, as BigBiGAN's s_x; Donahue and Simonyan 2019): `[x]` adds "
        "D(x), named `x`, weighted like any factor; local divergence only",
    ),
    "r1": Key(
        lambda v: (v, None),
        default=0.0,
        doc="weight gamma of the R1 penalty gamma/2 * E_q |grad D|^2 on each discriminator's q-side inputs; "
        "one number for every discriminator, or {factor: gamma} (unlisted factors pay none: `{x|h: 1}` "
        "penalises the image factor's discriminator and leaves D(h, k) free)",
    ),
    "weights": Key(lambda v: (v, None), default="uniform", doc="`uniform` or {factor: weight}"),
    "spectral_norm": Key(
        check_bool,
        default=False,
        doc="spectral normalisation of every dense and convolution weight of the discriminators "
        "(`norm: spectral` on each layer; Miyato et al. 2018)",
    ),
    "instance_noise": Key(
        check_float(0.0),
        default=0.0,
        doc="std of Gaussian noise added to the observed inputs of every discriminator, both sides, "
        "decayed linearly to 0 over `train.steps`",
    ),
    "video": Key(
        check_choice("concat", "conv3d"),
        default="concat",
        doc="how an assembled discriminator reads a video input: `concat` (ConcatX: frames along channels) "
        "or `conv3d` (3DCNN: 4x4x4 convolutions over time and space)",
    ),
    "discriminators": Key(lambda v: (v, None), default={}, doc="per-factor network overrides"),
}

#: ``train.select`` values: the latest checkpoint, or a label-free score on held-out training data.
SELECT_CRITERIA: tuple[str, ...] = ("last", "reconstruction_mse", "discriminator")

TRAIN_KEYS: dict[str, Key] = {
    "batch_size": Key(check_int(1, 1 << 20), default=50, doc="examples per step"),
    "steps": Key(check_int(0, 1 << 40), default=10000, doc="generator steps"),
    "optimizer": Key(
        lambda v: (v, None),
        default={"name": "adam", "learning_rate": 2.0e-4, "b1": 0.5, "b2": 0.999},
        doc="an optax factory by name with its arguments",
    ),
    "critic_optimizer": Key(
        lambda v: (v, None), default=None, doc="the discriminators' optimiser (default: the same as `optimizer`)"
    ),
    "critic_steps": Key(check_int(1, 100), default=1, doc="discriminator steps per generator step"),
    "seed": Key(check_int(0, (1 << 32) - 1), default=0, doc="the run's random seed"),
    "log_every": Key(check_int(1), default=100, doc="steps between metric lines"),
    "eval_every": Key(check_int(1), default=5000, doc="steps between evaluations"),
    "checkpoint_every": Key(check_int(1), default=5000, doc="steps between checkpoints"),
    "devices": Key(check_any_of(check_choice("auto"), check_int(1, 1 << 16)), default="auto", doc="`auto` or a count"),
    "ema": Key(
        check_float(0.0),
        default=0.0,
        doc="decay of an exponential moving average of the generator and extractor weights (e.g. 0.999; "
        "0: off); when on, sampling and evaluation use the averaged weights",
    ),
    "on_nonfinite": Key(
        check_choice("stop", "skip"),
        default="stop",
        doc="a NaN/inf loss or parameter: `stop` training, or `skip` that step's update",
    ),
    "holdout": Key(
        check_int(0, 1 << 40),
        default=0,
        doc="training examples kept out of training (a fixed random subset) for `select`; 0: none",
    ),
    "pretrain": Key(
        lambda v: (v, None),
        default=None,
        doc="an autoencoder phase before the adversarial steps, {steps: n, init: auto | kmeans | none, "
        "optimizer: {...}, examples: n, rescale: auto | true | false}: n steps of |x - G(E(x))|^2 alone on "
        "the extractors and generators "
        "(`optimizer`, default adam 1e-3), then (`init: kmeans`; `auto` where the model has a mixture) the "
        "component means of p(h | k) set to the k-means centres of `examples` codes E(x) of training data "
        "(VaDE's initialisation; Jiang et al. 2017), the codes scaled (`rescale`) so that their spread about "
        "the centres is p(h | k)'s std; off when unset",
    ),
    "init_from": Key(
        lambda v: (v, None),
        default=None,
        doc="start from another run's weights, {run: RUN_DIR, step: n}: the generators and extractors "
        "(and the discriminators where theirs have the same structure) of that run's checkpoint at `step` "
        "(default its latest), with fresh optimiser states, step 0 and this spec's data order; the networks "
        "must match this spec's. With `pretrain` set too, the autoencoder phase starts from these weights; off "
        "when unset",
    ),
    "select": Key(
        check_choice(*SELECT_CRITERIA),
        default="last",
        doc="the checkpoint `eval` and `load_run` use: `last`, or the best by a label-free score on the "
        "`holdout` examples, computed at every checkpoint: `reconstruction_mse` (x against p(x | q(z | x)), "
        "lowest) or `discriminator` (the factors' discriminators closest to chance, mean |accuracy - 0.5|)",
    ),
}

#: ``train.init_from`` keys.
INIT_FROM_KEYS: dict[str, Key] = {
    "run": Key(check_str, doc="the run folder whose weights start this run"),
    "step": Key(check_int(0, 1 << 40), default=None, doc="its checkpoint to read (default: the latest)"),
}


def _check_positive(value: Any) -> tuple[Any, str | None]:
    """A finite number > 0 (:func:`check_float`), with one message for every way to miss it."""
    number, message = check_float(0.0, open_low=True)(value)
    return (number, None) if message is None else (None, f"expected a positive number; got {_describe(value)}")


#: ``train.pretrain.contrastive`` keys: SimCLR's term on the codes of two views of each image.
CONTRASTIVE_KEYS: dict[str, Key] = {
    "weight": Key(_check_positive, doc="the weight of the NT-Xent term beside the reconstruction"),
    "temperature": Key(_check_positive, default=0.5, doc="the temperature of the cosine similarities"),
}

#: ``train.pretrain`` keys.
PRETRAIN_KEYS: dict[str, Key] = {
    "steps": Key(check_int(1, 1 << 40), doc="autoencoder steps before the adversarial ones"),
    "init": Key(
        check_choice("auto", "kmeans", "none"),
        default="auto",
        doc="`kmeans`: the component means of p(h | k) from k-means of the codes; `auto`: kmeans where the "
        "model has a mixture h | k, else none",
    ),
    "optimizer": Key(
        lambda v: (v, None),
        default={"name": "adam", "learning_rate": 1.0e-3},
        doc="the pretraining optimiser (an optax factory by name with its arguments)",
    ),
    "examples": Key(check_int(10, 1 << 30), default=10000, doc="training examples whose codes k-means reads"),
    "augment": Key(
        lambda v: (v, None),
        default=None,
        doc="random affine maps of the images the autoencoder reads, {shift: pixels, rotate: degrees, scale: "
        "fraction, target: transformed | original}, drawn per image as `objective.augment`'s; `target`: "
        "reconstruct the transformed image itself (`transformed`, the default; DEC-DA, Guo et al. 2018) or "
        "the original (`original`, a denoising autoencoder whose codes must ignore the map); off when unset",
    ),
    "contrastive": Key(
        lambda v: (v, None),
        default=None,
        doc="`{weight: w, temperature: t}` (t defaults to 0.5) or a bare weight: adds w times SimCLR's NT-Xent "
        "loss (Chen et al. 2020) on q's continuous codes of two random views T(x), T'(x) of each image, drawn "
        "with `augment`'s maps (which it needs), so that the codes of one image's views lie together and apart "
        "from the batch's other images; off when unset",
    ),
    "standardize": Key(
        lambda v: (
            (v, None)
            if isinstance(v, bool) or (isinstance(v, list) and v and all(isinstance(n, str) for n in v))
            else (None, f"expected true, false or a list of latents; got {_describe(v)}")
        ),
        default=False,
        doc="`true` (every continuous latent outside a mixture) or a list of latents: after the autoencoder "
        "steps, shift and scale each one's codes E(x) of `examples` training examples to mean 0 and std 1 per "
        "coordinate, the moments of p's N(0, I), by an affine map folded into the extractor's last dense "
        "layer and its inverse into the first dense layer of every network that reads the latent, so "
        "G(E(x)) is unchanged; the adversarial steps then start from codes on p's scale. `false`: off",
    ),
    "rescale": Key(
        lambda v: (
            (v, None)
            if v == "auto" or isinstance(v, bool)
            else (None, f"expected auto, true or false; got {_describe(v)}")
        ),
        default="auto",
        doc="`true` or `false`; with kmeans: scale the codes (the extractor's last dense layer, and the first "
        "dense layer of every generator that reads h by the inverse, so G(E(x)) is unchanged) until their spread about "
        "their k-means centre is p(h | k)'s std per coordinate; `auto`: where the networks allow it",
    ),
}

EVAL_NAMES: tuple[str, ...] = (
    "clustering_accuracy",
    "reconstruction_mse",
    "samples",
    "interpolation",
    "tsne",
    "factor_divergences",
    "component_purity",
    "video_reconstruction",
    "motion_analogy",
)

TOP_KEYS: tuple[str, ...] = (
    "name",
    "data",
    "time",
    "model",
    "inference",
    "objective",
    "networks",
    "train",
    "eval",
)
