"""The spec's evaluations (SPEC section 9) on a trained model; ``ggdsl eval RUN_DIR``.

Each evaluation returns numbers (into ``eval.json``) and may write figures into the run's
``figures/`` folder. Labels are used only to score, never to choose anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ggdsl.compiled import Compiled, TrainState
from ggdsl.errors import EvalError
from ggdsl.objective import discriminator_logits, sample_p, sample_q, split_observed
from ggdsl.run import Run, load_run
from ggdsl.runs import RunDir

EVAL_BATCH = 500
MAX_EVAL_EXAMPLES = 10_000

EVALUATIONS: dict[str, Callable[[Run, dict], dict[str, Any]]] = {}


def register_evaluation(name: str):
    def decorate(fn):
        EVALUATIONS[name] = fn
        return fn

    return decorate


def _test_data(run: Run, cache: dict) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The test split (at most MAX_EVAL_EXAMPLES), by variable, and its labels if any."""
    if "test" not in cache:
        from ggdsl.train import open_dataset

        dataset = open_dataset(run.spec, "test")
        n = min(dataset.num_examples, MAX_EVAL_EXAMPLES)
        x = {var: dataset.features[feature][:n] for var, feature in run.spec.data.observe.items()}
        label_key = run.spec.data.get("labels")
        labels = dataset.features[label_key][:n] if label_key and label_key in dataset.features else None
        cache["test"] = (x, labels)
    return cache["test"]


def _inferred(run: Run, cache: dict) -> dict[str, np.ndarray]:
    if "inferred" not in cache:
        x, _ = _test_data(run, cache)
        n = len(next(iter(x.values())))
        parts = [run.infer({k: v[i : i + EVAL_BATCH] for k, v in x.items()}, key=i) for i in range(0, n, EVAL_BATCH)]
        cache["inferred"] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return cache["inferred"]


def cluster_latent(run: Run) -> str | None:
    """The first categorical latent: the mixture component in GMGAN."""
    for name in run.spec.latent:
        var = run.spec.model[name]
        if var.type == "categorical" and not var.steps:
            return name
    return None


def code_latent(run: Run) -> str | None:
    """The continuous latent the observed variable is generated from (h in GMGAN)."""
    observed = run.spec.observed[0]
    for parent in run.spec.model[observed].given:
        var = run.spec.model[parent.name]
        if not var.observed and var.type != "categorical" and not var.steps:
            return parent.name
    return None


@register_evaluation("clustering_accuracy")
def clustering_accuracy(run: Run, cache: dict) -> dict[str, Any]:
    from ggdsl.evaluate.metrics import cluster_usage, hungarian_accuracy, majority_accuracy

    k = cluster_latent(run)
    _, labels = _test_data(run, cache)
    if k is None or labels is None:
        raise EvalError("clustering_accuracy needs a categorical latent and `data.labels`")
    clusters = _inferred(run, cache)[f"{k}_probs"].argmax(-1)
    usage = cluster_usage(clusters, int(run.spec.model[k].get("classes")))
    return {
        "clustering_accuracy": hungarian_accuracy(labels, clusters),
        "clustering_accuracy_majority": majority_accuracy(labels, clusters),
        "clusters_used": usage["used"],
    }


def _reconstruction(run: Run, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    if "recon" not in cache:
        from ggdsl.objective import reconstruct

        x, _ = _test_data(run, cache)
        compiled = run.compiled

        def reconstruction(g_params, g_rest, batch, key):
            gen = compiled.generative({"g_params": g_params, "g_rest": g_rest})
            observed = split_observed(compiled.plan, batch)
            values, _, _ = sample_q(gen, compiled.plan, observed, key, train=False, settings=compiled.settings)
            return reconstruct(gen, compiled.plan, values, key, train=False)

        fn = compiled.jitted("reconstruction", reconstruction)

        name = run.spec.observed[0]
        n = len(x[name])
        outs = []
        for i in range(0, n, EVAL_BATCH):
            batch = {k: jnp.asarray(v[i : i + EVAL_BATCH]) for k, v in x.items()}
            values = fn(run.state["g_params"], run.state["g_rest"], batch, jax.random.key(i))
            from ggdsl.run import stack_steps

            outs.append(stack_steps(compiled, values)[name])
        cache["recon"] = (x[name], np.concatenate(outs))
    return cache["recon"]


@register_evaluation("reconstruction_mse")
def reconstruction_mse(run: Run, cache: dict) -> dict[str, Any]:
    from ggdsl.evaluate.figures import image_grid

    x, recon = _reconstruction(run, cache)
    if x.ndim == 4:
        pairs = np.stack([x[:16], recon[:16]], axis=1).reshape(-1, *x.shape[1:])
        image_grid(pairs, str(run.dir.figures_dir / "reconstruction.png"), ncols=8, value_range=run.spec.data.range)
    return {"reconstruction_mse": float(np.mean((x - recon) ** 2))}


@register_evaluation("video_reconstruction")
def video_reconstruction(run: Run, cache: dict) -> dict[str, Any]:
    """Test videos through q and back through p: squared error per frame, and strips of
    4 originals, each above its reconstruction."""
    from ggdsl.evaluate.figures import labelled_strips

    x, recon = _reconstruction(run, cache)
    if x.ndim != 5:
        raise EvalError("video_reconstruction needs a per-step observed variable")
    per_frame = np.mean((x - recon) ** 2, axis=(0, 2, 3, 4))
    shown = min(4, len(x))
    rows = np.stack([x[:shown], recon[:shown]], axis=1).reshape(-1, *x.shape[1:])
    out = run.dir.figures_dir / "video_reconstruction.png"
    labelled_strips(rows, ["original", "reconstruction"] * shown, str(out), run.spec.data.range)
    return {
        "video_reconstruction_mse": float(per_frame.mean()),
        "video_reconstruction_mse_per_frame": [float(v) for v in per_frame],
        "video_reconstruction_figure": out.name,
    }


@register_evaluation("samples")
def samples(run: Run, cache: dict) -> dict[str, Any]:
    from ggdsl.evaluate.figures import component_grid, frame_strip, image_grid, save_gif

    name = run.spec.observed[0]
    value_range = run.spec.data.range
    k = cluster_latent(run)
    path = run.dir.figures_dir / f"samples_step{run.step}.png"
    if k is not None and not run.spec.model[k].given:
        classes = min(int(run.spec.model[k].get("classes")), 30)
        per = 8
        onehots = jnp.asarray(
            np.repeat(np.eye(int(run.spec.model[k].get("classes")))[:classes], per, axis=0), jnp.float32
        )
        drawn = run.sample(classes * per, key=run.step, fixed={k: onehots})[name]
        if drawn.ndim == 4:
            component_grid(drawn.reshape(classes, per, *drawn.shape[1:]), str(path), value_range)
            return {"samples_figure": str(path.name)}
    drawn = run.sample(64, key=run.step)[name]
    if drawn.ndim == 5:
        # one row per sample, one column per step; and the first 16 playing in a 4x4 grid
        frame_strip(drawn[:8], str(path), value_range)
        gif = save_gif(drawn[:16], str(path.with_suffix(".gif")), value_range, fps=4.0, ncols=4)
        return {"samples_figure": path.name} | ({"samples_animation": path.with_suffix(".gif").name} if gif else {})
    if drawn.ndim == 4:
        image_grid(drawn, str(path), ncols=8, value_range=value_range)
    else:
        raise EvalError(f"samples: '{name}' is not an image or video")
    return {"samples_figure": str(path.name)}


@register_evaluation("interpolation")
def interpolation(run: Run, cache: dict) -> dict[str, Any]:
    from ggdsl.evaluate.figures import interpolation_grid

    h = code_latent(run)
    name = run.spec.observed[0]
    if h is None or run.spec.model[name].steps:
        raise EvalError("interpolation needs a global continuous latent that generates the data")
    codes = _inferred(run, cache)[h]
    rows, steps = 6, 10
    alphas = np.linspace(0, 1, steps)[None, :, None]
    path_codes = codes[:rows, None] * (1 - alphas) + codes[rows : 2 * rows, None] * alphas
    flat = path_codes.reshape(rows * steps, -1).astype(np.float32)
    images = run.sample(rows * steps, key=0, fixed={h: jnp.asarray(flat)})[name]
    out = run.dir.figures_dir / "interpolation.png"
    interpolation_grid(images.reshape(rows, steps, *images.shape[1:]), str(out), run.spec.data.range)
    return {"interpolation_figure": out.name}


@register_evaluation("tsne")
def tsne(run: Run, cache: dict) -> dict[str, Any]:
    from ggdsl.evaluate.figures import tsne_plot

    h = code_latent(run)
    if h is None:
        raise EvalError("tsne needs a global continuous latent")
    _, labels = _test_data(run, cache)
    codes = _inferred(run, cache)[h]
    out = run.dir.figures_dir / "tsne.png"
    tsne_plot(codes.reshape(len(codes), -1), None if labels is None else labels, str(out), seed=0)
    return {"tsne_figure": out.name}


#: Samples drawn per component by ``component_purity``, and training examples its classifier reads.
PURITY_SAMPLES = 200
PURITY_TRAIN_EXAMPLES = 10_000


@register_evaluation("component_purity")
def component_purity(run: Run, cache: dict) -> dict[str, Any]:
    """Which class each mixture component of p draws, and whether q recovers the component.

    A logistic regression fitted on the training split (its first
    ``PURITY_TRAIN_EXAMPLES`` examples, with their labels) reads ``PURITY_SAMPLES``
    samples of each component (the component fixed, everything else drawn from p), and q
    infers the component back from them (:func:`ggdsl.evaluate.metrics.component_purity`).
    Labels are used only to score. Next to ``clustering_accuracy`` this tells where a
    clustering falls short: in p (impure components, classes no component draws) or in
    q (it recovers p's components from p's samples but not from real data).
    ``component_classifier_accuracy`` is the classifier's own accuracy on the test split.
    """
    from sklearn.linear_model import LogisticRegression

    from ggdsl.evaluate.metrics import component_purity as score
    from ggdsl.train import open_dataset

    k = cluster_latent(run)
    name = run.spec.observed[0]
    label_key = run.spec.data.get("labels")
    if k is None or run.spec.model[k].given or not label_key or run.spec.model[name].steps:
        raise EvalError(
            "component_purity needs a root categorical latent, one observed variable per example and `data.labels`"
        )
    train = open_dataset(run.spec, "train")
    feature = run.spec.data.observe[name]
    n = min(train.num_examples, PURITY_TRAIN_EXAMPLES)
    x_train = np.asarray(train.features[feature][:n], np.float32).reshape(n, -1)
    classifier = LogisticRegression(max_iter=300).fit(x_train, train.features[label_key][:n])
    x_test, labels = _test_data(run, cache)
    flat_test = np.asarray(x_test[name], np.float32).reshape(len(labels), -1)
    classes = int(run.spec.model[k].get("classes"))
    onehots = np.repeat(np.eye(classes, dtype=np.float32), PURITY_SAMPLES, axis=0)
    drawn = run.generate({k: onehots}, key=run.step)[name]
    finite = np.isfinite(drawn.reshape(classes, -1)).all(axis=1)
    if not finite.all():
        raise EvalError(f"p's samples of component(s) {np.flatnonzero(~finite).tolist()} are not finite")
    read = classifier.predict(drawn.reshape(len(drawn), -1)).reshape(classes, PURITY_SAMPLES)
    recovered = run.infer({name: drawn}, key=run.step)[f"{k}_probs"].argmax(-1).reshape(classes, PURITY_SAMPLES)
    return score(read, recovered) | {"component_classifier_accuracy": float(classifier.score(flat_test, labels))}


@register_evaluation("factor_divergences")
def factor_divergences(run: Run, cache: dict) -> dict[str, Any]:
    """Each discriminator's accuracy telling q-side from p-side tuples on test data."""
    x, _ = _test_data(run, cache)
    compiled = run.compiled

    def accuracies(state, batch, key):
        gen = compiled.generative(state)
        critics = compiled.critics(state)
        observed = split_observed(compiled.plan, batch)
        n = next(iter(observed.values())).shape[0]
        q_values, _, _ = sample_q(gen, compiled.plan, observed, key, train=False, settings=compiled.settings)
        p_values = sample_p(gen, compiled.plan, n, jax.random.fold_in(key, 1), train=False, settings=compiled.settings)
        lq = discriminator_logits(critics, compiled.plan, q_values, train=False)
        lp = discriminator_logits(critics, compiled.plan, p_values, train=False)
        return {g: 0.5 * (jnp.mean(lq[g] > 0) + jnp.mean(lp[g] < 0)) for g in lq}

    fn = compiled.jitted("factor_accuracies", accuracies)

    n = min(len(next(iter(x.values()))), 2000)
    accs = [
        fn(run.state, {k: jnp.asarray(v[i : i + EVAL_BATCH]) for k, v in x.items()}, jax.random.key(i))
        for i in range(0, n, EVAL_BATCH)
    ]
    return {f"factor_accuracy/{g}": float(np.mean([float(a[g]) for a in accs])) for g in accs[0]}


#: Analogies made by ``motion_analogy`` (at most), and how many of them its figure shows.
ANALOGY_PAIRS = 250
ANALOGY_SHOWN = 4


@register_evaluation("motion_analogy")
def motion_analogy(run: Run, cache: dict) -> dict[str, Any]:
    """The content of one test video moving as another moves (the paper's Figures 5-7).

    The global latents (``h``) are inferred from a content video, the per-step latents
    (``v[1..T]``) from a motion video, and the frames generated from both
    (:meth:`ggdsl.run.Run.analogy`); the test split's first half gives the content, its
    second half the motion, paired so that their labels differ
    (:func:`ggdsl.evaluate.video.analogy_pairs`). The figure shows rows content, motion,
    analogy. On moving digits with labels, a digit classifier trained on the image
    source (:func:`ggdsl.evaluate.video.digit_classifier`) reads each analogy (majority
    over its frames): ``motion_analogy_content_accuracy`` is the fraction read as the
    content video's digit, ``motion_analogy_motion_accuracy`` as the motion video's, and
    ``motion_analogy_classifier_accuracy`` the classifier's accuracy on the real test
    videos, read the same way. Other data get the figure and a reason for no score.
    """
    from ggdsl.evaluate.figures import labelled_strips
    from ggdsl.evaluate.video import analogy_pairs, digit_classifier, to_unit

    name = run.spec.observed[0]
    if not run.spec.model[name].steps:
        raise EvalError(f"motion_analogy needs videos: the observed '{name}' has no steps")
    x, labels = _test_data(run, cache)
    count = min(len(x[name]), 2 * ANALOGY_PAIRS)
    labels = None if labels is None else labels[:count]
    content, motion = analogy_pairs(count, labels)
    made = run.analogy({k: v[content] for k, v in x.items()}, {k: v[motion] for k, v in x.items()}, key=run.step)[name]
    videos = x[name]
    shown = min(ANALOGY_SHOWN, len(content))
    rows = np.stack([videos[content[:shown]], videos[motion[:shown]], made[:shown]], 1).reshape(-1, *made.shape[1:])
    names = ["content", "motion", "analogy"]
    if labels is not None:
        names = [
            f"{row} ({labels[i]})"
            for c, m in zip(content[:shown], motion[:shown], strict=True)
            for row, i in zip(names, (c, m, c), strict=True)
        ]
    else:
        names = names * shown
    out = run.dir.figures_dir / "motion_analogy.png"
    labelled_strips(rows, names, str(out), run.spec.data.range)
    result: dict[str, Any] = {"motion_analogy_figure": out.name, "motion_analogy_pairs": len(content)}
    need = "analogies are scored by reading the content video's digit, so they need moving_digits videos"
    if run.spec.data.source != "moving_digits":
        result["motion_analogy_score_skipped"] = f"no score for data source '{run.spec.data.source}': {need}"
    elif labels is None:
        result["motion_analogy_score_skipped"] = f"no score without data.labels: {need} with their labels"
    elif run.spec.data.get("resize"):
        result["motion_analogy_score_skipped"] = f"no score with data.resize: {need} at their own size"
    if "motion_analogy_score_skipped" in result:
        return result
    classifier = digit_classifier(run.spec.data.get("images", "mnist"), run.spec.data.get("path"), int(videos.shape[2]))
    value_range = run.spec.data.range
    read = classifier.predict_videos(to_unit(made, value_range))
    real = classifier.predict_videos(to_unit(videos[:count], value_range))
    result.update(
        {
            "motion_analogy_content_accuracy": float(np.mean(read == labels[content])),
            "motion_analogy_motion_accuracy": float(np.mean(read == labels[motion])),
            "motion_analogy_classifier_accuracy": float(np.mean(real == labels)),
        }
    )
    return result


def run_evaluations(run: Run, names: Iterable[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"step": run.step, **(run.selected or {})}
    cache: dict = {}
    for name in names:
        if name not in EVALUATIONS:
            raise EvalError(f"unknown evaluation '{name}' (known: {', '.join(sorted(EVALUATIONS))})")
        try:
            results.update(EVALUATIONS[name](run, cache))
        except EvalError as error:
            results[f"{name}_skipped"] = str(error)
    return results


def evaluate_state(compiled: Compiled, state: TrainState, run_dir: RunDir, *, step: int) -> dict[str, Any]:
    """The spec's evaluations on a model in memory."""
    run = Run.from_state(compiled, state, run_dir, step)
    return run_evaluations(run, compiled.spec.eval)


def selection_score(compiled: Compiled, state: TrainState, run_dir: RunDir, step: int, held: Any) -> float:
    """The ``train.select`` score of a model on the held-out training examples (lower is better).

    ``reconstruction_mse``: mean squared error of x against its reconstruction through q
    and p. ``discriminator``: mean over factors of |accuracy - 0.5| of each discriminator
    telling q-side from p-side tuples (0 when every discriminator is at chance). Labels are
    never read.
    """
    criterion = compiled.spec.train.select
    run = Run.from_state(compiled, state, run_dir, step)
    x = {var: held.features[feature] for var, feature in compiled.spec.data.observe.items()}
    cache: dict = {"test": (x, None)}
    if criterion == "reconstruction_mse":
        original, recon = _reconstruction(run, cache)
        score = float(np.mean((original - recon) ** 2))
    elif criterion == "discriminator":
        accuracies = factor_divergences(run, cache)
        score = float(np.mean([abs(a - 0.5) for a in accuracies.values()]))
    else:
        raise EvalError(f"train.select: unknown criterion {criterion!r}")
    return score if np.isfinite(score) else float("inf")


#: Evaluations cheap enough to run every ``train.eval_every`` steps (when the spec lists them).
QUICK_EVALUATIONS = ("clustering_accuracy", "reconstruction_mse", "video_reconstruction", "motion_analogy", "samples")


def quick_eval(compiled: Compiled, state: TrainState, run_dir: RunDir, step: int) -> dict[str, Any]:
    """Evaluations during training, those of the spec's ``eval`` list among
    :data:`QUICK_EVALUATIONS`: clustering accuracy, reconstruction error (images or videos),
    motion analogies and a sample grid. Their numbers go to ``metrics.jsonl`` as ``eval/...``."""
    names = [n for n in QUICK_EVALUATIONS if n in compiled.spec.eval]
    run = Run.from_state(compiled, state, run_dir, step)
    results = run_evaluations(run, names)
    return {k: v for k, v in results.items() if isinstance(v, (int, float)) and k != "step"}


def evaluate_run(run_dir: str | Path, names: Iterable[str] | None = None) -> dict[str, Any]:
    """``ggdsl eval``: the spec's evaluations on the latest checkpoint; writes eval.json and report.html."""
    from ggdsl.evaluate.report import write_report

    run = load_run(run_dir)
    results = run_evaluations(run, names or run.spec.eval)
    run.dir.write_eval(results)
    write_report(run.dir, results)
    return results
