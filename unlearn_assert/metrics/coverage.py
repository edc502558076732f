"""Simulated gates with a known population figure: how often the paired intervals of
:mod:`.stats` cover the truth, and how often a decided verdict is wrong (issue 31).

Why: an interval is a promise about repeated gates ("95% of them contain the true recovery"),
which no single gate can check. Here the population is known, so the promise can be counted:
each scenario draws ``gates`` samples of n items from a population whose figure is known exactly,
computes the figure's paired interval as a gate does, and counts the gates whose interval
contains the truth and the gates whose *decided* verdict is wrong (strict passing a true figure
beyond the budget, lenient failing one within it) at every budget of a grid.

The populations (scores x100, like ROUGE in the rows):

* ``binary``: KnowMem-like 0/1 answers of T, U and q(U), given as the probabilities of the eight
  (t, u, q) cells, so every figure's truth is exact: T knows an item with probability 0.6,
  unlearning forgets a share ``forget`` of what T knows (and learns a share ``gain`` of what it
  does not), quantization brings back a share ``back`` of the forgotten items and flips a share
  ``flip`` of the others;
* ``continuous``: VerbMem-like ROUGE in [0, 100] from a fixed pool of 200,000 items (the truth is
  the pool's figure): T ~ 100 Beta(8, 2), unlearning keeps a Beta(1, 3) share of 90% of the items,
  quantization changes a share ``change`` of the items by ``back`` of the forgotten part plus
  normal noise of ``sd`` points, clipped to [0, 100];
* ``retain``: KnowMem-like 0/1 answers of T and q(U) on retain items, for utility;
* ``privleak``: Min-40% values of forget and holdout texts from a pool, U and R sharing each text's
  difficulty, U memorizing the forget texts by ``memorized`` standard deviations and R by
  ``reference``, each model with its own per-text noise.

The verdict rule is passed in (``judge``: :func:`unlearn_assert.engine.verdicts.judge`), because
metrics do not import the engine.
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .stats import PRIOR, Interval, paired_difference_ci, paired_privleak_ci, paired_ratio_ci, paired_recovery_ci

__all__ = ["FIGURES", "Outcome", "Scenario", "scenarios", "simulate"]

#: The figures a scenario can be about, and the budgets each is judged against (as the verdicts
#: do: recovery <= b, utility >= b, drop >= floor in points, |privleak| <= b in %).
FIGURES: dict[str, tuple[float, ...]] = {
    "recovery": (0.05, 0.1, 0.25, 0.5, 0.75, 1.0),
    "drop": (2.0, 5.0, 10.0, 20.0, 30.0),
    "utility": (0.8, 0.9, 0.95, 0.99),
    "privleak": (5.0, 10.0, 25.0, 50.0),
}

#: (t, u, q) cells of the binary population, in the order of its probability vector.
_CELLS = tuple(itertools.product((0, 1), repeat=3))
_POOL = 200_000
_P_KNOWN = 0.6


@dataclass(frozen=True)
class Scenario:
    """One population and sample size: ``figure`` (a key of :data:`FIGURES`), ``kind`` (binary,
    continuous, retain, privleak), its parameters, and ``n`` items per gate (privleak: n forget
    and n holdout texts)."""

    name: str
    figure: str
    kind: str
    n: int
    params: tuple[tuple[str, float], ...] = ()

    def param(self, key: str, default: float = 0.0) -> float:
        return dict(self.params).get(key, default)

    @property
    def truth(self) -> float:
        """The population's figure (recovery and utility as fractions, the drop in points, privleak in %)."""
        return _population(self).truth

    @property
    def changed(self) -> float:
        """Items per gate on which the moving model (q(U); T for the drop) differs from its base (U;
        T for utility), in expectation: the edge the pseudo-items are for is a few (inf: privleak)."""
        return _population(self).changed * self.n


@dataclass(frozen=True)
class Outcome:
    """What ``gates`` simulated gates of a scenario gave: the share whose interval covers the
    truth, the share whose interval has zero width, the median width (an unbounded end counted
    as 10 for recovery and utility, 1000 points otherwise), and per budget of the grid the share
    of gates with a wrong decided verdict."""

    scenario: Scenario
    truth: float
    gates: int
    coverage: float
    zero_width: float
    median_width: float
    errors: dict[float, float] = field(default_factory=dict)

    @property
    def decided_error(self) -> float:
        """The worst share of wrong decided verdicts over the budget grid."""
        return max(self.errors.values(), default=0.0)


# --------------------------------------------------------------------------- populations


@dataclass(frozen=True)
class _Population:
    truth: float
    draw: Callable[[Any, int], list[Any]]  # (rng, n) -> the columns of the figure's function
    changed: float = math.inf  # share of items on which the figure's moving model differs from its base


def _binary_cells(forget: float, gain: float, back: float, flip: float) -> Any:
    import numpy as np

    probs = []
    for t, u, q in _CELLS:
        p = _P_KNOWN if t else 1 - _P_KNOWN
        p *= ((1 - forget) if u else forget) if t else (gain if u else 1 - gain)
        forgotten = t == 1 and u == 0
        if forgotten:
            p *= back if q else 1 - back
        else:
            p *= (1 - flip) if q == u else flip
        probs.append(p)
    return np.asarray(probs)


def _cell_sampler(probs: Any, columns: Sequence[int]) -> Callable[[Any, int], list[Any]]:
    import numpy as np

    values = np.asarray(_CELLS, dtype=np.float64) * 100.0

    def draw(rng: Any, n: int) -> list[Any]:
        items = np.repeat(values, rng.multinomial(n, probs), axis=0)
        rng.shuffle(items)
        return [items[:, c] for c in columns]

    return draw


def _pool_sampler(pool: Sequence[Any]) -> Callable[[Any, int], list[Any]]:
    def draw(rng: Any, n: int) -> list[Any]:
        idx = rng.integers(0, pool[0].size, n)
        return [col[idx] for col in pool]

    return draw


def _auc(negatives: Any, positives: Any) -> float:
    """AUC of continuous scores (no ties) from ranks: the pool is too large for a win matrix."""
    import numpy as np

    scores = np.concatenate([negatives, positives])
    ranks = np.empty(scores.size)
    ranks[np.argsort(scores, kind="stable")] = np.arange(1, scores.size + 1)
    n_pos = positives.size
    return float((ranks[negatives.size :].sum() - n_pos * (n_pos + 1) / 2) / (negatives.size * n_pos))


@lru_cache(maxsize=256)
def _population(s: Scenario) -> _Population:
    import numpy as np

    rng = np.random.default_rng([31, zlib.crc32(repr((s.kind, s.params)).encode())])
    if s.kind == "binary":
        probs = _binary_cells(s.param("forget"), s.param("gain"), s.param("back"), s.param("flip"))
        t, u, q = (probs @ np.asarray(_CELLS, dtype=np.float64)).tolist()
        cells = np.asarray(_CELLS)
        if s.figure == "drop":
            forgotten = float(probs[cells[:, 0] != cells[:, 1]].sum())
            return _Population(100.0 * (t - u), _cell_sampler(probs, (0, 1)), forgotten)
        changed = float(probs[cells[:, 2] != cells[:, 1]].sum())
        return _Population((q - u) / (t - u), _cell_sampler(probs, (2, 1, 0)), changed)
    if s.kind == "continuous":
        t = 100.0 * rng.beta(8, 2, _POOL)
        u = np.where(rng.random(_POOL) < 0.9, t * rng.beta(1, 3, _POOL), t)
        moved = np.clip(u + s.param("back") * (t - u) + rng.normal(0, s.param("sd"), _POOL), 0, 100)
        q = np.where(rng.random(_POOL) < s.param("change"), moved, u)
        if s.figure == "drop":
            return _Population(float(t.mean() - u.mean()), _pool_sampler((t, u)), float(np.mean(t != u)))
        recovery = float((q.mean() - u.mean()) / (t.mean() - u.mean()))
        return _Population(recovery, _pool_sampler((q, u, t)), float(np.mean(q != u)))
    if s.kind == "retain":
        loss, gain = s.param("loss"), s.param("gain")
        probs = np.asarray([(1 - _P_KNOWN) * (1 - gain), (1 - _P_KNOWN) * gain, _P_KNOWN * loss, _P_KNOWN * (1 - loss)])
        cells = np.asarray([(0, 0), (0, 1), (1, 0), (1, 1)], dtype=np.float64) * 100.0  # (t, q)

        def draw(rng: Any, n: int) -> list[Any]:
            items = np.repeat(cells, rng.multinomial(n, probs), axis=0)
            rng.shuffle(items)
            return [items[:, 1], items[:, 0]]

        return _Population(float((probs @ cells[:, 1]) / (probs @ cells[:, 0])), draw, float(probs[1] + probs[2]))
    if s.kind == "privleak":
        size = 20_000
        zf, zh = rng.normal(0, 1, size), rng.normal(0, 1, size)
        noise = s.param("noise")
        uf, uh = zf - s.param("memorized") + rng.normal(0, noise, size), zh + rng.normal(0, noise, size)
        rf, rh = zf - s.param("reference") + rng.normal(0, noise, size), zh + rng.normal(0, noise, size)
        auc_u, auc_r = _auc(-uf, -uh), _auc(-rf, -rh)  # MUSE's orientation: score -Min-40%, forget labelled 0

        def draw_texts(rng: Any, n: int) -> list[Any]:
            i, j = rng.integers(0, size, n), rng.integers(0, size, n)
            return [uf[i], uh[j], rf[i], rh[j]]

        return _Population((auc_u - auc_r) / auc_r * 100.0, draw_texts)
    raise ValueError(f"unknown population kind {s.kind!r}")


# --------------------------------------------------------------------------- scenarios


def scenarios(
    ns: Sequence[int] = (24, 48, 100, 400), *, figures: Sequence[str] = tuple(FIGURES), full: bool = True
) -> list[Scenario]:
    """The scenarios at each n. Recovery: a large (36-point) and a small (9-point) binary drop, with
    nothing changed under quantization, about 1 or 3 forgotten items recovered per gate ("few"),
    about 1 or 3 items flipped either way ("flip"), 10%, 50%, 76% and full recovery; continuous
    scores with nothing, about 1 or 3, or half of the items changed (changes of 15 or 3 points
    around a 10% recovery). The drop: binary drops of 2, 9 and 36 points, and the continuous one.
    Utility: nothing lost, about 1 or 3 known items lost, 10% and 50% lost, about 3 flipped either
    way. privleak (n <= 100 texts a side): none, slight and strong memorization. ``full=False``: a
    subset with every regime (no change, few, many; small and large drops; each figure), for CI."""
    out: list[Scenario] = []

    def keep(case: str, subset: tuple[str, ...]) -> bool:
        return full or case in subset

    for n in ns:
        if "recovery" in figures:
            for drop, forget, gain, subset in (
                ("drop36", 0.6, 0.02, ("zero", "few1", "flip3", "r50", "r100")),
                ("drop9", 0.15, 0.0, ("zero", "few3", "r50")),
            ):
                forgotten = n * _P_KNOWN * forget  # expected forgotten items per gate
                cases = [
                    ("zero", 0.0, 0.0),
                    ("few1", min(1.0, 1 / forgotten), 0.0),
                    ("few3", min(1.0, 3 / forgotten), 0.0),
                    ("flip1", 0.0, 1 / n),
                    ("flip3", 0.0, 3 / n),
                    ("r10", 0.1, 0.01),
                    ("r50", 0.5, 0.02),
                    ("r76", 0.76, 0.0),
                    ("r100", 1.0, 0.0),
                ]
                for case, back, flip in cases:
                    if keep(case, subset):
                        out.append(
                            Scenario(
                                f"km {drop} {case}",
                                "recovery",
                                "binary",
                                n,
                                (("forget", forget), ("gain", gain), ("back", back), ("flip", flip)),
                            )
                        )
            vm = [
                ("zero", 0.0, 3.0),
                ("few1", 1 / n, 15.0),
                ("few3", 3 / n, 15.0),
                ("half", 0.5, 15.0),
                ("few3 sd3", 3 / n, 3.0),
                ("half sd3", 0.5, 3.0),
            ]
            for case, change, sd in vm:
                if keep(case, ("few1", "half")):
                    params = (("change", change), ("back", 0.1), ("sd", sd))
                    out.append(Scenario(f"vm {case}", "recovery", "continuous", n, params))
        if "drop" in figures:
            for drop, forget in (("km drop2", 0.035), ("km drop9", 0.15), ("km drop36", 0.6)):
                if keep(drop, ("km drop2", "km drop36")):
                    out.append(Scenario(drop, "drop", "binary", n, (("forget", forget),)))
            out.append(Scenario("vm drop", "drop", "continuous", n, (("change", 0.0),)))
        if "utility" in figures:
            known = n * _P_KNOWN
            cases_u = [
                ("zero", 0.0, 0.0),
                ("few1", 1 / known, 0.0),
                ("few3", 3 / known, 0.0),
                ("loss10", 0.1, 0.0),
                ("loss50", 0.5, 0.0),
                ("flip3", 3 / n, 3 / n),
            ]
            for case, loss, gain in cases_u:
                if keep(case, ("few1", "loss50")):
                    out.append(Scenario(f"kr {case}", "utility", "retain", n, (("loss", loss), ("gain", gain))))
        if "privleak" in figures and n <= 100:
            levels = (("none", 0.0, 0.0, 0.3), ("slight", 0.3, 0.0, 0.2), ("strong", 1.0, 0.1, 0.3))
            for case, memorized, reference, noise in levels:
                if keep(case, ("slight",)):
                    out.append(
                        Scenario(
                            f"pl {case}",
                            "privleak",
                            "privleak",
                            n,
                            (("memorized", memorized), ("reference", reference), ("noise", noise)),
                        )
                    )
    return out


# --------------------------------------------------------------------------- simulation


def _interval(s: Scenario, cols: list[Any], prior: float) -> Interval | None:
    key = s.figure
    if s.figure == "recovery":
        q, u, t = cols
        return paired_recovery_ci(q, u, t, key=key, prior=prior) if t.mean() > u.mean() else None
    if s.figure == "drop":
        return paired_difference_ci(cols[0], cols[1], key=key, prior=prior)
    if s.figure == "utility":
        return paired_ratio_ci(cols[0], cols[1], key=key, prior=prior) if cols[1].mean() > 0 else None
    forget, holdout, ref_forget, ref_holdout = cols
    return paired_privleak_ci(forget, holdout, reference_forget=ref_forget, reference_holdout=ref_holdout)


def _accepts(figure: str, budget: float) -> tuple[float, float]:
    """The values a budget accepts, as the verdicts judge them."""
    if figure == "recovery":
        return (-math.inf, budget)
    if figure == "privleak":
        return (-budget, budget)
    return (budget, math.inf)


def simulate(
    s: Scenario,
    judge: Callable[[float, tuple[float, float] | None, tuple[float, float]], Any],
    *,
    gates: int = 200,
    prior: float = PRIOR,
    seed: int = 0,
) -> Outcome:
    """Run ``gates`` simulated gates of ``s`` (seeded by ``seed`` and the scenario) and count.
    Gates whose figure is undefined (no drop; a target that knows nothing) are left out, as the
    verdicts leave them unjudged. ``judge``: the verdicts' rule, ``judge(estimate, (lo, hi), accept)``
    returning an object with ``strict``, ``lenient`` and ``decided``."""
    import numpy as np

    pop = _population(s)
    rng = np.random.default_rng([seed, s.n, zlib.crc32(s.name.encode())])
    cap = 10.0 if s.figure in ("recovery", "utility") else 1000.0
    budgets = FIGURES[s.figure]
    covered = zero = judged = 0
    widths: list[float] = []
    wrong = dict.fromkeys(budgets, 0)
    for _ in range(gates):
        cols = pop.draw(rng, s.n)
        ci = _interval(s, cols, prior)
        if ci is None:
            continue
        judged += 1
        covered += ci.lo <= pop.truth <= ci.hi
        zero += ci.lo == ci.hi
        widths.append(min(ci.hi, cap) - max(ci.lo, -cap))
        for budget in budgets:
            accept = _accepts(s.figure, budget)
            inside = accept[0] <= pop.truth <= accept[1]
            j = judge(ci.lo, (ci.lo, ci.hi), accept)  # the estimate matters to the point policy only: not counted here
            if j.decided and (j.strict != inside):
                wrong[budget] += 1
    share = 1.0 / max(judged, 1)
    return Outcome(
        s,
        pop.truth,
        judged,
        covered * share,
        zero * share,
        float(np.median(widths)) if widths else 0.0,
        {b: w * share for b, w in wrong.items()},
    )
