"""The figures a gate is judged and reported on, derived from the rows once: every row's privacy metrics
against their reference, every variant's recovery and utility, and their paired intervals.

Definitions (DESIGN.md, "Metric definitions" and "Verdicts"), for the metrics of the run's benchmark
(:mod:`unlearn_assert.benchmark`; MUSE's are ``verbmem_f``, ``knowmem_f``, ``knowmem_r``, ``privleak``):

* a privacy metric is made by its benchmark's rule (:class:`~unlearn_assert.benchmark.base.Privacy`):
  MUSE's ``privleak = (AUC - AUC_R) / AUC_R * 100`` (:func:`unlearn_assert.metrics.privleak.privleak`, the
  formula's one home), AUC_R from the retrain model's row, else ``--unlearn-retrain-auc``, else 0.5;
* ``recovery = (m(q(U)) - m(U)) / (m(T) - m(U))`` for a forget metric m: the share of what
  unlearning removed that comes back under the variant; None when nothing was removed (for a metric
  that grows as the model forgets, "removed" is ``m(U) - m(T)``; the ratio is the same formula);
* ``utility = m(variant of U) / m(T)`` for a utility metric m; None when T retains nothing;
* a paired bootstrap interval of every judged figure (:mod:`unlearn_assert.metrics.stats`): the
  same resampled items for U, T and the variant (and R for a privacy metric against it), from the
  per-item scores in the rows' ``samples`` (the data's order, the same in every row: checked);
  ``replicates=0`` computes no interval;
* the *resolution* of each forget metric (:class:`Resolution`): the smallest recovery its forget
  set can tell from zero, from the interval of the full-precision drop.
* like with like: a variant measured on part of the forget items (relearn-forget: the held-out
  items, listed in its row's ``details["split"]["evaluated"]``) is compared with m(U) and m(T) on the
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
from typing import TYPE_CHECKING, Any

from ..benchmark import clear_memos as clear_benchmark_memos
from ..benchmark.base import MetricSpec, Privacy
from ..config import RunConfig
from ..errors import UnlearnAssertError
from ..metrics.stats import (
    LEVEL,
    N_RESAMPLES,
    PAIRED_SEED,
    PRIOR,
    Interval,
    clear_draws,
    paired_difference_ci,
    paired_ratio_ci,
    paired_recovery_ci,
)
from ..names import FP, Role
from .rows import Row, RowKey

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmark.base import Benchmark

__all__ = [
    "Bootstrap",
    "Figures",
    "Interval",
    "Resolution",
    "bootstrap_of",
    "clear_memo",
    "figures",
    "figures_from_values",
    "recovery",
    "resolution",
]

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
    """Every judged number of a gate, for the metrics of ``specs``: ``values[(role, variant)]`` (privacy metrics
    against their ``reference[metric]``, a ``(value, source)``), ``recovery[variant][forget metric]`` and
    ``utility[variant][utility metric]`` for each variant of U (``utility`` also for "fp"), and their
    intervals: ``drop_ci[metric]`` (of the full-precision drop), ``recovery_ci[variant][metric]``,
    ``utility_ci[variant][metric]``, ``privacy_ci[metric][("unlearned", variant)]`` (absent where undefined or
    not computed), ``resolution[metric]`` and ``n[metric]`` (items per split; privleak: forget + holdout texts)."""

    values: Mapping[RowKey, Values]
    recovery: Mapping[str, Mapping[str, float | None]]
    reference: Mapping[str, tuple[float | None, str]] = field(default_factory=dict)
    utility: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    drop_ci: Mapping[str, Interval] = field(default_factory=dict)
    recovery_ci: Mapping[str, Mapping[str, Interval]] = field(default_factory=dict)
    utility_ci: Mapping[str, Mapping[str, Interval]] = field(default_factory=dict)
    privacy_ci: Mapping[str, Mapping[RowKey, Interval]] = field(default_factory=dict)
    resolution: Mapping[str, Resolution] = field(default_factory=dict)
    n: Mapping[str, int] = field(default_factory=dict)
    bootstrap: Bootstrap = field(default_factory=Bootstrap)
    #: variant -> forget metric -> (m(U), m(T)) in full precision on the items that variant was measured on
    baselines: Mapping[str, Mapping[str, tuple[float | None, float | None]]] = field(default_factory=dict)
    #: the benchmark's metrics these figures are of (a check name finds its metric here)
    specs: tuple[MetricSpec, ...] = ()
    #: privacy metric -> how it is referenced and judged
    rules: Mapping[str, Privacy] = field(default_factory=dict)

    def value(self, role: Role, variant: str, metric: str) -> float | None:
        row = self.values.get((role, variant))
        return None if row is None else row.get(metric)

    def spec(self, check: str) -> MetricSpec | None:
        """The metric an item ``check`` judges (``utility`` is MUSE's knowmem_r)."""
        return next((m for m in self.specs if m.item == check), None)

    def interval(self, variant: str, check: str) -> Interval | None:
        """The interval an item is judged on: the drop (fp forget items), recovery, utility or privacy."""
        spec = self.spec(check)
        if spec is None:
            return None
        if spec.role == "forget":
            return self.drop_ci.get(spec.name) if variant == FP else self.recovery_ci.get(variant, {}).get(spec.name)
        if spec.role == "utility":
            return self.utility_ci.get(variant, {}).get(spec.name)
        if spec.role == "privacy":
            return self.privacy_ci.get(spec.name, {}).get(("unlearned", variant))
        return None

    def baseline(self, variant: str, metric: str) -> tuple[float | None, float | None]:
        """m(U) and m(T) in full precision that ``variant``'s recovery of ``metric`` is measured against."""
        own = self.baselines.get(variant, {}).get(metric)
        return own if own is not None else (self.value("unlearned", FP, metric), self.value("target", FP, metric))


def bootstrap_of(run: RunConfig) -> Bootstrap:
    """The bootstrap a run's figures are drawn with: B = 1000, the fixed seed, the run's confidence."""
    return Bootstrap(confidence=run.confidence)


def removed(spec: MetricSpec, t_value: float, u_value: float) -> float:
    """What unlearning removed of ``spec`` in points: ``m(T) - m(U)``, or ``m(U) - m(T)`` for a metric that grows
    as the model forgets."""
    return t_value - u_value if spec.higher_remembers else u_value - t_value


def recovery(q_value: float, u_value: float, t_value: float, spec: MetricSpec | None = None) -> float | None:
    """Share of the forgetting that came back; None when there was no forgetting to come back."""
    gone = t_value - u_value if spec is None else removed(spec, t_value, u_value)
    if gone <= 0:
        return None
    return (q_value - u_value) / (t_value - u_value)


def _recoveries(
    values: Mapping[RowKey, Values],
    variants: Iterable[str],
    forget: Sequence[MetricSpec],
    baselines: Mapping[str, Mapping[str, tuple[float | None, float | None]]] | None = None,
) -> dict[str, dict[str, float | None]]:
    t_fp, u_fp = values.get(("target", FP), {}), values.get(("unlearned", FP), {})
    out: dict[str, dict[str, float | None]] = {}
    for variant in variants:
        q = values.get(("unlearned", variant), {})
        rec: dict[str, float | None] = {}
        for spec in forget:
            m = spec.name
            um, tm = (baselines or {}).get(variant, {}).get(m) or (u_fp.get(m), t_fp.get(m))
            qm = q.get(m)
            rec[m] = None if qm is None or um is None or tm is None else recovery(qm, um, tm, spec)
        out[variant] = rec
    return out


def _utilities(
    values: Mapping[RowKey, Values], variants: Iterable[str], utility: Sequence[MetricSpec]
) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for variant in variants:
        out[variant] = {}
        for spec in utility:
            t = values.get(("target", FP), {}).get(spec.name)
            m = values.get(("unlearned", variant), {}).get(spec.name)
            out[variant][spec.name] = None if m is None or t is None or t <= 0 else m / t
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
            f"cannot pair the {what} items of {rows[0].role}:{rows[0].variant} and {row.role}:{row.variant}: "
            f"they scored different items ({len(first_ids)} vs {len(g[0])}, or in another order); "
            "rerun with --unlearn-no-cache"
        )
    return out


# Each interval is a pure function of its scores, estimate and bootstrap: computed once per process
# (every item of a gate derives the figures of its own rows, and the report those of all rows).
@lru_cache(maxsize=2048)
def _difference(
    a: tuple[float, ...], b: tuple[float, ...], key: str, estimate: float | None, boot: Bootstrap
) -> Interval:
    return paired_difference_ci(a, b, key=key, estimate=estimate, **_paired_opts(boot))


@lru_cache(maxsize=2048)
def _recovery(
    q: tuple[float, ...], u: tuple[float, ...], t: tuple[float, ...], key: str, estimate: float | None, boot: Bootstrap
) -> Interval:
    return paired_recovery_ci(q, u, t, key=key, estimate=estimate, **_paired_opts(boot))


@lru_cache(maxsize=2048)
def _ratio(
    num: tuple[float, ...], den: tuple[float, ...], key: str, estimate: float | None, boot: Bootstrap
) -> Interval:
    return paired_ratio_ci(num, den, key=key, estimate=estimate, **_paired_opts(boot))


def clear_memo() -> None:
    """Forget every memoized interval, draw and per-item score list: a fresh process, for benchmarks."""
    for memo in (_difference, _recovery, _ratio):
        memo.cache_clear()
    clear_benchmark_memos()
    clear_draws()
    _SCORES.clear()


def _opts(boot: Bootstrap) -> dict[str, Any]:
    return {"seed": boot.seed, "n_resamples": boot.replicates, "confidence": boot.confidence}


def _paired_opts(boot: Bootstrap) -> dict[str, Any]:
    """The options of the figures that have pseudo-items (all but the privacy metrics')."""
    return {**_opts(boot), "prior": boot.prior}


def _oriented(scores: Sequence[tuple[float, ...]], spec: MetricSpec) -> list[tuple[float, ...]]:
    """Per-item scores in the direction of "remembers more": negated for a metric that grows as the model
    forgets, so a drop is positive and a recovery keeps its formula."""
    return list(scores) if spec.higher_remembers else [tuple(-x for x in col) for col in scores]


def _intervals(
    by_key: Mapping[RowKey, Row],
    values: Mapping[RowKey, Values],
    rec: Mapping[str, Mapping[str, float | None]],
    utility: Mapping[str, Mapping[str, float | None]],
    benchmark: Benchmark,
    variants: Sequence[str],
    boot: Bootstrap,
) -> dict[str, Any]:
    """Every forget and utility interval the rows allow (see :class:`Figures`), each from the rows it is made of
    only."""
    specs = benchmark.metrics
    u_fp, t_fp = by_key.get(("unlearned", FP)), by_key.get(("target", FP))
    drop_ci: dict[str, Interval] = {}
    recovery_ci: dict[str, dict[str, Interval]] = {}
    utility_ci: dict[str, dict[str, Interval]] = {}
    n: dict[str, int] = {}
    if u_fp is None or t_fp is None:
        return {"drop_ci": drop_ci, "recovery_ci": recovery_ci, "utility_ci": utility_ci, "n": n}
    for spec in (s for s in specs if s.role == "forget"):
        m = spec.name
        pair = _paired(m, [t_fp, u_fp])
        if pair is None:
            continue
        t, u = _oriented(pair, spec)
        n[m] = len(t)
        tv, uv = values[("target", FP)].get(m), values[("unlearned", FP)].get(m)
        drop_ci[m] = _difference(t, u, m, None if tv is None or uv is None else removed(spec, tv, uv), boot)
        for variant in variants:
            q_row = by_key.get(("unlearned", variant))
            scores = _paired(m, [q_row, u_fp, t_fp]) if q_row is not None else None
            if scores is not None and rec.get(variant, {}).get(m) is not None:
                q, uu, tt = _oriented(scores, spec)
                recovery_ci.setdefault(variant, {})[m] = _recovery(q, uu, tt, m, rec[variant][m], boot)
    for spec in (s for s in specs if s.role == "utility"):
        m = spec.name
        for variant in (FP, *variants):
            q_row = by_key.get(("unlearned", variant))
            estimate = utility.get(variant, {}).get(m)
            if q_row is None:
                continue
            if spec.aggregate != "mean":  # a statistic of several splits' items: the benchmark resamples it
                ci = benchmark.interval(spec, [q_row, t_fp], estimate, boot, _paired) if estimate is not None else None
                if ci is not None:
                    n[m] = ci.n
                    utility_ci.setdefault(variant, {})[m] = ci
                continue
            scores = _paired(m, [q_row, t_fp])
            if scores is not None:
                n[m] = len(scores[0])
                if estimate is not None:
                    utility_ci.setdefault(variant, {})[m] = _ratio(scores[0], scores[1], m, estimate, boot)
    return {"drop_ci": drop_ci, "recovery_ci": recovery_ci, "utility_ci": utility_ci, "n": n}


def _privacy(
    by_key: Mapping[RowKey, Row], values: dict[RowKey, dict[str, float | None]], benchmark: Benchmark, boot: Bootstrap
) -> tuple[dict[str, tuple[float | None, str]], dict[str, dict[RowKey, Interval]], dict[str, int]]:
    """Each privacy metric of every row against its reference (into ``values``), and the paired intervals of
    U's rows (the judged ones; a reference row's own interval is not)."""
    references: dict[str, tuple[float | None, str]] = {}
    intervals: dict[str, dict[RowKey, Interval]] = {}
    n: dict[str, int] = {}
    for spec in (s for s in benchmark.metrics if s.role == "privacy"):
        rule = benchmark.privacy(spec.name)
        reference = rule.reference(by_key)
        references[spec.name] = reference
        reference_row = by_key.get(("retrain", FP)) if reference[1] == "retrain" else None
        for key, row in by_key.items():
            values[key][spec.name] = rule.value(row, reference[0], reference_row)
        if boot.replicates <= 0:
            continue
        for key, row in by_key.items():
            estimate = values[key].get(spec.name)
            if key[0] != "unlearned" or estimate is None:  # undefined (no reference): no interval either
                continue
            ci = rule.interval(row, reference_row, reference[0], estimate, boot, _paired)
            if ci is not None:
                intervals.setdefault(spec.name, {})[key] = ci
                n[spec.name] = ci.n
    return references, intervals, n


def figures(rows: Iterable[Row], benchmark: Benchmark, bootstrap: Bootstrap | None = None) -> Figures:
    """The figures of a set of rows for ``benchmark``'s metrics: every privacy metric of every row against its
    reference, recovery and utility of every computed variant of U, and the paired bootstrap intervals of them
    all (``bootstrap``: B, seed, confidence)."""
    boot = bootstrap or Bootstrap()
    specs = tuple(benchmark.metrics)
    forget = [s for s in specs if s.role == "forget"]
    by_key = {row.key: row for row in rows}
    values: dict[RowKey, dict[str, float | None]] = {key: dict(row.values) for key, row in by_key.items()}
    references, privacy_ci, privacy_n = _privacy(by_key, values, benchmark, boot)
    variants = [variant for (role, variant), row in by_key.items() if role == "unlearned" and variant != FP and row.ok]
    baselines = _baselines(by_key, forget)
    rec = _recoveries(values, variants, forget, baselines)
    utility = _utilities(values, [FP, *variants], [s for s in specs if s.role == "utility"])
    extra: dict[str, Any] = {}
    if boot.replicates > 0:
        extra = _intervals(by_key, values, rec, utility, benchmark, variants, boot)
        extra["n"].update(privacy_n)
    res: dict[str, Resolution] = {}
    if ("target", FP) in values and ("unlearned", FP) in values:
        for spec in forget:
            tv, uv = values[("target", FP)].get(spec.name), values[("unlearned", FP)].get(spec.name)
            drop = None if tv is None or uv is None else removed(spec, tv, uv)
            res[spec.name] = resolution(
                spec.name, drop, extra.get("drop_ci", {}).get(spec.name), extra.get("n", {}).get(spec.name, 0)
            )
    rules = {s.name: benchmark.privacy(s.name) for s in specs if s.role == "privacy"}
    return Figures(
        values=values,
        recovery=rec,
        reference=references,
        utility=utility,
        privacy_ci=privacy_ci,
        resolution=res,
        bootstrap=boot,
        baselines=baselines,
        specs=specs,
        rules=rules,
        **extra,
    )


def _subset_mean(row: Row | None, metric: str, ids: Iterable[int]) -> float | None:
    """The mean per-item score of ``row``'s ``metric`` over the items ``ids`` (None when a sample is missing)."""
    if row is None or not row.ok:
        return None
    scores = {s.get("id"): s.get("score") for s in row.samples.get(metric, [])}
    picked = [scores.get(i) for i in ids]
    if not picked or any(s is None for s in picked):
        return None
    return sum(float(s) for s in picked if s is not None) / len(picked)


def _baselines(
    by_key: Mapping[RowKey, Row], forget: Sequence[MetricSpec]
) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """For each variant whose rows were measured on part of the forget items, m(U) and m(T) in full
    precision on those items (see the module docstring)."""
    out: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    names = {s.name for s in forget}
    u_fp, t_fp = by_key.get(("unlearned", FP)), by_key.get(("target", FP))
    for (_role, variant), row in by_key.items():
        split = (row.details or {}).get("split") if variant != FP else None
        if not split or variant in out:
            continue
        out[variant] = {
            m: (_subset_mean(u_fp, m, ids), _subset_mean(t_fp, m, ids))
            for m, ids in split.get("evaluated", {}).items()
            if m in names
        }
    return out


def figures_from_values(
    values: Mapping[RowKey, Values],
    specs: Sequence[MetricSpec] | None = None,
    reference: Mapping[str, tuple[float | None, str]] | None = None,
    **intervals: Any,
) -> Figures:
    """Figures from metric values given directly (privacy metrics already against their reference):
    hand-computed cases. ``specs``: the benchmark's metrics (MUSE's by default); ``intervals`` (``drop_ci=``,
    ``recovery_ci=``, ...) are given directly too."""
    from ..benchmark.muse import DEFAULT_REFERENCE_AUC, MUSE_METRICS, MuseBenchmark

    specs = tuple(specs or MUSE_METRICS)
    rules = {s.name: MuseBenchmark().privacy(s.name) for s in specs if s.role == "privacy" and s.name == "privleak"}
    variants = [variant for role, variant in values if role == "unlearned" and variant != FP]
    forget = [s for s in specs if s.role == "forget"]
    references = dict(reference or {s.name: (DEFAULT_REFERENCE_AUC, "default") for s in specs if s.role == "privacy"})
    return Figures(
        values=dict(values),
        recovery=_recoveries(values, variants, forget),
        reference=references,
        utility=_utilities(values, [FP, *variants], [s for s in specs if s.role == "utility"]),
        specs=specs,
        rules=rules,
        **intervals,
    )
