"""Serial against ``pytest -n 2`` on the same gate: issue 31's three runs, as ratios in one benchmark run.

Run: ``python -m pytest benchmarks/test_bench_xdist.py -o addopts="" -p no:cacheprovider -s`` (``-k tiny`` for the
two quick ones; ``UNLEARN_BENCH_REPEATS`` sets the repeats, default 2). Each case alternates fresh pytest processes
(serial, ``-n 2``, ``-n 2 --dist load``), every row computed (``--unlearn-no-cache``), the best of each kept; see
``xdist_crossover.py`` for the runs and the models. The bars:

* the tiny pair, 3 quantizers and 8 samples, and 6 quantizers and 16 samples: ``-n 2`` at most 1.05x the serial
  time. The runs cache bytecode as Python does by default (``xdist_crossover.BYTECODE_CACHE``); xdist's own cost
  (one trivial test, serial against ``-n 2``) is measured and printed beside it. docs/scale-out.md has the numbers,
  and what the same runs cost with ``PYTHONDONTWRITEBYTECODE=1`` and nothing cached;
* SmolLM-135M's shape (random weights), 3 quantizers, 6 samples: at most 0.85x serial (the rows are spread).

The values and verdicts of every run must be identical. On a loaded machine the ratios say little: the benchmark
prints the load average beside them (docs/scale-out.md has the numbers and the load they were taken at).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xdist_crossover import BOUNDS, format_result, measure, measure_floor  # noqa: E402

from unlearn_assert.scaleout.placement import CROSSOVER_FLOPS  # noqa: E402


@pytest.mark.parametrize("case", list(BOUNDS))
def test_n2_is_never_slower_than_serial(case: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    result = measure(case, int(os.environ.get("UNLEARN_BENCH_REPEATS", "2")), tmp_path_factory.mktemp(case))
    print("\n" + format_result(result))
    assert result["identical"], "the runs' values or verdicts differ"
    assert result["placement"] == ("spread" if result["gflop"] >= CROSSOVER_FLOPS / 1e9 else "one worker")
    best, cost = result["best"], ""
    if not case.startswith("smollm"):  # beside the tiny runs: what xdist alone costs here
        floor = measure_floor(int(os.environ.get("UNLEARN_BENCH_REPEATS", "2")), tmp_path_factory.mktemp("floor"))
        print(format_result(floor))
        cost = f"; xdist alone adds {floor['extra']:.2f} s here"
    assert result["ratio"] <= BOUNDS[case], (
        f"-n 2 took {result['ratio']:.2f}x serial ({best['n2']:.1f} s against {best['serial']:.1f} s{cost}; "
        f"load {result['load']})"
    )
