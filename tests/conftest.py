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
