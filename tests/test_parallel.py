"""Data parallelism through JAX sharding: 4 devices train exactly what 1 device trains."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ggdsl.errors import TrainError
from ggdsl.train import DataParallel


def _xla_flags(devices: int) -> str:
    """The session's XLA flags (conftest.py turns XLA's backend optimisation down) and N host devices."""
    import os

    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()


def test_batch_must_split_over_devices():
    with pytest.raises(TrainError, match="more than|available"):
        DataParallel(64, 64)
    assert DataParallel("auto", 10).count >= 1


COMMON = [
    "train.steps=6",
    "train.batch_size=16",
    "train.log_every=3",
    "train.checkpoint_every=3",
    "eval=[clustering_accuracy]",
    "train.optimizer={name: sgd, learning_rate: 0.05}",
]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_cli(out, devices_per_process: int, extra: list[str]) -> subprocess.Popen:
    import os

    env = {
        **os.environ,
        "XLA_FLAGS": _xla_flags(devices_per_process),
        "JAX_PLATFORMS": "cpu",
        "GGDSL_CACHE_DIR": "off",
    }
    sets = [arg for override in COMMON for arg in ("--set", override)]
    command = [sys.executable, "-m", "ggdsl", "compile-and-train", "gmgan_digits", "--out", str(out), "--quiet"]
    return subprocess.Popen(
        [*command, *sets, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _final_params(run_dir):
    import jax
    import numpy as np

    from ggdsl.compiled import compile_spec
    from ggdsl.runs import RunDir
    from ggdsl.spec.load import load_spec
    from ggdsl.train import restore_state

    spec = load_spec(str(run_dir / "spec.yaml"))
    state, extra = restore_state(compile_spec(spec), RunDir(run_dir))
    return extra["step"], [
        np.asarray(x) for x in jax.tree.leaves(state["g_params"]) + jax.tree.leaves(state["d_params"])
    ]


def test_two_processes_and_four_devices_train_what_one_device_trains(tmp_path):
    """Two processes (jax.distributed, Gloo on CPU) x 2 devices, one process x 4 devices and
    one process x 1 device, side by side: the same parameters after the same steps. Only the
    first evaluates at the end (process 0 writes eval.json)."""
    import numpy as np

    port = _free_port()
    workers = [
        _train_cli(
            tmp_path / "multi",
            2,
            ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(index)],
        )
        for index in range(2)
    ]
    single = _train_cli(tmp_path / "single", 4, ["--set", "eval=[]"])
    one = _train_cli(tmp_path / "one", 1, ["--set", "eval=[]"])
    processes = [*workers, single, one]
    logs = [proc.communicate(timeout=400)[0] for proc in processes]
    for proc, log in zip(processes, logs, strict=True):
        assert proc.returncode == 0, log[-3000:]
    # Process 0 alone wrote the run folder, and said where it is; process 1 names the same one.
    (multi,) = list((tmp_path / "multi").iterdir())
    (single_run,) = list((tmp_path / "single").iterdir())
    (one_run,) = list((tmp_path / "one").iterdir())
    assert f"run folder: {multi}" in logs[0] and f"run folder: {multi}" in logs[1]
    records = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "d_loss" in r] == [3, 6]
    assert (multi / "eval.json").exists()
    finals = [_final_params(run) for run in (multi, single_run, one_run)]
    assert [step for step, _ in finals] == [6, 6, 6]
    for (_, a), (_, b) in ((finals[0], finals[1]), (finals[1], finals[2])):
        worst = max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))
        assert worst < 1e-4, worst


def test_multi_host_options_come_together():
    from ggdsl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["compile-and-train", "gmgan_digits", "--coordinator", "127.0.0.1:1234"])
    assert exit_info.value.code == 2
    from ggdsl.parallel import initialize

    with pytest.raises(TrainError, match="--process-id must lie in 0..1"):
        initialize("127.0.0.1:1234", 2, 5)
    with pytest.raises(TrainError, match="HOST:PORT"):
        initialize("localhost", 2, 0)


CACHE_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    from ggdsl.train import compile_and_train

    compile_and_train("gmgan_toy", out=sys.argv[1], progress=False, overrides=["train.steps=2", "eval=[]"])
    print("cache", jax.config.jax_compilation_cache_dir)
    """
)


def test_a_second_run_of_a_spec_reads_its_compiled_step_from_the_cache(tmp_path):
    """The persistent compilation cache is on by default, in GGDSL_CACHE_DIR (else ~/.cache/ggdsl/jax)."""
    import os

    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update({"GGDSL_CACHE_DIR": str(cache), "JAX_PLATFORMS": "cpu"})

    def run() -> set[str]:
        result = subprocess.run(
            [sys.executable, "-c", CACHE_SCRIPT, str(tmp_path / "runs")], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"cache {cache}" in result.stdout
        return {p.name for p in cache.iterdir()}

    first = run()
    assert any(name.startswith("jit_guarded-") for name in first), first  # the training step
    assert run() == first  # every program of the second run came from the cache
