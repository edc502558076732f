"""The paired bootstrap of the judged figures (metrics/stats.py), the figures derived from rows'
per-item scores (engine/derive.py) and the verdict policies (engine/verdicts.py).

Hand-computed cases use a fixed resample (``counts=``: one row per replicate, one column per item)
so every replicate's figure can be worked out on paper; the Hypothesis properties are the issue's
(estimate inside its interval, narrowing with n, strict <= point <= lenient, item-order invariance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from unlearn_assert.benchmark.muse import MuseBenchmark
from unlearn_assert.config import Budget, parse_budget
from unlearn_assert.engine.derive import Bootstrap, figures, figures_from_values, resolution
from unlearn_assert.engine.rows import Row
from unlearn_assert.engine.verdicts import Verdict, judge, judge_item
from unlearn_assert.errors import UnlearnAssertError
from unlearn_assert.metrics.stats import (
    Interval,
    mann_whitney_auc,
    paired_counts,
    paired_difference_ci,
    paired_privleak_ci,
    paired_ratio_ci,
    paired_recovery_ci,
    percentile_interval,
    prior_weights,
    pseudo_items,
    resample_counts,
    resample_weights,
)
from unlearn_assert.names import FP, VERDICT_POLICIES

CHECKS = ("verbmem_f", "knowmem_f", "utility", "privleak")  # MUSE's items

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: A fixed resample of two items: (2, 0), (1, 1), (0, 2): each item twice, one of each, the other twice.
THREE = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 2.0]])


# --------------------------------------------------------------------------- hand-computed


def test_identical_items_no_longer_give_a_point_interval() -> None:
    """Five identical items (recovery 0.5 on each) proved nothing about a sixth: the plain bootstrap
    (``prior=0``) printed [0.5, 0.5]. With the pseudo-items, by hand: the span is 10..50 (40), q - u
    is 20 on every item, so q(U)'s pseudo-item moves up by (5 * 20 + 40) / 6 and down by 40 (no item
    went down) from the average item (30, 10, 50); every replicate's drop stays 40 and its recovery
    is ``0.5 + (70/3 g1 - 40 g2) / (40 (W + g1 + g2))`` for item weights summing to W."""
    q, u, t = [30.0] * 5, [10.0] * 5, [50.0] * 5
    plain = paired_recovery_ci(q, u, t, key="knowmem_f", prior=0)
    assert plain == Interval(0.5, 0.5, degenerate=0, replicates=1000, n=5)
    assert pseudo_items(np.array([q, u, t]), 0, 1).tolist() == [[30 + 70 / 3, 10.0, 50.0], [-10.0, 10.0, 50.0]]
    ci = paired_recovery_ci(q, u, t, key="knowmem_f")
    w, g = resample_weights(5, seed=0, key="knowmem_f"), prior_weights(2, seed=0, key="knowmem_f")
    reps = 0.5 + (70 / 3 * g[:, 0] - 40 * g[:, 1]) / (40 * (w.sum(axis=1) + g.sum(axis=1)))
    by_hand = percentile_interval(reps, 0.5)
    assert (ci.lo, ci.hi, ci.degenerate, ci.n) == pytest.approx((by_hand.lo, by_hand.hi, 0, 5), rel=1e-12)
    assert ci.lo < 0.2 and ci.hi > 0.6


def test_recovery_on_a_fixed_resample() -> None:
    # replicate means (q, u, t): (20, 10, 30) -> 0.5; (30, 10, 40) -> 2/3; (40, 10, 50) -> 0.75.
    # At 90%: outward order statistics at 5% and 95% of 3 replicates: positions floor(0.1) = 0, ceil(1.9) = 2.
    ci = paired_recovery_ci([20.0, 40.0], [10.0, 10.0], [30.0, 50.0], key="k", counts=THREE, confidence=0.9, prior=0)
    assert (ci.lo, ci.hi, ci.degenerate, ci.replicates, ci.n) == (0.5, 0.75, 0, 3, 2)
    # pseudo-items: the average item (30, 10, 40) with q moved up by (10 + 30 + 40) / 3 (both items went up;
    # the span is 10..50) and down by 40 (none went down), weighted (1, 0), (0, 0), (0, 1). Replicate sums
    # (q, u, t): (40 + 30 + 80/3, 30, 100) -> 20/21; (60, 20, 80) -> 2/3; (80 - 10, 30, 140) -> 4/11
    ci = paired_recovery_ci(
        [20.0, 40.0],
        [10.0, 10.0],
        [30.0, 50.0],
        key="k",
        counts=THREE,
        confidence=0.9,
        pseudo=[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
    )
    assert (ci.lo, ci.hi) == (pytest.approx(4 / 11), pytest.approx(20 / 21))
    assert (ci.degenerate, ci.replicates, ci.n) == (0, 3, 2)


def test_degenerate_replicates_are_counted_and_ranked_at_infinity() -> None:
    # drops m(T) - m(U) per replicate: 10, -5, -20: two replicates have nothing to recover from
    ci = paired_recovery_ci([5.0, 5.0], [0.0, 20.0], [10.0, 0.0], key="k", counts=THREE, confidence=0.9, prior=0)
    assert ci.degenerate == 2 and ci.lo == 0.5 and math.isinf(ci.hi)
    # by hand, for random resamples of these two items: P(drop <= 0) = P(not both item 0) = 3/4
    many = paired_recovery_ci([5.0, 5.0], [0.0, 20.0], [10.0, 0.0], key="k", n_resamples=20000, prior=0)
    assert many.degenerate / many.replicates == pytest.approx(0.75, abs=0.015)
    # with Bayesian bootstrap weights w0, w1 ~ Exp(1) and the pseudo-items at the mean drop (-5): the drop
    # 10 w0 - 20 w1 - 5 (g1 + g2) is positive only when w0 > 2 w1 + (g1 + g2) / 2, with probability
    # 1/3 * 2/3 * 2/3 = 4/27 (P(w0 > x) = exp(-x); E exp(-2 w1) = 1/3; E exp(-g / 2) = 2/3 for g ~ Exp(1))
    bayes = paired_recovery_ci([5.0, 5.0], [0.0, 20.0], [10.0, 0.0], key="k", n_resamples=20000)
    assert bayes.degenerate / bayes.replicates == pytest.approx(1 - 4 / 27, abs=0.015)
    # replicates: degenerate, 1, 0.5
    ratio = paired_ratio_ci([1.0, 1.0], [0.0, 2.0], key="k", counts=THREE, confidence=0.9, prior=0)
    assert (ratio.lo, ratio.hi, ratio.degenerate) == (0.5, math.inf, 1)
    # pseudo-items: the average item (1, 1) with num moved up by (1 + 2) / 2 and down by (1 + 2) / 2 (one
    # item each way; the span is 0..2), weighted (0, 0), (1, 0), (0, 1). Replicate sums (num, den):
    # (2, 0) -> degenerate; (2 + 2.5, 2 + 1) -> 1.5; (2 - 0.5, 4 + 1) -> 0.3
    ratio = paired_ratio_ci(
        [1.0, 1.0], [0.0, 2.0], key="k", counts=THREE, confidence=0.9, pseudo=[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    )
    assert (ratio.lo, ratio.hi, ratio.degenerate) == (pytest.approx(0.3), math.inf, 1)


def test_difference_on_a_fixed_resample() -> None:
    # per-item drops 10 and 30: replicates 10, 20, 30
    ci = paired_difference_ci([50.0, 60.0], [40.0, 30.0], key="k", counts=THREE, confidence=0.9, prior=0)
    assert (ci.lo, ci.hi) == (10.0, 30.0)
    one = paired_difference_ci([50.0, 60.0], [40.0, 30.0], key="k", counts=THREE[1:2], prior=0)  # one replicate
    assert one.lo == 20.0
    # pseudo-items: the average item (55, 35) with a moved up by (10 + 30 + 30) / 3 and down by 30 (the span is
    # 30..60), weighted (1, 0), (0, 0), (0, 1): (100 + 55 + 70/3 - 80 - 35) / 3 = 190/9; 20; (120 + 25 - 60 - 35) / 3
    ci = paired_difference_ci(
        [50.0, 60.0], [40.0, 30.0], key="k", counts=THREE, confidence=0.9, pseudo=[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]
    )
    assert (ci.lo, ci.hi) == (pytest.approx(50 / 3), pytest.approx(190 / 9))


def test_nothing_changed_gives_the_rule_of_three_not_zero_width() -> None:
    """No sampled item changed between U and q(U) (the demo's ``km 0% [0,0]``): the plain bootstrap
    claims certainty; with the pseudo-items the share of changed items is bounded as Clopper-Pearson
    bounds it (3.7/n at 97.5% when nothing changed), so recovery is about +-3.7/n * span / drop."""
    n = 100
    t = [100.0] * 60 + [0.0] * 40
    u = [100.0] * 24 + [0.0] * 76  # 36 items forgotten: a 36-point drop
    plain = paired_recovery_ci(u, u, t, key="knowmem_f", prior=0)
    assert (plain.lo, plain.hi) == (0.0, 0.0)
    ci = paired_recovery_ci(u, u, t, key="knowmem_f")
    bound = 3.7 / n * 100.0 / 36.0  # about 0.10
    assert -1.3 * bound < ci.lo < -0.6 * bound and 0.6 * bound < ci.hi < 1.3 * bound, ci
    drop = paired_difference_ci(u, u, key="knowmem_f")  # two models that agree on every sampled item
    assert -4.5 < drop.lo < -2.5 and 2.5 < drop.hi < 4.5, drop  # about +-3.7/n of the 100-point span
    with pytest.raises(ValueError, match="one row per replicate and 2 columns"):
        paired_difference_ci(u, u, key="k", counts=THREE, pseudo=[[1.0, 0.0]])


def test_privleak_stratified_with_a_fixed_reference_and_with_the_retrain_model() -> None:
    # Min-40% values (member score = -value, forget labelled 0). Forget [1, 3], holdout [2, 4]: only
    # (forget 3, holdout 2) is a win for the holdout text, so the AUC is 1/4.
    forget, holdout = [1.0, 3.0], [2.0, 4.0]
    c_f = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    c_h = np.array([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    # replicate AUCs: 0 (only forget 1), 1 (forget 3 vs holdout 2), 1/4 -> privleak vs 0.5: -100, +100, -50
    ci = paired_privleak_ci(forget, holdout, reference=0.5, counts=(c_f, c_h), confidence=0.9)
    assert ci is not None and (ci.lo, ci.hi, ci.degenerate, ci.n) == (-100.0, 100.0, 0, 4)
    # R's values [3, 1] / [4, 2]: AUC_R on the same resampled texts is 1/2, 0 (degenerate), 1/4
    ci = paired_privleak_ci(
        forget, holdout, reference_forget=[3.0, 1.0], reference_holdout=[4.0, 2.0], counts=(c_f, c_h), confidence=0.9
    )
    assert ci is not None and (ci.lo, ci.hi, ci.degenerate) == (-100.0, math.inf, 1)
    assert mann_whitney_auc([-1.0, -3.0], [-2.0, -4.0]) == 0.25
    assert paired_privleak_ci(forget, holdout, reference=0.0) is None  # privleak is undefined against AUC_R = 0
    assert paired_privleak_ci(forget, holdout) is None


def test_a_pseudo_item_never_carries_a_mean_out_of_the_scores_range() -> None:
    """A model that retains almost nothing (one partial answer of ten): q(U)'s downward pseudo-item
    sits at 2.2 - (3 + 25) / 2 < 0, and a heavy weight on it would make a replicate's utility
    negative, which no ratio of ROUGE scores can be; the replicate's mean is clipped to the range."""
    t, q = [0.0] * 8 + [25.0, 0.0], [0.0] * 8 + [22.0, 0.0]
    assert pseudo_items(np.array([q, t]), 0, 1)[1, 0] < 0
    ci = paired_ratio_ci(q, t, key="knowmem_r")
    assert ci.lo == 0.0 and ci.lo <= 0.88 <= ci.hi and ci.degenerate == 0
    one = paired_ratio_ci(q, t, key="k", counts=[[1.0] * 10], pseudo=[[0.0, 100.0]])  # the pseudo-item outweighs all
    assert (one.lo, one.hi) == (0.0, pytest.approx(0.88))  # widened to the estimate, which it contains


def test_percentile_interval_is_outward_and_contains_the_estimate() -> None:
    values = np.arange(1000, dtype=float)  # 0..999
    ci = percentile_interval(values, 500.0, 0.95)
    assert (ci.lo, ci.hi) == (24.0, 975.0)  # floor(0.025 * 999) = 24, ceil(0.975 * 999) = 975
    assert percentile_interval(values, 2000.0, 0.95).hi == 2000.0  # widened to the estimate
    assert percentile_interval(values, 500.0, 0.99).lo == 4.0
    nan = percentile_interval(np.array([1.0, float("nan"), 2.0]), None, 0.9)
    assert nan.degenerate == 1 and math.isinf(nan.hi)  # a non-finite replicate is degenerate, not dropped


def test_draws_are_seeded_per_key_and_read_only() -> None:
    a = resample_counts(7, seed=0, key="knowmem_f", n_resamples=50)
    assert np.array_equal(a, resample_counts(7, seed=0, key="knowmem_f", n_resamples=50))
    assert not np.array_equal(a, resample_counts(7, seed=1, key="knowmem_f", n_resamples=50))
    assert not np.array_equal(a, resample_counts(7, seed=0, key="verbmem_f", n_resamples=50))
    assert (a.sum(axis=1) == 7).all() and not a.flags.writeable


def test_paired_counts_follow_the_items_not_their_positions() -> None:
    cols = [[3.0, 1.0, 2.0, 5.0], [0.0, 0.0, 1.0, 1.0]]
    perm = [2, 0, 3, 1]
    base = paired_counts(cols, seed=0, key="k", n_resamples=100)
    moved = paired_counts([[c[i] for i in perm] for c in cols], seed=0, key="k", n_resamples=100)
    assert np.array_equal(moved, base[:, perm])


# --------------------------------------------------------------------------- rows -> figures -> verdicts


def _records(scores: list[float]) -> list[dict[str, Any]]:
    return [{"id": i, "score": s} for i, s in enumerate(scores)]


def _privleak_records(forget: list[float], holdout: list[float]) -> list[dict[str, Any]]:
    return [{"id": f"forget:{i}", "split": "forget", "score": s} for i, s in enumerate(forget)] + [
        {"id": f"holdout:{i}", "split": "holdout", "score": s} for i, s in enumerate(holdout)
    ]


def make_row(
    role: Any,
    variant: str,
    vm: list[float],
    km: list[float],
    kr: list[float],
    forget: list[float] | None = None,
    holdout: list[float] | None = None,
) -> Row:
    """A row whose values are the means of its per-item scores (as ``evaluate`` makes them)."""
    samples = {"verbmem_f": _records(vm), "knowmem_f": _records(km), "knowmem_r": _records(kr)}
    auc = None
    if forget is not None and holdout is not None:
        samples["privleak"] = _privleak_records(forget, holdout)
        auc = mann_whitney_auc([-v for v in forget], [-v for v in holdout])
    values: dict[str, float | None] = {
        "verbmem_f": float(np.mean(vm)),
        "knowmem_f": float(np.mean(km)),
        "knowmem_r": float(np.mean(kr)),
        "privleak": None,
    }
    return Row(role=role, variant=variant, values=values, samples=samples, auc=auc)


def test_figures_from_rows_pair_the_items_and_match_the_point_values() -> None:
    t = make_row("target", FP, [60.0, 80.0, 70.0], [50.0, 40.0, 60.0], [40.0, 50.0, 30.0], [1.0, 2.0], [3.0, 4.0])
    u = make_row("unlearned", FP, [10.0, 30.0, 20.0], [10.0, 20.0, 15.0], [40.0, 45.0, 35.0], [2.0, 3.0], [3.0, 1.0])
    q = make_row(
        "unlearned", "rtn-w4g128", [50.0, 60.0, 55.0], [20.0, 30.0, 25.0], [30.0, 40.0, 20.0], [1.0, 3.0], [2.0, 4.0]
    )
    figs = figures([t, u, q], MuseBenchmark())
    assert figs.recovery["rtn-w4g128"]["verbmem_f"] == pytest.approx((55 - 20) / (70 - 20))
    rec = figs.recovery_ci["rtn-w4g128"]["verbmem_f"]
    assert rec == paired_recovery_ci(
        [50.0, 60.0, 55.0],
        [10.0, 30.0, 20.0],
        [60.0, 80.0, 70.0],
        key="verbmem_f",
        estimate=figs.recovery["rtn-w4g128"]["verbmem_f"],
    )
    assert rec.lo <= 0.7 <= rec.hi and rec.n == 3
    plain = figures([t, u, q], MuseBenchmark(), Bootstrap(prior=0.0)).recovery_ci["rtn-w4g128"]["verbmem_f"]
    assert (
        plain
        == paired_recovery_ci(
            [50.0, 60.0, 55.0],
            [10.0, 30.0, 20.0],
            [60.0, 80.0, 70.0],
            key="verbmem_f",
            estimate=figs.recovery["rtn-w4g128"]["verbmem_f"],
            prior=0,
        )
        != rec
    )
    assert figs.drop_ci["knowmem_f"].lo <= 35.0 <= figs.drop_ci["knowmem_f"].hi
    assert figs.utility["rtn-w4g128"]["knowmem_r"] == pytest.approx(30 / 40) and "rtn-w4g128" in figs.utility_ci
    assert figs.n == {"verbmem_f": 3, "knowmem_f": 3, "knowmem_r": 3, "privleak": 4}
    assert set(figs.privacy_ci["privleak"]) == {
        ("unlearned", FP),
        ("unlearned", "rtn-w4g128"),
    }  # U's rows: the judged ones
    # no intervals without replicates, and the same point figures
    bare = figures([t, u, q], MuseBenchmark(), bootstrap=Bootstrap(replicates=0))
    assert not bare.recovery_ci and not bare.drop_ci and bare.recovery == figs.recovery
    # the resolution: half the width of the drop's interval over the drop
    res = figs.resolution["verbmem_f"]
    drop = figs.drop_ci["verbmem_f"]
    assert res.recovery == pytest.approx((drop.hi - drop.lo) / 2 / 50.0) and res.n == 3
    assert resolution("knowmem_f", -1.0, drop, 3).recovery is None  # nothing forgotten, nothing to resolve


def test_privleak_is_paired_with_the_retrain_model_and_has_no_interval_when_undefined() -> None:
    t = make_row("target", FP, [60.0, 80.0], [50.0, 40.0], [40.0, 50.0], [1.0, 2.0, 3.0], [3.0, 4.0, 2.5])
    u = make_row("unlearned", FP, [10.0, 30.0], [10.0, 20.0], [40.0, 45.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0])
    r = make_row("retrain", FP, [10.0, 20.0], [5.0, 5.0], [40.0, 40.0], [2.0, 2.5, 3.0], [2.0, 3.0, 2.6])
    figs = figures([t, u, r], MuseBenchmark())
    assert figs.reference["privleak"] == (r.auc, "retrain")
    assert figs.privacy_ci["privleak"][("unlearned", FP)] == paired_privleak_ci(
        [2.0, 3.0, 1.0],
        [3.0, 1.0, 2.0],
        reference_forget=[2.0, 2.5, 3.0],
        reference_holdout=[2.0, 3.0, 2.6],
        estimate=figs.values[("unlearned", FP)]["privleak"],
    )
    # a "retrain" model that tells every forget text from every holdout text: AUC_R = 0, privleak undefined
    leaky = make_row("retrain", FP, [10.0, 20.0], [5.0, 5.0], [40.0, 40.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0])
    figs = figures([t, u, leaky], MuseBenchmark())
    assert figs.reference["privleak"] == (0.0, "retrain") and figs.values[("unlearned", FP)]["privleak"] is None
    assert figs.privacy_ci == {}


def test_rows_that_scored_other_items_are_not_paired() -> None:
    """Items are paired by their ids: another order pairs the same items (the same interval); a row
    that lacks an item of the first cannot be paired with it, and that is an error, never a guess."""
    t = make_row("target", FP, [60.0, 80.0], [50.0, 40.0], [40.0, 50.0])
    u = make_row("unlearned", FP, [10.0, 30.0], [10.0, 20.0], [40.0, 45.0])
    in_order = figures([t, u], MuseBenchmark()).drop_ci["verbmem_f"]
    u.samples["verbmem_f"] = [{"id": 1, "score": 30.0}, {"id": 0, "score": 10.0}]  # another order
    assert figures([t, u], MuseBenchmark()).drop_ci["verbmem_f"] == in_order
    u.samples["verbmem_f"] = [{"id": 1, "score": 30.0}, {"id": 5, "score": 10.0}]  # other items
    with pytest.raises(UnlearnAssertError, match="cannot pair the verbmem_f items of target:fp and unlearned:fp"):
        figures([t, u], MuseBenchmark())


def _fig(estimates: dict[str, float], interval: tuple[float, float] | None) -> Any:
    """Figures for hand-made verdict cases: the values of VALUES-like rows and one recovery interval."""
    values = {
        ("target", FP): {"verbmem_f": 60.0, "knowmem_f": 50.0, "knowmem_r": 40.0, "privleak": None},
        ("unlearned", FP): {"verbmem_f": 20.0, "knowmem_f": 48.0, "knowmem_r": 38.0, "privleak": -3.0},
        ("unlearned", "rtn-w4g128"): {
            "verbmem_f": estimates["q"],
            "knowmem_f": 49.0,
            "knowmem_r": 30.0,
            "privleak": -40.0,
        },
    }
    extra: dict[str, Any] = {"drop_ci": {"verbmem_f": Interval(30.0, 50.0, 0, 1000, 48)}}
    if interval is not None:
        extra["recovery_ci"] = {"rtn-w4g128": {"verbmem_f": Interval(*interval, 0, 1000, 48)}}
    return figures_from_values(values, **extra)


def test_each_policy_on_a_straddling_recovery() -> None:
    # recovery (40 - 20) / (60 - 20) = 50%, interval [22%, 114%], budget 60%: the estimate passes
    figs = _fig({"q": 40.0}, (0.22, 1.14))
    budget = parse_budget("recovery=0.6")
    point, strict, lenient = (judge_item("rtn-w4g128", "verbmem_f", figs, budget, p) for p in VERDICT_POLICIES)
    assert (point.outcome, strict.outcome, lenient.outcome) == ("passed", "failed", "passed")
    assert point.decided is False and point.ci == (0.22, 1.14) and point.value == pytest.approx(0.5)
    assert point.message.startswith(
        "undecided: verbmem_f recovery 50% [22%, 114%] under rtn-w4g128 straddles the "
        "60% budget at n=48 forget passages; add forget items or choose --unlearn-verdict "
        "(point: the estimate passes it): quantized 40.0"
    )
    assert "(strict: failed)" in strict.message and "(lenient: passed)" in lenient.message
    # budget 25%: point fails on the estimate, lenient still passes (the interval reaches below 25%)
    low = [judge_item("rtn-w4g128", "verbmem_f", figs, Budget(), p).outcome for p in VERDICT_POLICIES]
    assert low == ["failed", "failed", "passed"]
    # a budget above the whole interval: decided, every policy passes, the message shows all three numbers
    inside = _fig({"q": 40.0}, (0.22, 0.95))
    high = [judge_item("rtn-w4g128", "verbmem_f", inside, parse_budget("recovery=1"), p) for p in VERDICT_POLICIES]
    assert [v.outcome for v in high] == ["passed"] * 3 and all(v.decided for v in high)
    assert high[0].message.startswith(
        "verbmem_f recovered 50% [22%, 95%] of the forgetting under rtn-w4g128 (budget 100%)"
    )
    # ... and one wholly beyond it: every policy fails, in capitals
    beyond = [judge_item("rtn-w4g128", "verbmem_f", inside, parse_budget("recovery=0.1"), p) for p in VERDICT_POLICIES]
    assert [v.outcome for v in beyond] == ["failed"] * 3 and "RECOVERED 50% [22%, 95%]" in beyond[0].message


def test_without_an_interval_strict_fails_and_the_others_judge_the_estimate() -> None:
    figs = _fig({"q": 24.0}, None)  # recovery 10%
    verdicts = [judge_item("rtn-w4g128", "verbmem_f", figs, Budget(), p) for p in VERDICT_POLICIES]
    assert [v.outcome for v in verdicts] == ["passed", "failed", "passed"]
    assert all(v.decided is None and v.ci is None for v in verdicts)


def test_fp_items_need_the_drops_interval_to_exclude_zero() -> None:
    values = {
        ("target", FP): {"verbmem_f": 60.0, "knowmem_f": 50.0, "knowmem_r": 40.0, "privleak": None},
        ("unlearned", FP): {"verbmem_f": 50.0, "knowmem_f": 48.0, "knowmem_r": 38.0, "privleak": None},
        ("unlearned", "rtn-w8"): {"verbmem_f": 50.0, "knowmem_f": 48.0, "knowmem_r": 38.0, "privleak": None},
    }
    wide = figures_from_values(values, drop_ci={"verbmem_f": Interval(-2.0, 22.0, 0, 1000, 8)})
    for policy in VERDICT_POLICIES:  # the drop (10 points) clears the floor, but its interval includes 0
        v = judge_item(FP, "verbmem_f", wide, Budget(), policy)
        assert v.outcome == "failed" and v.decided is True and "its interval includes 0" in v.message, policy
        q = judge_item("rtn-w8", "verbmem_f", wide, Budget(), policy)
        assert q.outcome == "failed" and q.message.endswith("recovery under rtn-w8 is not judged")
    tight = figures_from_values(values, drop_ci={"verbmem_f": Interval(2.0, 18.0, 0, 1000, 8)})  # straddles floor 5
    assert [judge_item(FP, "verbmem_f", tight, Budget(), p).outcome for p in VERDICT_POLICIES] == [
        "passed",
        "failed",
        "passed",
    ]
    assert judge_item(FP, "verbmem_f", tight, Budget()).message.startswith(
        "undecided: verbmem_f drop 10.0 points [2.0, 18.0] in full precision straddles the 5-point floor at n=8 forget "
        "passages"
    )


def test_verdicts_round_trip_with_their_interval() -> None:
    figs = _fig({"q": 40.0}, (0.22, math.inf))
    v = judge_item("rtn-w4g128", "verbmem_f", figs, Budget(), "lenient")
    assert v.ci == (0.22, math.inf) and "[22%, inf]" in v.message
    data = v.to_dict()
    assert data["estimate"] == data["value"] and data["ci"] == [0.22, math.inf] and data["figure"] == "recovery"
    assert Verdict.from_dict({**data, "ci": [0.22, None]}) == v  # the JSON file writes an unbounded end as null


# --------------------------------------------------------------------------- properties

scores = st.floats(min_value=0.0, max_value=100.0, allow_nan=False, width=32)


@st.composite
def paired_items(draw: Any, min_size: int = 1, max_size: int = 24) -> tuple[list[float], list[float], list[float]]:
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    return tuple(draw(st.lists(scores, min_size=n, max_size=n)) for _ in range(3))  # type: ignore[return-value]


@settings(max_examples=60)
@given(paired_items())
def test_property_the_estimate_lies_inside_its_interval(items: tuple[list[float], list[float], list[float]]) -> None:
    q, u, t = items
    rec = paired_recovery_ci(q, u, t, key="k", n_resamples=200)
    drop = float(np.mean(t) - np.mean(u))
    if drop > 0:
        assert rec.lo <= (float(np.mean(q)) - float(np.mean(u))) / drop <= rec.hi
    diff = paired_difference_ci(t, u, key="k", n_resamples=200)
    assert diff.lo <= drop <= diff.hi
    if np.mean(t) > 0:
        ratio = paired_ratio_ci(q, t, key="k", n_resamples=200)
        assert ratio.lo <= float(np.mean(q)) / float(np.mean(t)) <= ratio.hi


@settings(max_examples=40)
@given(st.lists(st.tuples(scores, st.floats(min_value=1.0, max_value=50.0, width=32), scores), min_size=3, max_size=10))
def test_property_the_interval_narrows_as_n_grows(base: list[tuple[float, float, float]]) -> None:
    """The same items repeated 16 times (a fixed effect, 16x the n): the interval is narrower."""
    u = [b[0] for b in base]
    t = [b[0] + b[1] for b in base]  # every item forgot something: no degenerate replicate
    q = [b[0] + b[1] * b[2] / 100.0 for b in base]  # each item recovers its own share
    small = paired_recovery_ci(q, u, t, key="k")
    large = paired_recovery_ci(q * 16, u * 16, t * 16, key="k")
    if small.hi - small.lo > 1e-9:
        assert large.hi - large.lo < small.hi - small.lo
    assert paired_difference_ci(t * 16, u * 16, key="k").hi - paired_difference_ci(t * 16, u * 16, key="k").lo <= (
        paired_difference_ci(t, u, key="k").hi - paired_difference_ci(t, u, key="k").lo + 1e-9
    )


@st.composite
def gate_rows(draw: Any) -> tuple[list[Row], Budget]:
    n = draw(st.integers(min_value=2, max_value=12))
    m = draw(st.integers(min_value=2, max_value=8))

    def col(size: int = n) -> list[float]:
        return draw(st.lists(scores, min_size=size, max_size=size))

    def texts() -> list[float]:
        return draw(st.lists(st.floats(min_value=0.0, max_value=10.0, width=32), min_size=m, max_size=m))

    rows = [
        make_row("target", FP, col(), col(), col(), texts(), texts()),
        make_row("unlearned", FP, col(), col(), col(), texts(), texts()),
        make_row("unlearned", "rtn-w4g128", col(), col(), col(), texts(), texts()),
    ]
    budget = Budget(
        recovery=draw(st.floats(0.0, 1.0)),
        utility=draw(st.floats(0.0, 1.0)),
        privleak=draw(st.floats(0.0, 200.0)),
        floor=draw(st.floats(0.0, 30.0)),
    )
    return rows, budget


@settings(max_examples=60)
@given(gate_rows())
def test_property_strict_passes_are_point_passes_are_lenient_passes(case: tuple[list[Row], Budget]) -> None:
    rows, budget = case
    figs = figures(rows, MuseBenchmark(retrain_auc=0.5), bootstrap=Bootstrap(replicates=200))
    for variant in (FP, "rtn-w4g128"):
        for check in CHECKS:
            point, strict, lenient = (judge_item(variant, check, figs, budget, p) for p in VERDICT_POLICIES)
            assert not strict.passed or point.passed, (variant, check, strict.message)
            assert not point.passed or lenient.passed, (variant, check, point.message)
            if point.decided is not None:
                assert point.decided == (strict.passed == lenient.passed), point.message
                assert point.message.startswith("undecided: ") == (not point.decided), point.message


@settings(max_examples=60)
@given(gate_rows(), st.randoms(use_true_random=False))
def test_property_intervals_are_invariant_to_the_order_of_the_items(case: tuple[list[Row], Budget], rnd: Any) -> None:
    rows, _ = case
    n, m = len(rows[0].samples["verbmem_f"]), len(rows[0].samples["privleak"]) // 2
    perm, perm_f, perm_h = rnd.sample(range(n), n), rnd.sample(range(m), m), rnd.sample(range(m), m)
    shuffled = []
    for row in rows:  # the same permutation for every row: the items move, the pairing stays
        samples = {k: [row.samples[k][i] for i in perm] for k in ("verbmem_f", "knowmem_f", "knowmem_r")}
        forget, holdout = row.samples["privleak"][:m], row.samples["privleak"][m:]
        samples["privleak"] = [forget[i] for i in perm_f] + [holdout[i] for i in perm_h]
        shuffled.append(Row(role=row.role, variant=row.variant, values=row.values, samples=samples, auc=row.auc))
    a, b = figures(rows, MuseBenchmark(retrain_auc=0.5)), figures(shuffled, MuseBenchmark(retrain_auc=0.5))
    assert a.drop_ci == b.drop_ci and a.recovery_ci == b.recovery_ci
    assert a.utility_ci == b.utility_ci and a.privacy_ci == b.privacy_ci


def test_judge_is_monotone_in_the_policies() -> None:
    j = judge(0.5, (0.2, 1.1), (-math.inf, 0.25))
    assert (j.point, j.strict, j.lenient, j.decided) == (False, False, True, False)
    j = judge(0.5, (0.3, 0.9), (-math.inf, 0.25))
    assert (j.point, j.strict, j.lenient, j.decided) == (False, False, False, True)
    j = judge(-10.0, (-30.0, 5.0), (-25.0, 25.0))  # privleak: |p| <= 25, the interval leaves the band below
    assert (j.point, j.strict, j.lenient, j.decided) == (True, False, True, False)
