"""Held-out reconstruction error of a run under three sets of generator batch-norm statistics.

Training normalises the generator's batch-norm layers with batch statistics in two passes
per step, p's ancestral samples and the reconstructions G(E(x)), and its running averages
blend the two; evaluation uses the running averages. This script re-estimates them from
one pass only and reports the test reconstruction error (``video_reconstruction_mse`` or
``reconstruction_mse``) under each:

    python benchmarks/quality/batch_norm_statistics.py RUN [--step N] [--videos 256] [--passes 60]

``stored``: the checkpoint's running averages (what ``ggdsl eval`` uses); ``p``: re-estimated
on p's own samples; ``q``: re-estimated on reconstructions of test data. A large gap between
``q`` and the others says that q's codes of real data do not lie where p draws its codes.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from flax import nnx

from ggdsl.errors import GGDSLError
from ggdsl.evaluate import run_eval
from ggdsl.objective import reconstruct, sample_p, sample_q, split_observed
from ggdsl.run import Run, load_run


def reestimated(run: Run, source: str, batch: dict[str, np.ndarray], passes: int):
    """The generator's non-parameter state after ``passes`` training-mode passes of one kind."""
    compiled = run.compiled
    gen = compiled.generative(run.state)
    size = len(next(iter(batch.values())))

    @nnx.jit
    def one_pass(gen, key):
        if source == "p":
            sample_p(gen, compiled.plan, size, key, train=True, settings=compiled.settings)
        else:
            observed = split_observed(compiled.plan, batch)
            values, _, _ = sample_q(gen, compiled.plan, observed, key, train=False, settings=compiled.settings)
            reconstruct(gen, compiled.plan, values, key, train=True)

    for index in range(passes):  # momentum 0.9: 60 passes leave 0.9**60 < 0.2% of the old averages
        one_pass(gen, jax.random.key(index))
    return nnx.split(gen, nnx.Param, ...)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--step", type=int, default=None, help="checkpoint (default: the latest)")
    parser.add_argument("--videos", type=int, default=256, help="test examples to reconstruct")
    parser.add_argument("--passes", type=int, default=60)
    args = parser.parse_args()
    if args.videos < 2 or args.passes < 1:
        parser.error(f"--videos must be at least 2 and --passes at least 1 (got {args.videos} and {args.passes})")
    try:
        run = load_run(args.run, args.step)
    except GGDSLError as error:
        parser.exit(1, f"{parser.prog}: {error}\n")
    x, _ = run_eval._test_data(run, {})
    test = {name: value[: args.videos] for name, value in x.items()}
    half = {name: value[: args.videos // 2] for name, value in test.items()}
    stored = run.state
    for source in ("stored", "p", "q"):
        if source != "stored":
            run.state = {**stored, "g_rest": reestimated(run, source, half, args.passes)}
        latents = run.infer(test, key=1)
        made = run.generate({n: latents[n] for n in run.spec.latent}, key=1)
        error = np.mean([np.mean((made[n] - test[n]) ** 2) for n in test])
        print(f"{source:>6}: held-out reconstruction MSE {error:.5f}")


if __name__ == "__main__":
    main()
