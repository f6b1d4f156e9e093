"""Whether the image discriminator's features read real digits better than q does.

InfoGAN reads its codes with a head on the discriminator's trunk, which is trained on real
and generated images alike. For a GMGAN run this asks whether that trunk would help here:
it takes the image tower of D(x, h) (the layers before h joins), draws ``--per-component``
samples from each of p's components, and fits a logistic regression from the tower's
features of p's samples to their component; the Hungarian accuracy of its reading of real
test images is set beside q's, and beside the same classifier on raw pixels. It also
clusters the real test images with k-means (on PCA-50 of the pixels, of the tower's
features, and on q's codes h = E(x)):

    python benchmarks/quality/discriminator_features.py RUN [--step N]
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
from _components import add_run_arguments, component_samples
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from ggdsl.evaluate import run_eval
from ggdsl.evaluate.metrics import hungarian_accuracy


def image_tower(discriminator, x_name: str, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The flattened output of the discriminator's branch that reads ``x_name`` alone."""
    for names, blocks in zip(discriminator.branch_inputs, discriminator.branches, strict=True):
        if tuple(names) == (x_name,):
            parts = []
            for start in range(0, len(images), batch):
                out = jnp.asarray(images[start : start + batch])
                for block in blocks:
                    out = block(out, train=False)
                parts.append(np.asarray(out).reshape(len(out), -1))
            return np.concatenate(parts)
    raise SystemExit(f"no discriminator branch reads {x_name!r} alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    args = parser.parse_args()

    drawn = component_samples(args)
    run, x_name, test_x, labels = drawn.run, drawn.x_name, drawn.test_x, drawn.labels
    samples, components, classes = drawn.samples, drawn.components, len(np.unique(drawn.components))
    print(f"step {run.step}; q on real test images: {drawn.q_accuracy:.3f}")

    discriminators = run.compiled.critics(run.state).discriminators
    (discriminator,) = [d for d in discriminators.values() if any(tuple(n) == (x_name,) for n in d.branch_inputs)]
    readings = {
        "pixels": (test_x.reshape(len(test_x), -1), samples.reshape(len(samples), -1)),
        "D(x, h)'s image tower": (
            image_tower(discriminator, x_name, test_x),
            image_tower(discriminator, x_name, samples),
        ),
    }
    for name, (real, drawn) in readings.items():
        fitted = LogisticRegression(max_iter=300, C=0.1).fit(drawn, components)
        accuracy = hungarian_accuracy(labels, fitted.predict(real))
        print(f"{name}: logistic regression fitted on p's samples reads real images at {accuracy:.3f}")
        clusters = KMeans(classes, n_init=5, random_state=0).fit_predict(PCA(50, random_state=0).fit_transform(real))
        print(f"{name}: k-means on PCA-50 of real images {hungarian_accuracy(labels, clusters):.3f}")
    code = run_eval.code_latent(run)
    if code is not None:
        clusters = KMeans(classes, n_init=5, random_state=0).fit_predict(drawn.inferred[code][: args.test])
        print(f"q's codes {code} = E(x): k-means on real images {hungarian_accuracy(labels, clusters):.3f}")


if __name__ == "__main__":
    main()
