"""The JSON report, schema_version 1: typed shape, validation, loading and atomic writing.

The report is one plain-data dict (``unlearn_assert.engine.Report.to_dict()``); every renderer (terminal, HTML) and
every
outside tool reads only this dict, so its shape is written down here once. Keys listed as required
in ``DESIGN.md`` ("JSON report") are checked by :func:`validate_report`; the others are optional so
that older or partial reports still render. Adding keys is free; renaming or removing one needs a
new ``SCHEMA_VERSION``.

Pure Python on purpose (no torch): ``unlearn-assert report`` must work on a machine without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from ..cache import atomic_write_text
from ..errors import UnlearnAssertError
from ..names import OUTCOMES, ROLES, ROW_STATUSES, VERDICT_POLICIES
from ..plain import plain

SCHEMA_VERSION = 1
#: What the rows of a report without ``provenance.benchmark`` measure: MUSE's metrics (every report made
#: before there were other benchmarks). The engine's MUSE benchmark is built from this list.
MUSE_METRICS: tuple[dict[str, Any], ...] = (
    {"name": "verbmem_f", "role": "forget", "items": "forget passages", "unit": "ROUGE-L F1 x100", "short": "vm"},
    {"name": "knowmem_f", "role": "forget", "items": "forget questions", "unit": "ROUGE-L F1 x100", "short": "km"},
    {
        "name": "knowmem_r",
        "role": "utility",
        "items": "retain questions",
        "unit": "ROUGE-L F1 x100",
        "short": "kr",
        "check": "utility",
    },
    {"name": "privleak", "role": "privacy", "items": "forget and holdout texts", "unit": "%", "short": "pl"},
)


def report_metrics(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The metrics a report's rows hold, in column order: its ``provenance.benchmark.metrics``, else MUSE's."""
    benchmark = (report.get("provenance") or {}).get("benchmark") or {}
    return [dict(m) for m in (benchmark.get("metrics") or MUSE_METRICS)]


#: What a verdict's estimate, ci and budget are about (``VerdictDict.figure``).
FIGURES = ("drop", "recovery", "utility", "privleak")


class ReportError(UnlearnAssertError, ValueError):
    """A file given as a report is missing, not JSON, of another schema version, or malformed."""


# --------------------------------------------------------------------------- typed shape


class ModelRef(TypedDict):
    path: str  # the model directory (or "demo:NAME" spec) as given by the user
    fingerprint: str | None  # content hash of config + weights (models.py); None if never computed


class _DataRefRequired(TypedDict):
    path: str  # the MUSE-layout data directory as given
    fingerprint: str | None  # content hash of every data file (data.py); None if never computed


class DataRef(_DataRefRequired, total=False):
    counts: dict[str, int]  # number of items per split, e.g. {"knowmem_forget_qa": 100}, after max_samples


class Machine(TypedDict, total=False):
    platform: str  # platform.platform(), e.g. "Linux-6.8-x86_64-with-glibc2.39"
    processor: str  # platform.processor() or the CPU model name
    cpu_count: int  # os.cpu_count()
    cuda: str | None  # CUDA device name / version used, None on CPU-only runs
    cpu: dict[str, Any]  # what decides the CPU compute dtype (hardware.compute_info): cpu_capability, native_bf16, ...


class BudgetOverride(TypedDict):
    key: str  # budget name: "recovery", "utility", "privleak" or "floor"
    quantizer: str | None  # quantizer id the override applies to; None = all quantizers
    value: float  # the overriding budget (same unit as the default of that key)


class Budgets(TypedDict, total=False):
    recovery: float  # max allowed recovery fraction of a forget metric (0.25 = 25% may come back)
    utility: float  # min knowmem_r(q(U)) / knowmem_r(T) ratio (0.9 = keep 90% of the target's utility)
    privleak: float  # max |privleak| in percent
    floor: float  # min m(T) - m(U) in ROUGE x100 for unlearning to count as having worked in fp
    overrides: list[BudgetOverride]  # per-quantizer overrides (options, ini or markers)


class Settings(TypedDict, total=False):
    verdict: Literal["point", "strict", "lenient"]  # --unlearn-verdict: how items were judged against their intervals
    device: str  # "cpu", "cuda", "cuda:1", "mps" (after resolving "auto")
    dtype: str  # "float32", "bfloat16", ... (after resolving "auto")
    batch_size: int | None  # generation batch size; None = automatic
    max_samples: int | None  # per-split cap on items; None = all
    overlong: Literal["error", "truncate"]  # --unlearn-overlong: what an item beyond the context window got
    quantizers: list[str]  # quantizer ids in the order the user gave them (the table's row order)
    calibration: Calibration | None  # GPTQ/AWQ calibration text; None when no quantizer calibrates


class Calibration(TypedDict):
    source: str  # "raw/retain.txt of DIR", "privleak/retain.json of DIR" or the --unlearn-calibration file
    documents: int  # documents read from the source
    n_samples: int  # at most this many windows, in order
    seq_len: int  # tokens per window (capped by the model's context)
    fingerprint: str  # sha256 of the documents and settings (part of GPTQ/AWQ cache keys)


class _BootstrapRequired(TypedDict):
    """How every interval of the report was drawn (``metrics/stats.py``, "paired bootstrap"): one
    weighing of the items per replicate, shared by U, T, the variant (and R for privleak)."""

    replicates: int  # B, the number of bootstrap replicates (1000)
    seed: int  # the seed of the draw: the same intervals on every run and xdist worker
    confidence: float  # two-sided level of every interval: 0.9, 0.95 or 0.99 (--unlearn-confidence)


class BootstrapInfo(_BootstrapRequired, total=False):
    prior: float  # weight of each pseudo-item of the drop, recovery and utility: 1 (absent before issue 31: none)


class _ProvenanceRequired(TypedDict):
    unlearn_assert: str  # this package's version
    torch: str | None  # torch.__version__
    transformers: str | None  # transformers.__version__
    backends: dict[str, str | None]  # quantizer backend library -> version, None when not installed
    machine: Machine  # where the numbers were measured
    models: dict[str, ModelRef | None]  # "unlearned", "target" (required) and "retrain" (or None)
    data: DataRef  # the evaluation data set
    budgets: Budgets  # the budgets the verdicts were computed against


class Provenance(_ProvenanceRequired, total=False):
    python: str  # platform.python_version()
    settings: Settings  # run settings that affect the numbers
    privleak_reference: dict[
        str, Any
    ]  # {"auc": AUC_R used, "source": "retrain" | "option" | "default", "published": named reference (optional)}
    bootstrap: BootstrapInfo  # how the intervals (rows' recovery_ci, utility_ci, ci; verdicts' ci) were drawn
    argv: list[str]  # the command line of the run (pytest arguments)
    # how each process of the run used the machine: [{"worker": "gw0" | "main", "workers": N, "device": "cuda:1",
    # "threads": {"intra_op": 1, "inter_op": 1, "set_by": "unlearn-assert: 2 cores // 2 workers"}}]
    execution: list[dict[str, Any]]
    # what the rows measure, for every benchmark but MUSE (absent: MUSE, as in every report made before there were
    # others): {"name": "tofu", "metrics": [{"name", "role", "check", "items", "unit", "short", ...}], "settings":
    # {...}}
    benchmark: dict[str, Any]


class QuantInfo(TypedDict, total=False):
    bits: int  # weight bits, e.g. 4
    group_size: int | None  # weights per scale group; None = per-channel
    modules: list[str]  # names of the quantized modules
    n_weights: int  # number of quantized weights


class RecoveryValues(TypedDict):
    verbmem_f: float | None  # (m(q(U)) - m(U)) / (m(T) - m(U)) as a fraction: 0.83 = 83% came back
    knowmem_f: float | None  # same for knowmem_f; None when the denominator is below the floor


class MetricValues(TypedDict, total=False):  # all four present on "ok" rows; may be partial on skipped ones
    verbmem_f: float | None  # mean ROUGE-L F1 x100 on the verbatim forget set
    knowmem_f: float | None  # mean ROUGE-L F1 x100 on forget-set QA
    knowmem_r: float | None  # mean ROUGE-L F1 x100 on retain-set QA (utility)
    privleak: float | None  # (AUC - AUC_R) / AUC_R x 100 (percent); None when not computed


class _RowRequired(TypedDict):
    model: Literal["unlearned", "target", "retrain"]  # which checkpoint
    quantizer: str  # "fp" (full precision) or a quantizer id such as "rtn-w4g128"
    values: MetricValues  # the metric values of this (model, quantizer) cell
    recovery: RecoveryValues | None  # only for unlearned quantized rows
    code_agreement: float | None  # fraction (0..1) of q(U) weights identical to q(T); quantized U rows only
    changed_fraction: float | None  # fraction (0..1) of weights the quantizer changed; quantized rows only


#: An interval [lo, hi] in the unit of its estimate; hi null = unbounded above (more of the bootstrap
#: replicates were degenerate, i.e. had a denominator <= 0, than the upper tail holds).
Bounds = list[float | None]


class RowDict(_RowRequired, total=False):
    ci: dict[
        str, Bounds
    ]  # metric -> [lo, hi]: ROUGE metrics the row's own bootstrap interval; privleak on U's rows the
    #   paired interval against the run's reference AUC (R's AUC recomputed on the resampled texts), on T's and R's
    #   rows their own (unpaired) interval, present only when the reference is 0.5
    recovery_ci: dict[
        str, Bounds | None
    ]  # quantized U rows: forget metric -> paired interval of its recovery (a fraction)
    recovery_degenerate: dict[str, int | None]  # replicates of each recovery with m(T) - m(U) <= 0 (ranked at +inf)
    utility: float | None  # U rows: knowmem_r(this row) / knowmem_r(T); None when T retains nothing
    utility_ci: Bounds | None  # U rows: paired interval of that ratio
    utility_degenerate: int | None  # replicates of the ratio with knowmem_r(T) <= 0 (ranked at +inf)
    small_delta_fraction: float | None  # fraction of U-T weight deltas smaller than half a quantization step
    quant: QuantInfo | None  # the quantizer's own report; None for fp rows
    auc: float | None  # Min-40% ROC AUC behind privleak (forget=0, holdout=1)
    attack_aucs: dict[str, float] | None  # other membership attacks' AUCs: "loss", "zlib", "mink++"
    dtype: str | None  # the dtype the model was evaluated in ("float32", "bfloat16", ...)
    status: Literal["ok", "skipped"]  # "skipped": the cell could not run (e.g. backend missing); values absent
    skip_reason: str | None  # one-line reason when status == "skipped"
    cached: bool  # True when the values came from the result cache
    seconds: float  # wall time spent computing the cell (0 when cached)


class _VerdictRequired(TypedDict):
    item: str  # the pytest item id, e.g. "test_budget[rtn-w4g128-knowmem_f]"
    passed: bool | None  # True/False; None when skipped
    message: str  # one line: the numbers and the budget, or why it was skipped


class VerdictDict(_VerdictRequired, total=False):
    quantizer: str  # the variant: a quantizer or attack id, an artifact's name, or "fp" (full precision)
    check: str  # the metric judged: "verbmem_f", "knowmem_f", "utility" (knowmem_r) or "privleak" for MUSE
    outcome: Literal["passed", "failed", "skipped"]  # the pytest outcome
    value: float | None  # the checked quantity (recovery fraction, utility ratio, privleak %, fp drop in points)
    budget: float | None  # the bound it was checked against, same unit as value (for privleak: |value| <= budget)
    estimate: float | None  # the same number as value, under the name the interval goes with
    ci: Bounds | None  # paired bootstrap interval of the estimate (provenance.bootstrap); None without per-item scores
    decided: (
        bool | None
    )  # the whole interval lies on one side of the budget (strict and lenient agree); None without ci
    n: int | None  # items resampled for the interval
    degenerate: int | None  # replicates whose denominator was <= 0: counted, ranked at +inf, never dropped
    policy: Literal["point", "strict", "lenient"] | None  # the --unlearn-verdict the item was judged under
    figure: Literal["drop", "recovery", "utility", "privleak"] | None  # what estimate/ci/budget are: the fp drop
    #   m(T) - m(U) in points (budget: the floor), a recovery or utility fraction, privleak in percent (|.| <= budget)


class ResolutionDict(TypedDict):
    """The smallest recovery a forget set can tell from zero (``engine/derive.py``, ``Resolution``):
    ``(hi - lo) / (2 * drop)`` for the paired interval [lo, hi] of the fp drop m(T) - m(U)."""

    recovery: float | None  # as a fraction; None when the drop is not positive (nothing to resolve)
    drop: float | None  # m(T) - m(U) in points
    drop_ci: Bounds | None  # its paired interval
    n: int  # forget items
    confidence: float  # the level of drop_ci
    budget: float  # the tightest recovery budget of the run's variants for this metric
    exceeds_budget: bool  # recovery > budget (or undefined): no recovery item can tell that budget from zero


class SampleRecord(TypedDict, total=False):
    id: int  # index of the item in its data split
    prompt: str  # the exact prompt given to the model (may hold any text, including markup)
    generation: str  # the model's greedy continuation, after cutting
    reference: str  # the ground truth it was scored against
    score: float  # ROUGE-L F1 x100 of generation vs reference
    # the item was beyond the model's context window and cut (--unlearn-overlong=truncate; a privleak text is cut to
    # the window either way): {"tokens": its length, "kept": tokens kept, "keep": "end" (a prompt) | "start" (a text)}
    truncation: dict[str, Any]


class _ReportRequired(TypedDict):
    schema_version: int  # always SCHEMA_VERSION for reports this module writes
    provenance: Provenance  # versions, machine, inputs and budgets: what the numbers depend on
    rows: list[RowDict]  # one per (model, quantizer) cell
    verdicts: list[VerdictDict]  # one per budget test item
    samples: dict[str, dict[str, list[SampleRecord]]]  # "model:quantizer" -> metric -> per-item records


class ReportDict(_ReportRequired, total=False):
    created: str  # ISO 8601 timestamp with offset, when the report was made
    resolution: dict[str, ResolutionDict]  # forget metric -> its resolution (stated up front by the summary)


# --------------------------------------------------------------------------- validation

_NUMBER = "number"
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true/false", dict: "an object", list: "an array"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _describe(kind: Any, nullable: bool) -> str:
    name = "a number" if kind == _NUMBER else _TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
    return name + (" or null" if nullable else "")


def _check(
    obj: Mapping[str, Any], key: str, kind: Any, where: str, *, required: bool = True, nullable: bool = False
) -> Any:
    """Return ``obj[key]`` after checking its presence and JSON type; raise a one-line ReportError."""
    if key not in obj:
        if required:
            raise ReportError(f"not an unlearn-assert report: {where} is missing key '{key}'")
        return None
    value = obj[key]
    if value is None and nullable:
        return None
    ok = (
        _is_number(value)
        if kind == _NUMBER
        else (isinstance(value, kind) and not (kind is int and isinstance(value, bool)))
    )
    if not ok:
        got = "null" if value is None else type(value).__name__
        raise ReportError(
            f"malformed unlearn-assert report: {where}.{key} should be {_describe(kind, nullable)}, got {got}"
        )
    return value


def _check_choice(value: Any, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ReportError(
            f"malformed unlearn-assert report: {where} is {value!r}, expected one of {', '.join(choices)}"
        )


def _check_bounds(obj: Mapping[str, Any], key: str, where: str) -> None:
    """An optional interval: null, or [lo, hi] with lo a number and hi a number or null (unbounded)."""
    value = _check(obj, key, list, where, required=False, nullable=True)
    if value is None:
        return
    if len(value) != 2 or not _is_number(value[0]) or not (value[1] is None or _is_number(value[1])):
        raise ReportError(
            f"malformed unlearn-assert report: {where}.{key} should be [lo, hi] (hi may be null), got {value!r}"
        )


def _validate_resolution(resolution: Mapping[str, Any]) -> None:
    for metric, res in resolution.items():
        w = f"resolution.{metric}"
        if not isinstance(res, dict):
            raise ReportError(f"malformed unlearn-assert report: {w} should be an object, got {type(res).__name__}")
        for key in ("recovery", "drop"):
            _check(res, key, _NUMBER, w, nullable=True)
        _check_bounds(res, "drop_ci", w)
        _check(res, "n", int, w)
        _check(res, "confidence", _NUMBER, w)
        _check(res, "budget", _NUMBER, w)
        _check(res, "exceeds_budget", bool, w)


def _validate_provenance(prov: Mapping[str, Any]) -> None:
    w = "provenance"
    _check(prov, "unlearn_assert", str, w)
    _check(prov, "torch", str, w, nullable=True)
    _check(prov, "transformers", str, w, nullable=True)
    _check(prov, "python", str, w, required=False)
    _check(prov, "backends", dict, w)
    _check(prov, "machine", dict, w)
    _check(prov, "budgets", dict, w)
    models = _check(prov, "models", dict, w)
    for role in ("unlearned", "target", "retrain"):
        ref = _check(models, role, dict, f"{w}.models", required=role != "retrain", nullable=role == "retrain")
        if ref is not None:
            _check(ref, "path", str, f"{w}.models.{role}")
            _check(ref, "fingerprint", str, f"{w}.models.{role}", nullable=True)
    data = _check(prov, "data", dict, w)
    _check(data, "path", str, f"{w}.data")
    _check(data, "fingerprint", str, f"{w}.data", nullable=True)
    _check(data, "counts", dict, f"{w}.data", required=False)
    boot = _check(prov, "bootstrap", dict, w, required=False)
    if boot is not None:
        _check(boot, "replicates", int, f"{w}.bootstrap")
        _check(boot, "seed", int, f"{w}.bootstrap")
        _check(boot, "confidence", _NUMBER, f"{w}.bootstrap")
        _check(boot, "prior", _NUMBER, f"{w}.bootstrap", required=False)
    settings = _check(prov, "settings", dict, w, required=False)
    if settings is not None:
        quantizers = _check(settings, "quantizers", list, f"{w}.settings", required=False)
        if quantizers is not None and not all(isinstance(q, str) for q in quantizers):
            raise ReportError(f"malformed unlearn-assert report: {w}.settings.quantizers should be an array of strings")


def _validate_row(row: Any, i: int, metrics: list[dict[str, Any]]) -> None:
    w = f"rows[{i}]"
    if not isinstance(row, dict):
        raise ReportError(f"malformed unlearn-assert report: {w} should be an object, got {type(row).__name__}")
    _check_choice(_check(row, "model", str, w), ROLES, f"{w}.model")
    _check(row, "quantizer", str, w)
    status = _check(row, "status", str, w, required=False)
    if status is not None:
        _check_choice(status, ROW_STATUSES, f"{w}.status")
    values = _check(row, "values", dict, w)
    for metric in (m["name"] for m in metrics):
        _check(values, metric, _NUMBER, f"{w}.values", required=status != "skipped", nullable=True)
    recovery = _check(row, "recovery", dict, w, nullable=True)
    if recovery is not None:
        for metric in (m["name"] for m in metrics if m.get("role") == "forget"):
            _check(recovery, metric, _NUMBER, f"{w}.recovery", required=False, nullable=True)
    for key in ("code_agreement", "changed_fraction"):
        _check(row, key, _NUMBER, w, nullable=True)
    for key in ("small_delta_fraction", "auc", "seconds"):
        _check(row, key, _NUMBER, w, required=False, nullable=True)
    for key in ("ci", "quant", "attack_aucs"):
        _check(row, key, dict, w, required=False, nullable=True)
    for key in ("recovery_ci", "ci"):
        intervals = _check(row, key, dict, w, required=False, nullable=True)
        for metric in intervals or {}:
            _check_bounds(intervals, metric, f"{w}.{key}")
    _check(row, "recovery_degenerate", dict, w, required=False, nullable=True)
    _check(row, "utility", _NUMBER, w, required=False, nullable=True)
    _check_bounds(row, "utility_ci", w)
    _check(row, "utility_degenerate", int, w, required=False, nullable=True)
    _check(row, "skip_reason", str, w, required=False, nullable=True)
    _check(row, "cached", bool, w, required=False)


def _validate_verdict(v: Any, i: int, metrics: list[dict[str, Any]]) -> None:
    w = f"verdicts[{i}]"
    if not isinstance(v, dict):
        raise ReportError(f"malformed unlearn-assert report: {w} should be an object, got {type(v).__name__}")
    _check(v, "item", str, w)
    _check(v, "passed", bool, w, nullable=True)
    _check(v, "message", str, w)
    _check(v, "quantizer", str, w, required=False)
    _check(v, "check", str, w, required=False)
    outcome = _check(v, "outcome", str, w, required=False)
    if outcome is not None:
        _check_choice(outcome, OUTCOMES, f"{w}.outcome")
    _check(v, "value", _NUMBER, w, required=False, nullable=True)
    _check(v, "budget", _NUMBER, w, required=False, nullable=True)
    _check(v, "estimate", _NUMBER, w, required=False, nullable=True)
    _check_bounds(v, "ci", w)
    _check(v, "decided", bool, w, required=False, nullable=True)
    _check(v, "n", int, w, required=False, nullable=True)
    _check(v, "degenerate", int, w, required=False, nullable=True)
    figure = _check(v, "figure", str, w, required=False, nullable=True)
    if figure is not None:
        _check_choice(figure, FIGURES + tuple(m["name"] for m in metrics if m.get("role") == "privacy"), f"{w}.figure")
    policy = _check(v, "policy", str, w, required=False, nullable=True)
    if policy is not None:
        _check_choice(policy, VERDICT_POLICIES, f"{w}.policy")


def validate_report(obj: Any) -> ReportDict:
    """Check ``obj`` is a schema_version-1 report (required keys and their types) and return it.

    Raises :class:`ReportError` with one line naming the first missing or mistyped key, so that
    ``unlearn-assert report some.json`` on the wrong file says what is wrong instead of a KeyError.
    """
    if not isinstance(obj, dict):
        raise ReportError(
            f"not an unlearn-assert report: expected a JSON object with 'schema_version', "
            f"got {'null' if obj is None else type(obj).__name__}"
        )
    if "schema_version" not in obj:
        raise ReportError(
            "not an unlearn-assert report: missing key 'schema_version' "
            "(pass the JSON file written by --unlearn-json or `unlearn-assert demo`)"
        )
    version = obj["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise ReportError(f"malformed unlearn-assert report: schema_version should be an integer, got {version!r}")
    if version != SCHEMA_VERSION:
        hint = "upgrade unlearn-assert to read it" if version > SCHEMA_VERSION else "regenerate the report"
        raise ReportError(
            f"unsupported report schema_version {version}: this unlearn-assert reads "
            f"schema_version {SCHEMA_VERSION}; {hint}"
        )
    _check(obj, "created", str, "report", required=False)
    _validate_provenance(_check(obj, "provenance", dict, "report"))
    metrics = report_metrics(obj)
    for i, row in enumerate(_check(obj, "rows", list, "report")):
        _validate_row(row, i, metrics)
    for i, verdict in enumerate(_check(obj, "verdicts", list, "report")):
        _validate_verdict(verdict, i, metrics)
    _validate_resolution(_check(obj, "resolution", dict, "report", required=False) or {})
    for key, per_metric in _check(obj, "samples", dict, "report").items():
        if not isinstance(per_metric, dict):
            raise ReportError(f"malformed unlearn-assert report: samples[{key!r}] should be an object")
        for metric, records in per_metric.items():
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise ReportError(
                    f"malformed unlearn-assert report: samples[{key!r}][{metric!r}] should be an array of objects"
                )
    return cast(ReportDict, obj)


# --------------------------------------------------------------------------- files


def load_report(path: str | os.PathLike[str]) -> ReportDict:
    """Read and validate a JSON report; every failure is a one-line :class:`ReportError`."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"report file not found: {p} (write one with --unlearn-json PATH)")
    if p.is_dir():
        raise ReportError(f"report path is a directory: {p}; pass the .json file inside it")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{p} is not a UTF-8 text file; pass the .json report unlearn-assert wrote") from None
    except OSError as exc:
        raise ReportError(f"cannot read report {p}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"pass the .json report unlearn-assert wrote"
        ) from None
    try:
        return validate_report(obj)
    except ReportError as exc:
        raise ReportError(f"{p}: {exc}") from None


def dumps_report(report: Mapping[str, Any]) -> str:
    """The report as strict, human-readable JSON (UTF-8 text, 2-space indent, trailing newline)."""
    return json.dumps(plain(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the report as JSON, atomically; returns the path written."""
    return atomic_write_text(path, dumps_report(report))
