"""The paired intervals keep their promise at the edges (issue 31): simulated gates with a known
population figure (``unlearn_assert.metrics.coverage``), judged by the verdicts' own rule.

Seeded, about 5 s of CPU: 47 scenarios (no change, about 1 or 3 items changed, many; small and
large drops; the drop, recovery, utility and privleak; n = 24, 100 and 400), 200 gates each.
``benchmarks/test_bench_coverage.py`` runs the full table with more gates, before and after.

Why two tiers: with 200 gates a scenario whose true coverage is 95% shows 93% or less about one
time in ten (standard error 1.5 points), and a true 2.5% error rate shows 5% or more about one
time in seventy. So each scenario must show at least 90% coverage and at most 5% wrong decided
verdicts, and pooled over the scenarios where many items change (where the interval is nominal,
not conservative) at least 93% and at most 2.5%; where few items change (the edge the issue is
about, where the intervals are conservative) every scenario must reach 93%.
"""

from __future__ import annotations

import pytest

from unlearn_assert.engine.verdicts import judge
from unlearn_assert.metrics.coverage import Outcome, Scenario, scenarios, simulate

GATES = 200
#: At most this many items per gate differ between the figure's two models: the edge.
FEW = 5.0


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return [simulate(s, judge, gates=GATES) for s in scenarios((24, 100, 400), full=False)]


def _table(rows: list[Outcome]) -> str:
    return "\n".join(
        f"{o.scenario.name} n={o.scenario.n} truth={o.truth:+.3f} coverage={o.coverage:.3f} error={o.decided_error:.3f}"
        for o in rows
    )


def test_the_scenarios_span_the_edges() -> None:
    chosen = scenarios((24, 100, 400), full=False)
    assert {s.n for s in chosen} == {24, 100, 400}
    assert {s.figure for s in chosen} == {"recovery", "drop", "utility", "privleak"}
    assert any(s.changed == 0 for s in chosen) and any(0 < s.changed <= FEW for s in chosen)
    assert any(s.changed > 100 for s in chosen)
    drops = {s.name.split()[1] for s in chosen if s.name.startswith("km drop")}
    assert {"drop9", "drop36", "drop2"} <= drops


def test_a_population_truth_by_hand() -> None:
    # T knows 60%; U forgets 60% of it (0.36) and learns 2% of the rest (0.008); q(U) brings back half of the
    # forgotten (0.18) and flips 2% of every other item: -0.02 * (0.24 + 0.008) + 0.02 * 0.392
    s = Scenario("km r50", "recovery", "binary", 24, (("forget", 0.6), ("gain", 0.02), ("back", 0.5), ("flip", 0.02)))
    assert s.truth == pytest.approx((0.18 - 0.02 * 0.248 + 0.02 * 0.392) / (0.6 - 0.248))
    drop = Scenario("km drop", "drop", "binary", 100, (("forget", 0.15),))
    assert drop.truth == pytest.approx(9.0) and drop.changed == pytest.approx(9.0)
    utility = Scenario("kr", "utility", "retain", 100, (("loss", 0.1), ("gain", 0.05)))
    assert utility.truth == pytest.approx((0.6 * 0.9 + 0.4 * 0.05) / 0.6)


def test_coverage_holds_where_few_items_change(outcomes: list[Outcome]) -> None:
    edge = [o for o in outcomes if o.scenario.changed <= FEW]
    assert len(edge) >= 20
    assert all(o.coverage >= 0.93 for o in edge), _table([o for o in edge if o.coverage < 0.93])
    assert all(o.zero_width == 0 for o in edge), _table([o for o in edge if o.zero_width])  # never [0, 0] again


def test_coverage_and_decided_verdicts_hold_everywhere(outcomes: list[Outcome]) -> None:
    assert all(o.coverage >= 0.90 for o in outcomes), _table([o for o in outcomes if o.coverage < 0.90])
    assert all(o.decided_error <= 0.05 for o in outcomes), _table([o for o in outcomes if o.decided_error > 0.05])
    many = [o for o in outcomes if o.scenario.changed > FEW]
    assert len(many) >= 15
    pooled = sum(o.coverage * o.gates for o in many) / sum(o.gates for o in many)
    error = sum(o.decided_error * o.gates for o in many) / sum(o.gates for o in many)
    assert pooled >= 0.93, _table(many)
    assert error <= 0.025, _table(many)


def test_the_plain_bootstrap_fails_the_same_check() -> None:
    """The check can fail: the interval before issue 31 (``prior=0``) on a few edge scenarios."""
    edge = [s for s in scenarios((24, 100), figures=("recovery", "utility"), full=False) if 0 < s.changed <= FEW]
    plain = [simulate(s, judge, gates=GATES, prior=0) for s in edge]
    assert sum(o.coverage for o in plain) / len(plain) < 0.8, _table(plain)
    assert any(o.zero_width > 0.2 for o in plain)  # "km 0% [0,0]"
