"""The state behind the ``quantized`` and ``muse`` fixtures: one variant in effect at a time, on an
:class:`~contextlib.ExitStack`, and user evaluations cached by content.

In-place sources (RTN, HQQ) change the loaded model itself, so the previous variant is undone (bit
for bit) before the next is applied, and before the engine computes a row: never more than one
extra copy of the weights, and never a row measured on a model a user test left quantized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from ..cache import ResultCache, cache_key
from ..names import METRICS, Role

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import Evaluation
    from .inputs import Inputs
    from .sources import Source

__all__ = ["Views"]


class Views:
    """The variant a user test holds (``quantized``) and its MUSE evaluations (``muse``)."""

    def __init__(self, inputs: Inputs, cache: ResultCache, source: Callable[[str], Source]) -> None:
        self.inputs = inputs
        self.cache = cache
        self._source = source
        self._stack = ExitStack()
        self._active: tuple[tuple[Role, str], Any] | None = None
        self._evaluations: dict[str, Evaluation] = {}

    def quantized(self, variant: str, model: Role = "unlearned") -> Any:
        """The ``quantized`` fixture: ``model`` under ``variant``, kept until another one is asked for."""
        key = (model, variant)
        if self._active is not None and self._active[0] == key:
            return self._active[1]
        self.close()
        self.inputs.progress(f"quantize {model} {variant}")
        applied = self._stack.enter_context(self._source(variant).apply(model, self.inputs))
        self._active = (key, applied.view)
        return applied.view

    def close(self) -> None:
        """Undo the variant in effect, if any (the loaded model is as loaded again)."""
        self._active = None
        self._stack.close()

    def evaluate(self, obj: Any, metrics: Sequence[str] | None = None) -> Evaluation:
        """The ``muse`` fixture: MUSE metrics of a loaded model or a view, cached by content."""
        from ..metrics import METRIC_SETTINGS, Evaluation, evaluate

        run = self.inputs.run
        data = self.inputs.data
        wanted = tuple(metrics) if metrics else METRICS
        key = cache_key({"kind": "evaluate", "model": obj.fingerprint, "data": data.fingerprint, "metrics": wanted,
                         "settings": METRIC_SETTINGS, "device": run.device, "dtype": run.dtype, "batch_size": run.batch_size})
        if key not in self._evaluations:
            hit = self.cache.get(key)
            if hit is not None:
                self._evaluations[key] = Evaluation.from_dict(hit)
            else:
                name = getattr(obj, 'name', obj.path)
                self.inputs.progress(f"evaluate {name}")
                ev = evaluate(obj, data, metrics=list(wanted), batch_size=run.batch_size,
                              progress=lambda line: self.inputs.progress(f"{name} {line}"))
                self.cache.put(key, ev.to_dict())
                self._evaluations[key] = ev
        return self._evaluations[key]
