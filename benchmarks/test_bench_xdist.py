"""Serial vs ``pytest -n 2`` on the same gate: wall time as a ratio, in one benchmark run.

Run: ``python -m pytest benchmarks/test_bench_xdist.py -o addopts="" -p no:cacheprovider -s``.
The gate: the tiny fixture target and a perturbed copy as the unlearned model, three quantizers
(``rtn-w4g64,rtn-w8,bnb-fp4``), ``--unlearn-max-samples=8``, ``--unlearn-no-cache`` (so each run
computes every row: 2 full-precision rows and a q(T) and q(U) row per quantizer), each run a fresh
pytest process, alternating serial and ``-n 2`` ``UNLEARN_BENCH_REPEATS`` times (default 2); the best
of each. ``OMP_NUM_THREADS`` is removed from the runs' environment, so the workers take their thread
budget as a user's would. The JSON values of the two must be identical. On a loaded machine the ratio
says little: the benchmark prints the load average beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

QUANTIZERS = "rtn-w4g64,rtn-w8,bnb-fp4"
TINY_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-muse"
#: The issue's bar: ``-n 2`` at most this share of the serial time on a 2-core machine.
TARGET_RATIO = 0.8


@pytest.fixture(scope="module")
def unlearned_dir(bench_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unlearn_assert.testing import perturb_copy

    return perturb_copy(bench_model_dir, tmp_path_factory.mktemp("bench-unlearned"), scale=2e-2)


def _run(args: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    return seconds


def test_xdist_is_faster_than_serial(bench_model_dir: Path, unlearned_dir: Path, tmp_path: Path) -> None:
    base = [f"--unlearn-model={unlearned_dir}", f"--unlearn-target={bench_model_dir}", f"--unlearn-data={TINY_DATA}",
            f"--unlearn-quantizers={QUANTIZERS}", "--unlearn-max-samples=8", "--unlearn-no-cache", "--unlearn-device=cpu"]
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a rootdir of its own: only the gate's items run
    times: dict[str, list[float]] = {"serial": [], "n2": []}
    for i in range(int(os.environ.get("UNLEARN_BENCH_REPEATS", "2"))):
        times["serial"].append(_run([*base, f"--unlearn-json=serial-{i}.json"], tmp_path))
        times["n2"].append(_run([*base, "-n", "2", f"--unlearn-json=n2-{i}.json"], tmp_path))
    serial, dist = min(times["serial"]), min(times["n2"])
    values = {name: {(r["model"], r["quantizer"]): r["values"] for r in json.loads((tmp_path / f"{name}-0.json").read_text())["rows"]}
              for name in ("serial", "n2")}
    load = os.getloadavg()[0]
    print(f"\nserial {serial:.1f} s, -n 2 {dist:.1f} s: ratio {dist / serial:.2f} (target <= {TARGET_RATIO}); "
          f"runs {times}; load average {load:.1f} on {os.cpu_count()} cores")
    assert values["n2"] == values["serial"]
    assert dist / serial <= TARGET_RATIO, f"-n 2 took {dist / serial:.2f}x the serial time (load average {load:.1f})"
