"""How well classifiers fitted on p's own samples carry over to real test images.

For a GMGAN run: draws ``--per-component`` samples of x from each component of p, labels
each by its component, and fits a classifier on them (scikit-learn: logistic regression
and a one-hidden-layer MLP), once on the samples as drawn and once with two randomly
transformed copies of each added (the same affine maps as ``objective.augment``). Each
classifier then assigns the real test images; the Hungarian accuracy of that assignment
against the labels says how far p's samples alone teach an extractor to read real
digits, and whether transforming them helps. Also prints q's own accuracy, and how often q
gives back the component of p's samples as drawn and as transformed:

    python benchmarks/quality/samples_to_real.py RUN [--step N] [--shift 2 --rotate 15 --scale 0.1]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _components import add_run_arguments, component_samples
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

from ggdsl.evaluate.metrics import hungarian_accuracy
from ggdsl.objective import random_affine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--shift", type=float, default=2.0)
    parser.add_argument("--rotate", type=float, default=15.0)
    parser.add_argument("--scale", type=float, default=0.1)
    args = parser.parse_args()

    drawn = component_samples(args)
    run, test_x, labels, samples, components = drawn.run, drawn.test_x, drawn.labels, drawn.samples, drawn.components
    print(f"q on real test images: {drawn.q_accuracy:.3f}")

    def transformed(images: np.ndarray, seed: int) -> np.ndarray:
        key = jax.random.key(seed)
        return np.asarray(random_affine(jnp.asarray(images), key, args.shift, args.rotate, args.scale))

    moved = transformed(samples, 0)
    back = run.infer(samples)["k_probs"].argmax(-1)
    back_moved = run.infer(moved)["k_probs"].argmax(-1)
    print(
        f"q gives back the component of p's samples: {np.mean(back == components):.3f} as drawn, "
        f"{np.mean(back_moved == components):.3f} transformed"
    )

    training = {
        "as drawn": (samples, components),
        "with 2 transformed copies": (
            np.concatenate([samples, moved, transformed(samples, 1)]),
            np.tile(components, 3),
        ),
    }
    flat_test = test_x.reshape(len(test_x), -1)
    for name, make in {
        "logistic regression": lambda: LogisticRegression(max_iter=300, C=0.1),
        "MLP (256)": lambda: MLPClassifier((256,), max_iter=60, random_state=0),
    }.items():
        for label, (images, targets) in training.items():
            model = make().fit(images.reshape(len(images), -1), targets)
            accuracy = hungarian_accuracy(labels, model.predict(flat_test))
            print(f"{name}, fitted on p's samples {label}: {accuracy:.3f} on real test images")


if __name__ == "__main__":
    main()
