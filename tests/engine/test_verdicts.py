"""Budgets, verdicts and the result cache: hand-computed cases."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from unlearn_assert.cache import ResultCache, atomic_write_text, cache_key
from unlearn_assert.config import Budget, parse_budget
from unlearn_assert.engine.derive import figures_from_values, recovery
from unlearn_assert.engine.verdicts import judge_item, needed_rows, plan_checks
from unlearn_assert.errors import ConfigError
from unlearn_assert.names import FP, item_name


def test_parse_budget_defaults_and_overrides() -> None:
    b = parse_budget("recovery=0.3 utility=0.8 privleak=10 knowmem_f@rtn-w4g128=0.1 verbmem_f=0.2 floor=2")
    assert (b.recovery, b.utility, b.privleak, b.floor) == (0.3, 0.8, 10.0, 2.0)
    assert b.recovery_for("knowmem_f", "rtn-w4g128") == 0.1  # metric@quantizer
    assert b.recovery_for("knowmem_f", "rtn-w8") == 0.3  # falls back to the global recovery
    assert b.recovery_for("verbmem_f", "rtn-w8") == 0.2  # metric without quantizer
    assert parse_budget("") == Budget()
    assert parse_budget({"recovery": 0.5}).recovery == 0.5


def test_quantizer_specific_key_beats_metric_key() -> None:
    b = parse_budget("verbmem_f=0.2 recovery@rtn-w8=0.05")
    assert b.recovery_for("verbmem_f", "rtn-w8") == 0.05
    assert b.recovery_for("verbmem_f", "rtn-w4g128") == 0.2


@pytest.mark.parametrize(
    "text",
    [
        "recovery=-0.1",
        "recovery=1.5",
        "utility=2",
        "privleak=-1",
        "floor=101",
        "recovery=nan",
        "recovery=inf",
        "bogus=1",
        "recovery",
        "knowmem_x=0.5",
        "knowmem_f@bad-id=0.1",
        "=0.2",
    ],
)
def test_nonsense_budgets_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_budget(text)
    assert "\n" not in str(info.value)


def test_a_metric_name_is_a_budget_key_of_its_kind() -> None:
    """Budget keys accept metric names (issue 27): a forget metric's is its recovery budget, a utility metric's
    its ratio, with the same precedence as before (metric@variant, key@variant, metric, key)."""
    budget = parse_budget("utility=0.8 knowmem_r=0.7 knowmem_r@rtn-w8=0.6 recovery=0.3 knowmem_f=0.2")
    assert budget.value_of(("knowmem_r", "utility"), "rtn-w8") == 0.6
    assert budget.value_of(("knowmem_r", "utility"), "bnb-nf4") == 0.7
    assert budget.value_of(("utility",), "bnb-nf4") == 0.8
    assert budget.recovery_for("knowmem_f", "rtn-w8") == 0.2 and budget.recovery_for("verbmem_f", "rtn-w8") == 0.3


def test_plan_checks_is_stable_and_privleak_needs_reference() -> None:
    from unlearn_assert.benchmark import judged_metrics
    from unlearn_assert.benchmark.muse import MuseBenchmark

    without = plan_checks(("rtn-w4g128", "rtn-w8"), judged_metrics(MuseBenchmark()))
    assert ("fp", "privleak") not in without and ("rtn-w8", "privleak") not in without
    assert without[:3] == [("fp", "verbmem_f"), ("fp", "knowmem_f"), ("fp", "utility")]
    with_ref = plan_checks(("rtn-w4g128",), judged_metrics(MuseBenchmark(retrain_auc=0.5)))
    assert plan_checks(("rtn-w8",), judged_metrics(MuseBenchmark(has_retrain=True))) == plan_checks(
        ("rtn-w8",), judged_metrics(MuseBenchmark(retrain_auc=0.4))
    )
    assert ("rtn-w4g128", "privleak") in with_ref
    assert item_name("rtn-w4g128", "knowmem_f") == "test_budget[rtn-w4g128-knowmem_f]"


def test_an_item_needs_the_same_rows_wherever_it_is_judged() -> None:
    """q(T) is context for forget and utility items alike, so it is one of their rows: an item's figures and message
    do not depend on what the process judging it computed before (under xdist, which worker got it)."""
    for role in ("forget", "utility"):
        assert needed_rows("rtn-w4", role) == [
            ("target", "fp"),
            ("unlearned", "fp"),
            ("target", "rtn-w4"),
            ("unlearned", "rtn-w4"),
        ]
        assert ("target", "art") not in needed_rows("art", role, quantized_target=False)  # a user's artifact: no q(T)
        assert needed_rows("fp", role) == [("target", "fp"), ("unlearned", "fp")]
    assert needed_rows("rtn-w4", "privacy", retrain=True) == [
        ("target", "fp"),
        ("unlearned", "fp"),
        ("retrain", "fp"),
        ("unlearned", "rtn-w4"),
    ]


def test_recovery_hand_computed() -> None:
    # target 50, unlearned 10: 40 points removed; quantized 30 brings back 20 of them = 50%
    assert recovery(30.0, 10.0, 50.0) == pytest.approx(0.5)
    assert recovery(10.0, 10.0, 50.0) == 0.0
    assert recovery(5.0, 10.0, 50.0) == pytest.approx(-0.125)
    assert recovery(30.0, 50.0, 50.0) is None


VALUES = {
    ("target", FP): {"verbmem_f": 60.0, "knowmem_f": 50.0, "knowmem_r": 40.0, "privleak": None},
    ("unlearned", FP): {"verbmem_f": 20.0, "knowmem_f": 48.0, "knowmem_r": 38.0, "privleak": -3.0},
    ("unlearned", "rtn-w4g128"): {"verbmem_f": 44.0, "knowmem_f": 49.0, "knowmem_r": 30.0, "privleak": -40.0},
    ("target", "rtn-w4g128"): {"verbmem_f": 59.0, "knowmem_f": 50.0, "knowmem_r": 39.0, "privleak": None},
}


def test_recovery_verdict_fails_with_all_numbers() -> None:
    v = judge_item("rtn-w4g128", "verbmem_f", figures_from_values(VALUES), Budget())
    # (44 - 20) / (60 - 20) = 0.6 > 0.25
    assert v.outcome == "failed" and v.value == pytest.approx(0.6)
    for needle in ("60%", "budget 25%", "quantized 44.0", "unlearned 20.0", "target 60.0", "quantized target 59.0"):
        assert needle in v.message
    assert (
        judge_item("rtn-w4g128", "verbmem_f", figures_from_values(VALUES), parse_budget("recovery=0.7")).outcome
        == "passed"
    )


def test_floor_failure_has_its_own_message() -> None:
    # knowmem_f dropped only 2 points (< floor 5): unlearning did not work in full precision
    v = judge_item("rtn-w4g128", "knowmem_f", figures_from_values(VALUES), Budget())
    assert v.outcome == "failed" and "did not work in full precision" in v.message
    assert judge_item(FP, "knowmem_f", figures_from_values(VALUES), Budget()).outcome == "failed"
    assert judge_item(FP, "verbmem_f", figures_from_values(VALUES), Budget()).outcome == "passed"


def test_utility_and_privleak() -> None:
    u = judge_item("rtn-w4g128", "utility", figures_from_values(VALUES), Budget())  # 30 / 40 = 75% < 90%
    assert u.outcome == "failed" and u.value == pytest.approx(0.75)
    # the quantized target's knowmem_r is context (how much the quantizer itself costs), not the reference
    assert u.message == (
        "knowmem_r under rtn-w4g128 is 75% of the target's (needs >= 90%): 30.0 vs target 40.0 "
        "(the quantized target: 39.0, 98%)"
    )
    without = {k: v for k, v in VALUES.items() if k != ("target", "rtn-w4g128")}
    assert judge_item("rtn-w4g128", "utility", figures_from_values(without), Budget()).message.endswith(
        "30.0 vs target 40.0"
    )
    assert judge_item(FP, "utility", figures_from_values(VALUES), Budget()).outcome == "passed"  # 38/40 = 95%
    p = judge_item("rtn-w4g128", "privleak", figures_from_values(VALUES), Budget())  # |-40| > 25
    assert p.outcome == "failed" and "-40.0%" in p.message
    assert judge_item(FP, "privleak", figures_from_values(VALUES), Budget()).outcome == "passed"


def test_cache_roundtrip_atomic_and_damaged(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    key = cache_key({"model": "abc", "quantizer": "rtn-w4g128"})
    assert key != cache_key({"model": "abd", "quantizer": "rtn-w4g128"})
    assert cache.get(key) is None
    cache.put(key, {"values": {"knowmem_f": 1.5}})
    assert cache.get(key) == {"values": {"knowmem_f": 1.5}}
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    path = next(tmp_path.rglob(f"{key}.json"))
    path.write_text("{ damaged")
    assert cache.get(key) is None  # a damaged entry is a miss, not an error
    assert ResultCache(tmp_path, enabled=False).get(key) is None


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_text(target, json.dumps({"v": 1}))

    with pytest.raises(TypeError):
        atomic_write_text(target, 123)  # type: ignore[arg-type]
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_privleak_is_undefined_against_a_zero_reference_auc() -> None:
    """(AUC - AUC_R) / AUC_R has nothing to divide by at AUC_R = 0: None, and a reason naming the fix."""
    from unlearn_assert.benchmark.muse import reference_problem
    from unlearn_assert.metrics.privleak import privleak

    assert privleak(0.25, 0.5) == -50.0 and privleak(None, 0.5) is None
    assert privleak(0.0, 0.0) is None and privleak(0.3, 0.0) is None
    assert reference_problem(0.5, "retrain") is None
    assert "--unlearn-retrain names a model trained without the forget data" in str(reference_problem(0.0, "retrain"))
    assert "--unlearn-retrain-auc" in str(reference_problem(0.0, "default"))
