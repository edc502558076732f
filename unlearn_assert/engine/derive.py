"""The figures a gate is judged and reported on, derived from the rows once: every row's privleak
against the reference AUC, every variant's recovery and utility, and their paired intervals.

Definitions (DESIGN.md, "Metric definitions" and "Verdicts"):

* ``privleak = (AUC - AUC_R) / AUC_R * 100`` (:func:`unlearn_assert.metrics.privleak.privleak`, the
  formula's one home), AUC_R from the retrain model's row, else ``--unlearn-retrain-auc``, else 0.5;
* ``recovery = (m(q(U)) - m(U)) / (m(T) - m(U))`` for a forget metric m: the share of what
  unlearning removed that comes back under the variant; None when nothing was removed;
* ``utility = knowmem_r(variant of U) / knowmem_r(T)``; None when T retains nothing;
* a paired bootstrap interval of every judged figure (:mod:`unlearn_assert.metrics.stats`): the
  same resampled items for U, T and the variant (and R, whose AUC is recomputed on the resampled
  texts, for privleak), from the per-item scores in the rows' ``samples`` (the data's order, the
  same in every row: checked); ``replicates=0`` computes no interval;
* the *resolution* of each forget metric (:class:`Resolution`): the smallest recovery its forget
  set can tell from zero, from the interval of the full-precision drop.
* like with like: a variant measured on part of the forget items (relearn-forget: the held-out
  items, listed in its row's ``quant["split"]["evaluated"]``) is compared with m(U) and m(T) on the
  same items, the means of the fp rows' per-item scores there (:attr:`Figures.baselines`).

The verdicts (:mod:`.verdicts`) and the report (:mod:`.report`) both read a :class:`Figures`, so the
two can never disagree on a number. A figure depends only on the rows it is made of, so a worker
that holds just an item's rows derives the same figure as the controller that holds them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..config import RunConfig
from ..errors import UnlearnAssertError
from ..metrics import DEFAULT_REFERENCE_AUC
from ..metrics.privleak import privleak
from ..metrics.stats import (
    LEVEL,
    N_RESAMPLES,
    PAIRED_SEED,
    PRIOR,
    Interval,
    clear_draws,
    paired_difference_ci,
    paired_privleak_ci,
    paired_ratio_ci,
    paired_recovery_ci,
)
from ..names import FORGET_METRICS, FP, Role
from .rows import Row, RowKey

__all__ = ["DEFAULT_REFERENCE_AUC", "Bootstrap", "Figures", "Interval", "Resolution", "bootstrap_of", "clear_memo", "figures",
           "figures_from_values", "recovery", "reference_auc", "reference_problem", "resolution"]

#: metric -> value (None: not measured or undefined)
Values = Mapping[str, float | None]


@dataclass(frozen=True)
class Bootstrap:
    """How the intervals were drawn: ``replicates`` (B; 0 = no intervals), ``seed``, ``confidence``,
    and ``prior``, the weight of the pseudo-items of the drop, recovery and utility (0: the plain
    bootstrap used before issue 31; :mod:`unlearn_assert.metrics.stats`)."""

    replicates: int = N_RESAMPLES
    seed: int = PAIRED_SEED
    confidence: float = LEVEL
    prior: float = PRIOR

    def to_dict(self) -> dict[str, Any]:
        return {"replicates": self.replicates, "seed": self.seed, "confidence": self.confidence, "prior": self.prior}


@dataclass(frozen=True)
class Resolution:
    """The smallest recovery of a forget metric that its forget set can tell from zero.

    Definition: with ``d`` the full-precision drop ``m(T) - m(U)`` and ``[lo, hi]`` its paired
    bootstrap interval at the run's confidence, ``recovery = (hi - lo) / (2 d)``. A recovery r
    moves q(U) ``r * d`` points away from U; a paired difference of two models' means on this forget
    set is told from zero only when it exceeds the half-width of its interval, and the half-width
    of the drop's interval is that noise, measured before any quantizer runs. None when the drop is
    not positive (or its interval is unbounded): there is no forgetting to resolve.
    """

    metric: str
    recovery: float | None
    drop: float | None
    drop_ci: Interval | None
    n: int


@dataclass(frozen=True)
class Figures:
    """Every judged number of a gate: ``values[(role, variant)]`` (privleak against ``reference``),
    ``recovery[variant][forget metric]`` and ``utility[variant]`` for each variant of U (``utility``
    also for "fp"), the reference AUC with its source, and their intervals: ``drop_ci[metric]`` (of
    ``m(T) - m(U)``), ``recovery_ci[variant][metric]``, ``utility_ci[variant]``,
    ``privleak_ci[("unlearned", variant)]`` (absent where undefined or not computed), ``resolution[metric]``
    and ``n[metric]`` (items per split; privleak: forget + holdout texts)."""

    values: Mapping[RowKey, Values]
    recovery: Mapping[str, Mapping[str, float | None]]
    reference: tuple[float, str]
    utility: Mapping[str, float | None] = field(default_factory=dict)
    drop_ci: Mapping[str, Interval] = field(default_factory=dict)
    recovery_ci: Mapping[str, Mapping[str, Interval]] = field(default_factory=dict)
    utility_ci: Mapping[str, Interval] = field(default_factory=dict)
    privleak_ci: Mapping[RowKey, Interval] = field(default_factory=dict)
    resolution: Mapping[str, Resolution] = field(default_factory=dict)
    n: Mapping[str, int] = field(default_factory=dict)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    #: variant -> forget metric -> (m(U), m(T)) in full precision on the items that variant was measured on
    baselines: Mapping[str, Mapping[str, tuple[float | None, float | None]]] = field(default_factory=dict)

    def value(self, role: Role, variant: str, metric: str) -> float | None:
        row = self.values.get((role, variant))
        return None if row is None else row.get(metric)

    def interval(self, variant: str, check: str) -> Interval | None:
        """The interval an item is judged on: the drop (fp forget items), recovery, utility or privleak."""
        if check in FORGET_METRICS:
            return self.drop_ci.get(check) if variant == FP else self.recovery_ci.get(variant, {}).get(check)
        if check == "utility":
            return self.utility_ci.get(variant)
        if check == "privleak":
            return self.privleak_ci.get(("unlearned", variant))
        return None

    def baseline(self, variant: str, metric: str) -> tuple[float | None, float | None]:
        """m(U) and m(T) in full precision that ``variant``'s recovery of ``metric`` is measured against."""
        own = self.baselines.get(variant, {}).get(metric)
        return own if own is not None else (self.value("unlearned", FP, metric), self.value("target", FP, metric))


def bootstrap_of(run: RunConfig) -> Bootstrap:
    """The bootstrap a run's figures are drawn with: B = 1000, the fixed seed, the run's confidence."""
    return Bootstrap(confidence=run.confidence)


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


def _utilities(values: Mapping[RowKey, Values], variants: Iterable[str]) -> dict[str, float | None]:
    t = values.get(("target", FP), {}).get("knowmem_r")
    out: dict[str, float | None] = {}
    for variant in variants:
        m = values.get(("unlearned", variant), {}).get("knowmem_r")
        out[variant] = None if m is None or t is None or t <= 0 else m / t
    return out


def resolution(metric: str, drop: float | None, drop_ci: Interval | None, n: int) -> Resolution:
    """The :class:`Resolution` of a forget metric from its drop and the drop's interval."""
    r = None
    if drop is not None and drop > 0 and drop_ci is not None and math.isfinite(drop_ci.hi):
        r = (drop_ci.hi - drop_ci.lo) / (2.0 * drop)
    return Resolution(metric=metric, recovery=r, drop=drop, drop_ci=drop_ci, n=n)


# --------------------------------------------------------------------------- per-item scores


#: Per-item scores by the identity of a row's records list (kept alive by the entry): rows never
#: change once computed, and every figure set of a gate reads the same rows again.
_SCORES: dict[tuple[int, str | None], tuple[list[dict[str, Any]], tuple[Any, ...], tuple[float, ...]]] = {}


def _item_scores(row: Row, metric: str, split: str | None = None) -> tuple[tuple[Any, ...], tuple[float, ...]] | None:
    """(ids, scores) of a row's per-item records for ``metric`` (privleak: of one ``split``), in the
    data's order; None when the row has none. A missing score (NaN in the cache) is NaN."""
    records = row.samples.get(metric) if row.ok else None
    if not records:
        return None
    hit = _SCORES.get((id(records), split))
    if hit is not None and hit[0] is records:
        return hit[1], hit[2]
    chosen = records if split is None else [r for r in records if r.get("split") == split]
    ids = tuple(r.get("id", i) for i, r in enumerate(chosen))
    scores = tuple(float("nan") if r.get("score") is None else float(r["score"]) for r in chosen)
    if len(_SCORES) > 4096:
        _SCORES.clear()
    _SCORES[(id(records), split)] = (records, ids, scores)
    return ids, scores


def _paired(metric: str, rows: Sequence[Row], split: str | None = None) -> list[tuple[float, ...]] | None:
    """The per-item scores of ``rows`` on ``metric``, item for item; None when a row has none.
    Rows that scored different items (or the same items in another order) cannot be paired: that
    would silently resample unrelated items together, so it is an error."""
    got = [_item_scores(row, metric, split) for row in rows]
    if any(g is None or not g[1] for g in got):
        return None
    first_ids = got[0][0] if got[0] is not None else ()
    out: list[tuple[float, ...]] = []
    for row, g in zip(rows, got):
        if g is None:
            continue
        if g[0] == first_ids:
            out.append(g[1])
            continue
        # a row measured on part of the items (relearn-forget: the held-out ones) pairs with the others there
        by_id = dict(zip(g[0], g[1]))
        if len(by_id) == len(g[0]) and all(i in by_id for i in first_ids):
            out.append(tuple(by_id[i] for i in first_ids))
            continue
        what = metric + (f" {split}" if split else "")
        raise UnlearnAssertError(
            f"cannot pair the {what} items of {rows[0].model}:{rows[0].quantizer} and {row.model}:{row.quantizer}: "
            f"they scored different items ({len(first_ids)} vs {len(g[0])}, or in another order); "
            "rerun with --unlearn-no-cache")
    return out


# Each interval is a pure function of its scores, estimate and bootstrap: computed once per process
# (every item of a gate derives the figures of its own rows, and the report those of all rows).
@lru_cache(maxsize=2048)
def _difference(a: tuple[float, ...], b: tuple[float, ...], key: str, estimate: float | None, boot: Bootstrap) -> Interval:
    return paired_difference_ci(a, b, key=key, estimate=estimate, **_paired_opts(boot))


@lru_cache(maxsize=2048)
def _recovery(q: tuple[float, ...], u: tuple[float, ...], t: tuple[float, ...], key: str, estimate: float | None,
              boot: Bootstrap) -> Interval:
    return paired_recovery_ci(q, u, t, key=key, estimate=estimate, **_paired_opts(boot))


@lru_cache(maxsize=2048)
def _ratio(num: tuple[float, ...], den: tuple[float, ...], key: str, estimate: float | None, boot: Bootstrap) -> Interval:
    return paired_ratio_ci(num, den, key=key, estimate=estimate, **_paired_opts(boot))


@lru_cache(maxsize=1024)
def _privleak(forget: tuple[float, ...], holdout: tuple[float, ...], reference: float | None,
              ref_forget: tuple[float, ...] | None, ref_holdout: tuple[float, ...] | None, estimate: float | None,
              boot: Bootstrap) -> Interval | None:
    return paired_privleak_ci(forget, holdout, reference=reference, reference_forget=ref_forget, reference_holdout=ref_holdout,
                              key="privleak", estimate=estimate, **_opts(boot))


def clear_memo() -> None:
    """Forget every memoized interval, draw and per-item score list: a fresh process, for benchmarks."""
    for memo in (_difference, _recovery, _ratio, _privleak):
        memo.cache_clear()
    clear_draws()
    _SCORES.clear()


def _opts(boot: Bootstrap) -> dict[str, Any]:
    return {"seed": boot.seed, "n_resamples": boot.replicates, "confidence": boot.confidence}


def _paired_opts(boot: Bootstrap) -> dict[str, Any]:
    """The options of the figures that have pseudo-items (all but privleak's)."""
    return {**_opts(boot), "prior": boot.prior}


def _intervals(by_key: Mapping[RowKey, Row], values: Mapping[RowKey, Values], rec: Mapping[str, Mapping[str, float | None]],
               utility: Mapping[str, float | None], reference: tuple[float, str], variants: Sequence[str],
               boot: Bootstrap) -> dict[str, Any]:
    """Every interval the rows allow (see :class:`Figures`), each from the rows it is made of only.
    privleak's are computed for U's rows, the judged ones (a reference row's own interval is not)."""
    u_fp, t_fp = by_key.get(("unlearned", FP)), by_key.get(("target", FP))
    drop_ci: dict[str, Interval] = {}
    recovery_ci: dict[str, dict[str, Interval]] = {}
    utility_ci: dict[str, Interval] = {}
    privleak_ci: dict[RowKey, Interval] = {}
    n: dict[str, int] = {}
    if u_fp is not None and t_fp is not None:
        for m in FORGET_METRICS:
            pair = _paired(m, [t_fp, u_fp])
            if pair is None:
                continue
            t, u = pair
            n[m] = len(t)
            tv, uv = values[("target", FP)].get(m), values[("unlearned", FP)].get(m)
            drop_ci[m] = _difference(t, u, m, None if tv is None or uv is None else tv - uv, boot)
            for variant in variants:
                q_row = by_key.get(("unlearned", variant))
                scores = _paired(m, [q_row, u_fp, t_fp]) if q_row is not None else None
                if scores is not None and rec.get(variant, {}).get(m) is not None:
                    recovery_ci.setdefault(variant, {})[m] = _recovery(*scores, m, rec[variant][m], boot)
        for variant in (FP, *variants):
            q_row = by_key.get(("unlearned", variant))
            scores = _paired("knowmem_r", [q_row, t_fp]) if q_row is not None else None
            if scores is not None:
                n["knowmem_r"] = len(scores[0])
                if utility.get(variant) is not None:
                    utility_ci[variant] = _ratio(scores[0], scores[1], "knowmem_r", utility[variant], boot)
    retrain = by_key.get(("retrain", FP)) if reference[1] == "retrain" else None
    for key, row in by_key.items():
        if key[0] != "unlearned" or values[key].get("privleak") is None:  # undefined (AUC_R <= 0): no interval either
            continue
        rows = [row] if retrain is None else [row, retrain]
        forget, holdout = _paired("privleak", rows, "forget"), _paired("privleak", rows, "holdout")
        if forget is None or holdout is None:
            continue
        n["privleak"] = len(forget[0]) + len(holdout[0])
        ci = _privleak(forget[0], holdout[0], None if retrain is not None else reference[0],
                       forget[1] if retrain is not None else None, holdout[1] if retrain is not None else None,
                       values[key].get("privleak"), boot)
        if ci is not None:
            privleak_ci[key] = ci
    return {"drop_ci": drop_ci, "recovery_ci": recovery_ci, "utility_ci": utility_ci, "privleak_ci": privleak_ci, "n": n}


def figures(rows: Iterable[Row], option_auc: float | None, bootstrap: Bootstrap | None = None) -> Figures:
    """The figures of a set of rows: privleak of every row against the reference (the retrain row's
    AUC when there is one, else ``option_auc``, else 0.5), recovery and utility of every computed
    variant of U, and the paired bootstrap intervals of them all (``bootstrap``: B, seed, confidence)."""
    boot = bootstrap or Bootstrap()
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
    rec = _recoveries(values, variants, baselines)
    utility = _utilities(values, [FP, *variants])
    extra: dict[str, Any] = {}
    if boot.replicates > 0:
        extra = _intervals(by_key, values, rec, utility, reference, variants, boot)
    res: dict[str, Resolution] = {}
    if ("target", FP) in values and ("unlearned", FP) in values:
        for m in FORGET_METRICS:
            tv, uv = values[("target", FP)].get(m), values[("unlearned", FP)].get(m)
            drop = None if tv is None or uv is None else tv - uv
            res[m] = resolution(m, drop, extra.get("drop_ci", {}).get(m), extra.get("n", {}).get(m, 0))
    return Figures(values=values, recovery=rec, reference=reference, utility=utility, resolution=res, bootstrap=boot,
                   baselines=baselines, **extra)


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


def figures_from_values(values: Mapping[RowKey, Values], reference: tuple[float, str] = (DEFAULT_REFERENCE_AUC, "default"),
                        **intervals: Any) -> Figures:
    """Figures from metric values given directly (privleak already a percentage): hand-computed
    cases; ``intervals`` (``drop_ci=``, ``recovery_ci=``, ...) are given directly too."""
    variants = [variant for role, variant in values if role == "unlearned" and variant != FP]
    return Figures(values=dict(values), recovery=_recoveries(values, variants), reference=reference,
                   utility=_utilities(values, [FP, *variants]), **intervals)
