"""The MUSE-shaped benchmark (issue 19) at its --quick size, in CI: it runs, and ours and the naive
batch-1 MUSE evaluation agree (identical generations, privleak within float rounding). Speed and
memory ratios are printed, not asserted: at 4 items per split of a 16 MB model on a shared machine
they measure the neighbours and the runtime's fixed costs (the measured figures, on SmolLM-135M's
shape, are in docs/metrics.md and benchmarks/results/issue19-session5-*.txt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("muse-shaped") / "report.json"
    env = {**os.environ, "UNLEARN_BENCH_QUICK": "1"}
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "muse_shaped.py"),
            "--repeats",
            "1",
            "--fixed-mmap-threshold",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def test_muse_shaped_quick_runs_and_agrees(report: dict[str, Any]) -> None:
    assert report["items"] == 4 and report["malloc_mmap_threshold"].isdigit()
    lo, hi = report["lengths"]["privleak_text"]
    assert 1700 <= lo <= hi <= 1900 and 800 <= report["lengths"]["verbmem_prompt"][0]
    for metric, row in report["metrics"].items():
        agrees = row["naive"]["agrees"]
        if metric == "privleak":
            assert agrees["max_rel_min40_diff"] < 1e-4
        else:
            assert agrees["identical_generations"] == agrees["of"] == 4, metric
        assert row["flops"] > 0 and 0 < row["ours"]["achieved_fraction"]
