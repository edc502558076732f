"""The row: one model (U, T or R) under one variant, evaluated on the data; its cache key; computing it.

A row is the unit of work and of caching. Its key is the sha256 of everything that determines its
numbers (:func:`row_key`): the model's content fingerprint, the variant's own parts (the source's
:meth:`~.sources.Source.key_parts`: canonical quantizer id, calibration text, the target for U's
code agreement, or an artifact's content), the data's fingerprint, the metric settings, and the
device, dtype and batch size; :func:`unlearn_assert.cache.cache_key` adds the package version. Paths
are never part of it, so a copied checkpoint hits the cache and a changed byte misses it.

Rows travel as plain data (:meth:`Row.to_dict`): into the result cache, and from xdist workers to
the controller on test reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..cache import cache_key
from ..errors import BackendUnavailable
from ..names import FP, METRICS, Role

if TYPE_CHECKING:  # pragma: no cover
    from .inputs import Inputs
    from .sources import Source

__all__ = ["Row", "RowKey", "compute_row", "row_key"]

#: A row's identity: (role, variant).
RowKey = tuple[Role, str]


@dataclass
class Row:
    """The numbers of one (model, variant) cell, as computed (privleak against the reference and
    recovery are derived from rows later, once: :mod:`.derive`).

    ``values``: metric -> value (ROUGE x100; the row's own ``privleak`` is against AUC 0.5 and is
    never reported: the report's comes from ``auc``); ``ci``: metric -> [lo, hi] bootstrap
    interval; ``auc``: the Min-40% forget-vs-holdout AUC; ``quant``: the source's report (None for
    ``fp``); ``status`` "skipped" when a backend library is missing (``skip_reason``, ``install``).
    """

    model: Role
    quantizer: str
    status: str = "ok"
    skip_reason: str | None = None
    install: str | None = None
    cached: bool = False
    values: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, list[float]] = field(default_factory=dict)
    auc: float | None = None
    attack_aucs: dict[str, float] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    quant: dict[str, Any] | None = None
    code_agreement: float | None = None
    changed_fraction: float | None = None
    small_delta_fraction: float | None = None
    seconds: float = 0.0
    fingerprint: str | None = None
    #: the dtype the model was evaluated in (``--unlearn-dtype auto`` decides it per machine: hardware.py)
    dtype: str | None = None

    @property
    def key(self) -> RowKey:
        return (self.model, self.quantizer)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the cache entry and the xdist payload)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """Rebuild a row from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def skipped(cls, role: Role, variant: str, exc: BackendUnavailable, seconds: float) -> Row:
        return cls(model=role, quantizer=variant, status="skipped", skip_reason=str(exc), install=exc.install,
                   values=dict.fromkeys(METRICS), seconds=seconds)

    @classmethod
    def from_evaluation(cls, role: Role, variant: str, evaluation: dict[str, Any], quant: dict[str, Any] | None, seconds: float,
                        dtype: str | None = None) -> Row:
        """A row from :meth:`unlearn_assert.metrics.Evaluation.to_dict` output and the source's report."""
        extras = evaluation.get("extras", {})
        quant = quant or None
        return cls(
            model=role, quantizer=variant,
            values={m: evaluation["values"].get(m) for m in METRICS},
            ci=evaluation.get("ci", {}), auc=extras.get("auc"), attack_aucs=extras.get("attack_aucs"), extras=extras,
            samples=evaluation.get("samples", {}), quant=quant,
            code_agreement=quant.get("code_agreement") if quant else None,
            changed_fraction=quant.get("changed_fraction") if quant else None,
            small_delta_fraction=quant.get("small_delta_fraction") if quant else None,
            seconds=seconds, dtype=dtype,
        )


def row_key(role: Role, source: Source | None, inputs: Inputs) -> str:
    """The cache key of the row (role, variant); ``source`` None is the full-precision row."""
    from ..metrics import METRIC_SETTINGS

    run = inputs.run
    parts: dict[str, Any] = {
        "kind": "row",
        "model": inputs.fingerprint(role),
        "quantizer": FP if source is None else source.variant,
        "data": inputs.data.fingerprint,
        "metrics": METRIC_SETTINGS,
        "device": run.device,
        "dtype": run.dtype,
        "compute_dtype": inputs.compute_dtype(role),
        "batch_size": run.batch_size,
    }
    if source is not None:
        parts.update(source.key_parts(role, inputs))
    return cache_key(parts)


def compute_row(role: Role, source: Source | None, inputs: Inputs, handoff: Any = None) -> tuple[Row, Any]:
    """Evaluate ``role`` under ``source`` (None: full precision); return the row and what the
    variant hands on (see :class:`~.sources.Applied`). A missing backend library gives a skipped row."""
    from ..metrics import evaluate

    say = inputs.progress
    start = time.perf_counter()
    variant = FP if source is None else source.variant
    loaded = inputs.model(role)
    passed_on: Any = None
    dtype = loaded.dtype
    if source is None:
        say(f"evaluate {role} fp")
        evaluation = evaluate(loaded, inputs.data, batch_size=inputs.run.batch_size,
                              progress=_within(say, role, variant)).to_dict()
        quant = None
    else:
        say(f"quantize {role} {variant}")
        try:
            with source.apply(role, inputs, handoff) as applied:
                say(f"evaluate {role} {variant}")
                data = inputs.data if applied.data is None else applied.data
                evaluation = evaluate(applied.view, data, batch_size=inputs.run.batch_size,
                                      progress=_within(say, role, variant)).to_dict()
                _renumber(evaluation, applied.sample_ids)
                quant, passed_on, dtype = applied.quant, applied.handoff, applied.view.dtype
        except BackendUnavailable as exc:
            return Row.skipped(role, variant, exc, time.perf_counter() - start), None
    if role == "retrain":
        inputs.release("retrain")
    row = Row.from_evaluation(role, variant, evaluation, quant, time.perf_counter() - start, dtype)
    say(f"{role} {variant}: " + ", ".join(f"{m} {v:.1f}" for m, v in row.values.items() if v is not None) + f" ({row.seconds:.1f} s)")
    return row, passed_on


def _within(say: Callable[[str], None], role: Role, variant: str) -> Callable[[str], None]:
    """The progress lines of a row's metrics, named after the row: ``unlearned fp verbmem_f: 37/100 ...``."""
    return lambda line: say(f"{role} {variant} {line}")


def _renumber(evaluation: dict[str, Any], sample_ids: dict[str, list[int]] | None) -> None:
    """Samples of a restricted evaluation carry the run data's item indices, so they line up with the fp rows'."""
    for metric, ids in (sample_ids or {}).items():
        for sample in evaluation.get("samples", {}).get(metric, []):
            sample["id"] = ids[sample["id"]]


def cached_row(data: dict[str, Any], role: Role, variant: str) -> Row:
    """A row read from the cache. Keys are content-addressed, so the same weights under another role
    (retrain = target, an "unlearned" model that is the target) share an entry: the role is the one
    asked for, not the cached one."""
    row = Row.from_dict(data)
    row.model, row.quantizer, row.cached = role, variant, True
    return row
