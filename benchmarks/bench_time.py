"""Step time and compile time of a state-space GAN against the number of time steps T.

Run (from the repository root, in the project's virtual environment)::

    python benchmarks/bench_time.py                       # ssgan_moving_mnist_t16 at T = 4, 8, 16, 31
    python benchmarks/bench_time.py --steps-list 4,8 --unrolled   # also the one-call-per-step reference
    python benchmarks/bench_time.py --spec ssgan_moving_mnist_t4_cpu --batch 8 --quick

Each (T, mode) runs in its own spawned process (a cold compile, its own peak RSS). ``stacked``
is ggdsl's step: the copies of a tied template run as one call (frame generator, frame
extractor, discriminators) or one ``lax.scan`` (the transition chain), so the traced program
does not grow with T. ``unrolled`` (``--unrolled``) is the same model with one network call
per time step (``Settings.stack_steps=False``), the reference the stacked step is meant to
beat. Compile time is ``jit(...).lower(...).compile()``; step time is the median of
``--repeats`` timings of ``--iters`` steps after ``--warmup`` steps, on one fixed random batch
(no data loading). The script prints a table with per-frame ratios (step time / T, relative to
the smallest T) and writes ``benchmarks/results/time_scaling_cpu.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(config: dict) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ggdsl import load_spec
    from ggdsl.cli import resolve_spec_path
    from ggdsl.compiled import compile_spec

    overrides = [f"time.steps={config['T']}", f"train.batch_size={config['batch']}", *config["overrides"]]
    spec = load_spec(resolve_spec_path(config["spec"]), overrides=overrides)
    compiled = compile_spec(spec)
    if config["mode"] == "unrolled":
        compiled = dataclasses.replace(compiled, settings=dataclasses.replace(compiled.settings, stack_steps=False))
    state = compiled.init_state(0)
    (name,) = [n for n, v in spec.model.items() if v.observed]
    shape = (config["batch"], config["T"], *spec.model[name].shape)
    batch = {name: jnp.asarray(np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32))}
    step = compiled.make_step(jax.random.key(0), jit=False)
    jitted = jax.jit(step, donate_argnums=0)
    start = time.perf_counter()
    executable = jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    for _ in range(config["warmup"]):
        state, metrics = executable(state, batch)
    jax.block_until_ready(state)
    times = []
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        for _ in range(config["iters"]):
            state, metrics = executable(state, batch)
        jax.block_until_ready(state)
        times.append((time.perf_counter() - start) / config["iters"])
    import resource

    assert all(bool(jnp.isfinite(v)) for v in metrics.values())
    return {
        **{k: config[k] for k in ("T", "mode", "batch")},
        "compile_s": compile_s,
        "step_s": statistics.median(times),
        "step_s_all": times,
        "frames_per_s": config["batch"] * config["T"] / statistics.median(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _child(config: dict, queue) -> None:
    try:
        queue.put(measure(config))
    except Exception as error:  # reported by the parent
        queue.put({"T": config["T"], "mode": config["mode"], "error": repr(error)})


def run_one(config: dict) -> dict:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(config, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="ssgan_moving_mnist_t16")
    parser.add_argument("--steps-list", default="4,8,16,31", help="the values of T (comma list)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--unrolled", action="store_true", help="also time one network call per step")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--quick", action="store_true", help="T = 2, 4 with one timed step")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/time_scaling_cpu.json)")
    args = parser.parse_args()
    steps = [2, 4] if args.quick else [int(t) for t in args.steps_list.split(",")]
    if args.quick:
        args.iters, args.repeats, args.warmup = 1, 1, 0
    os.environ.setdefault("GGDSL_CACHE_DIR", "off")  # cold compiles: the persistent cache would hide them
    modes = ["stacked", "unrolled"] if args.unrolled else ["stacked"]
    results = []
    for mode in modes:
        for t in steps:
            config = {
                "spec": args.spec,
                "overrides": args.set,
                "T": t,
                "mode": mode,
                "batch": args.batch,
                "iters": args.iters,
                "repeats": args.repeats,
                "warmup": args.warmup,
            }
            result = run_one(config)
            results.append(result)
            if "error" in result:
                print(f"T={t} {mode}: error {result['error']}")
            else:
                print(
                    f"T={t:3d} {mode:9s} compile {result['compile_s']:7.1f} s   step {result['step_s'] * 1e3:8.1f} ms"
                    f"   {result['frames_per_s']:8.1f} frames/s   peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    print()
    print("| mode | T | compile s | compile / smallest T | step ms | step per frame / smallest T |")
    print("| --- | --- | --- | --- | --- | --- |")
    for mode in modes:
        rows = [r for r in results if r["mode"] == mode and "error" not in r]
        if not rows:
            continue
        base = rows[0]
        for r in rows:
            per_frame = (r["step_s"] / r["T"]) / (base["step_s"] / base["T"])
            print(
                f"| {mode} | {r['T']} | {r['compile_s']:.1f} | {r['compile_s'] / base['compile_s']:.2f} "
                f"| {r['step_s'] * 1e3:.1f} | {per_frame:.2f} |"
            )
    if not args.quick or args.out:
        out = Path(args.out or HERE / "results" / "time_scaling_cpu.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "processor": platform.processor()},
            "spec": args.spec,
            "overrides": args.set,
            "results": results,
        }
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
