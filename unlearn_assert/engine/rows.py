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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..cache import cache_key
from ..errors import BackendUnavailable
from ..names import FP, Role

if TYPE_CHECKING:  # pragma: no cover
    from .inputs import Inputs
    from .sources import Source

__all__ = ["Row", "RowKey", "compute_row", "row_key"]

#: A row's identity: (role, variant).
RowKey = tuple[Role, str]


@dataclass
class Row:
    """The numbers of one (role, variant) cell, as measured (privleak against the reference and
    recovery are derived from rows later, once: :mod:`.derive`).

    ``values``: metric -> value (ROUGE x100; the row's own ``privleak`` is against AUC 0.5 and is
    never reported: the report's comes from ``auc``); ``ci``: metric -> [lo, hi] bootstrap
    interval; ``auc``: the Min-40% forget-vs-holdout AUC; ``details``: what the variant's source
    recorded (a quantizer's :class:`~unlearn_assert.quant.base.QuantDetails`, an attack's training
    record; None for ``fp``); ``status`` "skipped" when a backend library is missing (``skip_reason``,
    ``install``).

    The plain-data form (:meth:`to_dict`, the cache entry, the xdist payload and the report's row) keeps
    schema 1's keys: ``model`` for the role, ``quantizer`` for the variant, ``quant`` for the details
    (:data:`SCHEMA_KEYS`, the one place the two vocabularies meet).
    """

    role: Role
    variant: str
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
    details: dict[str, Any] | None = None
    code_agreement: float | None = None
    changed_fraction: float | None = None
    small_delta_fraction: float | None = None
    seconds: float = 0.0
    fingerprint: str | None = None
    #: the dtype the model was evaluated in (``--unlearn-dtype auto`` decides it per machine: hardware.py)
    dtype: str | None = None

    @property
    def key(self) -> RowKey:
        return (self.role, self.variant)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data under schema 1's keys (the cache entry and the xdist payload)."""
        return {SCHEMA_KEYS.get(k, k): v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        """Rebuild a row from :meth:`to_dict` output; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        attrs = {FIELDS.get(k, k): v for k, v in data.items()}
        return cls(**{k: v for k, v in attrs.items() if k in names})

    @classmethod
    def skipped(cls, role: Role, variant: str, exc: BackendUnavailable, seconds: float, metrics: Sequence[str]) -> Row:
        return cls(
            role=role,
            variant=variant,
            status="skipped",
            skip_reason=str(exc),
            install=exc.install,
            values=dict.fromkeys(metrics),
            seconds=seconds,
        )

    @classmethod
    def measured(
        cls,
        role: Role,
        variant: str,
        evaluation: dict[str, Any],
        details: dict[str, Any] | None,
        seconds: float,
        dtype: str | None,
        metrics: Sequence[str],
    ) -> Row:
        """A row from :meth:`unlearn_assert.metrics.Evaluation.to_dict` output and the source's details; ``metrics``:
        the benchmark's metric names, the row's values in that order."""
        extras = evaluation.get("extras", {})
        details = details or None
        return cls(
            role=role,
            variant=variant,
            values={m: evaluation["values"].get(m) for m in metrics},
            ci=evaluation.get("ci", {}),
            auc=extras.get("auc"),
            attack_aucs=extras.get("attack_aucs"),
            extras=extras,
            samples=evaluation.get("samples", {}),
            details=details,
            code_agreement=details.get("code_agreement") if details else None,
            changed_fraction=details.get("changed_fraction") if details else None,
            small_delta_fraction=details.get("small_delta_fraction") if details else None,
            seconds=seconds,
            dtype=dtype,
        )


#: Row attribute -> schema 1's key for it (rows in the JSON report, cache entries and xdist payloads).
SCHEMA_KEYS: dict[str, str] = {"role": "model", "variant": "quantizer", "details": "quant"}
FIELDS: dict[str, str] = {v: k for k, v in SCHEMA_KEYS.items()}


def measurement_key(kind: str, model_fingerprint: str, compute_dtype: str, inputs: Inputs, **parts: Any) -> str:
    """The cache key of one model measured on the run's data, for a row and for the ``muse`` fixture alike:
    everything that determines the numbers (the model's content, the data's, the metric settings, the device,
    the dtype as asked and as computed, the batch size) plus the caller's ``parts``;
    :func:`unlearn_assert.cache.cache_key` adds the package version. The computed dtype matters because
    ``--unlearn-dtype auto`` resolves per machine (bf16 where the CPU has it, else float32), and a cache may
    be shared between machines."""
    run = inputs.run
    return cache_key(
        {
            "kind": kind,
            "model": model_fingerprint,
            "data": inputs.data.fingerprint,
            "metrics": inputs.benchmark.settings,
            "device": run.device,
            "dtype": run.dtype,
            "compute_dtype": compute_dtype,
            "batch_size": run.batch_size,
            **parts,
        }
    )


def row_key(role: Role, source: Source | None, inputs: Inputs) -> str:
    """The cache key of the row (role, variant); ``source`` None is the full-precision row. The dtype is
    predicted from the model's config, so a cached row is found without loading the model."""
    parts: dict[str, Any] = {"variant": FP if source is None else source.variant}
    if source is not None:
        parts.update(source.key_parts(role, inputs))
    return measurement_key("row", inputs.fingerprint(role), inputs.compute_dtype(role), inputs, **parts)


def compute_row(role: Role, source: Source | None, inputs: Inputs, handoff: Any = None) -> tuple[Row, Any]:
    """Evaluate ``role`` under ``source`` (None: full precision); return the row and what the
    variant hands on (see :class:`~.sources.Applied`). A missing backend library gives a skipped row."""
    benchmark = inputs.benchmark
    names = [m.name for m in benchmark.metrics]
    say = inputs.progress
    start = time.perf_counter()
    variant = FP if source is None else source.variant
    loaded = inputs.model(role)
    passed_on: Any = None
    dtype = loaded.dtype
    if source is None:
        say(f"evaluate {role} fp")
        evaluation = benchmark.measure(
            loaded, inputs.data, batch_size=inputs.run.batch_size, progress=_within(say, role, variant)
        ).to_dict()
        details = None
    else:
        say(f"quantize {role} {variant}")
        try:
            with source.apply(role, inputs, handoff) as applied:
                say(f"evaluate {role} {variant}")
                data = inputs.data if applied.data is None else applied.data
                evaluation = benchmark.measure(
                    applied.view, data, batch_size=inputs.run.batch_size, progress=_within(say, role, variant)
                ).to_dict()
                _renumber(evaluation, applied.sample_ids)
                details, passed_on, dtype = applied.details, applied.handoff, applied.view.dtype
        except BackendUnavailable as exc:
            return Row.skipped(role, variant, exc, time.perf_counter() - start, names), None
    if role == "retrain":
        inputs.release("retrain")
    row = Row.measured(role, variant, evaluation, details, time.perf_counter() - start, dtype, names)
    say(
        f"{role} {variant}: "
        + ", ".join(f"{m} {v:.1f}" for m, v in row.values.items() if v is not None)
        + f" ({row.seconds:.1f} s)"
    )
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
    row.role, row.variant, row.cached = role, variant, True
    return row
