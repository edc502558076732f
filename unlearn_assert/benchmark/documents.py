"""A provider's own documents as a benchmark: MUSE's metrics on sets derived from forget / holdout documents.

A takedown request comes with the documents to remove and some text never trained on, and nothing else.
:mod:`unlearn_assert.data.documents` derives MUSE's verbmem items from the forget documents the way MUSE
cut its own (seeded, lengths as settings) and privleak's forget / holdout texts from the two sets; knowmem
exists only when QA pairs are given. The metrics and their roles are MUSE's (:mod:`.muse`), limited to
what the data supports; what was derived goes into the report, so a rerun derives the same items.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .base import Context, MetricSpec
from .muse import MUSE_METRICS, Privleak, muse_contexts, truncation_setting

if TYPE_CHECKING:  # pragma: no cover
    from ..data.documents import DerivationSettings
    from ..data.muse import MuseData
    from ..metrics import Evaluation
    from ..metrics.stats import Interval

__all__ = ["DocumentsBenchmark"]


class DocumentsBenchmark:
    """MUSE's metrics on a documents dir (see the module docstring). ``metrics`` are those the directory
    supports: verbmem_f and privleak always, knowmem_f / knowmem_r (the utility item) with QA pairs."""

    name = "documents"

    def __init__(
        self,
        settings: DerivationSettings | None = None,
        available: Sequence[str] | None = None,
        retrain_auc: float | None = None,
        has_retrain: bool = False,
        retrain_auc_source: str | None = None,
        overlong: str = "error",
    ) -> None:
        from ..data.documents import DerivationSettings

        self.derivation = settings or DerivationSettings()
        names = set(available) if available is not None else {m.name for m in MUSE_METRICS}
        self.metrics: tuple[MetricSpec, ...] = tuple(m for m in MUSE_METRICS if m.name in names)
        self._privleak = Privleak(retrain_auc, has_retrain, retrain_auc_source)
        self._derived: dict[str, dict[str, Any]] = {}
        self.overlong = overlong

    @classmethod
    def from_run(cls, run: Any) -> DocumentsBenchmark:
        """The run's derivation settings (``--unlearn-documents``) and the metrics its directory supports (from
        file names alone, so that the items are known at collection)."""
        from ..data.documents import DerivationSettings, metrics_of

        settings = DerivationSettings(**dict(run.documents))
        available = metrics_of(run.data) if run.data is not None else None
        return cls(settings, available, run.retrain_auc, run.retrain is not None, run.retrain_auc_source, run.overlong)

    @property
    def settings(self) -> Mapping[str, Any]:
        from ..metrics import METRIC_SETTINGS

        settings = {**METRIC_SETTINGS, "benchmark": "documents", "derivation": self.derivation.as_dict()}
        return truncation_setting(settings, self.overlong)

    @classmethod
    def detect(cls, path: str) -> bool:
        from ..data.documents import detect_documents

        return not path.startswith("hf:") and detect_documents(path)

    def load(self, path: str | os.PathLike[str]) -> MuseData:
        """The derived sets as MUSE data (its metric code runs on them unchanged); the derivation is kept for
        the report."""
        from ..data.documents import load_documents

        docs = load_documents(path, self.derivation)
        self._derived[os.fspath(path)] = docs.derivation
        return docs.muse

    def record(self, data: Any) -> dict[str, Any]:
        """What was derived, item by item, and the settings: a rerun derives the same items (the controller of an
        xdist run, which loaded nothing, derives them again: the derivation is deterministic and reads text only)."""
        if data is None:
            return {}
        if data.path not in self._derived:
            self.load(data.path)
        return {"derivation": self._derived[data.path]}

    def relearn_split(self, data: Any) -> tuple[Any, tuple[str, ...]]:
        """As MUSE's: the derived items are linked to the forget documents they were cut from."""
        from ..data.links import forget_split

        return forget_split(data)

    def restricted(self, data: Any, split: Any) -> Any:
        from ..data.links import restricted

        return restricted(data, split)

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

        chosen = [m.name for m in self.metrics if metrics is None or m.name in metrics]
        return evaluate(
            model, data, metrics=chosen, batch_size=batch_size, progress=progress, truncate=self.overlong == "truncate"
        )

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        return muse_contexts(data, tokenizer, [m.name for m in self.metrics])

    def privacy(self, metric: str) -> Privleak:
        if metric != "privleak":
            raise KeyError(metric)
        return self._privleak

    def interval(
        self, spec: MetricSpec, rows: Sequence[Any], estimate: float | None, boot: Any, paired: Callable[..., Any]
    ) -> Interval | None:
        return None  # MUSE's metrics are item means
