"""What the quality scripts share: a run's test images, q's reading of them, and samples
drawn from each of p's mixture components, labelled by their component."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from ggdsl.evaluate import run_eval
from ggdsl.evaluate.metrics import hungarian_accuracy
from ggdsl.run import Run, load_run


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN, ``--step``, ``--per-component`` and ``--test``."""
    parser.add_argument("run")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--per-component", type=int, default=400)
    parser.add_argument("--test", type=int, default=5000, help="test images to assign")


@dataclass
class ComponentSamples:
    run: Run
    x_name: str
    test_x: np.ndarray  # the first ``--test`` test images
    labels: np.ndarray  # their labels, used only to score
    q_accuracy: float  # Hungarian accuracy of q(k | x) on them
    inferred: dict  # q's reading of the whole test split (``k_probs``, the codes)
    samples: np.ndarray  # ``--per-component`` images from each component of p, in component order
    components: np.ndarray  # the component of each sample


def component_samples(args: argparse.Namespace) -> ComponentSamples:
    """Load the run named by ``args`` and draw p's samples component by component."""
    run = load_run(args.run, step=args.step)
    cache: dict = {}
    (x_name,) = run.spec.observed
    test, labels = run_eval._test_data(run, cache)
    test_x, labels = test[x_name][: args.test], labels[: args.test]
    inferred = run_eval._inferred(run, cache)
    q_accuracy = hungarian_accuracy(labels, inferred["k_probs"][: args.test].argmax(-1))
    classes = int(run.spec.model["k"].options["classes"])
    n = args.per_component
    one_hot = np.eye(classes, dtype=np.float32)
    samples = np.concatenate(
        [run.sample(n, key=k, fixed={"k": one_hot[np.full(n, k)]})[x_name] for k in range(classes)]
    )
    components = np.repeat(np.arange(classes), n)
    return ComponentSamples(run, x_name, test_x, labels, q_accuracy, inferred, samples, components)
