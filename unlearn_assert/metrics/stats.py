"""Per-metric results and seeded bootstrap confidence intervals.

Why bootstrap: MUSE splits are small (100 KnowMem questions, 100 VerbMem passages), so a recovery
of a few ROUGE points after quantization may be noise. A percentile bootstrap over the samples
(MUSE's own logger reports one too) lets the report show whether two numbers are distinguishable.

Why seeded per metric: a release gate must print the same interval on every run, and the interval
of ``knowmem_f`` must not change because ``verbmem_f`` was or was not evaluated in the same call;
so each metric draws from ``numpy.random.default_rng([seed, crc32(metric)])``.

For privleak the statistic is an AUC, resampled *stratified* (forget and holdout texts each with
replacement, sizes kept) and computed as the Mann-Whitney U statistic, which equals scikit-learn's
ROC AUC including its half credit for ties; vectorized over all resamples so 1000 resamples cost
milliseconds.

The *paired* bootstrap (the figure functions after :func:`paired_counts`) is what the verdicts
are judged on: each replicate weighs the items once and applies the same weights to every model's
per-item scores, so the item-to-item variation that all models share cancels in a difference or a
ratio (recovery, the full-precision drop, the utility ratio, privleak against a retrain model).
Definitions:

* the weights: for the drop, recovery and utility, a *Bayesian bootstrap with pseudo-items*
  (issue 31): every item gets an ``Exp(1)`` weight per replicate (:func:`resample_weights`; the
  normalized weights are Dirichlet(1, ..., 1), Rubin's Bayesian bootstrap), and two pseudo-items
  (:func:`pseudo_items`) join the items, weighted ``Gamma(prior)`` each (:func:`prior_weights`,
  :data:`PRIOR` = 1): the average item, with the figure's moving model (T for the drop, q(U) for
  recovery and utility) shifted up on one and down on the other by a bound on the size of a change
  in that direction, the whole span of the scores when no item changed that way (a replicate's
  mean of the moving model is clipped to the scores' range, where a real mean lies); for privleak (and
  for ``prior=0``, the interval before issue 31) the multiplicities of n items drawn with
  replacement (:func:`resample_counts`), forget and holdout texts drawn separately (stratified,
  sizes kept);
* a replicate's figure is the figure's formula on the replicate's weighted per-model means (AUCs
  for privleak, from the pairwise win matrix);
* a replicate whose denominator is 0 or negative (``m(T) - m(U)`` for recovery, ``knowmem_r(T)``
  for utility, ``AUC_R`` for privleak) is *degenerate*: it is counted and ranked at ``+inf``, never
  dropped (for recovery that is beyond every budget: in that replicate nothing was forgotten; for
  utility above every budget: there is no retained knowledge to lose, as the point verdict says);
* the interval at confidence c is the pair of *outward* order statistics at ``(1 - c) / 2`` and
  ``(1 + c) / 2`` of the B replicates (no interpolation, so a ``+inf`` replicate is never averaged
  with a finite one), widened to contain the point estimate when a very skewed distribution
  leaves it outside; ``hi`` is ``+inf`` when more than the upper tail is degenerate;
* invariance to item order: the draw is made on the items ranked by their scores in every column
  (lexicographically), so permuting the items permutes the weights with them and the interval is
  bitwise the same (the pseudo-items do not depend on the order).

Why pseudo-items: a bootstrap can only reweigh the changes it saw. When no sampled item changed
between two models every replicate gives the same figure, and the interval is [0, 0]; when a few
changed, it is far too sure of how few (at a nominal 95%, the plain bootstrap covered true
recoveries of 0-3% in 62-69% of the gates issue 31 simulated, and of 0.5-3.5% in 34-93% of
:mod:`.coverage`'s). With one pseudo-item of weight ``Gamma(1)`` per
direction, the share of items that change in that direction has about the posterior of a uniform
prior, Beta(k + 1, n - k + 1) for k changed items out of n: its upper 97.5% point is within 1-5% of
the exact Clopper-Pearson bound (3.7/n when nothing changed, the "rule of three"), for every k,
which the multinomial bootstrap (about Binomial(n, k/n) / n) falls well short of for small k. How
far an unseen change moves a score is bounded too: a Dirichlet-process mean with the span as its
guess, ``(sum of the k changes' sizes + span) / (k + 1)``, the span when nothing changed (0/1
answers always change by the span), the typical change when many did. The pseudo-items sit at the
items' means, so they widen the interval without moving its centre, and as changed items
accumulate they fade. privleak has none: every text's Min-40% value differs between models, so
there is no mass of unchanged items to be overconfident about, and its coverage holds without them.
:mod:`.coverage` simulates all of this; docs/metrics.md has the numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

__all__ = [
    "LEVEL",
    "N_RESAMPLES",
    "PAIRED_SEED",
    "PRIOR",
    "Interval",
    "MetricResult",
    "bootstrap_auc_ci",
    "bootstrap_mean_ci",
    "clear_draws",
    "mann_whitney_auc",
    "paired_counts",
    "paired_difference_ci",
    "paired_privleak_ci",
    "paired_ratio_ci",
    "paired_recovery_ci",
    "percentile_interval",
    "prior_weights",
    "pseudo_items",
    "resample_counts",
    "resample_weights",
    "rng_for",
    "win_matrix",
]

#: Bootstrap resamples per metric.
N_RESAMPLES = 1000
#: Two-sided confidence level of the percentile interval.
LEVEL = 0.95
#: Seed of the paired bootstrap of the judged figures (recorded in the report's provenance).
PAIRED_SEED = 0
#: Weight (Gamma shape) of each pseudo-item of the paired figures: 1 = one item's worth, the
#: uniform prior on the share of items that change (see the module docstring); 0 = none.
PRIOR = 1.0


@dataclass
class MetricResult:
    """One metric's outcome before it is folded into an :class:`~unlearn_assert.metrics.Evaluation`.

    ``value`` is on the reported scale (ROUGE x100); ``scores`` are the per-sample statistics the
    value is the mean of (ROUGE F1 in [0, 1]); ``samples`` are the per-sample records.
    """

    value: float
    scores: list[float]
    samples: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)


def rng_for(seed: int, key: str) -> Any:
    """A numpy Generator that depends only on ``seed`` and the metric name ``key``."""
    import numpy as np

    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def _interval(stats: Any, level: float) -> tuple[float, float]:
    import numpy as np

    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    scores: Sequence[float],
    *,
    seed: int,
    key: str,
    scale: float = 100.0,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``scale * mean(scores)``."""
    import numpy as np

    values = np.asarray(list(scores), dtype=np.float64)
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = rng_for(seed, key)
    idx = rng.integers(0, values.size, size=(n_resamples, values.size))
    return _interval(values[idx].mean(axis=1) * scale, level)


def mann_whitney_auc(negatives: Sequence[float], positives: Sequence[float]) -> float:
    """P(positive score > negative score) + 0.5 P(equal): the ROC AUC, ties as scikit-learn."""

    wins = win_matrix(negatives, positives)
    return float(wins.sum() / wins.size)


def win_matrix(negatives: Sequence[float], positives: Sequence[float]) -> Any:
    """``W[i, j]`` = 1 if positive j scores above negative i, 0.5 on a tie, else 0 (n_neg x n_pos):
    the AUC of any resample is ``c_neg W c_pos / (sum c_neg * sum c_pos)`` for its multiplicities."""
    import numpy as np

    neg = np.asarray(list(negatives), dtype=np.float64)
    pos = np.asarray(list(positives), dtype=np.float64)
    return (pos[None, :] > neg[:, None]).astype(np.float64) + 0.5 * (pos[None, :] == neg[:, None])


def bootstrap_auc_ci(
    negatives: Sequence[float],
    positives: Sequence[float],
    *,
    seed: int,
    key: str,
    transform: Callable[[Any], Any] = lambda auc: auc,
    n_resamples: int = N_RESAMPLES,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Stratified percentile bootstrap interval of ``transform(AUC)``.

    ``negatives``/``positives`` are the attack scores (higher = "member") of the texts labelled 0
    and 1. With the pairwise win matrix ``W`` (n_neg x n_pos) and per-resample multiplicity vectors
    ``c_neg``, ``c_pos``, a resample's AUC is ``c_neg W c_pos / (n_neg n_pos)``: no re-sorting.
    """
    import numpy as np

    neg = np.asarray(list(negatives), dtype=np.float64)
    pos = np.asarray(list(positives), dtype=np.float64)
    if neg.size == 0 or pos.size == 0:
        return (float("nan"), float("nan"))
    wins = win_matrix(negatives, positives)
    rng = rng_for(seed, key)
    counts_neg = _multiplicities(rng.integers(0, neg.size, size=(n_resamples, neg.size)), neg.size)
    counts_pos = _multiplicities(rng.integers(0, pos.size, size=(n_resamples, pos.size)), pos.size)
    aucs = ((counts_neg @ wins) * counts_pos).sum(axis=1) / (neg.size * pos.size)
    return _interval(transform(aucs), level)


# --------------------------------------------------------------------------- paired bootstrap


@dataclass(frozen=True)
class Interval:
    """A paired bootstrap interval of one figure: ``[lo, hi]`` (``hi`` may be ``+inf``: more
    replicates were degenerate than the upper tail holds), how many of the ``replicates`` were
    degenerate (denominator <= 0, ranked at ``+inf``), and the number of items ``n`` resampled."""

    lo: float
    hi: float
    degenerate: int = 0
    replicates: int = 0
    n: int = 0

    def as_list(self) -> list[float | None]:
        """``[lo, hi]`` for the report (an infinite ``hi`` is written as null in the JSON file)."""
        return [self.lo, self.hi]


def _multiplicities(idx: Any, n: int) -> Any:
    """(B, n) float counts of each item in each row of drawn indices ``idx`` (B, n): one bincount."""
    import numpy as np

    b = idx.shape[0]
    flat = (idx + np.arange(b, dtype=np.int64)[:, None] * n).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def resample_counts(n: int, *, seed: int, key: str, n_resamples: int = N_RESAMPLES) -> Any:
    """Multiplicities (``n_resamples`` x ``n``) of n items drawn with replacement, seeded by
    ``(seed, key)`` only: the same on every run, process and xdist worker. Read-only and memoized
    (the draw is most of a figure's cost, and every variant's figure of a split reuses it)."""
    return _resample_counts(int(n), int(seed), str(key), int(n_resamples))


def resample_weights(n: int, *, seed: int, key: str, n_resamples: int = N_RESAMPLES) -> Any:
    """Bayesian bootstrap weights (``n_resamples`` x ``n``) of n items: independent ``Exp(1)``
    draws (normalized per replicate, they are Dirichlet(1, ..., 1)), seeded by ``(seed, key)`` only.
    Read-only and memoized, like :func:`resample_counts`."""
    return _resample_weights(int(n), int(seed), str(key), int(n_resamples))


@lru_cache(maxsize=32)
def _resample_weights(n: int, seed: int, key: str, n_resamples: int) -> Any:
    weights = rng_for(seed, key).standard_exponential(size=(n_resamples, n))
    weights.setflags(write=False)
    return weights


def clear_draws() -> None:
    """Forget the memoized draws (a fresh process, for benchmarks)."""
    _resample_counts.cache_clear()
    _resample_weights.cache_clear()
    _prior_weights.cache_clear()


@lru_cache(maxsize=32)
def _resample_counts(n: int, seed: int, key: str, n_resamples: int) -> Any:
    rng = rng_for(seed, key)
    counts = _multiplicities(rng.integers(0, n, size=(n_resamples, n)), n)
    counts.setflags(write=False)
    return counts


def prior_weights(k: int, *, seed: int, key: str, n_resamples: int = N_RESAMPLES, prior: float = PRIOR) -> Any:
    """Weights (``n_resamples`` x ``k``) of a figure's k pseudo-items: ``Gamma(prior)`` draws seeded
    by ``(seed, key + ":prior")`` only (zeros when ``prior`` is 0). Read-only and memoized."""
    return _prior_weights(int(k), int(seed), str(key), int(n_resamples), float(prior))


@lru_cache(maxsize=32)
def _prior_weights(k: int, seed: int, key: str, n_resamples: int, prior: float) -> Any:
    import numpy as np

    if prior < 0 or not prior == prior:
        raise ValueError(f"the pseudo-items' weight must be >= 0, got {prior}")
    if prior == 0:
        weights = np.zeros((n_resamples, k), dtype=np.float64)
    else:
        weights = rng_for(seed, key + ":prior").gamma(prior, size=(n_resamples, k))
    weights.setflags(write=False)
    return weights


def paired_counts(columns: Sequence[Sequence[float]], *, seed: int, key: str, n_resamples: int = N_RESAMPLES) -> Any:
    """Multiplicities (B x n) of the n items, one draw shared by every column (model) of the figure
    (privleak's, and the other figures' with ``prior=0``; their Bayesian weights are drawn on
    the items ranked the same way), aligned with the given item order and independent of it: the
    draw is made on the items ranked by their scores across ``columns`` (lexicographically,
    first column first), so permuting the items permutes the result with them. Items that tie in
    every column are interchangeable."""
    import numpy as np

    cols = np.asarray([list(c) for c in columns], dtype=np.float64)
    n = cols.shape[1]
    order = np.lexsort(cols[::-1])
    counts = np.empty((n_resamples, n), dtype=np.float64)
    counts[:, order] = resample_counts(n, seed=seed, key=key, n_resamples=n_resamples)
    return counts


def _resampled(
    columns: Sequence[Sequence[float]], counts: Any, *, seed: int, key: str, n_resamples: int, bayes: bool = False
) -> tuple[Any, Any]:
    """The columns (k x n array) and the weights (B x n) to apply to them: the given ``counts`` in
    the given order, else the seeded draw (``bayes``: Bayesian bootstrap weights, else multinomial
    multiplicities) on the items in their canonical order (ranked as :func:`paired_counts` ranks
    them), so that a permutation of the items gives the same arrays, and so the same sums, bit for bit."""
    import numpy as np

    cols = np.asarray([list(c) for c in columns], dtype=np.float64)
    if counts is not None:
        return cols, np.asarray(counts, dtype=np.float64)
    order = np.lexsort(cols[::-1])
    draw = resample_weights if bayes else resample_counts
    return cols[:, order], draw(cols.shape[1], seed=seed, key=key, n_resamples=n_resamples)


def percentile_interval(
    replicates: Any, estimate: float | None, confidence: float = LEVEL, degenerate: Any = None
) -> Interval:
    """The interval of a figure from its replicate values: outward order statistics at
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``, degenerate replicates (``degenerate``
    mask, and any non-finite value) ranked at +inf, widened to contain ``estimate``."""
    import math

    import numpy as np

    values = np.asarray(replicates, dtype=np.float64).copy()
    bad = ~np.isfinite(values)
    if degenerate is not None:
        bad |= np.asarray(degenerate, dtype=bool)
    values[bad] = np.inf
    b = values.size
    ordered = np.sort(values)
    tail = (1.0 - confidence) / 2.0
    lo = float(ordered[math.floor(tail * (b - 1) + 1e-9)])
    hi = float(ordered[math.ceil((1.0 - tail) * (b - 1) - 1e-9)])
    if estimate is not None and math.isfinite(estimate):
        lo, hi = min(lo, estimate), max(hi, estimate)
    return Interval(lo=lo, hi=hi, degenerate=int(bad.sum()), replicates=b, n=0)


def _means(counts: Any, scores: Any) -> Any:
    return counts @ scores / scores.size


def _pseudo_means(cols: Any, weights: Any, items: Any, pseudo_weights: Any) -> list[Any]:
    """Each column's replicate means over the items plus the pseudo-items: ``items`` are the
    pseudo-items' values (one row per pseudo-item, one value per column), ``pseudo_weights`` their
    (B x len(items)) weights. With zero pseudo weights and multiplicities summing to n, this is
    exactly :func:`_means` per column, bit for bit."""
    total = weights.sum(axis=1) + pseudo_weights.sum(axis=1)
    return [(weights @ cols[j] + pseudo_weights @ items[:, j]) / total for j in range(cols.shape[0])]


def pseudo_items(cols: Any, moving: int, base: int) -> Any:
    """The two pseudo-items of a paired figure (2 x k, one value per column): the average item
    (every column at its mean), except that column ``moving`` is shifted up on the first and down
    on the second, relative to column ``base``. Each shift is the mean size of a change between the
    two columns in that direction under a Dirichlet-process prior whose guess is the span of all
    the columns' scores: ``(sum of the k changes' sizes + span) / (k + 1)``. So with no change that
    way it is the whole span (the worst case), with many it is about the typical change seen; and
    as the items' means are kept, the pseudo-items widen the interval without moving its centre."""
    import numpy as np

    lo, hi = float(cols.min()), float(cols.max())
    diff = cols[moving] - cols[base]
    up, down = diff[diff > 0], -diff[diff < 0]
    items = np.repeat(cols.mean(axis=1)[None, :], 2, axis=0)
    items[0, moving] += (float(up.sum()) + hi - lo) / (up.size + 1)
    items[1, moving] -= (float(down.sum()) + hi - lo) / (down.size + 1)
    return items


def _with_pseudo(
    cols: Any, weights: Any, moving: int, base: int, pseudo: Any, *, seed: int, key: str, prior: float
) -> list[Any]:
    """The replicate means of the columns with the figure's pseudo-items: weights ``Gamma(prior)``
    (seeded), or the fixed (B x 2) ``pseudo``. A heavy pseudo-item can carry the moving column's
    mean beyond the scores' range (below the smallest score, e.g. a negative utility, when the
    scores are near 0): such a mean is clipped to the range, where a real one must lie."""
    import numpy as np

    b = weights.shape[0]
    if pseudo is not None:
        g = np.asarray(pseudo, dtype=np.float64)
        if g.shape != (b, 2):
            raise ValueError(f"pseudo must have one row per replicate and 2 columns, got shape {g.shape}")
    else:
        g = prior_weights(2, seed=seed, key=key, n_resamples=b, prior=prior)
    means = _pseudo_means(cols, weights, pseudo_items(cols, moving, base), g)
    means[moving] = np.clip(means[moving], cols.min(), cols.max())
    return means


def _with_n(interval: Interval, n: int) -> Interval:
    return Interval(interval.lo, interval.hi, interval.degenerate, interval.replicates, n)


def paired_difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    seed: int = PAIRED_SEED,
    key: str,
    n_resamples: int = N_RESAMPLES,
    confidence: float = LEVEL,
    estimate: float | None = None,
    counts: Any = None,
    prior: float = PRIOR,
    pseudo: Any = None,
) -> Interval:
    """``mean(a) - mean(b)`` on paired items (the full-precision drop ``m(T) - m(U)``: a = T's
    per-item scores, b = U's), in the scores' unit. ``counts``: fixed (B x n) weights of the items
    (a resample's multiplicities); ``pseudo``: fixed (B x 2) weights of the pseudo-items
    (:func:`pseudo_items`, a moving); ``prior=0``: the plain bootstrap of before issue 31."""
    import numpy as np

    cols, c = _resampled([a, b], counts, seed=seed, key=key, n_resamples=n_resamples, bayes=prior > 0)
    ma, mb = _with_pseudo(cols, c, 0, 1, pseudo, seed=seed, key=key, prior=prior)
    est = float(np.mean(cols[0]) - np.mean(cols[1])) if estimate is None else estimate
    return _with_n(percentile_interval(ma - mb, est, confidence), cols.shape[1])


def paired_recovery_ci(
    q: Sequence[float],
    u: Sequence[float],
    t: Sequence[float],
    *,
    seed: int = PAIRED_SEED,
    key: str,
    n_resamples: int = N_RESAMPLES,
    confidence: float = LEVEL,
    estimate: float | None = None,
    counts: Any = None,
    prior: float = PRIOR,
    pseudo: Any = None,
) -> Interval:
    """Recovery ``(m(q(U)) - m(U)) / (m(T) - m(U))`` per replicate on paired items (q, u, t: the
    per-item scores of q(U), U and T); replicates with ``m(T) - m(U) <= 0`` are degenerate.
    ``counts``, ``pseudo``, ``prior``: as :func:`paired_difference_ci`. The pseudo-items move q(U)
    against U: the numerator. The denominator is the full-precision drop, judged with its own
    pseudo-items before any recovery; the coverage holds without them here (docs/metrics.md), and
    they would only widen the interval."""
    import numpy as np

    cols, c = _resampled([q, u, t], counts, seed=seed, key=key, n_resamples=n_resamples, bayes=prior > 0)
    mq, mu, mt = _with_pseudo(cols, c, 0, 1, pseudo, seed=seed, key=key, prior=prior)
    removed = mt - mu
    bad = removed <= 0
    reps = np.divide(mq - mu, removed, out=np.full_like(removed, np.inf), where=~bad)
    if estimate is None:
        d = float(np.mean(cols[2]) - np.mean(cols[1]))
        estimate = (float(np.mean(cols[0]) - np.mean(cols[1])) / d) if d > 0 else None
    return _with_n(percentile_interval(reps, estimate, confidence, bad), cols.shape[1])


def paired_ratio_ci(
    num: Sequence[float],
    den: Sequence[float],
    *,
    seed: int = PAIRED_SEED,
    key: str,
    n_resamples: int = N_RESAMPLES,
    confidence: float = LEVEL,
    estimate: float | None = None,
    counts: Any = None,
    prior: float = PRIOR,
    pseudo: Any = None,
) -> Interval:
    """``mean(num) / mean(den)`` on paired items (utility: ``knowmem_r(q(U)) / knowmem_r(T)``);
    replicates with ``mean(den) <= 0`` are degenerate. ``counts``, ``pseudo``, ``prior``: as
    :func:`paired_difference_ci`; the pseudo-items move num against den."""
    import numpy as np

    cols, c = _resampled([num, den], counts, seed=seed, key=key, n_resamples=n_resamples, bayes=prior > 0)
    mn, md = _with_pseudo(cols, c, 0, 1, pseudo, seed=seed, key=key, prior=prior)
    cn, cd = cols
    bad = md <= 0
    reps = np.divide(mn, md, out=np.full_like(md, np.inf), where=~bad)
    if estimate is None:
        d = float(np.mean(cd))
        estimate = float(np.mean(cn)) / d if d > 0 else None
    return _with_n(percentile_interval(reps, estimate, confidence, bad), cn.size)


def paired_privleak_ci(
    forget: Sequence[float],
    holdout: Sequence[float],
    *,
    reference: float | None = None,
    reference_forget: Sequence[float] | None = None,
    reference_holdout: Sequence[float] | None = None,
    seed: int = PAIRED_SEED,
    key: str = "privleak",
    n_resamples: int = N_RESAMPLES,
    confidence: float = LEVEL,
    estimate: float | None = None,
    counts: tuple[Any, Any] | None = None,
) -> Interval | None:
    """``privleak = (AUC - AUC_R) / AUC_R * 100`` per replicate, forget and holdout texts resampled
    stratified. ``forget``/``holdout``: the model's per-text Min-40% values (MUSE orientation: score
    ``-Min-40%``, forget labelled 0). AUC_R is recomputed on the same resampled texts from the
    retrain model's values (``reference_forget``/``reference_holdout``) when given, else the fixed
    ``reference``; replicates with ``AUC_R <= 0`` are degenerate. None without any reference, or
    with a fixed one that is not positive (privleak is undefined)."""
    import numpy as np

    paired = reference_forget is not None and reference_holdout is not None
    if not paired and (reference is None or not reference > 0):
        return None
    n_f, n_h = len(forget), len(holdout)
    if n_f == 0 or n_h == 0:
        return None
    cols_f: list[Sequence[float]] = [[-float(v) for v in forget]]
    cols_h: list[Sequence[float]] = [[-float(v) for v in holdout]]
    if paired:
        assert reference_forget is not None and reference_holdout is not None
        cols_f.append([-float(v) for v in reference_forget])
        cols_h.append([-float(v) for v in reference_holdout])
    fixed_f, fixed_h = counts if counts is not None else (None, None)
    f, c_f = _resampled(cols_f, fixed_f, seed=seed, key=key + ":forget", n_resamples=n_resamples)
    h, c_h = _resampled(cols_h, fixed_h, seed=seed, key=key + ":holdout", n_resamples=n_resamples)

    def aucs(w: Any) -> Any:
        return ((c_f @ w) * c_h).sum(axis=1) / (n_f * n_h)

    auc = aucs(win_matrix(f[0], h[0]))
    if paired:
        auc_r = aucs(win_matrix(f[1], h[1]))
        point_r = mann_whitney_auc(f[1], h[1])
    else:
        assert reference is not None
        auc_r = np.full(auc.shape, float(reference))
        point_r = float(reference)
    bad = auc_r <= 0
    reps = np.divide(auc - auc_r, auc_r, out=np.full_like(auc, np.inf), where=~bad) * 100.0
    if estimate is None and point_r > 0:
        estimate = (mann_whitney_auc(f[0], h[0]) - point_r) / point_r * 100.0
    return _with_n(percentile_interval(reps, estimate, confidence, bad), n_f + n_h)
