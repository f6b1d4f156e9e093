"""What the training loop's wait for the previous step costs: ``compile_and_train`` as shipped
(step n - 1 waited for once step n is queued) against the same loop with that wait removed
(``jax.block_until_ready`` made a no-op, so JAX queues as many steps as it will).

Each repeat trains the spec in this process for ``--steps`` steps, once each way in turn (the
order alternating), with no checkpoint, evaluation or log line between the first logged
interval and the end; the rate is the median of the logged intervals after the first (which
holds the compilation). Prints steps/s per repeat and the paired ratio, waiting / queued.

    python benchmarks/bench_loop_wait.py --spec gmgan_toy --steps 2000
    python benchmarks/bench_loop_wait.py --spec gmgan_digits --steps 400 --set train.batch_size=64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from unittest import mock

import jax

from ggdsl.runs import RunDir
from ggdsl.train import compile_and_train


def rate(spec: str, steps: int, overrides: list[str], wait: bool) -> float:
    """Median steps/s over the logged intervals after the first."""
    every = max(steps // 5, 1)
    settings = [
        f"train.steps={steps}",
        f"train.log_every={every}",
        f"train.checkpoint_every={10 * steps}",
        f"train.eval_every={10 * steps}",
        "eval=[]",
        *overrides,
    ]
    with tempfile.TemporaryDirectory() as out:
        if wait:
            result = compile_and_train(spec, out=out, progress=False, evaluate_at_end=False, overrides=settings)
        else:
            with mock.patch.object(jax, "block_until_ready", lambda x: x):
                result = compile_and_train(spec, out=out, progress=False, evaluate_at_end=False, overrides=settings)
        rates = [r["steps_per_s"] for r in RunDir(result.run_dir).read_metrics() if "steps_per_s" in r]
    return statistics.median(rates[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default="gmgan_toy")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.steps < 10 or args.repeats < 1:
        parser.error("--steps: at least 10; --repeats: at least 1")
    rate(args.spec, min(args.steps, 20), args.set, wait=True)  # fills the compilation cache
    ratios = []
    for repeat in range(args.repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        rates = {wait: rate(args.spec, args.steps, args.set, wait) for wait in order}
        ratios.append(rates[True] / rates[False])
        print(
            f"repeat {repeat + 1}/{args.repeats}: waiting {rates[True]:.1f} steps/s, "
            f"queued {rates[False]:.1f} steps/s, ratio {ratios[-1]:.3f}",
            flush=True,
        )
    print(f"{args.spec}: waiting / queued, median paired ratio {statistics.median(ratios):.3f} (1 = no cost)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
