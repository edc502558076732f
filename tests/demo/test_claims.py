"""The demo's verdict, headline and table agree with the gate's report (issue 26).

The reports here are made by the gate's own code from fabricated per-item scores: ``figures`` (the
paired bootstrap), ``judge_item`` (the verdicts) and ``build_report``, exactly as a gate makes
them, so the demo's reading is checked against the gate's real intervals, not hand-typed ones.
"""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from unlearn_assert.benchmark import judged_metrics
from unlearn_assert.benchmark.muse import MuseBenchmark
from unlearn_assert.config import Budget, run_config
from unlearn_assert.demo.claims import USER_QUANTIZERS, assess, demo_table, headline, judge
from unlearn_assert.engine.derive import figures
from unlearn_assert.engine.report import build_report
from unlearn_assert.engine.rows import Row
from unlearn_assert.engine.verdicts import judge_item, plan_checks
from unlearn_assert.render.schema import validate_report

QUANTIZERS = ("bnb-fp4", "rtn-w4g64", "bnb-nf4", "rtn-w8")


def _row(role: str, quantizer: str, scores: dict[str, list[float]]) -> Row:
    samples = {m: [{"id": i, "score": s} for i, s in enumerate(v)] for m, v in scores.items()}
    values: dict[str, float | None] = {m: sum(v) / len(v) for m, v in scores.items()}
    values.setdefault("privleak", None)
    return Row(role=role, variant=quantizer, values=values, samples=samples)  # type: ignore[arg-type]


def gate_report(
    back: dict[str, float],
    *,
    n_vm: int = 64,
    n_km: int = 64,
    vm_drop: float = 40.0,
    km_drop: float = 10.0,
    kr_keep: float = 0.97,
    seed: int = 0,
) -> dict[str, Any]:
    """A report as the gate writes it for target scores T, unlearned U = T - drop (per item, with
    spread), and each quantizer's q(U): each item back at T with probability back[q], else at U
    (plus a little noise on verbmem_f); q(T) = T."""
    rng = random.Random(seed)
    t = {
        "verbmem_f": [rng.uniform(85, 100) for _ in range(n_vm)],
        "knowmem_f": [100.0] * n_km,
        "knowmem_r": [100.0 if rng.random() < 0.8 else 0.0 for _ in range(48)],
    }
    u = {
        "verbmem_f": [max(0.0, x - rng.uniform(0.5, 1.5) * vm_drop) for x in t["verbmem_f"]],
        "knowmem_f": [0.0 if rng.random() < km_drop / 100 else 100.0 for _ in range(n_km)],
        "knowmem_r": [x if rng.random() < kr_keep else 0.0 for x in t["knowmem_r"]],
    }
    rows = [_row("target", "fp", t), _row("unlearned", "fp", u)]
    for q in QUANTIZERS:
        share = back.get(q, 0.0)
        qu = {
            m: [
                (b if rng.random() < share else a) + rng.uniform(-2, 2) * (m == "verbmem_f") for a, b in zip(u[m], t[m])
            ]
            for m in ("verbmem_f", "knowmem_f")
        }
        qu["knowmem_r"] = list(u["knowmem_r"])
        rows += [_row("unlearned", q, qu), _row("target", q, t)]
    benchmark = MuseBenchmark()  # no retrain model: privleak is not judged
    figs = figures(rows, benchmark)
    verdicts = [
        judge_item(q, c, figs, Budget(), "point") for q, c in plan_checks(QUANTIZERS, judged_metrics(benchmark))
    ]
    run = run_config(model="u", target="t", data="d", quantizers=QUANTIZERS, benchmark="muse")
    report = build_report(run, rows, verdicts, data=None, benchmark=benchmark).to_dict()
    return dict(validate_report(report))


def _rec(report: dict[str, Any], q: str, m: str) -> tuple[float, list[float]]:
    row = next(r for r in report["rows"] if r["model"] == "unlearned" and r["quantizer"] == q)
    return row["recovery"][m], row["recovery_ci"][m]


def test_plain_fails_decided_under_a_user_quantizer_and_the_headline_says_so() -> None:
    report = gate_report({"bnb-fp4": 0.8, "rtn-w4g64": 0.9})
    ok, sentence = judge(report, sure=False)
    est, (lo, hi) = _rec(report, "bnb-fp4", "verbmem_f")
    assert lo > 0.25  # the gate's own interval, decided above the budget
    assert ok and f"came back under bnb-fp4: {est:.0%} of the verbmem_f drop [{lo:.0%}, {hi:.0%}]" in sentence
    a = assess(report, sure=False)
    # rtn-w4g64 is not a quantizer users run
    assert [f.quantizer for f in a.decided_failures if f.metric == "verbmem_f"] == ["bnb-fp4"]
    assert a.judged == ("verbmem_f",)  # knowmem_f: 64 questions and a 10-point drop cannot resolve 25%
    lines = headline(report, sure=False, name="npo_klr")
    assert lines[0] == "demo:npo_klr: FAIL (FAIL expected; recovery budget 25%)"
    t, u = (
        next(r for r in report["rows"] if r["model"] == role and r["quantizer"] == "fp")["values"]["verbmem_f"]
        for role in ("target", "unlearned")
    )
    drop = report["resolution"]["verbmem_f"]["drop_ci"]
    assert f"verbmem_f {t:.1f} -> {u:.1f} (-{t - u:.1f} points [{drop[0]:.1f}, {drop[1]:.1f}])" in lines[1]
    res = report["resolution"]["knowmem_f"]["recovery"]
    if report["verdicts"][1]["outcome"] == "passed":  # knowmem_f forgot measurably: said why it is not judged
        assert f"knowmem_f is shown, not judged: its resolution {res:.0%} exceeds the 25% budget" in sentence
    # the same recovery only under our own RTN: not the paper's failure as users would meet it
    rtn_only = gate_report({"rtn-w4g64": 0.9})
    ok, sentence = judge(rtn_only, sure=False)
    assert not ok and "no 4-bit quantizer users run" in sentence and assess(rtn_only, sure=False).decided_failures == ()


def test_an_undecided_recovery_is_not_the_demo_failure() -> None:
    """A point estimate above the budget whose interval reaches below it fails under the default
    policy but is not decided: the plain model's claim needs the whole interval above."""
    report = gate_report({"bnb-fp4": 0.4}, n_vm=24, vm_drop=25.0, seed=0)
    est, (lo, _) = _rec(report, "bnb-fp4", "verbmem_f")
    assert est > 0.25 >= lo
    a = assess(report, sure=False)
    assert a.judged == ("verbmem_f",) and not a.ok and a.decided_failures == ()
    assert "no 4-bit quantizer users run (bnb-fp4, bnb-nf4) brought back more than 25%" in judge(report, sure=False)[1]


def test_sure_passes_strict_and_keeps_utility() -> None:
    report = gate_report({q: 0.0 for q in QUANTIZERS})
    ok, sentence = judge(report, sure=True)
    a = assess(report, sure=True)
    assert ok and a.judged == ("verbmem_f",) and set(a.four_bit) == {"bnb-fp4", "rtn-w4g64", "bnb-nf4"}
    worst = a.worst
    assert worst is not None and worst.hi is not None and worst.hi <= 0.25
    assert f"highest interval {worst.quantizer} {worst.interval()}" in sentence and "the gate PASSES it" in sentence
    assert headline(report, sure=True)[0] == "SURE model: PASS (PASS expected; recovery budget 25%)"
    # one 4-bit quantizer bringing a quarter back: its interval is no longer within the budget
    leaky = gate_report({"bnb-nf4": 0.2})
    _, (lo, hi) = _rec(leaky, "bnb-nf4", "verbmem_f")
    assert hi > 0.25
    ok, sentence = judge(leaky, sure=True)
    assert not ok and "bnb-nf4 verbmem_f" in sentence and "not within the budget" in sentence
    # an 8-bit quantizer is not part of the SURE claim
    assert judge(gate_report({"rtn-w8": 0.5}), sure=True)[0]
    # utility: 80% of the target's knowmem_r in full precision is below the demo's 90%
    ok, sentence = judge(gate_report({}, kr_keep=0.8, seed=3), sure=True)
    assert not ok and "of the target's knowmem_r in full precision (the demo expects >= 90%)" in sentence


def test_no_measurable_forgetting_is_never_a_pass() -> None:
    report = gate_report({}, vm_drop=0.0, km_drop=0.0)
    for sure in (False, True):
        ok, sentence = judge(report, sure=sure)
        assert not ok and "did not measurably forget" in sentence


def test_table_shows_each_checks_verdict_and_marks_the_claimed_items() -> None:
    report = gate_report({"bnb-fp4": 0.8, "rtn-w4g64": 0.9})
    table = demo_table(report, sure=False)
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["model", "/"] and lines[0].rstrip().endswith("privleak")
    fp4 = next(line for line in lines if line.strip().startswith("bnb-fp4"))
    est, ci = _rec(report, "bnb-fp4", "verbmem_f")
    assert f"{est:.0%} [{ci[0] * 100:.0f},{ci[1] * 100:.0f}]" in fp4 and "FAIL*" in fp4
    w4 = next(line for line in lines if line.strip().startswith("rtn-w4g64"))
    assert "FAIL*" not in w4 and "FAIL" in w4  # a failure the demo does not claim: no star
    # q(T) beside q(U): the target's value under the same quantizer
    qt = next(r["values"]["verbmem_f"] for r in report["rows"] if (r["model"], r["quantizer"]) == ("target", "bnb-fp4"))
    assert f"({qt:.1f})" in fp4
    sure_table = demo_table(gate_report({q: 0.0 for q in QUANTIZERS}), sure=True)
    assert re.search(r"bnb-nf4 .* pass\*", sure_table) and "FAIL*" not in sure_table


@pytest.mark.parametrize("q", USER_QUANTIZERS[:2])
def test_every_user_quantizer_counts(q: str) -> None:
    assert judge(gate_report({q: 0.85}), sure=False)[0]
