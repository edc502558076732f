"""Budget checks: recovery, utility and privleak, as plain data (no pytest, no torch): which items a
run has, which rows each needs, and the pure function that judges one item from the figures.

Definitions (DESIGN.md, "Verdicts"): for a forget metric m and variant q,
``recovery = (m(q(U)) - m(U)) / (m(T) - m(U))``, the share of what unlearning removed that comes
back. If ``m(T) - m(U)`` is below the ``floor`` budget, or its interval does not exclude 0,
unlearning did not measurably work in full precision: recovery is not judged and that check fails
with its own message. A metric with a "nothing known" value (:attr:`MetricSpec.floor_value`: a
multiple-choice accuracy's chance) can drop only down to it: the floor is capped at ``m(T) - chance``
(an unlearned model at chance has forgotten all the set can show), a target not above chance fails
the item (there is nothing to forget), and the messages say where U stands against chance.
Utility: ``knowmem_r(q(U)) >= utility * knowmem_r(T)``. Privleak: ``|privleak(q(U))| <= privleak``
budget, checked only when a reference AUC exists (a retrain model or ``--unlearn-retrain-auc``).

Every judged figure has an estimate and a paired bootstrap interval (:mod:`.derive`); the budget
accepts a set of values A (``recovery <= b``, ``utility >= b``, ``|privleak| <= b``, ``drop >=
floor``). The policy (``--unlearn-verdict``) decides (:func:`judge`): ``point`` passes when the
estimate is in A, ``strict`` when the whole interval is, ``lenient`` unless the whole interval is
outside A. An item is *decided* when strict and lenient agree (the interval lies on one side of
the budget), else *undecided*, and its message says so. So strict-pass implies point-pass implies
lenient-pass (the interval always contains the estimate). Without an interval (no per-item
scores) point and lenient judge the estimate, strict fails, and ``decided`` is None. The fp forget
items also require, under every policy, that the drop's interval exclude 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..benchmark.base import MetricRole, MetricSpec
from ..config import Budget
from ..names import FP, item_name
from .derive import Figures, Interval
from .derive import removed as removed_points
from .rows import RowKey

__all__ = ["Judgement", "Verdict", "judge_item", "judge", "needed_rows", "plan_checks"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one budget item, e.g. ``test_budget[rtn-w4g128-knowmem_f]``."""

    item: str
    variant: str
    check: str
    outcome: str  # "passed" | "failed" | "skipped"
    message: str
    value: float | None = None  # the estimate of the judged figure
    budget: float | None = None
    ci: tuple[float, float] | None = None  # its paired bootstrap interval (hi may be +inf)
    decided: bool | None = None  # the interval lies on one side of the budget; None without one
    n: int | None = None  # items resampled
    degenerate: int | None = None  # replicates whose denominator was <= 0
    policy: str | None = None  # the --unlearn-verdict it was judged under
    figure: str | None = None  # what value/ci are: "drop" (points), "recovery", "utility" (fractions), "privleak" (%)

    @property
    def passed(self) -> bool | None:
        return None if self.outcome == "skipped" else self.outcome == "passed"

    def to_dict(self) -> dict[str, Any]:
        """Schema 1's verdict: ``quantizer`` for the variant, and the estimate also as ``estimate``."""
        out = {("quantizer" if k == "variant" else k): v for k, v in asdict(self).items()}
        out["passed"] = self.passed
        out["estimate"] = self.value
        out["ci"] = None if self.ci is None else list(self.ci)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """Rebuild a verdict from :meth:`to_dict` output (an xdist payload); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs = {("variant" if k == "quantizer" else k): v for k, v in data.items()}
        kwargs = {k: v for k, v in kwargs.items() if k in names}
        if kwargs.get("ci") is not None:
            lo, hi = kwargs["ci"]
            kwargs["ci"] = (float(lo), math.inf if hi is None else float(hi))
        return cls(**kwargs)


@dataclass(frozen=True)
class Judgement:
    """One figure against its budget under each policy; ``decided`` is None without an interval."""

    point: bool
    strict: bool
    lenient: bool
    decided: bool | None

    def passed(self, policy: str) -> bool:
        return {"point": self.point, "strict": self.strict, "lenient": self.lenient}[policy]

    def also(self, ok: bool) -> Judgement:
        """This judgement with one more condition that every policy requires."""
        strict, lenient = self.strict and ok, self.lenient and ok
        return Judgement(self.point and ok, strict, lenient, None if self.decided is None else strict == lenient)


def judge(estimate: float, ci: tuple[float, float] | None, accept: tuple[float, float]) -> Judgement:
    """Judge a figure whose budget accepts the values in ``accept = [a_lo, a_hi]`` (bounds included,
    +-inf for none): point on the estimate, strict on the interval inside, lenient unless outside."""
    a_lo, a_hi = accept
    point = a_lo <= estimate <= a_hi
    if ci is None:
        return Judgement(point=point, strict=False, lenient=point, decided=None)
    lo, hi = ci
    strict = a_lo <= lo and hi <= a_hi
    lenient = not (hi < a_lo or lo > a_hi)
    return Judgement(point=point, strict=strict, lenient=lenient, decided=strict == lenient)


def plan_checks(variants: tuple[str, ...], judged: Sequence[MetricSpec]) -> list[tuple[str, str]]:
    """The (variant, check) pairs that become test items, in a stable order (xdist needs it): every
    ``judged`` metric (the benchmark's forget, utility and privacy metrics that can be judged in this
    run: a privacy metric needs its reference) for full precision and each variant."""
    return [(q, spec.item) for q in (FP, *variants) for spec in judged if spec.item is not None]


def needed_rows(variant: str, role: MetricRole, quantized_target: bool = True, retrain: bool = False) -> list[RowKey]:
    """Which (role, variant) rows an item on a metric of ``role`` needs, in the order to compute them. q(T) is
    shown beside a forget or utility item's figure as context (not for a variant without a target version, such as
    the user's artifact: ``quantized_target=False``), and comes first: T's variant may hand its codes to U's.
    Always the same rows for the same item, so its figures and its message do not depend on which process judged it
    or what that process computed before. A privacy item needs the retrain row (its reference) when there is a
    retrain model."""
    rows: list[RowKey] = [("target", FP), ("unlearned", FP)]
    if role == "privacy" and retrain:
        rows.append(("retrain", FP))
    if variant != FP:
        if role in ("forget", "utility") and quantized_target:
            rows.append(("target", variant))
        rows.append(("unlearned", variant))
    return rows


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _pct(x: float) -> str:
    if math.isinf(x):
        return "inf"
    text = f"{x:.0%}"
    return "0%" if text == "-0%" else text


def _bounds(ci: Interval | None) -> tuple[float, float] | None:
    return None if ci is None else (ci.lo, ci.hi)


def _note(policy: str, passed: bool) -> str:
    """How the policy resolved an undecided item, in words."""
    if policy == "point":
        return f"point: the estimate {'passes' if passed else 'fails'} it"
    return f"{policy}: {'passed' if passed else 'failed'}"


def _undecided(straddles: str, n: int, unit: str, add: str, policy: str, passed: bool) -> str:
    """The words of an undecided item: which interval straddles which budget, on how many items."""
    return f"undecided: {straddles} at n={n} {unit}; add {add} or choose --unlearn-verdict ({_note(policy, passed)})"


def _judged(
    name: str,
    variant: str,
    check: str,
    ok: bool,
    message: str,
    figure: str,
    value: float | None,
    budget: float | None,
    ci: Interval | None,
    decided: bool | None,
    policy: str,
) -> Verdict:
    """A judged item's verdict: the figure it was judged on, its estimate and budget, and its paired interval (its
    bounds, items resampled and degenerate replicates) with what the interval decided."""
    return Verdict(
        name,
        variant,
        check,
        "passed" if ok else "failed",
        message,
        value=value,
        budget=budget,
        ci=_bounds(ci),
        decided=decided,
        n=ci.n if ci else None,
        degenerate=ci.degenerate if ci else None,
        policy=policy,
        figure=figure,
    )


def _outcomes(*parts: Judgement) -> Judgement:
    """An item judged on several figures in turn (the fp drop, then recovery): it passes under a
    policy when every part does; decided when strict and lenient agree on the whole item."""
    strict = all(j.strict for j in parts)
    lenient = all(j.lenient for j in parts)
    decided = None if any(j.decided is None for j in parts) else strict == lenient
    return Judgement(point=all(j.point for j in parts), strict=strict, lenient=lenient, decided=decided)


def _floor_text(floor: float, chance: float | None, capped: bool, noun: bool = False) -> str:
    """The floor in words ("floor 5", or as a noun "the 5-point floor"); when the target is less than a floor above
    chance, the floor is what forgetting down to chance removes, and the words say so."""
    cap = f", capped at what forgetting down to chance ({chance:.1f}) removes" if capped and chance is not None else ""
    number = f"{floor:.1f}" if cap else f"{floor:g}"
    return f"the {number}-point floor{cap}" if noun else f"floor {number}{cap}"


def _chance_text(spec: MetricSpec, u: float, chance: float | None, drop_ci: Interval | None) -> str:
    """Chance beside the models' values, and whether the unlearned model is at it (within the forget set's noise,
    the half-width of the drop's interval): a forget accuracy at chance is full forgetting."""
    if chance is None:
        return ""
    above = removed_points(spec, u, chance)  # how far U is from chance, towards remembering
    noise = 0.0 if drop_ci is None or math.isinf(drop_ci.hi) else (drop_ci.hi - drop_ci.lo) / 2
    at = "; the unlearned model is at chance: full forgetting" if above <= noise else ""
    return f", chance {chance:.1f}{at}"


def _forgetting(
    variant: str, spec: MetricSpec, t: float, u: float, floor: float, figures: Figures, budget: Budget, policy: str
) -> Verdict:
    """A forget metric's item: in full precision the drop ``m(T) - m(U)`` (``m(U) - m(T)`` for a metric that
    grows as the model forgets) must reach the floor and its interval exclude 0 (the fp item, and the gate in
    front of every recovery item); under a variant, then, its recovery must be within budget."""
    check = spec.name
    name = item_name(variant, check)
    where = "in full precision" if variant == FP else f"under {variant}"
    removed = removed_points(spec, t, u)
    drop_ci = figures.drop_ci.get(check)
    drop_bounds = _bounds(drop_ci)
    chance = spec.floor_value
    capped = False
    if chance is not None:  # a metric with a "nothing known" value (chance): forgetting can remove only down to it
        reachable = removed_points(spec, t, chance)
        if reachable <= 0:
            return Verdict(
                name,
                variant,
                check,
                "failed",
                f"unlearning cannot be shown for {check}: the target's {_fmt(t)} is not above chance "
                f"({_fmt(chance)}), so the forget set shows no knowledge for unlearning to remove; check the "
                "target and the forget questions",
                value=removed,
                budget=floor,
                ci=drop_bounds,
                policy=policy,
                figure="drop",
            )
        capped, floor = reachable < floor, min(floor, reachable)
    floor_text = _floor_text(floor, chance, capped)
    excludes_zero = drop_bounds is None or drop_bounds[0] > 0
    fp_j = judge(removed, drop_bounds, (floor, math.inf)).also(removed > 0 and excludes_zero)
    drop_text = f"{removed:.1f} points" + (
        "" if drop_bounds is None else f" [{drop_bounds[0]:.1f}, {drop_bounds[1]:.1f}]"
    )
    models = f"target {_fmt(t)}, unlearned {_fmt(u)}" + _chance_text(spec, u, chance, drop_ci)
    unit, n = spec.items, drop_ci.n if drop_ci else 0
    straddles = (
        [f"{check} drop {drop_text} in full precision straddles {_floor_text(floor, chance, capped, noun=True)}"]
        if fp_j.decided is False
        else []
    )
    rec_j: Judgement | None = None
    rec_ci: Interval | None = None
    rec: float | None = None
    detail = models
    if variant != FP:
        q = figures.value("unlearned", variant, check)
        rec = figures.recovery.get(variant, {}).get(check)
        if q is None:
            return Verdict(name, variant, check, "skipped", f"{check} was not measured {where}")
        limit = budget.recovery_for(check, variant)
        qt = figures.value("target", variant, check)
        detail = f"quantized {_fmt(q)}, unlearned {_fmt(u)}, target {_fmt(t)}" + (
            f", quantized target {_fmt(qt)}" if qt is not None else ""
        )
        if rec is not None:  # None only when nothing was removed: the fp part fails under every policy
            rec_ci = figures.recovery_ci.get(variant, {}).get(check)
            rec_j = judge(rec, _bounds(rec_ci), (-math.inf, limit))
            rec_text = f"{rec:.0%}" + ("" if rec_ci is None else f" [{_pct(rec_ci.lo)}, {_pct(rec_ci.hi)}]")
            if rec_j.decided is False:
                straddles.append(f"{check} recovery {rec_text} {where} straddles the {limit:.0%} budget")
    item = fp_j if rec_j is None else _outcomes(fp_j, rec_j)
    ok = item.passed(policy)
    worked = fp_j.passed(policy)
    if item.decided is False:
        message = _undecided(" and ".join(straddles), n, unit, "forget items", policy, ok) + f": {detail}"
    elif not worked:
        why = ""
        if removed >= floor and removed > 0:
            why = (
                "; its interval includes 0"
                if not excludes_zero
                else f"; {policy}: the interval is not wholly above the floor"
            )
        message = (
            f"unlearning did not work in full precision for {check}: {models}, drop {drop_text} ({floor_text}){why}"
        )
        if variant != FP:
            message += f"; recovery {where} is {'undefined' if removed < floor or removed <= 0 else 'not judged'}"
    elif variant == FP:
        message = f"{check} {'dropped' if spec.higher_remembers else 'rose'} {drop_text} ({models}; {floor_text})"
    else:
        assert rec is not None
        verb = "recovered" if ok else "RECOVERED"
        message = f"{check} {verb} {rec_text} of the forgetting {where} (budget {limit:.0%}): {detail}"
    if rec_j is None or not worked:  # the item was judged on the drop
        return _judged(name, variant, check, ok, message, "drop", removed, floor, drop_ci, item.decided, policy)
    return _judged(name, variant, check, ok, message, "recovery", rec, limit, rec_ci, item.decided, policy)


def judge_item(variant: str, check: str, figures: Figures, budget: Budget, policy: str = "point") -> Verdict:
    """Judge one item from the figures (which must hold the rows of :func:`needed_rows`) under the
    verdict ``policy`` (point, strict or lenient)."""
    spec = figures.spec(check)
    if spec is None:
        raise ValueError(f"unknown check '{check}'")
    name = item_name(variant, check)
    at = None if variant == FP else variant
    if spec.role == "forget":
        u, t = figures.baseline(variant, spec.name)  # fp values on the items this variant was measured on
        if t is None or u is None:
            return Verdict(name, variant, check, "skipped", f"{spec.name} was not measured")
        return _forgetting(variant, spec, t, u, budget.value("floor", at), figures, budget, policy)
    if spec.role == "utility":
        return _utility(variant, check, spec, figures, budget.value_of((spec.name, "utility"), at), policy)
    if spec.role == "privacy":
        return _privacy(variant, check, spec, figures, budget, policy)
    raise ValueError(f"'{check}' is a reported metric; it has no item")


def _utility(variant: str, check: str, spec: MetricSpec, figures: Figures, ratio: float, policy: str) -> Verdict:
    """A utility metric's item: ``m(variant of U) >= ratio * m(T)``."""
    name = item_name(variant, check)
    where = "in full precision" if variant == FP else f"under {variant}"
    m_name = spec.name
    t = figures.value("target", FP, m_name)
    m = figures.value("unlearned", variant, m_name)
    if t is None or m is None:
        return Verdict(name, variant, check, "skipped", f"{m_name} was not measured {where}")
    if t <= 0:
        return Verdict(
            name,
            variant,
            check,
            "passed",
            f"target {m_name} is {_fmt(t)}: there is no retained knowledge to lose",
            value=None,
            budget=ratio,
            policy=policy,
            figure="utility",
        )
    share = m / t
    ci = figures.utility_ci.get(variant, {}).get(m_name)
    j = judge(share, _bounds(ci), (ratio, math.inf))
    ok = j.passed(policy)
    qt = figures.value("target", variant, m_name) if variant != FP else None
    context = f" (the quantized target: {_fmt(qt)}, {qt / t:.0%})" if qt is not None else ""
    ci_text = "" if ci is None else f" [{_pct(ci.lo)}, {_pct(ci.hi)}]"
    numbers = f"{_fmt(m)} vs target {_fmt(t)}{context}"
    if j.decided is False and ci is not None:
        message = (
            _undecided(
                f"{m_name} {share:.0%}{ci_text} of the target's {where} straddles the {ratio:.0%} budget",
                ci.n,
                spec.items,
                "retain items",
                policy,
                ok,
            )
            + f": {numbers}"
        )
    else:
        message = f"{m_name} {where} is {share:.0%}{ci_text} of the target's (needs >= {ratio:.0%}): {numbers}"
    return _judged(name, variant, check, ok, message, "utility", share, ratio, ci, j.decided, policy)


def _privacy(variant: str, check: str, spec: MetricSpec, figures: Figures, budget: Budget, policy: str) -> Verdict:
    """A privacy metric's item: its value against its reference within the budget's accepted range."""
    name = item_name(variant, check)
    where = "in full precision" if variant == FP else f"under {variant}"
    rule = figures.rules[spec.name]
    p = figures.value("unlearned", variant, spec.name)
    if p is None:
        return Verdict(name, variant, check, "skipped", f"{spec.name} was not measured {where}")
    bound = budget.value_of((spec.name, rule.budget_key), None if variant == FP else variant, rule.default_budget)
    ci = figures.privacy_ci.get(spec.name, {}).get(("unlearned", variant))
    j = judge(p, _bounds(ci), rule.accept(bound))
    ok = j.passed(policy)
    ci_text = "" if ci is None else rule.interval_text(ci)
    if j.decided is False and ci is not None:
        message = _undecided(
            f"{spec.name} {rule.describe(p)}{ci_text} {where} straddles the {rule.budget_text(bound)} budget",
            ci.n,
            spec.items,
            spec.items,
            policy,
            ok,
        )
    else:
        message = f"{spec.name} {where} is {rule.describe(p)}{ci_text} (budget {rule.budget_text(bound)})"
    return _judged(name, variant, check, ok, message, spec.name, p, bound, ci, j.decided, policy)
