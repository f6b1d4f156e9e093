"""Test-session settings, applied before any test imports JAX.

Most of the suite's time is XLA compiling the bundled models for a few steps each. The
tests check behaviour, not speed, so XLA's backend optimisation is turned down (compiles
take about half as long) and one persistent compilation cache serves the whole session
(every worker, and every subprocess a test starts), so a program compiled by one test is
not compiled again by the next. Both yield to values the caller set.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
# JAX's own variable: ggdsl leaves a folder set through it as it is (and the user's cache alone).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="ggdsl-test-jax-cache-"))

# The costliest modules first (seconds on 2 cores, `pytest --junitxml` summed per module):
# pytest-xdist hands whole files to the two workers in collection order (`--dist loadfile
# --no-loadscope-reorder`), so the long ones start at once and the short ones fill the
# gaps at the end. The order changes only the wall time, never what runs.
HEAVIEST_FIRST = (
    "test_reliability.py",  # 140
    "test_time.py",  # 125
    "test_train.py",  # 125
    "test_parallel.py",  # 90
    "test_eval_video.py",  # 65
    "test_docs.py",  # 65
    "test_nets_conv.py",  # 55
    "test_stabilisers.py",  # 45
    "test_examples.py",  # 40
    "test_augment.py",  # 35
    "test_select.py",  # 30
    "test_workflow.py",  # 20
)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: index for index, name in enumerate(HEAVIEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
