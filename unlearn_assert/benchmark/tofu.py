"""TOFU as a benchmark: open-unlearning's metrics (:mod:`unlearn_assert.metrics.tofu`) and how each is judged.

* ``forget_prob``, ``forget_rouge``, ``forget_truth_ratio``: forget metrics, judged by recovery. The truth
  ratio grows as the model forgets (near 1: it cannot tell the right answer from the perturbed ones), so
  its drop is ``m(U) - m(T)``; the recovery is the same formula.
* ``model_utility``: the utility metric, the harmonic mean of the nine retain / real-author / world-fact
  values; judged by its ratio to the target's, with a paired interval that resamples each split's items
  and recomputes the harmonic mean.
* ``forget_quality``: privacy, the KS-test p-value of the model's forget truth ratios against the retain
  model's (``--unlearn-retrain``); judged ``forget_quality >= budget`` (default 0.05, docs/metrics.md says
  why); without a retain model it is not an item.
* the nine components: reported.

Values are open-unlearning's times 100 (as MUSE's ROUGE is shown x100 here), so the "unlearning worked"
floor is in the same points for every benchmark; forget_quality, a p-value, is not scaled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..names import FP
from .base import Context, MetricSpec
from .registry import TOFU_FORGET_SPLITS

if TYPE_CHECKING:  # pragma: no cover
    from ..data.tofu import TofuData
    from ..metrics import Evaluation
    from ..metrics.stats import Interval

__all__ = ["FORGET_SPLITS", "TOFU_SPECS", "ForgetQuality", "TofuBenchmark"]

FORGET_SPLITS = TOFU_FORGET_SPLITS
#: the p-value forget_quality must reach by default (docs/metrics.md, "TOFU: the forget_quality budget")
FORGET_QUALITY_BUDGET = 0.05
#: values shown x100 (every metric but forget_quality, a p-value)
SCALE = 100.0
_UTILITY_ITEMS = "retain, real-author and world-fact questions"


def _specs() -> tuple[MetricSpec, ...]:
    from ..metrics.tofu import MODEL_UTILITY_COMPONENTS

    judged = (
        MetricSpec("forget_prob", "forget", items="forget questions", unit="probability x100", short="pr"),
        MetricSpec("forget_rouge", "forget", items="forget questions", unit="ROUGE-L recall x100", short="rg"),
        MetricSpec(
            "forget_truth_ratio",
            "forget",
            items="forget questions",
            unit="truth ratio x100",
            short="tr",
            higher_remembers=False,
        ),
        MetricSpec(
            "model_utility", "utility", items=_UTILITY_ITEMS, unit="harmonic mean x100", short="mu", aggregate="hmean"
        ),
        MetricSpec("forget_quality", "privacy", items="forget questions", unit="KS p-value", short="fq"),
    )
    components = tuple(
        MetricSpec(name, "reported", items=f"{split.replace('_', ' ')} questions", unit="x100")
        for name, split in MODEL_UTILITY_COMPONENTS.items()
    )
    return judged + components


TOFU_SPECS: tuple[MetricSpec, ...] = _specs()


class TofuBenchmark:
    """TOFU (see the module docstring). ``forget_split``: forget01, forget05 or forget10 (default)."""

    name = "tofu"
    metrics = TOFU_SPECS

    def __init__(self, forget_split: str = "forget10", has_retrain: bool = False, overlong: str = "error") -> None:
        self.forget_split = forget_split
        self.has_retrain = has_retrain
        #: ``--unlearn-overlong``: "truncate" keeps the end of a sequence beyond the context window
        self.overlong = overlong

    @classmethod
    def from_run(cls, run: Any) -> TofuBenchmark:
        return cls(
            forget_split=run.forget_split or "forget10", has_retrain=run.retrain is not None, overlong=run.overlong
        )

    @property
    def settings(self) -> Mapping[str, Any]:
        from ..metrics.tofu import MAX_LENGTH, MAX_NEW_TOKENS

        return {
            "benchmark": "tofu",
            "forget_split": self.forget_split,
            "template": "auto",
            "question_key": "question",
            "max_length": MAX_LENGTH,
            "max_new_tokens": MAX_NEW_TOKENS,
            "rouge": "rougeL-recall-stem",
            "truth_ratio": "forget: mean(min(TR,1/TR)); others: mean(max(0,1-TR))",
            "scale": SCALE,
            "reference": "open-unlearning@d3d7cf9",
            **({"overlong": "truncate"} if self.overlong == "truncate" else {}),
        }

    @classmethod
    def detect(cls, path: str) -> bool:
        from ..data.tofu import detect_tofu

        return not path.startswith("hf:") and detect_tofu(path) is not None or path.startswith("hf:locuslab/TOFU")

    def load(self, path: str | os.PathLike[str]) -> TofuData:
        from ..data.tofu import load_tofu

        return load_tofu(path, forget_split=self.forget_split)

    def record(self, data: Any) -> dict[str, Any]:
        """What the report records of the data beyond its counts: the forget split."""
        return {"forget_split": self.forget_split}

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Evaluation:
        from ..metrics import Evaluation
        from ..metrics.tofu import evaluate_tofu

        ev = evaluate_tofu(model, data, metrics=metrics, batch_size=batch_size, truncate=self.overlong == "truncate")
        scaled = {m.name for m in TOFU_SPECS if m.name != "forget_quality"}

        def scale(name: str, x: Any) -> Any:
            return x * SCALE if name in scaled and isinstance(x, (int, float)) else x

        values = {m: scale(m, v) for m, v in ev.values.items()}
        ci = {m: (scale(m, lo), scale(m, hi)) for m, (lo, hi) in ev.ci.items()}
        samples = {m: [{**r, "score": scale(m, r.get("score"))} for r in records] for m, records in ev.samples.items()}
        return Evaluation(values=values, ci=ci, samples=samples, extras={**ev.extras, "scale": SCALE})

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        """By author: hold in the first half of the forget authors' questions and answers, evaluate the
        questions of the others (TOFU's questions come in consecutive blocks per author)."""
        from ..data.links import RelearnSplit
        from ..errors import DataError

        documents = data.forget_documents()
        n = len(documents)
        if n < 2:
            raise DataError(
                f"TOFU data '{data.path}' has {n} forget author(s) in {data.forget_split}; relearn-forget needs at "
                "least 2, to train on the first half and measure the other; use relearn-retain-<steps> instead"
            )
        authors = data.authors("forget")
        held_in = n // 2
        evaluated = tuple(i for i, a in enumerate(authors) if a >= held_in)
        metrics = ("forget_prob", "forget_rouge", "forget_truth_ratio", "forget_quality")
        excluded = tuple(i for i, a in enumerate(authors) if a < held_in)
        split = RelearnSplit(
            n,
            f"the forget authors of {data.forget_split} ({data.questions_per_author} questions each)",
            tuple(range(held_in)),
            dict.fromkeys(metrics, evaluated),
            dict.fromkeys(metrics, excluded),
            dict.fromkeys(metrics, ()),
        )
        return split, documents

    def restricted(self, data: Any, split: Any) -> Any:
        from dataclasses import replace

        from ..plain import digest

        keep = split.evaluated["forget_prob"]
        return replace(
            data,
            forget=tuple(data.forget[i] for i in keep),
            fingerprint=digest({"data": data.fingerprint, "relearn_split": split.fingerprint}),
        )

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        """Per item its longest question + answer sequence (scored; truncate keeps its end, the answer) and its
        generation prompt with 200 new tokens."""
        from ..metrics.tofu import sequence_lengths

        return [
            Context(split, item, tokens, new, "end") for split, item, tokens, new in sequence_lengths(tokenizer, data)
        ]

    def privacy(self, metric: str) -> ForgetQuality:
        if metric != "forget_quality":
            raise KeyError(metric)
        return ForgetQuality(self.has_retrain)

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        """model_utility's ratio ``mu(q(U)) / mu(T)``: each split's items resampled (the same draw for both
        rows), the nine component means and their harmonic mean recomputed per replicate."""
        from ..metrics.stats import percentile_interval, resample_counts
        from ..metrics.tofu import MODEL_UTILITY_COMPONENTS, model_utility_replicates

        if spec.name != "model_utility" or len(rows) != 2:
            return None
        scores: list[dict[str, Sequence[float]]] = [{}, {}]
        for component in MODEL_UTILITY_COMPONENTS:
            pair = paired(component, list(rows))
            if pair is None:
                return None
            scores[0][component], scores[1][component] = pair
        sizes = {split: len(scores[0][c]) for c, split in MODEL_UTILITY_COMPONENTS.items()}
        counts = {
            split: resample_counts(n, seed=boot.seed, key=f"model_utility:{split}", n_resamples=boot.replicates)
            for split, n in sizes.items()
        }
        num, den = model_utility_replicates(scores[0], counts), model_utility_replicates(scores[1], counts)
        bad = den <= 0
        import numpy as np

        reps = np.divide(num, den, out=np.full_like(num, np.inf), where=~bad)
        return _with_n(percentile_interval(reps, estimate, boot.confidence, bad), sum(sizes.values()))


def _with_n(interval: Any, n: int) -> Any:
    from dataclasses import replace

    return replace(interval, n=n)


class ForgetQuality:
    """TOFU's forget_quality as a privacy metric (:class:`~.base.Privacy`): against the retain model's row."""

    budget_key = "forget_quality"
    default_budget = FORGET_QUALITY_BUDGET
    own_reference: float | None = None

    def __init__(self, has_retrain: bool) -> None:
        #: judged only against a retain model (open-unlearning: None without one)
        self.available = has_retrain

    def reference(self, rows: Mapping[Any, Any]) -> tuple[float | None, str]:
        return (None, "retrain") if ("retrain", FP) in rows else (None, "none")

    @staticmethod
    def _truth_ratios(row: Any) -> dict[Any, float] | None:
        records = row.samples.get("forget_quality") if row is not None and row.ok else None
        if not records:
            return None
        return {r.get("id", i): float(r["score"]) for i, r in enumerate(records)}

    def value(self, row: Any, reference: float | None, reference_row: Any) -> float | None:
        """The KS p-value of the row's forget truth ratios against the retain model's on the same questions (a
        relearn-forget row holds the held-out authors' only)."""
        from ..metrics.tofu import forget_quality

        mine, theirs = self._truth_ratios(row), self._truth_ratios(reference_row)
        if mine is None or theirs is None:
            return None
        common = [i for i in mine if i in theirs]
        return forget_quality([mine[i] for i in common], [theirs[i] for i in common]) if common else None

    def interval(
        self,
        row: Any,
        reference_row: Any,
        reference: float | None,
        estimate: float | None,
        boot: Any,
        paired: Callable[..., Any],
    ) -> Interval | None:
        """The p-value per replicate, the forget items resampled with the same draw for both models (they
        answered the same questions)."""
        from ..metrics.stats import percentile_interval, resample_counts
        from ..metrics.tofu import forget_quality_replicates

        if reference_row is None:
            return None
        pair = paired("forget_quality", [row, reference_row])
        if pair is None:
            return None
        counts = resample_counts(len(pair[0]), seed=boot.seed, key="forget_quality", n_resamples=boot.replicates)
        reps = forget_quality_replicates(pair[0], pair[1], counts)
        return _with_n(percentile_interval(reps, estimate, boot.confidence), len(pair[0]))

    def problem(self, reference: float | None, source: str) -> str | None:
        if source == "retrain":
            return None
        return "forget_quality compares the model's forget truth ratios with the retain model's; pass --unlearn-retrain"

    def reference_record(self, reference: float | None, source: str) -> dict[str, Any]:
        return {"against": "the retain model's forget truth ratios (ks_2samp)", "source": source}

    def accept(self, bound: float) -> tuple[float, float]:
        return (bound, math.inf)

    def describe(self, value: float) -> str:
        return f"{value:.3g}"

    def budget_text(self, bound: float) -> str:
        return f"forget_quality >= {bound:g}"

    def interval_text(self, ci: Interval) -> str:
        return f" [{ci.lo:.3g}, {ci.hi:.3g}]"
