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
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "N_RESAMPLES",
    "MetricResult",
    "bootstrap_auc_ci",
    "bootstrap_mean_ci",
    "mann_whitney_auc",
    "rng_for",
]

#: Bootstrap resamples per metric.
N_RESAMPLES = 1000
#: Two-sided confidence level of the percentile interval.
LEVEL = 0.95


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
    import numpy as np

    neg = np.asarray(list(negatives), dtype=np.float64)
    pos = np.asarray(list(positives), dtype=np.float64)
    wins = (pos[None, :] > neg[:, None]).sum() + 0.5 * (pos[None, :] == neg[:, None]).sum()
    return float(wins / (neg.size * pos.size))


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
    wins = (pos[None, :] > neg[:, None]).astype(np.float64) + 0.5 * (pos[None, :] == neg[:, None])
    rng = rng_for(seed, key)
    counts_neg = np.stack([np.bincount(r, minlength=neg.size) for r in rng.integers(0, neg.size, size=(n_resamples, neg.size))])
    counts_pos = np.stack([np.bincount(r, minlength=pos.size) for r in rng.integers(0, pos.size, size=(n_resamples, pos.size))])
    aucs = np.einsum("bi,ij,bj->b", counts_neg.astype(np.float64), wins, counts_pos.astype(np.float64)) / (neg.size * pos.size)
    return _interval(transform(aucs), level)
