"""Data parallelism through JAX sharding: 4 devices train exactly what 1 device trains."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ggdsl.errors import TrainError
from ggdsl.train import DataParallel

SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    from ggdsl.train import compile_and_train, restore_state
    from ggdsl.compiled import compile_spec
    from ggdsl.runs import RunDir
    from ggdsl.spec.load import load_spec

    assert len(jax.devices()) == 4, jax.devices()
    out = sys.argv[1]
    # Plain SGD: Adam's first steps move every weight by about its learning rate whatever the
    # gradient's size, which turns float-rounding differences of near-zero gradients into
    # differences of order lr; SGD keeps them at rounding size.
    common = ["train.steps=6", "train.batch_size=16", "train.log_every=3", "train.checkpoint_every=6", "eval=[]",
              "train.optimizer={name: sgd, learning_rate: 0.05}"]
    finals = []
    for devices in (1, 4):
        overrides = [*common, f"train.devices={devices}"]
        result = compile_and_train("gmgan_digits", out=f"{out}/d{devices}", overrides=overrides, progress=False)
        spec = load_spec(str(result.run_dir / "spec.yaml"))
        state, _ = restore_state(compile_spec(spec), RunDir(result.run_dir))
        leaves = jax.tree.leaves(state["g_params"]) + jax.tree.leaves(state["d_params"])
        finals.append([np.asarray(leaf) for leaf in leaves])
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(*finals, strict=True))
    print("max abs difference", worst)
    assert worst < 1e-4, worst
    """
)


def test_four_devices_match_one_device(tmp_path):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", "GGDSL_CACHE_DIR": "off"}
    import os

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max abs difference" in result.stdout


def test_batch_must_split_over_devices():
    with pytest.raises(TrainError, match="more than|available"):
        DataParallel(64, 64)
    assert DataParallel("auto", 10).count >= 1
