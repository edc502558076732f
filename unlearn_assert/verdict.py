"""Budget checks: recovery, utility and privleak, as plain data (no pytest, no torch).

Definitions (DESIGN.md, "Verdicts"): for a forget metric m and quantizer q,
``recovery = (m(q(U)) - m(U)) / (m(T) - m(U))``, the share of what unlearning removed that comes
back. If ``m(T) - m(U)`` is below the ``floor`` budget, unlearning did not measurably work in full
precision: recovery is undefined and that check fails with its own message. Utility:
``knowmem_r(q(U)) >= utility * knowmem_r(T)``. Privleak: ``|privleak(q(U))| <= privleak`` budget,
checked only when a reference AUC exists (a retrain model or ``--unlearn-retrain-auc``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .config import RECOVERY_METRICS, Budget

FP = "fp"
CHECKS = ("verbmem_f", "knowmem_f", "utility", "privleak")  # per quantizer, fp included
# (model role, quantizer) -> metric values of that row
Values = Mapping[tuple[str, str], Mapping[str, float | None]]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one budget item, e.g. ``test_budget[rtn-w4g128-knowmem_f]``."""

    item: str
    quantizer: str
    check: str
    outcome: str  # "passed" | "failed" | "skipped"
    message: str
    value: float | None = None
    budget: float | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.outcome == "skipped" else self.outcome == "passed"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def item_id(quantizer: str, check: str) -> str:
    return f"{quantizer}-{check}"


def item_name(quantizer: str, check: str) -> str:
    return f"test_budget[{item_id(quantizer, check)}]"


def plan_checks(quantizers: tuple[str, ...], has_reference_auc: bool) -> list[tuple[str, str]]:
    """The (quantizer, check) pairs that become test items, in a stable order (xdist needs it)."""
    pairs: list[tuple[str, str]] = []
    for q in (FP, *quantizers):
        for check in CHECKS:
            if check == "privleak" and not has_reference_auc:
                continue
            pairs.append((q, check))
    return pairs


def needed_rows(quantizer: str, check: str, quantized_target: bool = True) -> list[tuple[str, str]]:
    """Which (model, quantizer) rows an item needs; q(T) is shown beside recovery as context (not
    for the user's own quantized checkpoints: ``quantized_target=False``, there is no q(T))."""
    rows = [("target", FP), ("unlearned", FP)]
    if quantizer != FP:
        if check in RECOVERY_METRICS and quantized_target:  # q(T) first: the engine hands T's codes to U's row
            rows.append(("target", quantizer))
        rows.append(("unlearned", quantizer))
    return rows


def reference_auc(retrain_row_auc: float | None, option_auc: float | None, default: float = 0.5) -> tuple[float, str]:
    """MUSE's AUC_R and where it came from: the retrain model's AUC, else --unlearn-retrain-auc, else 0.5."""
    if retrain_row_auc is not None:
        return float(retrain_row_auc), "retrain"
    if option_auc is not None:
        return float(option_auc), "option"
    return default, "default"


def privleak_pct(auc: Any, reference: float) -> Any:
    """``(AUC - AUC_R) / AUC_R * 100``: about 0 when the model leaks as much as a retrained one.

    None (undefined) when AUC_R is 0: a "retrain" model that separates every forget text from every
    holdout text has seen the forget set, and there is nothing to divide by (see
    :func:`privleak_reference_problem`)."""
    if auc is None or not reference > 0:
        return None
    return (auc - reference) / reference * 100.0  # also elementwise (bootstrap arrays)


def privleak_reference_problem(reference: float, source: str) -> str | None:
    """Why privleak cannot be computed against this reference AUC, or None when it can."""
    if reference > 0:
        return None
    if source == "retrain":
        return (f"the retrain model's forget-vs-holdout AUC is {reference:.2f}: it tells every forget text from every "
                "holdout text, as a model trained on the forget set does, so privleak ((AUC - AUC_R) / AUC_R) is "
                "undefined; check that --unlearn-retrain names a model trained without the forget data")
    return f"the reference AUC is {reference:g}, so privleak ((AUC - AUC_R) / AUC_R) is undefined; pass --unlearn-retrain-auc in (0, 1]"


def recovery(q_value: float, u_value: float, t_value: float) -> float | None:
    """Share of the forgetting that came back; None when there was no forgetting to come back."""
    removed = t_value - u_value
    if removed <= 0:
        return None
    return (q_value - u_value) / removed


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _get(values: Values, model: str, q: str, metric: str) -> float | None:
    row = values.get((model, q))
    return None if row is None else row.get(metric)


def evaluate_check(quantizer: str, check: str, values: Values, budget: Budget) -> Verdict:
    """Compute one verdict from the row values (which must hold the rows of :func:`needed_rows`)."""
    name = item_name(quantizer, check)
    where = "in full precision" if quantizer == FP else f"under {quantizer}"
    if check in RECOVERY_METRICS:
        t = _get(values, "target", FP, check)
        u = _get(values, "unlearned", FP, check)
        if t is None or u is None:
            return Verdict(name, quantizer, check, "skipped", f"{check} was not measured")
        floor = budget.value("floor", None if quantizer == FP else quantizer)
        removed = t - u
        if removed < floor or removed <= 0:
            return Verdict(
                name, quantizer, check, "failed",
                f"unlearning did not work in full precision for {check}: target {_fmt(t)}, unlearned {_fmt(u)}, "
                f"drop {removed:.1f} points (floor {floor:g}); recovery {where} is undefined",
                value=removed, budget=floor,
            )
        if quantizer == FP:
            return Verdict(name, quantizer, check, "passed",
                           f"{check} dropped {removed:.1f} points (target {_fmt(t)}, unlearned {_fmt(u)}; floor {floor:g})",
                           value=removed, budget=floor)
        q = _get(values, "unlearned", quantizer, check)
        if q is None:
            return Verdict(name, quantizer, check, "skipped", f"{check} was not measured {where}")
        rec = recovery(q, u, t)
        assert rec is not None  # removed > 0 here
        limit = budget.recovery_for(check, quantizer)
        qt = _get(values, "target", quantizer, check)
        detail = (f"quantized {_fmt(q)}, unlearned {_fmt(u)}, target {_fmt(t)}"
                  + (f", quantized target {_fmt(qt)}" if qt is not None else ""))
        ok = rec <= limit
        verb = "recovered" if ok else "RECOVERED"
        return Verdict(name, quantizer, check, "passed" if ok else "failed",
                       f"{check} {verb} {rec:.0%} of the forgetting {where} (budget {limit:.0%}): {detail}",
                       value=rec, budget=limit)
    if check == "utility":
        t = _get(values, "target", FP, "knowmem_r")
        m = _get(values, "unlearned", quantizer, "knowmem_r")
        if t is None or m is None:
            return Verdict(name, quantizer, check, "skipped", f"knowmem_r was not measured {where}")
        ratio = budget.value("utility", None if quantizer == FP else quantizer)
        if t <= 0:
            return Verdict(name, quantizer, check, "passed",
                           f"target knowmem_r is {_fmt(t)}: there is no retained knowledge to lose", value=None, budget=ratio)
        share = m / t
        ok = share >= ratio
        qt = _get(values, "target", quantizer, "knowmem_r") if quantizer != FP else None
        context = f" (the quantized target: {_fmt(qt)}, {qt / t:.0%})" if qt is not None else ""
        return Verdict(name, quantizer, check, "passed" if ok else "failed",
                       f"knowmem_r {where} is {share:.0%} of the target's (needs >= {ratio:.0%}): "
                       f"{_fmt(m)} vs target {_fmt(t)}{context}", value=share, budget=ratio)
    if check == "privleak":
        p = _get(values, "unlearned", quantizer, "privleak")
        if p is None:
            return Verdict(name, quantizer, check, "skipped", f"privleak was not measured {where}")
        bound = budget.value("privleak", None if quantizer == FP else quantizer)
        ok = abs(p) <= bound
        return Verdict(name, quantizer, check, "passed" if ok else "failed",
                       f"privleak {where} is {p:+.1f}% (budget |privleak| <= {bound:g}%)", value=p, budget=bound)
    raise ValueError(f"unknown check '{check}'")
