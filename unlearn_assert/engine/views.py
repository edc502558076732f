"""What a user's test sees of a gate (the fixtures' one public view): the data, the loaded models, one
variant at a time, and measurements cached by content.

Why one view: the fixtures (``unlearn_data``, ``target_model``, ``quantized``, ``muse``...) need a
handful of things from the engine, and reaching into its inputs and private state would tie them to
how the engine is built. In-place sources (RTN, HQQ) change the loaded model itself, so the previous
variant is undone (bit for bit) before the next is applied, and before the engine computes a row:
never more than one extra copy of the weights, and never a row measured on a model a user test left
quantized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from ..cache import ResultCache
from ..names import Role
from .rows import measurement_key

if TYPE_CHECKING:  # pragma: no cover
    from ..metrics import Evaluation
    from ..models import LoadedModel
    from .inputs import Inputs
    from .sources import Source

__all__ = ["GateView"]


class GateView:
    """The fixtures' view of a gate: :attr:`data`, :meth:`model`, :meth:`quantized`, :meth:`measure`."""

    def __init__(self, inputs: Inputs, cache: ResultCache, source: Callable[[str], Source]) -> None:
        self._inputs = inputs
        self._cache = cache
        self._source = source
        self._stack = ExitStack()
        self._active: tuple[tuple[Role, str], Any] | None = None
        self._measured: dict[str, Evaluation] = {}

    @property
    def data(self) -> Any:
        """The evaluated data (limited by --unlearn-max-samples)."""
        return self._inputs.data

    def model(self, role: Role) -> LoadedModel:
        """A model of the run as loaded (once; the unlearned and retrain models checked against the target)."""
        return self._inputs.model(role)

    def quantized(self, variant: str, role: Role = "unlearned") -> Any:
        """The ``quantized`` fixture: ``role``'s model under ``variant``, kept until another one is asked for."""
        key = (role, variant)
        if self._active is not None and self._active[0] == key:
            return self._active[1]
        self.close()
        self._inputs.progress(f"quantize {role} {variant}")
        applied = self._stack.enter_context(self._source(variant).apply(role, self._inputs))
        self._active = (key, applied.view)
        return applied.view

    def close(self) -> None:
        """Undo the variant in effect, if any (the loaded model is as loaded again)."""
        self._active = None
        self._stack.close()

    def measure(self, obj: Any, metrics: Sequence[str] | None = None) -> Evaluation:
        """The ``muse`` fixture: the run's benchmark's metrics (MUSE's on MUSE data) of a loaded model or a view,
        cached by content (the same key rule as a row's, :func:`~.rows.measurement_key`)."""
        from ..metrics import Evaluation

        run = self._inputs.run
        benchmark = self._inputs.benchmark
        wanted = tuple(metrics) if metrics else tuple(m.name for m in benchmark.metrics)
        key = measurement_key("measure", obj.fingerprint, str(obj.dtype), self._inputs, wanted=list(wanted))
        if key not in self._measured:
            hit = self._cache.get(key)
            if hit is not None:
                self._measured[key] = Evaluation.from_dict(hit)
            else:
                name = getattr(obj, "name", obj.path)
                self._inputs.progress(f"evaluate {name}")
                ev = benchmark.measure(
                    obj,
                    self.data,
                    metrics=list(wanted),
                    batch_size=run.batch_size,
                    progress=lambda line: self._inputs.progress(f"{name} {line}"),
                )
                self._cache.put(key, ev.to_dict())
                self._measured[key] = ev
        return self._measured[key]
