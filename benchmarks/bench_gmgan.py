"""Time ggdsl's training step of one spec against a hand-written JAX step and a PyTorch eager twin.

Run (from the repository root, in the project's virtual environment)::

    python benchmarks/bench_gmgan.py                      # the paper's conv MNIST GMGAN, batch 50
    python benchmarks/bench_gmgan.py --quick              # < 1 minute smoke run (gmgan_digits)
    python benchmarks/bench_gmgan.py --spec gmgan_digits --steps 200
    python benchmarks/bench_gmgan.py --spec ssgan_moving_digits_t16_cpu --devices 2

``benchmarks/bench_all.py`` runs every bundled family (conv GMGAN, MLP GMGAN, SSGAN T=16)
through this module in one command. The references exist for GMGAN specs (k -> h -> x, with
the optional R1, reconstruction and latent-reconstruction terms: ``_gmgan_jax_ref``,
``_gmgan_torch_ref``) and SSGAN specs (content h, residual motion chain v, frames x:
``_ssgan_jax_ref``, ``_ssgan_torch_ref``); the spec's structure picks them.

Each implementation runs in its own spawned process (so compile time is cold, peak RSS is
its own, and the torch process never imports JAX); the parent tells them in turn to compile,
warm up and then run ``--steps`` steps, ``--repeats`` times, rotating the order every
repeat so that load on a shared machine hits all of them alike. Only one process computes
at a time. The implementations:

- ``ggdsl``: ``compile_spec(load_spec(spec)).make_step(key)``, the package's jitted step.
- ``jax-hand``: ``_gmgan_jax_ref.HandGMGAN`` with the same schedule as ggdsl (fresh p and q
  samples for the generator update). The main JAX reference.
- ``jax-hand-fused``: the same, with one generator/extractor pass shared by both updates
  (the usual hand-written GAN step).
- ``torch`` / ``torch-fused``: ``_gmgan_torch_ref.TorchGMGAN``, PyTorch eager on CPU, the
  same two schedules. Skipped with a message when torch is not installed
  (``pip install torch==2.13.0``).
- SSGAN specs: ``jax-hand`` (``_ssgan_jax_ref.HandSSGAN``, the transitions under
  ``lax.scan``), ``jax-hand-loop`` (an unrolled Python loop) and ``torch``
  (``_ssgan_torch_ref.TorchSSGAN``). The fused schedules exist for GMGAN specs without R1
  or reconstruction terms only.
- ``jax-hand-auto``: ``jax-hand`` with ggdsl's per-shape CPU convolutions
  (``ggdsl.nets.conv``) instead of im2col; ``jax-hand-lax``: with XLA's own convolutions.
- ``ggdsl-<N>dev`` (``--devices N``): ggdsl's step on N host devices (a process started with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``, ``--set train.devices=N``, the
  batch split over the mesh and the state replicated as ``ggdsl.train.DataParallel`` does).

Ratios are ggdsl's steps/s over the reference's (above 1: ggdsl is faster); "paired" is the
median over repeats of the ratio within one repeat, less sensitive to slow drifts in load.
Results go to ``benchmarks/results/`` as JSON (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCES = ("jax-hand", "jax-hand-fused", "jax-hand-loop", "jax-hand-auto", "jax-hand-lax", "torch", "torch-fused")
ALL_IMPLS = ("ggdsl", *REFERENCES)
TORCH_IMPLS = ("torch", "torch-fused")
TARGET_VS_JAX = 0.9  # ggdsl within 10% of the hand-written step
# What runs by default, per kind of spec (``--impls`` overrides). SSGAN: the transitions under
# lax.scan (jax-hand) run as fast as the unrolled loop (jax-hand-loop) and compile faster, so
# the loop is left out; jax-hand-auto (ggdsl's per-shape convolutions) separates the
# convolutions' share of the ratio from the rest of the step.
DEFAULT_IMPLS = {
    "gmgan": ("ggdsl", "jax-hand", "jax-hand-fused", "torch", "torch-fused"),
    "gmgan+terms": ("ggdsl", "jax-hand", "torch"),  # R1 / reconstruction terms: no fused schedule
    "ssgan": ("ggdsl", "jax-hand", "jax-hand-auto", "torch"),
}
# What the references can run, per kind of spec.
VALID_IMPLS = {
    "gmgan": ("ggdsl", "jax-hand", "jax-hand-fused", "jax-hand-auto", "jax-hand-lax", "torch", "torch-fused"),
    "gmgan+terms": ("ggdsl", "jax-hand", "jax-hand-auto", "jax-hand-lax", "torch"),
    "ssgan": ("ggdsl", "jax-hand", "jax-hand-loop", "jax-hand-auto", "jax-hand-lax", "torch"),
}


# --------------------------------------------------------------------------- shared setup
def load_plan(config: dict):
    from ggdsl import load_spec
    from ggdsl.cli import resolve_spec_path
    from ggdsl.plan import plan_model

    spec = load_spec(resolve_spec_path(config["spec"]), overrides=config["overrides"])
    return spec, plan_model(spec)


def observed_variable(plan) -> str:
    """The spec's one observed variable (the references have one)."""
    names = [name for name, var in plan.spec.model.items() if var.observed]
    if len(names) != 1:
        raise ValueError(f"{plan.spec.name}: the benchmark needs exactly one observed variable, found {names}")
    return names[0]


def images_per_example(plan) -> int:
    """Frames per example: T for a video, 1 for an image."""
    var = plan.spec.model[observed_variable(plan)]
    return int(plan.spec.time.steps) if var.steps else 1


def make_batch(plan, batch: int, seed: int = 0):
    """One fixed data batch (float32, channels last: ``(B, H, W, C)``, a video ``(B, T, H, W, C)``)
    in the spec's data range."""
    import numpy as np

    var = plan.spec.model[observed_variable(plan)]
    low, high = plan.spec.data.range if plan.spec.data is not None else (0.0, 1.0)
    shape = (batch, *((plan.spec.time.steps,) if var.steps else ()), *var.event_shape)
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def reference_kind(plan) -> str:
    """``"gmgan"``, ``"gmgan+terms"`` (with R1 / reconstruction terms) or ``"ssgan"``: which references fit.

    Raises:
        ValueError: Neither reference implements the spec (the message says why, for both).
    """
    from _gmgan_plan import gmgan_nodes
    from _ssgan_plan import ssgan_nodes

    try:
        gmgan_nodes(plan)
    except ValueError as gmgan_error:
        try:
            ssgan_nodes(plan)
        except ValueError as ssgan_error:
            raise ValueError(f"{gmgan_error}; {ssgan_error}") from None
        return "ssgan"
    objective = plan.spec.objective
    return "gmgan+terms" if objective.r1 or objective.reconstruction or objective.latent_reconstruction else "gmgan"


def device_count(impl: str) -> int:
    """N for ``ggdsl-<N>dev``, else 1."""
    match = re.fullmatch(r"ggdsl-(\d+)dev", impl)
    return int(match.group(1)) if match else 1


def hand_model(plan, impl: str):
    """The hand-written JAX model an implementation name asks for."""
    variant = impl.removeprefix("jax-hand").lstrip("-")
    kind = reference_kind(plan)
    if kind == "ssgan":
        from _ssgan_jax_ref import HandSSGAN

        options = {"": {}, "loop": {"transition": "loop"}, "auto": {"conv": "auto"}, "lax": {"conv": "lax"}}
        if variant not in options:
            raise ValueError(
                f"{impl}: no such variant for an SSGAN spec (jax-hand, jax-hand-loop, jax-hand-auto, jax-hand-lax)"
            )
        return HandSSGAN(plan, **options[variant])
    from _gmgan_jax_ref import HandGMGAN

    options = {"": {}, "fused": {"schedule": "fused"}, "auto": {"conv": "auto"}, "lax": {"conv": "lax"}}
    if variant not in options:
        raise ValueError(
            f"{impl}: no such variant for a GMGAN spec (jax-hand, jax-hand-fused, jax-hand-auto, jax-hand-lax)"
        )
    return HandGMGAN(plan, **options[variant])


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --------------------------------------------------------------------------- JAX profile
def hlo_profile(compiled) -> dict:
    """Op counts, FLOPs, bytes and donation of a compiled XLA executable."""
    text = compiled.as_text()
    entry, all_ops = Counter(), Counter()
    in_entry = False
    for line in text.splitlines():
        if line.startswith("ENTRY"):
            in_entry = True
        elif line.startswith("}"):
            in_entry = False
        match = re.match(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$", line)
        if not match or line.lstrip().startswith(("HloModule", "//")):
            continue
        rest = match.group(1)
        if rest.startswith("("):  # tuple shape: skip to its closing parenthesis
            depth = 0
            for index, char in enumerate(rest):
                depth += char == "("
                depth -= char == ")"
                if depth == 0:
                    rest = rest[index + 1 :]
                    break
        else:
            rest = rest.split(" ", 1)[1] if " " in rest else ""
        op = re.match(r"\s*([\w\-]+)\(", rest)
        if op:
            all_ops[op.group(1)] += 1
            if in_entry:
                entry[op.group(1)] += 1
    header = text.splitlines()[0] if text else ""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    keep = (
        "dot",
        "convolution",
        "fusion",
        "copy",
        "transpose",
        "pad",
        "slice",
        "concatenate",
        "custom-call",
        "scatter",
        "gather",
        "reduce",
        "rng-bit-generator",
        "while",
    )
    return {
        "gflops": round(float(cost.get("flops", 0.0)) / 1e9, 3),
        "gbytes_accessed": round(float(cost.get("bytes accessed", 0.0)) / 1e9, 3),
        "entry_instructions": sum(entry.values()),
        "entry_ops": {k: entry[k] for k in keep if entry[k]},
        "all_ops": {k: all_ops[k] for k in keep if all_ops[k]},
        "donated_buffers": header.count("-alias)"),
    }


def time_calls(function, args, calls: int) -> float:
    import jax

    jax.block_until_ready(function(*args))
    start = time.perf_counter()
    for _ in range(calls):
        out = function(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


# --------------------------------------------------------------------------- runners
class JaxRunner:
    """ggdsl's step or the hand-written one, on one fixed batch."""

    def __init__(self, impl: str, config: dict):
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # cold compiles
        self.devices = device_count(impl)
        if self.devices > 1:  # before JAX is imported: this process sees N host devices
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={self.devices}".strip()
            config = {**config, "overrides": [*config["overrides"], f"train.devices={self.devices}"]}
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.impl = impl
        self.spec, self.plan = load_plan(config)
        self.x = jnp.asarray(make_batch(self.plan, config["batch"]))
        self.patched = False
        self.build()

    def build(self):
        jax = self.jax
        if self.impl.startswith("ggdsl"):
            from ggdsl.compiled import compile_spec

            self.compiled = compile_spec(self.spec)
            self.state = self.compiled.init_state(0)
            self.step = self.compiled.make_step(jax.random.key(0))
            self.batch = {observed_variable(self.plan): self.x}
            if self.devices > 1:
                from ggdsl.train import DataParallel

                if jax.local_device_count() != self.devices:
                    raise RuntimeError(
                        f"{self.impl}: {jax.local_device_count()} devices, not {self.devices} "
                        "(was JAX imported before XLA_FLAGS was set?)"
                    )
                parallel = DataParallel(self.spec.train.devices, self.x.shape[0])
                self.state, self.batch = parallel.state(self.state), parallel.batch(self.batch)
        else:
            self.model = hand_model(self.plan, self.impl)
            self.state = self.model.init_state(0)
            self.step = self.model.make_step(jax.random.key(0))
            self.batch = self.x
        self.executable = None

    def first(self) -> dict:
        """Trace and lower, compile (timed apart), then one step."""
        start = time.perf_counter()
        try:
            lowered = self.step.lower(self.state, self.batch)
            traced = time.perf_counter()
            self.executable = lowered.compile()
            compiled = time.perf_counter()
            self.state, metrics = self.executable(self.state, self.batch)
        except Exception as error:  # noqa: BLE001 - a known ggdsl bug gets a documented workaround
            if not self.impl.startswith("ggdsl") or type(error).__name__ != "TraceContextError":
                raise
            self.patch_merge()
            return self.first()
        self.jax.block_until_ready((self.state, metrics))
        seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "trace_s": traced - start,
            "compile_s": compiled - traced,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "patched": self.patched,
        }

    def patch_merge(self):
        """Work around ggdsl's batch-norm trace bug: ``nnx.merge(..., copy=True)`` in the step.

        ``Compiled.make_step`` merges ``g_rest`` (batch-norm statistics created at the
        ``jit`` trace level) inside ``jax.grad``; updating them there raises flax's
        TraceContextError. ``copy=True`` creates fresh Variables at the inner trace level;
        it is trace-time only and changes nothing that runs.
        """
        import functools
        import types

        from flax import nnx

        import ggdsl.compiled as compiled_module

        shim = types.SimpleNamespace(**{n: getattr(nnx, n) for n in dir(nnx) if not n.startswith("__")})
        shim.merge = functools.partial(nnx.merge, copy=True)
        compiled_module.nnx = shim
        self.patched = True
        self.build()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.state, _ = self.executable(self.state, self.batch)
        self.jax.block_until_ready(self.state)
        return time.perf_counter() - start

    def param_counts(self) -> dict[str, int]:
        if not self.impl.startswith("ggdsl"):
            return self.model.param_counts(self.state)
        from ggdsl.build import module_key

        def size(tree):
            return sum(int(a.size) for a in self.jax.tree.leaves(tree))

        g, d = self.state["g_params"], self.state["d_params"]
        counts = {f"generator {k}": size(g["generators"][module_key(k)]) for k in self.plan.generators}
        counts.update({f"extractor {k}": size(g["extractors"][module_key(k)]) for k in self.plan.extractors})
        discs = d["discriminators"]
        counts.update({f"discriminator {k}": size(discs[module_key(k)]) for k in self.plan.discriminators})
        return counts

    def info(self, profile: bool) -> dict:
        jax = self.jax
        leaves = jax.tree.leaves(self.state)
        out = {
            "params": self.param_counts(),
            "state_leaves": len(leaves),
            "weak_typed_leaves": sum(bool(getattr(a, "weak_type", False)) for a in leaves),
            "non_f32_leaves": sorted({str(a.dtype) for a in leaves} - {"float32"}),
            "patched": self.patched,
            "devices": self.jax.local_device_count(),
        }
        if profile:
            start = time.perf_counter()
            out["hlo"] = hlo_profile(self.step.lower(self.state, self.batch).compile())
            out["hlo"]["lower_compile_s"] = round(time.perf_counter() - start, 2)
            if self.impl == "jax-hand":
                parts = self.model.part_fns(jax.random.key(1))
                out["parts_ms"] = {
                    name: round(1e3 * time_calls(f, (self.state, self.x), 5), 1) for name, f in parts.items()
                }
        out["peak_rss_mib"] = peak_rss_mib()
        return out


class TorchRunner:
    def __init__(self, impl: str, config: dict):
        # Passive OpenMP waiting: spinning threads collapse on a loaded shared machine (2 threads
        # measured 4-5x slower than 1 under load 9 with the default policy, on par with it passive).
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import torch

        if config.get("torch_threads"):
            torch.set_num_threads(config["torch_threads"])
        self.torch = torch
        self.spec, self.plan = load_plan(config)
        schedule = "fused" if impl.endswith("fused") else "resample"
        if reference_kind(self.plan) == "ssgan":
            from _ssgan_torch_ref import TorchSSGAN

            if schedule != "resample":
                raise ValueError(f"{impl}: the SSGAN twin has the resample schedule only (torch)")
            self.model = TorchSSGAN(self.plan)
        else:
            from _gmgan_plan import gmgan_nodes
            from _gmgan_torch_ref import TorchGMGAN

            self.model = TorchGMGAN(self.plan, gmgan_nodes(self.plan), schedule=schedule)
        # Channels last -> channels first: (B, H, W, C) -> (B, C, H, W), (B, T, H, W, C) -> (B, T, C, H, W).
        self.x = torch.from_numpy(make_batch(self.plan, config["batch"])).movedim(-1, -3).contiguous()

    def first(self) -> dict:
        start = time.perf_counter()
        d_loss, g_loss = self.model.step(self.x)
        return {
            "seconds": time.perf_counter() - start,
            "trace_s": None,
            "compile_s": None,
            "metrics": {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())},
            "patched": False,
        }

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.model.step(self.x)
        return time.perf_counter() - start

    def info(self, profile: bool) -> dict:
        return {
            "params": self.model.param_counts(),
            "torch_threads": self.torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "peak_rss_mib": peak_rss_mib(),
        }


def _worker(conn, impl: str, config: dict) -> None:
    sys.path.insert(0, str(HERE))
    try:
        runner = TorchRunner(impl, config) if impl in TORCH_IMPLS else JaxRunner(impl, config)
        conn.send(("ok", None))
    except Exception:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        command, argument = conn.recv()
        if command == "quit":
            return
        try:
            result = getattr(runner, command)(argument) if argument is not None else getattr(runner, command)()
            conn.send(("ok", result))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


# --------------------------------------------------------------------------- the driver
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", help="bundled spec name or path (default gmgan_mnist; gmgan_digits with --quick)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="spec override (repeatable)")
    parser.add_argument("--batch", type=int, help="batch size (default: the spec's train.batch_size)")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed repeat (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per implementation (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first call (default 2)")
    parser.add_argument(
        "--impls",
        help=f"comma list from {', '.join(ALL_IMPLS)} (default: every schedule the "
        "spec's references have, -lax left out; ggdsl,jax-hand,torch with --quick)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="also time ggdsl on N host devices (ggdsl-<N>dev; the batch must split over N)",
    )
    parser.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--no-profile", action="store_true", help="skip the HLO profile and per-part timings")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: gmgan_digits unless --spec, 2 steps, 1 repeat, 3 implementations, no profile",
    )
    parser.add_argument(
        "--out",
        help="JSON path (default benchmarks/results/<spec>_cpu.json, "
        "gmgan_conv_cpu.json for gmgan_mnist; none for --quick)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.spec = args.spec or "gmgan_digits"
        args.steps, args.repeats, args.warmup, args.no_profile = min(args.steps, 2), 1, 1, True
        args.impls = args.impls or "ggdsl,jax-hand,torch"
    args.spec = args.spec or "gmgan_mnist"
    if args.devices < 1:
        parser.error("--devices: at least 1")
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats: at least 1; --warmup: at least 0")
    return args


def machine(load_at_start) -> dict:
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_start": load_at_start,
    }


class Pool:
    """The worker processes, one per implementation, driven one at a time."""

    def __init__(self, impls, config):
        context = multiprocessing.get_context("spawn")
        self.workers, self.failed = {}, {}
        for impl in impls:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, impl, config), daemon=True)
            process.start()
            self.workers[impl] = (process, parent)
        for impl in list(self.workers):
            self._receive(impl, "build")

    @property
    def impls(self):
        return list(self.workers)

    def _receive(self, impl, what):
        status, value = self.workers[impl][1].recv()
        if status == "error":
            print(f"  {impl}: {what} failed, dropped:\n{value}", flush=True)
            self.failed[impl] = value
            self.close(impl)
            return None
        return value

    def ask(self, impl, command, argument=None):
        if impl not in self.workers:
            return None
        self.workers[impl][1].send((command, argument))
        return self._receive(impl, command)

    def close(self, impl):
        process, conn = self.workers.pop(impl)
        try:
            conn.send(("quit", None))
        except (BrokenPipeError, OSError):
            pass
        process.join(timeout=30)

    def close_all(self):
        for impl in list(self.workers):
            self.close(impl)


def measure(args) -> dict:
    load_at_start = os.getloadavg()
    spec_probe, plan = load_plan({"spec": args.spec, "overrides": args.set})
    try:
        kind = reference_kind(plan)
    except ValueError as error:
        raise SystemExit(f"{args.spec}: no reference implements this spec: {error}") from None
    batch = args.batch or spec_probe.train.batch_size
    impls = [i.strip() for i in (args.impls or ",".join(DEFAULT_IMPLS[kind])).split(",") if i.strip()]
    unknown = sorted(i for i in set(impls) - set(ALL_IMPLS) if device_count(i) == 1)
    if unknown:
        raise SystemExit(f"unknown --impls {unknown} (known: {', '.join(ALL_IMPLS)}, ggdsl-<N>dev)")
    unfit = [i for i in impls if device_count(i) == 1 and i not in VALID_IMPLS[kind]]
    if unfit:
        raise SystemExit(f"--impls {unfit}: not for this spec ({kind}; these run: {', '.join(VALID_IMPLS[kind])})")
    notes = []
    devices = getattr(args, "devices", 1)
    if devices > 1 and batch % devices:
        note = (
            f"--devices {devices}: batch {batch} does not split over {devices} devices, ggdsl-{devices}dev "
            f"left out (use --batch with a multiple of {devices})"
        )
        print(note)
        notes.append(note)
    elif devices > 1 and f"ggdsl-{devices}dev" not in impls:
        impls.append(f"ggdsl-{devices}dev")
    if importlib.util.find_spec("torch") is None and any(i in TORCH_IMPLS for i in impls):
        note = "torch is not installed: the PyTorch columns are skipped (pip install torch==2.13.0)"
        print(note)
        notes.append(note)
        impls = [i for i in impls if i not in TORCH_IMPLS]
    config = {"spec": args.spec, "overrides": list(args.set), "batch": batch, "torch_threads": args.torch_threads}
    per_example = images_per_example(plan)
    explain = {f"{n.role} {n.key}": n.params for n in plan.all()}
    print(
        f"spec {spec_probe.name} ({args.spec}), batch {batch}, {args.steps} steps x {args.repeats} repeats, "
        f"warm-up {args.warmup}; implementations: {', '.join(impls)}",
        flush=True,
    )

    pool = Pool(impls, config)
    results = {impl: {"step_seconds": []} for impl in pool.impls}
    try:
        for impl in pool.impls:
            first = pool.ask(impl, "first")
            if first is None:
                continue
            results[impl]["first_call_s"] = first["seconds"]
            results[impl]["trace_s"] = first["trace_s"]
            results[impl]["compile_s"] = first["compile_s"]
            results[impl]["first_metrics"] = first["metrics"]
            results[impl]["patched"] = first["patched"]
            split = (
                ""
                if first["compile_s"] is None
                else (f"  (trace + lower {first['trace_s']:.2f} s, compile {first['compile_s']:.2f} s)")
            )
            print(f"  {impl:15s} first call (trace + compile + 1 step) {first['seconds']:7.2f} s{split}", flush=True)
            if first["patched"]:
                note = (
                    "ggdsl's step raised flax TraceContextError (batch-norm statistics merged at the jit "
                    "trace level, mutated inside jax.grad); timed with nnx.merge(..., copy=True) patched "
                    "into ggdsl.compiled"
                )
                print(f"  NOTE: {note}", flush=True)
                notes.append(note)
        for impl in pool.impls:
            pool.ask(impl, "run", args.warmup)
        for repeat in range(args.repeats):
            if not pool.impls:
                break
            order = pool.impls[repeat % len(pool.impls) :] + pool.impls[: repeat % len(pool.impls)]
            line = []
            for impl in order:
                seconds = pool.ask(impl, "run", args.steps)
                if seconds is not None:
                    results[impl]["step_seconds"].append(seconds / args.steps)
                    line.append(f"{impl} {args.steps / seconds:.2f}")
            print(f"  repeat {repeat + 1}/{args.repeats} steps/s: {', '.join(line)}", flush=True)
        for impl in pool.impls:
            info = pool.ask(impl, "info", not args.no_profile)
            if info is not None:
                results[impl].update(info)
    finally:
        pool.close_all()
    for impl in list(results):
        if impl in pool.failed or not results[impl]["step_seconds"]:
            results.pop(impl)
            continue
        times = results[impl]["step_seconds"]
        results[impl]["steps_per_s_median"] = 1.0 / statistics.median(times)
        results[impl]["steps_per_s_best"] = 1.0 / min(times)
        results[impl]["images_per_s"] = batch * per_example / statistics.median(times)
    ratios = {}
    if "ggdsl" in results:
        for ref in REFERENCES:
            if ref in results:
                ratios[f"ggdsl/{ref}"] = speed_ratio(results["ggdsl"], results[ref])
        for impl in results:
            if device_count(impl) > 1:  # N devices over 1
                ratios[f"{impl}/ggdsl"] = speed_ratio(results[impl], results["ggdsl"])
    return {
        "benchmark": "training step (1 D update + 1 G update)",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "spec": args.spec,
        "spec_name": spec_probe.name,
        "overrides": list(args.set),
        "batch": batch,
        "reference_kind": kind,
        "images_per_example": per_example,
        "unit": "frames" if per_example > 1 else "images",
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "machine": {**machine(load_at_start), "load_average_end": os.getloadavg()},
        "explain_params": explain,
        "results": results,
        "ratios": ratios,
        "notes": notes,
        "failed": {k: v.strip().splitlines()[-1] for k, v in pool.failed.items()},
    }


def speed_ratio(ours: dict, theirs: dict) -> dict:
    """``ours`` steps/s over ``theirs``: of the medians, of the best rounds, and the median per-round ratio."""
    paired = [t / o for o, t in zip(ours["step_seconds"], theirs["step_seconds"], strict=False)]
    return {
        "median": ours["steps_per_s_median"] / theirs["steps_per_s_median"],
        "best": ours["steps_per_s_best"] / theirs["steps_per_s_best"],
        "paired": statistics.median(paired),
    }


def report(data: dict) -> None:
    results, batch = data["results"], data["batch"]
    impls = list(results)
    print(f"\nParameters per network (explain = ggdsl's plan, what `ggdsl explain {data['spec']}` prints)")
    names = list(data["explain_params"])
    print(f"  {'network':24s}{'explain':>12s}" + "".join(f"{i:>16s}" for i in impls))
    for name in [*names, "total"]:
        row = [data["explain_params"].get(name) if name != "total" else sum(data["explain_params"].values())]
        for impl in impls:
            params = results[impl].get("params", {})
            row.append(sum(params.values()) if name == "total" else params.get(name))
        cells = [f"{'-' if v is None else f'{v:,}':>{12 if i == 0 else 16}}" for i, v in enumerate(row)]
        print(f"  {name:24s}" + "".join(cells))
    same = all(results[i].get("params") == data["explain_params"] for i in impls)
    print(f"  same counts everywhere: {'yes' if same else 'NO'}")

    unit = data.get("unit", "images")
    per_example = data.get("images_per_example", 1)
    frames = f" ({per_example} frames each)" if per_example > 1 else ""
    print(f"\nTraining step, batch {batch}{frames}: median of {data['repeats']} repeats x {data['steps']} steps")
    print(
        f"  {'implementation':16s}{'compile s':>10s}{'first call s':>13s}{'steps/s':>10s}{'best':>9s}"
        f"{unit + '/s':>10s}{'ms/step':>9s}{'peak RSS MiB':>14s}"
    )
    for impl in impls:
        r = results[impl]
        compile_s = "-" if r.get("compile_s") is None else f"{r['compile_s']:.2f}"
        print(
            f"  {impl:16s}{compile_s:>10s}{r['first_call_s']:13.2f}{r['steps_per_s_median']:10.2f}"
            f"{r['steps_per_s_best']:9.2f}{r['images_per_s']:10.1f}{1e3 / r['steps_per_s_median']:9.1f}"
            f"{r['peak_rss_mib']:14.0f}"
        )
    if data["ratios"]:
        print(
            "\nRatios (ggdsl steps/s / reference steps/s; > 1 means ggdsl is faster; "
            "ggdsl-<N>dev/ggdsl: N host devices over 1)"
        )
        for name, ratio in data["ratios"].items():
            print(
                f"  {name:24s} median {ratio['median']:5.2f}   paired {ratio['paired']:5.2f}"
                f"   best {ratio['best']:5.2f}"
            )
        jax_ratio = data["ratios"].get("ggdsl/jax-hand")
        if jax_ratio:
            ok = jax_ratio["paired"] >= TARGET_VS_JAX
            verdict = "met" if ok else "NOT met"
            print(f"  target ggdsl >= {TARGET_VS_JAX:.1f} x jax-hand: {verdict} (paired {jax_ratio['paired']:.2f})")
        torch_ratio = data["ratios"].get("ggdsl/torch")
        if torch_ratio:
            ok = torch_ratio["paired"] > 1.0
            verdict = "met" if ok else "NOT met"
            print(f"  target ggdsl faster than torch eager: {verdict} (paired {torch_ratio['paired']:.2f})")
    profiled = [i for i in impls if "hlo" in results[i]]
    if profiled:
        print("\nCompiled step (XLA CPU): cost analysis and op counts")
        for impl in profiled:
            h = results[impl]["hlo"]
            print(
                f"  {impl:16s} GFLOP {h['gflops']:7.2f}  GB accessed {h['gbytes_accessed']:6.2f}  "
                f"entry instructions {h['entry_instructions']:5d}  donated buffers {h['donated_buffers']:4d}"
            )
            print(f"  {'':16s} entry ops {h['entry_ops']}")
        for impl in profiled:
            r = results[impl]
            print(
                f"  {impl:16s} state leaves {r['state_leaves']}, weak-typed {r['weak_typed_leaves']}, "
                f"non-f32 dtypes {r['non_f32_leaves']}"
            )
    for impl in impls:
        if "parts_ms" in results[impl]:
            print(f"\nParts of the {impl} step (ms per call, jitted separately): {results[impl]['parts_ms']}")
    m = data["machine"]
    print(
        f"\nMachine: {m['cpu_count']} CPUs, {m['platform']}, python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f"; load average {m['load_average_start'][0]:.1f} at start, {m['load_average_end'][0]:.1f} at end"
    )
    for note in data["notes"]:
        print(f"Note: {note}")


def default_out(args) -> Path | None:
    """Where the JSON goes; a ``--quick`` run writes none unless ``--out`` says where."""
    if args.out:
        return Path(args.out)
    if args.quick:
        return None
    stem = Path(args.spec).stem
    return HERE / "results" / f"{'gmgan_conv_cpu' if stem == 'gmgan_mnist' else stem + '_cpu'}.json"


def main(argv=None) -> int:
    args = parse_args(argv)
    data = measure(args)
    report(data)
    out = default_out(args)
    if out is None:
        print("\n(quick run: no JSON written; pass --out PATH to keep it)")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n")
        print(f"\nwrote {out}")
    return 0 if data["results"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
