"""Serial against ``pytest -n 2`` on the same gate, at several model sizes (issue 31): where spreading the rows over two
CPU workers starts to win (the crossover behind ``unlearn_assert.scaleout.placement.CROSSOVER_FLOPS``), and the
issue's three runs again.

Run: ``python benchmarks/xdist_crossover.py [--cases NAME,...] [--repeats R] [--json FILE]``.

Each case is a model pair, quantizers and ``--unlearn-max-samples`` on the tiny fixture data. Its runs alternate,
each a fresh pytest process with ``--unlearn-no-cache`` (every row computed), ``R`` times (default 2), the best of
each kept:

* ``serial``: no xdist;
* ``n2``: ``-n 2``, the gate's own placement (one worker for small rows, spread for large ones);
* ``n2-spread``: ``-n 2 --dist load``, the rows spread over both workers (what ``-n 2`` did before the placement).

The case ``xdist-floor`` times one trivial test serially and under ``-n 2`` in the same environment: the fixed
cost of xdist itself (a controller and two more interpreters, each importing pytest and every installed plugin,
e.g. hypothesis's summary hook imports hypothesis, 0.5 s here), which no placement can avoid.

``OMP_NUM_THREADS`` is removed from the runs' environment, so the processes take their threads as a user's would
(a serial run torch's default, a worker its share of the cores). So is ``PYTHONDONTWRITEBYTECODE``, unless
``--no-bytecode-cache``: Python caches compiled modules by default, and pytest caches the assertion-rewritten
modules of the plugins it loads (hypothesis's, every run); with the variable set, as on this project's machine, every
process compiles all of them again at each start, a fixed cost a ``-n 2`` run pays in three processes. With caching
on, one untimed serial run per case fills the caches first. The rows' values and the verdicts of every run must
be identical. The load average is printed with the numbers: on a shared machine it is what makes them noisy, and
ratios of runs that alternate are what to read.

Models: ``tiny``, the tests' tiny pair (a ~0.26M-parameter Llama trained on the fixture text and a perturbed copy);
``smollm-<L>l``, SmolLM-135M's shape with ``L`` layers and random weights (``muse_shaped.py``'s builder: 30 layers
are its 135M parameters); ``muse-tiny``, ``muse_shaped.py``'s 4.1M-parameter model (random); the unlearned model of
each a perturbed copy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = REPO / "fixtures" / "tiny-muse"
Q3 = "rtn-w4g64,rtn-w8,bnb-fp4"
Q6 = "rtn-w4g64,rtn-w8,bnb-fp4,rtn-w4g128,bnb-nf4,hqq-w4g64"
#: name -> (model, quantizers, samples); the first three are the issue's runs
CASES: dict[str, tuple[str, str, int]] = {
    "tiny-1q-4s": ("tiny", "rtn-w8", 4),
    "tiny-3q-8s": ("tiny", Q3, 8),
    "tiny-6q-16s": ("tiny", Q6, 16),
    "smollm135m-3q-6s": ("smollm-30l", Q3, 6),
    "muse-tiny-3q-6s": ("muse-tiny", Q3, 6),
    "smollm-2l-3q-6s": ("smollm-2l", Q3, 6),
    "smollm-8l-3q-6s": ("smollm-8l", Q3, 6),
    "smollm-16l-3q-6s": ("smollm-16l", Q3, 6),
}
#: the issue's bars: ``-n 2`` time over serial time
BOUNDS = {"tiny-3q-8s": 1.05, "tiny-6q-16s": 1.05, "smollm135m-3q-6s": 0.85}
MODES = {"serial": [], "n2": ["-n", "2"], "n2-spread": ["-n", "2", "--dist", "load"]}


def build_pair(model: str, root: Path) -> tuple[Path, Path]:
    """(unlearned, target) directories of ``model`` under ``root`` (built once)."""
    from unlearn_assert.testing import build_tiny_llama, perturb_copy

    target, unlearned = root / model / "target", root / model / "unlearned"
    if (unlearned / "config.json").is_file():
        return unlearned, target
    if model == "tiny":
        sys.path.insert(0, str(REPO / "benchmarks"))
        from conftest import _tests_conftest

        build_tiny_llama(target, _tests_conftest().fixture_texts(TINY_DATA))
    else:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import muse_shaped

        if model == "muse-tiny":
            key = "tiny"
        else:
            key, layers = model, int(model.removeprefix("smollm-").removesuffix("l"))
            shape, vocab = muse_shaped.MODELS["smollm-135m"]
            muse_shaped.MODELS[model] = ({**shape, "num_hidden_layers": layers}, vocab)
        _, built = muse_shaped.build_corpus(root / model / "corpus", items=2, model=key)
        built.rename(target)
    perturb_copy(target, unlearned, scale=2e-2)
    return unlearned, target


#: True: the runs cache bytecode as Python does by default (``PYTHONDONTWRITEBYTECODE`` removed); see the docstring
BYTECODE_CACHE = True


def run_gate(args: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the process and its xdist workers) of one fresh pytest process running
    the gate (its exit code checked: passed or failed items only). CPU seconds say what a run costs whatever else
    the machine runs; wall seconds what a user waits, which only a quiet machine measures."""
    dropped = ("OMP_NUM_THREADS", "MKL_NUM_THREADS") + (("PYTHONDONTWRITEBYTECODE",) if BYTECODE_CACHE else ())
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the gate exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _outcome(report: dict[str, Any]) -> tuple[Any, Any]:
    rows = sorted([r["model"], r["quantizer"], r["values"]] for r in report["rows"])
    verdicts = [(v["item"], v["outcome"], v["message"]) for v in report["verdicts"]]
    return rows, verdicts


def measure(case: str, repeats: int, root: Path) -> dict[str, Any]:
    """Run ``case`` (see the module docstring); its times, the ratios to serial, the placement ``-n 2`` chose and its
    numbers, whether every run's values and verdicts were identical, and the load averages seen."""
    model, quantizers, samples = CASES[case]
    unlearned, target = build_pair(model, root)
    work = root / "runs" / case
    work.mkdir(parents=True, exist_ok=True)
    (work / "pytest.ini").write_text("[pytest]\n")  # a rootdir of its own: only the gate's items run
    base = [
        f"--unlearn-model={unlearned}",
        f"--unlearn-target={target}",
        f"--unlearn-data={TINY_DATA}",
        f"--unlearn-quantizers={quantizers}",
        f"--unlearn-max-samples={samples}",
        "--unlearn-no-cache",
        "--unlearn-device=cpu",
    ]
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    loads: list[float] = []
    outcomes: dict[str, Any] = {}
    if BYTECODE_CACHE:  # fill the bytecode caches (untimed), so that no mode pays for compiling
        run_gate([*base, "--unlearn-json=warm.json"], work)
    for i in range(repeats):
        for mode, extra in MODES.items():
            loads.append(os.getloadavg()[0])
            wall, used = run_gate([*base, *extra, f"--unlearn-json={mode}-{i}.json"], work)
            times[mode].append(round(wall, 2))
            cpu[mode].append(round(used, 2))
            outcomes[f"{mode}-{i}"] = _outcome(json.loads((work / f"{mode}-{i}.json").read_text()))
    best = {mode: min(t) for mode, t in times.items()}
    best_cpu = {mode: min(t) for mode, t in cpu.items()}
    report = json.loads((work / "n2-0.json").read_text())
    placement = report["provenance"]["execution"][0].get("placement", {})
    return {
        "case": case,
        "model": model,
        "quantizers": quantizers,
        "samples": samples,
        "times": times,
        "best": best,
        "ratio": best["n2"] / best["serial"],
        "ratio_spread": best["n2-spread"] / best["serial"],
        "cpu": cpu,
        "cpu_ratio": best_cpu["n2"] / best_cpu["serial"],
        "cpu_ratio_spread": best_cpu["n2-spread"] / best_cpu["serial"],
        "placement": placement.get("mode"),
        "gflop": placement.get("gflop"),
        "footprint": placement.get("footprint"),
        "identical": len({json.dumps(o, sort_keys=True, default=str) for o in outcomes.values()}) == 1,
        "load": [round(x, 1) for x in loads],
        "cores": len(os.sched_getaffinity(0)),
        "bytecode_cache": BYTECODE_CACHE,
    }


def measure_floor(repeats: int, root: Path) -> dict[str, Any]:
    """xdist's own cost on this machine and environment: one trivial test, serial against ``-n 2`` (both with every
    plugin installed here). What ``-n 2`` adds to a gate beyond this is the gate's."""
    work = root / "runs" / "xdist-floor"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "test_trivial.py").write_text("def test_nothing():\n    pass\n")
    times: dict[str, list[float]] = {"serial": [], "n2": []}
    if BYTECODE_CACHE:
        run_gate([], work)
    for _ in range(repeats):
        for mode, extra in (("serial", []), ("n2", ["-n", "2"])):
            wall, _cpu = run_gate(extra, work)
            times[mode].append(round(wall, 2))
    best = {mode: min(t) for mode, t in times.items()}
    return {
        "case": "xdist-floor",
        "times": times,
        "best": best,
        "extra": round(best["n2"] - best["serial"], 2),
        "bytecode_cache": BYTECODE_CACHE,
    }


def format_result(r: dict[str, Any]) -> str:
    if r["case"] == "xdist-floor":
        best = r["best"]
        return (
            f"{'xdist-floor':18s} one trivial test: serial {best['serial']:.2f} s  -n 2 {best['n2']:.2f} s "
            f"(xdist's own +{r['extra']:.2f} s)  bytecode cache {'on' if r.get('bytecode_cache') else 'off'}"
        )
    bound = BOUNDS.get(r["case"])
    best, bar = r["best"], "" if bound is None else f" <= {bound}"
    return (
        f"{r['case']:18s} {r['gflop'] or 0:>9.1f} GFLOP  serial {best['serial']:6.1f} s  -n 2 {best['n2']:6.1f} s "
        f"({r['placement']}, x{r['ratio']:.2f}{bar})  -n 2 spread {best['n2-spread']:6.1f} s "
        f"(x{r['ratio_spread']:.2f})"
        f"  CPU x{r['cpu_ratio']:.2f} / x{r['cpu_ratio_spread']:.2f}  identical={r['identical']}  load {r['load']}"
        f"  bytecode cache {'on' if r.get('bytecode_cache') else 'off'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        default=",".join(["xdist-floor", *CASES]),
        help="comma-separated case names: xdist-floor (xdist's own cost: one trivial test), " + ", ".join(CASES),
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="append one JSON line per case to this file")
    parser.add_argument("--models-dir", help="where the model pairs are built (kept between runs); default a temp dir")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE as the environment sets it (every process compiles every module)",
    )
    args = parser.parse_args(argv)
    global BYTECODE_CACHE
    BYTECODE_CACHE = not args.no_bytecode_cache
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.models_dir) if args.models_dir else Path(tmp)
        for case in args.cases.split(","):
            result = measure_floor(args.repeats, root) if case == "xdist-floor" else measure(case, args.repeats, root)
            print(format_result(result), flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
