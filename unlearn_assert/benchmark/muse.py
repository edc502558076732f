"""MUSE as a benchmark: its data layout, its four metrics and how each is judged (the numbers are MUSE's own).

The metric code is :mod:`unlearn_assert.metrics` (MUSE's definitions, exactly) and the data code
:mod:`unlearn_assert.data.muse` (its files and Hugging Face forms); this module only says which role
each metric plays, and how privleak is referenced and judged:

* ``verbmem_f``, ``knowmem_f``: forget metrics (recovery);
* ``knowmem_r``: the utility metric, judged by the ``utility`` item (the name the gate always gave it);
* ``privleak = (AUC - AUC_R) / AUC_R * 100``: privacy, against the retrain model's AUC (``--unlearn-retrain``),
  else ``--unlearn-retrain-auc``, else 0.5; judged ``|privleak| <= budget``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import REFERENCE_AUC_RANGE, reference_auc_ok
from ..metrics import DEFAULT_REFERENCE_AUC
from ..names import FP
from ..render.schema import MUSE_METRICS as SCHEMA_MUSE_METRICS
from .base import Context, MetricSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..data.muse import MuseData
    from ..metrics import Evaluation
    from ..metrics.stats import Interval

__all__ = [
    "DEFAULT_REFERENCE_AUC",
    "MUSE_METRICS",
    "MuseBenchmark",
    "Privleak",
    "muse_contexts",
    "reference_problem",
    "truncation_setting",
]

#: MUSE's metrics, in report order (the report schema's definition of what a report without a benchmark holds).
MUSE_METRICS: tuple[MetricSpec, ...] = tuple(MetricSpec(**spec) for spec in SCHEMA_MUSE_METRICS)


def truncation_setting(settings: Mapping[str, Any], overlong: str) -> Mapping[str, Any]:
    """A benchmark's settings with ``--unlearn-overlong=truncate`` added (a truncated item changes the numbers, so it
    is part of every row's cache key); unchanged otherwise, so the cache of a run without it still hits."""
    return {**settings, "overlong": "truncate"} if overlong == "truncate" else settings


def reference_problem(reference: float | None, source: str) -> str | None:
    """Why privleak cannot be computed against this reference AUC, or None when it can."""
    if reference is not None and reference_auc_ok(reference):
        return None
    if source == "retrain":
        return (
            f"the retrain model's forget-vs-holdout AUC is {reference:.2f}: it tells every forget text from every "
            "holdout text, as a model trained on the forget set does, so privleak ((AUC - AUC_R) / AUC_R) is "
            "undefined; check that --unlearn-retrain names a model trained without the forget data"
        )
    return (
        f"the reference AUC is {reference:g}, outside {REFERENCE_AUC_RANGE}, so privleak ((AUC - AUC_R) / AUC_R) is "
        "undefined; "
        f"pass --unlearn-retrain-auc in {REFERENCE_AUC_RANGE}"
    )


@lru_cache(maxsize=1024)
def _privleak_ci(
    forget: tuple[float, ...],
    holdout: tuple[float, ...],
    reference: float | None,
    ref_forget: tuple[float, ...] | None,
    ref_holdout: tuple[float, ...] | None,
    estimate: float | None,
    seed: int,
    replicates: int,
    confidence: float,
) -> Interval | None:
    """privleak's paired interval, once per set of scores (a pure function of them)."""
    from ..metrics.stats import paired_privleak_ci

    return paired_privleak_ci(
        forget,
        holdout,
        reference=reference,
        reference_forget=ref_forget,
        reference_holdout=ref_holdout,
        key="privleak",
        estimate=estimate,
        seed=seed,
        n_resamples=replicates,
        confidence=confidence,
    )


def muse_contexts(data: MuseData, tokenizer: Any, metrics: Sequence[str] | None = None) -> list[Context]:
    """The sequences MUSE's metrics feed a model (:meth:`~.base.Benchmark.contexts`), tokenized as they tokenize
    them, in one batched call: verbmem's prompts with 128 new tokens, knowmem's ICL prompts with 32, privleak's
    texts scored whole. ``metrics``: the metrics computed (all four by default)."""
    from ..metrics.knowmem import KNOWMEM_MAX_NEW_TOKENS, icl_prefix, knowmem_prompt
    from ..metrics.verbmem import VERBMEM_MAX_NEW_TOKENS

    chosen = set(metrics) if metrics is not None else {m.name for m in MUSE_METRICS}
    groups: list[tuple[str, list[str], int, Any]] = []
    if "verbmem_f" in chosen:
        groups.append(("verbmem_forget", [item.prompt for item in data.verbmem_forget], VERBMEM_MAX_NEW_TOKENS, "end"))
    for metric, split in (("knowmem_f", "forget"), ("knowmem_r", "retain")):
        if metric in chosen:
            prefix = icl_prefix(getattr(data, f"knowmem_{split}_icl"))
            prompts = [knowmem_prompt(prefix, qa.question) for qa in getattr(data, f"knowmem_{split}_qa")]
            groups.append((f"knowmem_{split}_qa", prompts, KNOWMEM_MAX_NEW_TOKENS, "end"))
    if "privleak" in chosen:
        groups += [
            ("privleak_forget", list(data.privleak_forget), 0, "start"),
            ("privleak_holdout", list(data.privleak_holdout), 0, "start"),
        ]
    texts = [text for _, group, _, _ in groups for text in group]
    lengths = iter([len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else [])
    return [
        Context(split, i, next(lengths), new, keep) for split, group, new, keep in groups for i in range(len(group))
    ]


#: memoized intervals (:func:`unlearn_assert.benchmark.clear_memos` forgets them)
MEMOS = (_privleak_ci,)


class MuseBenchmark:
    """MUSE (see the module docstring). ``retrain_auc``: the ``--unlearn-retrain-auc`` value, if any."""

    name = "muse"
    metrics = MUSE_METRICS

    def __init__(
        self,
        retrain_auc: float | None = None,
        has_retrain: bool = False,
        retrain_auc_source: str | None = None,
        overlong: str = "error",
    ) -> None:
        self.retrain_auc = retrain_auc
        self.has_retrain = has_retrain
        self.retrain_auc_source = retrain_auc_source
        #: ``--unlearn-overlong``: "truncate" cuts an item beyond the context window (the metrics record it)
        self.overlong = overlong

    @classmethod
    def from_run(cls, run: Any) -> MuseBenchmark:
        """MUSE with the run's ``--unlearn-retrain-auc`` (and whose number it is), whether it has a retrain model, and
        ``--unlearn-overlong``."""
        return cls(
            retrain_auc=run.retrain_auc,
            has_retrain=run.retrain is not None,
            retrain_auc_source=run.retrain_auc_source,
            overlong=run.overlong,
        )

    @property
    def settings(self) -> Mapping[str, Any]:
        from ..metrics import METRIC_SETTINGS

        return truncation_setting(METRIC_SETTINGS, self.overlong)

    @classmethod
    def detect(cls, path: str) -> bool:
        """MUSE's files (``verbmem/forget.json``...), its Hugging Face forms, or an ``hf:`` spec."""
        from ..data.hf import detect_form
        from ..data.muse import REQUIRED_FILES

        if path.startswith("hf:"):
            return True
        directory = Path(path).expanduser()
        if not directory.is_dir():
            return False
        return any((directory / rel).exists() for rel in REQUIRED_FILES) or detect_form(directory) is not None

    def load(self, path: str | os.PathLike[str]) -> MuseData:
        from ..data.muse import load_data

        return load_data(path)

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Evaluation:
        from ..metrics import evaluate

        return evaluate(
            model, data, metrics=metrics, batch_size=batch_size, progress=progress, truncate=self.overlong == "truncate"
        )

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        return muse_contexts(data, tokenizer)

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        return None  # every MUSE metric is an item mean: the engine's paired bootstrap covers them

    def record(self, data: Any) -> dict[str, Any]:
        return {}

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        """Hold in the first half of the forget documents; evaluate the items found only in the others."""
        from ..data.links import forget_split

        return forget_split(data)

    def restricted(self, data: Any, split: Any) -> Any:
        from ..data.links import restricted

        return restricted(data, split)

    def privacy(self, metric: str) -> Privleak:
        if metric != "privleak":
            raise KeyError(metric)
        return Privleak(self.retrain_auc, self.has_retrain, self.retrain_auc_source)


class Privleak:
    """MUSE's privleak as a privacy metric (:class:`~.base.Privacy`)."""

    budget_key = "privleak"
    default_budget = 25.0
    #: the reference a row's own privleak interval is against (metrics.evaluate knows no other)
    own_reference: float | None = DEFAULT_REFERENCE_AUC

    def __init__(self, option_auc: float | None, has_retrain: bool = False, option_source: str | None = None) -> None:
        self.option_auc = option_auc
        self.option_source = option_source
        #: privleak is judged only against a reference: the retrain model or --unlearn-retrain-auc
        self.available = has_retrain or option_auc is not None

    def reference(self, rows: Mapping[Any, Any]) -> tuple[float | None, str]:
        """AUC_R and where it came from: the retrain model's AUC, else --unlearn-retrain-auc, else 0.5."""
        retrain = rows.get(("retrain", FP))
        if retrain is not None and retrain.auc is not None:
            return float(retrain.auc), "retrain"
        if self.option_auc is not None:
            return float(self.option_auc), "option"
        return DEFAULT_REFERENCE_AUC, "default"

    def value(self, row: Any, reference: float | None, reference_row: Any = None) -> float | None:
        from ..metrics.privleak import privleak

        return None if reference is None else privleak(row.auc, reference)

    def interval(
        self,
        row: Any,
        reference_row: Any,
        reference: float | None,
        estimate: float | None,
        boot: Any,
        paired: Callable[..., Any],
    ) -> Interval | None:
        """The paired interval of a U row's privleak: AUC_R recomputed on the resampled texts from the retrain
        row's scores when the reference is that row, else the fixed reference."""
        rows = [row] if reference_row is None else [row, reference_row]
        forget, holdout = paired("privleak", rows, "forget"), paired("privleak", rows, "holdout")
        if forget is None or holdout is None:
            return None
        return _privleak_ci(
            forget[0],
            holdout[0],
            None if reference_row is not None else reference,
            forget[1] if reference_row is not None else None,
            holdout[1] if reference_row is not None else None,
            estimate,
            boot.seed,
            boot.replicates,
            boot.confidence,
        )

    def problem(self, reference: float | None, source: str) -> str | None:
        return reference_problem(reference, source)

    def reference_record(self, reference: float | None, source: str) -> dict[str, Any]:
        """The report's ``privleak_reference``: the AUC, where it came from, and for a named
        ``--unlearn-retrain-auc`` (muse-news) whose number it is."""
        record: dict[str, Any] = {"auc": reference, "source": source}
        if source == "option" and self.option_source:
            record["published"] = self.option_source
        return record

    def accept(self, bound: float) -> tuple[float, float]:
        return (-bound, bound)

    def describe(self, value: float) -> str:
        return f"{value:+.1f}%"

    def budget_text(self, bound: float) -> str:
        return f"|privleak| <= {bound:g}%"

    def interval_text(self, ci: Interval) -> str:
        return f" [{ci.lo:+.1f}%, " + ("inf" if math.isinf(ci.hi) else f"{ci.hi:+.1f}%") + "]"
