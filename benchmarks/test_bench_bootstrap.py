"""The paired bootstrap's cost for a full run: MUSE-sized splits (100 items each; privleak 100
forget + 100 holdout texts), six quantizers, a retrain model: 28 items, 15 rows.

Run: ``python -m pytest benchmarks/test_bench_bootstrap.py -o addopts="" -p no:cacheprovider``.
A full run here is exactly what the engine does after the rows exist: every item's figures over
its own rows (``Gate.figures``, memoized per set of rows as in a gate), its verdict, and the
report built once from all rows. It is timed with the bootstrap (B = 1000) and, as the baseline in
the same process, with ``replicates=0`` (point figures only); the difference is what the bootstrap
adds to a run, and must stay under a second (``UNLEARN_BENCH_MAX_BOOTSTRAP_SECONDS`` overrides;
0 = report only). The memoized draws and intervals are cleared before every round, as in a fresh
process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from unlearn_assert.config import RunConfig, run_config
from unlearn_assert.engine import Gate, Row, build_report
from unlearn_assert.engine import report as report_module
from unlearn_assert.engine import runner as runner_module
from unlearn_assert.engine.derive import Bootstrap, clear_memo
from unlearn_assert.engine.verdicts import judge_item, needed_rows
from unlearn_assert.names import FP

MAX_SECONDS = float(os.environ.get("UNLEARN_BENCH_MAX_BOOTSTRAP_SECONDS", "1.0"))
QUANTIZERS = ("bnb-fp4", "bnb-nf4", "bnb-int8", "rtn-w4g128", "rtn-w4g64", "rtn-w8")
N = 100


def _row(role: Any, variant: str, rng: Any, shift: float) -> Row:
    """A row with MUSE-sized per-item records (ROUGE x100 in [0, 100], Min-40% values)."""
    samples: dict[str, list[dict[str, Any]]] = {}
    values: dict[str, float | None] = {}
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
        scores = np.clip(rng.normal(40 + shift, 25, N), 0, 100)
        samples[metric] = [{"id": i, "score": float(s)} for i, s in enumerate(scores)]
        values[metric] = float(scores.mean())
    forget, holdout = rng.normal(2.0 - shift / 50, 0.5, N), rng.normal(2.5, 0.5, N)
    samples["privleak"] = [
        {"id": f"forget:{i}", "split": "forget", "score": float(v)} for i, v in enumerate(forget)
    ] + [{"id": f"holdout:{i}", "split": "holdout", "score": float(v)} for i, v in enumerate(holdout)]
    values["privleak"] = None
    auc = float(((-holdout[None, :] > -forget[:, None]) + 0.5 * (holdout[None, :] == forget[:, None])).mean())
    return Row(role=role, variant=variant, values=values, samples=samples, auc=auc)


@pytest.fixture(scope="module")
def full_run_rows() -> list[Row]:
    rng = np.random.default_rng(0)
    rows = [_row("target", FP, rng, 20.0), _row("unlearned", FP, rng, 0.0), _row("retrain", FP, rng, 0.0)]
    for i, q in enumerate(QUANTIZERS):
        rows += [_row("target", q, rng, 18.0), _row("unlearned", q, rng, 3.0 * i)]
    return rows


@pytest.fixture
def gate_run(tmp_path: Any) -> RunConfig:
    return run_config(
        model="u", target="t", retrain="r", data="d", quantizers=QUANTIZERS, cache_dir=str(tmp_path), no_cache=True
    )


def _full_run(run: RunConfig, rows: list[Row]) -> tuple[float, Any]:
    """The engine's work after the rows exist: every item (figures over its rows, its verdict), then the report."""
    clear_memo()
    start = time.perf_counter()
    with Gate(run) as gate:
        gate.rows = {row.key: row for row in rows}
        verdicts = []
        for variant, check in gate.checks():
            needed = needed_rows(variant, check, retrain=True)
            verdicts.append(judge_item(variant, check, gate.figures(needed), run.budget, run.verdict))
        report = build_report(run, rows, verdicts, data=None, fingerprints={})
    return time.perf_counter() - start, report


@pytest.fixture
def no_bootstrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Switch the bootstrap off (point figures only) inside the block: the baseline."""
    yield _with_bootstrap(monkeypatch, Bootstrap(replicates=0))


@pytest.fixture
def plain_bootstrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The bootstrap before issue 31 (multinomial resamples, no pseudo-items) inside the block."""
    yield _with_bootstrap(monkeypatch, Bootstrap(prior=0.0))


def _with_bootstrap(monkeypatch: pytest.MonkeyPatch, boot: Bootstrap) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def within() -> Iterator[None]:
        with monkeypatch.context() as m:
            m.setattr(runner_module, "bootstrap_of", lambda run: boot)
            m.setattr(report_module, "bootstrap_of", lambda run: boot)
            yield

    return within


def test_bootstrap_cost_of_a_full_run(
    benchmark: Any, full_run_rows: list[Row], gate_run: RunConfig, no_bootstrap: Any
) -> None:
    _full_run(gate_run, full_run_rows)  # warm-up: lazy imports (torch for the provenance), allocator
    with no_bootstrap():
        baseline_report = _full_run(gate_run, full_run_rows)[1]
        baseline = min(_full_run(gate_run, full_run_rows)[0] for _ in range(3))
    rounds: list[tuple[float, Any]] = []

    def with_bootstrap() -> Any:
        rounds.append(_full_run(gate_run, full_run_rows))
        return rounds[-1][1]

    report = benchmark.pedantic(with_bootstrap, rounds=3, iterations=1)
    seconds = min(r[0] for r in rounds)
    data = report.to_dict()
    n_items = len(report.verdicts)
    assert n_items == 4 * (1 + len(QUANTIZERS))
    assert all(v.ci is not None for v in report.verdicts if v.outcome != "skipped" and v.value is not None)
    assert all(
        r["recovery_ci"]["knowmem_f"] is not None
        for r in data["rows"]
        if r["model"] == "unlearned" and r["quantizer"] != FP
    )
    assert all(v.ci is None for v in baseline_report.verdicts)  # the baseline really ran without the bootstrap
    # the same point verdicts with and without it (the default policy judges the estimate)
    assert [(v.item, v.value) for v in baseline_report.verdicts] == [(v.item, v.value) for v in report.verdicts]
    added = seconds - baseline
    benchmark.extra_info.update(
        seconds=seconds,
        baseline_seconds=baseline,
        added_seconds=added,
        ratio=seconds / baseline,
        items=n_items,
        rows=len(full_run_rows),
        replicates=1000,
        load_average=os.getloadavg()[0],
    )
    print(
        f"\nfull run ({n_items} items, {len(full_run_rows)} rows, {N}-item splits, {len(QUANTIZERS)} quantizers): "
        f"with the paired bootstrap {seconds:.3f}s, point figures only {baseline:.3f}s: the bootstrap adds "
        f"{added:.3f}s "
        f"({seconds / baseline:.1f}x the baseline)"
    )
    if MAX_SECONDS > 0:
        assert added < MAX_SECONDS, f"the bootstrap adds {added:.2f}s to a full run (limit {MAX_SECONDS:g}s)"


def test_pseudo_items_cost_against_the_plain_bootstrap(
    full_run_rows: list[Row], run_config: RunConfig, no_bootstrap: Any, plain_bootstrap: Any
) -> None:
    """Issue 31's interval (Bayesian weights, two pseudo-items per figure) against the plain
    bootstrap of before, in the same process, interleaved round by round (the machine is shared:
    the best of 5 rounds each). Reported: what each adds to a run of point figures only, and the
    ratio of the two additions; it must stay under 1.5 (``UNLEARN_BENCH_MAX_PRIOR_RATIO``)."""
    limit = float(os.environ.get("UNLEARN_BENCH_MAX_PRIOR_RATIO", "1.5"))
    _full_run(run_config, full_run_rows)  # warm-up
    point, plain, pseudo = [], [], []
    for _ in range(5):
        with no_bootstrap():
            point.append(_full_run(run_config, full_run_rows)[0])
        with plain_bootstrap():
            seconds, report = _full_run(run_config, full_run_rows)
            plain.append(seconds)
        assert report.to_dict()["provenance"]["bootstrap"]["prior"] == 0.0
        seconds, report = _full_run(run_config, full_run_rows)
        pseudo.append(seconds)
        assert report.to_dict()["provenance"]["bootstrap"]["prior"] == 1.0
    base, old, new = min(point), min(plain), min(pseudo)
    ratio = (new - base) / (old - base)
    print(
        f"\nfull run ({len(full_run_rows)} rows, {N}-item splits), best of 5: point figures only {base:.3f}s, "
        f"plain bootstrap {old:.3f}s (+{old - base:.3f}s), with pseudo-items {new:.3f}s (+{new - base:.3f}s): "
        f"the new interval costs {ratio:.2f}x the old one's addition; load average {os.getloadavg()[0]:.1f}"
    )
    if limit > 0:
        assert ratio < limit, f"the pseudo-items make the bootstrap {ratio:.2f}x as costly (limit {limit:g})"
