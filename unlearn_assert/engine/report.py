"""Where the report is built: :func:`build_report` turns the rows and verdicts of a gate into a
:class:`Report`, whose :meth:`Report.to_dict` is the schema-1 JSON (``report/schema.py``) that every
renderer and outside tool reads.

One builder for every caller: ``ua.gate(...)``, the pytest session (also on the xdist controller,
from the rows and verdicts the workers sent) and the demo. Every number in it comes from the rows
through :func:`.derive.figures`, the same figures the verdicts were judged on.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from typing import TYPE_CHECKING, Any, cast

from ..config import RunConfig
from ..hardware import MACHINE_KEY
from ..names import FP
from ..render.schema import (
    SCHEMA_VERSION,
    BootstrapInfo,
    ModelRef,
    Provenance,
    ReportDict,
    ResolutionDict,
    RowDict,
    VerdictDict,
)
from ..version import __version__
from .derive import Figures, bootstrap_of, figures
from .rows import Row, RowKey
from .verdicts import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from ..benchmark.base import Benchmark

__all__ = ["Report", "build_report", "provenance"]

#: Quantizer libraries whose versions go into the provenance.
BACKEND_LIBRARIES = ("bitsandbytes", "llmcompressor", "gptqmodel", "hqq", "gguf", "llama_cpp_python")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@dataclass
class Report:
    """The outcome of one gate: provenance, one row per (model, variant), one verdict per item, and
    the per-sample records. ``to_dict()`` is the versioned JSON report."""

    provenance: Provenance
    rows: list[RowDict]
    verdicts: list[Verdict]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    created: str = ""
    resolution: dict[str, ResolutionDict] = field(default_factory=dict)

    @property
    def failed(self) -> list[Verdict]:
        """The items that failed (a budget exceeded, or unlearning that did not work in full precision)."""
        return [v for v in self.verdicts if v.outcome == "failed"]

    @property
    def passed(self) -> bool:
        """True when no item failed (skipped items do not count either way), as the exit code says."""
        return not self.failed

    def verdict(self, variant: str, check: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.variant == variant and v.check == check), None)

    def row(self, model: str, variant: str) -> RowDict | None:
        return next((r for r in self.rows if r["model"] == model and r["quantizer"] == variant), None)

    def to_dict(self) -> ReportDict:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "provenance": self.provenance,
            "rows": self.rows,
            "verdicts": [cast(VerdictDict, v.to_dict()) for v in self.verdicts],
            "samples": cast(Any, self.samples),
            "resolution": self.resolution,
        }


def _calibration_info(rows: Iterable[Row]) -> dict[str, Any] | None:
    """The calibration GPTQ/AWQ rows were computed with, as recorded on the rows (None without them)."""
    return next(
        (r.details["calibration"] for r in rows if r.details is not None and r.details.get("calibration")), None
    )


def _artifact_methods(run: RunConfig) -> dict[str, dict[str, Any]]:
    from ..quant.artifact import quant_method

    return {a.name: {"path": a.path, "method": quant_method(a.path)} for a in run.artifacts}


def _machine(execution: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The GPU and CPU facts of the process that computed the rows: this one's when it imported torch (a serial
    run), else what the first worker's execution record carries (an xdist controller, which never computes a row,
    so importing torch here would cost it seconds for facts about the wrong process)."""
    from ..hardware import machine_facts

    if "torch" not in sys.modules:
        for record in execution or []:
            if isinstance(record.get(MACHINE_KEY), dict):
                return dict(record[MACHINE_KEY])
    return machine_facts()


def provenance(
    run: RunConfig,
    fingerprints: dict[str, str],
    data: Any,
    calibration: dict[str, Any] | None = None,
    execution: list[dict[str, Any]] | None = None,
) -> Provenance:
    """What the numbers depend on: versions, machine, inputs (with content hashes), budgets, settings.
    ``execution``: the processes' records (:func:`unlearn_assert.scaleout.workers.divide_machine`), read for the
    machine facts of a process that computed rows."""
    machine = _machine(execution)
    models: dict[str, ModelRef | None] = {}
    for role, path in (("unlearned", run.model), ("target", run.target), ("retrain", run.retrain)):
        if not path:
            models[role] = None
        elif role == "unlearned" and run.model_spec:  # demo:NAME: what the user wrote, and where it lives
            models[role] = cast(
                ModelRef, {"path": run.model_spec, "fingerprint": fingerprints.get(role), "directory": path}
            )
        else:
            models[role] = {"path": path, "fingerprint": fingerprints.get(role)}
    return cast(
        Provenance,
        {
            "unlearn_assert": __version__,
            "torch": _version("torch"),
            "transformers": _version("transformers"),
            "python": platform.python_version(),
            "backends": {name: _version(name) for name in BACKEND_LIBRARIES},
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "cuda": machine.get("cuda"),
                "cpu": machine.get("cpu"),
            },
            "models": models,
            "data": {
                "path": run.data,
                "fingerprint": data.fingerprint if data is not None else None,
                "counts": data.counts() if data is not None else {},
            },
            "budgets": run.budget.to_dict(),
            "settings": {
                "device": run.device,
                "dtype": run.dtype,
                "batch_size": run.batch_size,
                "verdict": run.verdict,
                "max_samples": run.max_samples,
                "overlong": run.overlong,
                "quantizers": list(run.variants),
                "calibration": calibration,
                "quantized_checkpoints": _artifact_methods(run),
            },
            "argv": sys.argv[1:],
        },
    )


def _order(run: RunConfig) -> list[RowKey]:
    """The report's row order: U in full precision and under each variant, T and q(T), then R."""
    order: list[RowKey] = [("unlearned", FP)]
    order += [("unlearned", q) for q in run.variants]
    order.append(("target", FP))
    order += [("target", q) for q in run.variant_ids]
    order.append(("retrain", FP))
    return order


#: What a report row shows of a row besides the derived figures (its per-item records go to the report's
#: ``samples``, its extras and fingerprint stay in the cache).
REPORTED_ROW_KEYS = (
    "model",
    "quantizer",
    "code_agreement",
    "changed_fraction",
    "small_delta_fraction",
    "quant",
    "auc",
    "attack_aucs",
    "dtype",
    "status",
    "skip_reason",
    "cached",
    "seconds",
)


def _report_row(row: Row, figs: Figures) -> RowDict:
    key = row.key
    ci: dict[str, list[float | None]] = {k: list(v) for k, v in row.ci.items()}
    for metric, rule in figs.rules.items():
        privacy_ci = figs.privacy_ci.get(metric, {}).get(key)
        if privacy_ci is not None:  # U's rows: against the run's reference, paired with R
            ci[metric] = privacy_ci.as_list()
        elif metric in ci and figs.reference[metric][0] != rule.own_reference:
            del ci[metric]  # the row's own interval is against its own default reference, not the run's
    plain = row.to_dict()  # schema 1's keys (Row.to_dict is where the code's names meet them)
    out: dict[str, Any] = {k: plain[k] for k in REPORTED_ROW_KEYS}
    out.update(values=dict(figs.values[key]), ci=ci, recovery=None)
    forget = [s.name for s in figs.specs if s.role == "forget"]
    if key[0] == "unlearned" and key[1] != FP and row.ok:
        out["recovery"] = dict(figs.recovery.get(key[1]) or dict.fromkeys(forget))
        rec_ci = figs.recovery_ci.get(key[1], {})
        out["recovery_ci"] = {m: rec_ci[m].as_list() if m in rec_ci else None for m in forget}
        out["recovery_degenerate"] = {m: rec_ci[m].degenerate if m in rec_ci else None for m in forget}
    utility = [s.name for s in figs.specs if s.role == "utility"]
    if key[0] == "unlearned" and row.ok and utility:  # the benchmark's utility metric (the first, when it has several)
        util = figs.utility_ci.get(key[1], {}).get(utility[0])
        out["utility"] = figs.utility.get(key[1], {}).get(utility[0])
        out["utility_ci"] = util.as_list() if util is not None else None
        out["utility_degenerate"] = util.degenerate if util is not None else None
        if len(utility) > 1:
            out["utilities"] = {m: figs.utility.get(key[1], {}).get(m) for m in utility}
    return cast(RowDict, out)


def _resolution(run: RunConfig, figs: Figures) -> dict[str, ResolutionDict]:
    """Per forget metric: its resolution, the tightest recovery budget of the run's variants for it,
    and whether the resolution exceeds that budget (the summary then warns)."""
    out: dict[str, ResolutionDict] = {}
    for m, res in figs.resolution.items():
        budget = min((run.budget.recovery_for(m, q) for q in run.variants), default=run.budget.recovery_for(m, FP))
        out[m] = {
            "recovery": res.recovery,
            "drop": res.drop,
            "drop_ci": res.drop_ci.as_list() if res.drop_ci else None,
            "n": res.n,
            "confidence": figs.bootstrap.confidence,
            "budget": budget,
            "exceeds_budget": res.recovery is None or res.recovery > budget,
        }
    return out


def build_report(
    run: RunConfig,
    rows: Iterable[Row],
    verdicts: Iterable[Verdict],
    *,
    data: Any,
    fingerprints: dict[str, str] | None = None,
    execution: list[dict[str, Any]] | None = None,
    benchmark: Benchmark | None = None,
) -> Report:
    """The report of ``rows`` and ``verdicts`` (in any order; they are sorted here). ``fingerprints``
    by role default to those the rows carry; ``execution``: how each process of the run used the
    machine (xdist workers: threads, device), recorded in the provenance; ``benchmark``: the run's
    (detected from the run when not given)."""
    if benchmark is None:
        from ..benchmark import benchmark_for

        benchmark = benchmark_for(run)
    by_key = {row.key: row for row in rows}
    figs = figures(by_key.values(), benchmark, bootstrap_of(run))
    order = _order(run)
    out_rows: list[RowDict] = []
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key in order + [k for k in by_key if k not in order]:
        row = by_key.get(key)
        if row is None:
            continue
        out_rows.append(_report_row(row, figs))
        if row.samples:
            samples[f"{key[0]}:{key[1]}"] = row.samples
    if fingerprints is None:
        fingerprints = {row.role: row.fingerprint for row in by_key.values() if row.fingerprint}
    prov = provenance(run, fingerprints, data, _calibration_info(by_key.values()), execution)
    for metric, rule in figs.rules.items():
        prov[f"{metric}_reference"] = rule.reference_record(*figs.reference[metric])  # type: ignore[literal-required]
    if benchmark.name != "muse":  # absent means MUSE: every report made before there were other benchmarks
        prov["benchmark"] = {
            "name": benchmark.name,
            "metrics": [m.to_dict() for m in benchmark.metrics],
            "settings": dict(benchmark.settings),
            **benchmark.record(data),
        }
    if execution:  # the machine facts each record carried are in prov["machine"] already
        prov["execution"] = [{k: v for k, v in record.items() if k != MACHINE_KEY} for record in execution]
    prov["bootstrap"] = cast(BootstrapInfo, figs.bootstrap.to_dict())
    return Report(
        provenance=prov,
        rows=out_rows,
        verdicts=sorted(verdicts, key=lambda v: _verdict_order(run, v)),
        samples=samples,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        resolution=_resolution(run, figs),
    )


def _verdict_order(run: RunConfig, v: Verdict) -> tuple[int, str]:
    variants: Sequence[str] = [FP, *run.variants]
    return (variants.index(v.variant) if v.variant in variants else len(variants), v.item)
