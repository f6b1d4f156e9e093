"""Time ggdsl's compiled training step of every bundled family against hand-written JAX and PyTorch.

Run (from the repository root, in the project's virtual environment)::

    python benchmarks/bench_all.py                          # every family, full run (~25-35 min on 2 cores)
    python benchmarks/bench_all.py --quick                  # smoke run: every family and implementation
    python benchmarks/bench_all.py --family ssgan_t16 --devices 2   # one family, also on 2 host devices

The families (``--family``, a comma list, default ``all``):

- ``gmgan_conv``: the paper's conv MNIST GMGAN (``gmgan_mnist``), batch 50.
- ``gmgan_mlp``: the CPU-budget MLP GMGAN (``gmgan_mnist_cpu``, batch 64): MLP generator and
  extractor, an MLP critic for ``x|h``, R1, reconstruction and latent reconstruction.
- ``ssgan_t16``: the 16-frame state-space GAN (``ssgan_moving_digits_t16_cpu``, batch 16,
  32x32 frames); throughput in frames (batch x 16) per second.

Each family is one run of ``bench_gmgan.measure`` (spawned process per implementation,
the order rotating per repeat, paired ratios, the parameter table against ``ggdsl
explain``); see that module and ``benchmarks/README.md``. Results go to
``benchmarks/results/<family>_cpu.json`` (``--quick`` writes nothing unless ``--out-dir``
is given); the end of the output is a summary with the markdown rows of the README table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import bench_gmgan

HERE = Path(__file__).resolve().parent
FAMILIES = {
    "gmgan_conv": {"spec": "gmgan_mnist", "title": "GMGAN conv (paper MNIST)", "quick_batch": 10},
    "gmgan_mlp": {"spec": "gmgan_mnist_cpu", "title": "GMGAN MLP (R1, recon, latent recon)", "quick_batch": 16},
    "ssgan_t16": {"spec": "ssgan_moving_digits_t16_cpu", "title": "SSGAN T=16 (32x32 frames)", "quick_batch": 2},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="all", help=f"comma list from {', '.join(FAMILIES)}, or all (default)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per implementation (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first call (default 2)")
    parser.add_argument("--batch", type=int, help="batch size for every family (default: each spec's own)")
    parser.add_argument(
        "--impls", help="comma list for every family (default: each family's references; see bench_gmgan.py)"
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="also time ggdsl on N host devices (ggdsl-<N>dev) and print N devices over 1",
    )
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--no-profile", action="store_true", help="skip the HLO profile and per-part timings")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 steps, 1 repeat, small batches, no profile, every implementation",
    )
    parser.add_argument("--out-dir", help="where the JSON files go (default benchmarks/results; none for --quick)")
    args = parser.parse_args(argv)
    names = list(FAMILIES) if args.family == "all" else [f.strip() for f in args.family.split(",") if f.strip()]
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        parser.error(f"--family: unknown {unknown} (known: {', '.join(FAMILIES)}, all)")
    args.families = names
    if args.devices < 1:
        parser.error("--devices: at least 1")
    return args


def family_argv(args, family: str) -> list[str]:
    """The ``bench_gmgan`` command line of one family."""
    settings = FAMILIES[family]
    steps, repeats, warmup = args.steps, args.repeats, args.warmup
    batch = args.batch
    if args.quick:
        steps, repeats, warmup = min(steps, 2), 1, 1
        batch = batch or settings["quick_batch"]
    argv = [
        "--spec",
        settings["spec"],
        "--steps",
        str(steps),
        "--repeats",
        str(repeats),
        "--warmup",
        str(warmup),
        "--devices",
        str(args.devices),
    ]
    if batch:
        argv += ["--batch", str(batch)]
    if args.impls:
        argv += ["--impls", args.impls]
    if args.torch_threads:
        argv += ["--torch-threads", str(args.torch_threads)]
    if args.no_profile or args.quick:
        argv.append("--no-profile")
    return argv


def summary_row(family: str, data: dict) -> dict:
    """The numbers of the README table for one family."""
    results, ratios = data["results"], data["ratios"]

    def get(impl, key):
        return results.get(impl, {}).get(key)

    devices = [name for name in ratios if name.endswith("/ggdsl")]
    return {
        "family": family,
        "spec": data["spec"],
        "batch": data["batch"],
        "unit": data["unit"],
        "steps_per_s": {impl: r["steps_per_s_median"] for impl, r in results.items()},
        "ggdsl_images_per_s": get("ggdsl", "images_per_s"),
        "ratio_vs_jax_hand": ratios.get("ggdsl/jax-hand", {}).get("paired"),
        "ratio_vs_torch": ratios.get("ggdsl/torch", {}).get("paired"),
        "compile_s": {impl: r.get("compile_s") for impl, r in results.items() if r.get("compile_s") is not None},
        "peak_rss_mib": {impl: r["peak_rss_mib"] for impl, r in results.items()},
        "devices": {name.split("/")[0]: ratios[name]["paired"] for name in devices},
        "params_match": all(r.get("params") == data["explain_params"] for r in results.values()),
    }


def fmt(value, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def print_summary(rows: list[dict]) -> None:
    print("\n" + "=" * 100)
    print("Summary (steps/s: median; ratios: paired, ggdsl over the reference, > 1 = ggdsl faster)")
    header = (
        "| family | spec, batch | ggdsl steps/s | jax-hand steps/s | torch steps/s | ggdsl / jax-hand "
        "| ggdsl / torch | ggdsl images (frames)/s | compile s (ggdsl / jax-hand) "
        "| peak RSS MiB (ggdsl / jax-hand / torch) | N devices / 1 | same params |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for row in rows:
        steps, compile_s, rss = row["steps_per_s"], row["compile_s"], row["peak_rss_mib"]
        unit = "frames" if row["unit"] == "frames" else "images"
        devices = ", ".join(f"{name.removeprefix('ggdsl-')}: {value:.2f}" for name, value in row["devices"].items())
        cells = [
            FAMILIES[row["family"]]["title"],
            f"`{row['spec']}`, {row['batch']}",
            fmt(steps.get("ggdsl")),
            fmt(steps.get("jax-hand")),
            fmt(steps.get("torch")),
            fmt(row["ratio_vs_jax_hand"]),
            fmt(row["ratio_vs_torch"]),
            f"{fmt(row['ggdsl_images_per_s'], '{:.0f}')} {unit}",
            f"{fmt(compile_s.get('ggdsl'), '{:.1f}')} / {fmt(compile_s.get('jax-hand'), '{:.1f}')}",
            " / ".join(fmt(rss.get(i), "{:.0f}") for i in ("ggdsl", "jax-hand", "torch")),
            devices or "-",
            "yes" if row["params_match"] else "**NO**",
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else (None if args.quick else HERE / "results")
    rows, failed = [], []
    for family in args.families:
        print(f"\n{'=' * 100}\n{family}: {FAMILIES[family]['title']}\n{'=' * 100}", flush=True)
        family_args = bench_gmgan.parse_args(family_argv(args, family))
        try:
            data = bench_gmgan.measure(family_args)
        except SystemExit as error:  # a bad option for this family (e.g. a batch N devices cannot split)
            print(f"{family}: skipped: {error}", flush=True)
            failed.append(family)
            continue
        data["family"] = family
        bench_gmgan.report(data)
        if not data["results"] or data["failed"]:
            failed.append(family)
        if data["results"]:
            rows.append(summary_row(family, data))
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{family}_cpu.json"
            path.write_text(json.dumps(data, indent=1) + "\n")
            print(f"\nwrote {path}", flush=True)
    if rows:
        print_summary(rows)
    if out_dir is None:
        print("\n(quick run: no JSON written; pass --out-dir DIR to keep it)")
    if failed:
        print(f"\nfamilies with failures: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
