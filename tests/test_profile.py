"""``--profile N``: a JAX profiler trace of N training steps in the run folder."""

from __future__ import annotations

import gzip
import json

from ggdsl.cli import main


def test_profile_writes_a_trace_of_the_steps(tmp_path, capsys):
    code = main(["compile-and-train", "gmgan_toy", "--steps", "8", "--out", str(tmp_path), "--quiet", "--profile", "2"])
    assert code == 0
    (run,) = tmp_path.iterdir()
    traces = list((run / "profile").rglob("*.trace.json.gz"))
    assert len(traces) == 1 and list((run / "profile").rglob("*.xplane.pb"))
    events = json.loads(gzip.decompress(traces[0].read_bytes()))["traceEvents"]
    assert len(events) > 10
    assert f"profile: {run / 'profile'}" in capsys.readouterr().out
