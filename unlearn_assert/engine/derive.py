"""The figures a gate is judged and reported on, derived from the rows once: every row's privleak
against the reference AUC, and every variant's recovery.

Definitions (DESIGN.md, "Metric definitions" and "Verdicts"):

* ``privleak = (AUC - AUC_R) / AUC_R * 100`` (:func:`unlearn_assert.metrics.privleak.privleak`, the
  formula's one home), AUC_R from the retrain model's row, else ``--unlearn-retrain-auc``, else 0.5;
* ``recovery = (m(q(U)) - m(U)) / (m(T) - m(U))`` for a forget metric m: the share of what
  unlearning removed that comes back under the variant; None when nothing was removed.
* like with like: a variant measured on part of the forget items (relearn-forget: the held-out
  items, listed in its row's ``quant["split"]["evaluated"]``) is compared with m(U) and m(T) on the
  same items, the means of the fp rows' per-item scores there (:attr:`Figures.baselines`).

The verdicts (:mod:`.verdicts`) and the report (:mod:`.report`) both read a :class:`Figures`, so the
two can never disagree on a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..metrics import DEFAULT_REFERENCE_AUC
from ..metrics.privleak import privleak
from ..names import FORGET_METRICS, FP, Role
from .rows import Row, RowKey

__all__ = ["DEFAULT_REFERENCE_AUC", "Figures", "figures", "figures_from_values", "recovery", "reference_auc", "reference_problem"]

#: metric -> value (None: not measured or undefined)
Values = Mapping[str, float | None]


@dataclass(frozen=True)
class Figures:
    """Every judged number of a gate: ``values[(role, variant)]`` (privleak against ``reference``),
    ``recovery[variant][forget metric]`` for each variant of U, and the reference AUC with its source."""

    values: Mapping[RowKey, Values]
    recovery: Mapping[str, Mapping[str, float | None]]
    reference: tuple[float, str]
    #: variant -> forget metric -> (m(U), m(T)) in full precision on the items that variant was measured on
    baselines: Mapping[str, Mapping[str, tuple[float | None, float | None]]] = field(default_factory=dict)

    def value(self, role: Role, variant: str, metric: str) -> float | None:
        row = self.values.get((role, variant))
        return None if row is None else row.get(metric)

    def baseline(self, variant: str, metric: str) -> tuple[float | None, float | None]:
        """m(U) and m(T) in full precision that ``variant``'s recovery of ``metric`` is measured against."""
        own = self.baselines.get(variant, {}).get(metric)
        return own if own is not None else (self.value("unlearned", FP, metric), self.value("target", FP, metric))


def reference_auc(retrain_row_auc: float | None, option_auc: float | None, default: float = DEFAULT_REFERENCE_AUC) -> tuple[float, str]:
    """MUSE's AUC_R and where it came from: the retrain model's AUC, else --unlearn-retrain-auc, else 0.5."""
    if retrain_row_auc is not None:
        return float(retrain_row_auc), "retrain"
    if option_auc is not None:
        return float(option_auc), "option"
    return default, "default"


def reference_problem(reference: float, source: str) -> str | None:
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


def _recoveries(values: Mapping[RowKey, Values], variants: Iterable[str],
                baselines: Mapping[str, Mapping[str, tuple[float | None, float | None]]] | None = None) -> dict[str, dict[str, float | None]]:
    t_fp, u_fp = values.get(("target", FP), {}), values.get(("unlearned", FP), {})
    out: dict[str, dict[str, float | None]] = {}
    for variant in variants:
        q = values.get(("unlearned", variant), {})
        rec: dict[str, float | None] = {}
        for m in FORGET_METRICS:
            um, tm = (baselines or {}).get(variant, {}).get(m) or (u_fp.get(m), t_fp.get(m))
            qm = q.get(m)
            rec[m] = None if qm is None or um is None or tm is None else recovery(qm, um, tm)
        out[variant] = rec
    return out


def figures(rows: Iterable[Row], option_auc: float | None) -> Figures:
    """The figures of a set of rows: privleak of every row against the reference (the retrain row's
    AUC when there is one, else ``option_auc``, else 0.5), recovery of every computed variant of U."""
    by_key = {row.key: row for row in rows}
    retrain = by_key.get(("retrain", FP))
    reference = reference_auc(retrain.auc if retrain is not None else None, option_auc)
    values: dict[RowKey, Values] = {}
    for key, row in by_key.items():
        vals = dict(row.values)
        vals["privleak"] = privleak(row.auc, reference[0])
        values[key] = vals
    variants = [variant for (role, variant), row in by_key.items() if role == "unlearned" and variant != FP and row.ok]
    baselines = _baselines(by_key)
    return Figures(values=values, recovery=_recoveries(values, variants, baselines), reference=reference, baselines=baselines)


def _subset_mean(row: Row | None, metric: str, ids: Iterable[int]) -> float | None:
    """The mean per-item score of ``row``'s ``metric`` over the items ``ids`` (None when a sample is missing)."""
    if row is None or not row.ok:
        return None
    scores = {s.get("id"): s.get("score") for s in row.samples.get(metric, [])}
    picked = [scores.get(i) for i in ids]
    if not picked or any(s is None for s in picked):
        return None
    return sum(float(s) for s in picked if s is not None) / len(picked)


def _baselines(by_key: Mapping[RowKey, Row]) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """For each variant whose rows were measured on part of the forget items, m(U) and m(T) in full
    precision on those items (see the module docstring)."""
    out: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    u_fp, t_fp = by_key.get(("unlearned", FP)), by_key.get(("target", FP))
    for (_role, variant), row in by_key.items():
        split = (row.quant or {}).get("split") if variant != FP else None
        if not split or variant in out:
            continue
        out[variant] = {m: (_subset_mean(u_fp, m, ids), _subset_mean(t_fp, m, ids))
                        for m, ids in split.get("evaluated", {}).items() if m in FORGET_METRICS}
    return out


def figures_from_values(values: Mapping[RowKey, Values], reference: tuple[float, str] = (DEFAULT_REFERENCE_AUC, "default")) -> Figures:
    """Figures from metric values given directly (privleak already a percentage): hand-computed cases."""
    variants = [variant for role, variant in values if role == "unlearned" and variant != FP]
    return Figures(values=dict(values), recovery=_recoveries(values, variants), reference=reference)
