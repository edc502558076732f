"""Terminal rendering of a report: the summary table, the failure lines and the one-line summary.

The row order, cell formatting and per-row verdict live here once; the HTML report reuses them
(:func:`table_rows`) so that the two views of the same report can never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from tabulate import tabulate

from ..names import ROLES
from .schema import ReportDict, RowDict, VerdictDict, report_metrics

#: the table's columns around the metric columns (which come from the report: :func:`metric_columns`)
LEAD_HEADERS = ("model", "quantizer")
TAIL_HEADERS = ("recovery", "code agr.", "verdict")
SKIP_REASON_WIDTH = 40  # the reason shares the left-aligned recovery column; the HTML shows it whole
_ANSI = {"PASS": "\x1b[32m", "FAIL": "\x1b[1;31m", "SKIP": "\x1b[33m"}
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class TableRow:
    """One line of the summary table: display cells plus what the HTML view needs to style it."""

    row: RowDict
    cells: tuple[str, ...]  # one string per column (LEAD_HEADERS, the metric columns, TAIL_HEADERS)
    verdict: str  # "PASS", "FAIL", "SKIP" (unlearned rows) or "-" (reference rows, no checks)
    skip_reason: str | None  # full reason when the row was skipped, else None
    failed: tuple[str, ...] = ()  # the checks that failed on this row, short names, in the report's metric order

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None


# --------------------------------------------------------------------------- shared helpers


def one_line(text: Any) -> str:
    """Collapse whitespace so a message from anywhere fits on one terminal line."""
    return " ".join(str(text).split())


def fmt_num(x: Any, decimals: int = 1) -> str:
    """A metric value with a fixed number of decimals; None (not computed) as "-"."""
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.{decimals}f}" if math.isfinite(x) else str(x)


def fmt_pct(fraction: Any, decimals: int = 1) -> str:
    """A 0..1 fraction as a percentage string; None as "-"."""
    if fraction is None:
        return "-"
    return fmt_num(float(fraction) * 100, decimals) + "%"


def fmt_value(x: Any, unit: str = "") -> str:
    """A metric value in its table cell: one decimal; a p-value (tiny, and read on a log scale) in three
    significant digits."""
    if x is not None and "p-value" in unit:
        return f"{float(x):.3g}"
    return fmt_num(x)


def fmt_bounds(bounds: Sequence[Any] | None, scale: float = 100.0) -> str:
    """An interval compactly, in whole percent without the sign: "[22,114]"; an unbounded end "inf"."""
    if not bounds or len(bounds) != 2 or bounds[0] is None:
        return ""

    def end(x: Any) -> str:
        if x is None or math.isinf(float(x)):
            return "inf"
        text = f"{float(x) * scale:.0f}"
        return "0" if text == "-0" else text

    return f"[{end(bounds[0])},{end(bounds[1])}]"


def metric_columns(report: Mapping[str, Any]) -> list[str]:
    """The metric columns of the table: every metric the report's benchmark judges (MUSE: verbmem_f,
    knowmem_f, knowmem_r, privleak); reported-only metrics stay in the JSON and HTML."""
    return [m["name"] for m in report_metrics(report) if m.get("role") != "reported"]


def _forget_shorts(report: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    metrics = report_metrics(report or {})
    return [(str(m.get("short") or m["name"]), m["name"]) for m in metrics if m.get("role") == "forget"]


def fmt_recovery(
    recovery: Mapping[str, Any] | None, ci: Mapping[str, Any] | None = None, report: Mapping[str, Any] | None = None
) -> str:
    """Recovery fractions compactly, e.g. "vm 12% / km 83%" (whole percent: a budget-sized signal),
    each with its paired interval when the row has one: "vm 12% [3,20] / km 61% [22,114]". The metrics and
    their short names are the report's benchmark's (MUSE's without one)."""
    if not recovery:
        return "-"
    parts = []
    for short, metric in _forget_shorts(report):
        bounds = fmt_bounds((ci or {}).get(metric)) if recovery.get(metric) is not None else ""
        parts.append(f"{short} {fmt_pct(recovery.get(metric), 0)}" + (f" {bounds}" if bounds else ""))
    return " / ".join(parts)


def resolution_lines(report: ReportDict) -> list[tuple[str, bool]]:
    """(line, is_warning) pairs stating each forget metric's resolution, the smallest recovery its
    forget set can tell from zero, and one warning per metric whose resolution exceeds its recovery
    budget; empty for reports without a resolution."""
    resolution: Mapping[str, Any] = report.get("resolution") or {}
    if not resolution:
        return []
    level = next((float(r["confidence"]) for r in resolution.values() if r.get("confidence")), 0.95)
    parts, warnings = [], []
    units = {m["name"]: m.get("items", "items") for m in report_metrics(report)}
    for metric, res in resolution.items():
        unit = units.get(metric, "items")
        n = res.get("n")
        rec = res.get("recovery")
        parts.append(f"{metric} {fmt_pct(rec, 0) if rec is not None else 'undefined (no drop)'} (n={n} {unit})")
        if res.get("exceeds_budget"):
            budget = fmt_pct(res.get("budget"), 0)
            if rec is None:
                warnings.append(
                    f"unlearn-assert: warning: {metric} did not drop in full precision, so no recovery on "
                    f"n={n} {unit} can be told from zero; its recovery items are not judged"
                )
            else:
                warnings.append(
                    f"unlearn-assert: warning: {metric}'s resolution {fmt_pct(rec, 0)} exceeds its {budget} recovery "
                    f"budget: n={n} {unit} cannot tell a {budget} recovery from none; add forget items"
                )
    head = (
        f"unlearn-assert: resolution at {level:.0%} (smallest recovery the forget set tells from zero): "
        + ", ".join(parts)
    )
    return [(head, False), *((w, True) for w in warnings)]


#: |privleak| at or beyond this (percent) reads as "every forget text told apart": AUC 0 (or 2 AUC_R), the metric's end.
PRIVLEAK_EXTREME = 99.5


def privleak_note(report: ReportDict) -> str | None:
    """What privleak's -100% means, in words, when an unlearned row shows it (it reads like a broken
    number, and is MUSE's convention for a model that still knows which texts it was trained on);
    None when no unlearned row is at that end."""
    rows = [r for r in report.get("rows", []) if r.get("model") == "unlearned" and r.get("status") != "skipped"]
    values = [(r.get("values") or {}).get("privleak") for r in rows]
    if not any(v is not None and float(v) <= -PRIVLEAK_EXTREME for v in values):
        return None
    ref: Mapping[str, Any] = dict(cast(Any, report.get("provenance", {})).get("privleak_reference") or {})
    auc, source = ref.get("auc"), ref.get("source")
    whose = {"retrain": "the retrain model's", "option": "the given reference", "default": "the default reference"}.get(
        str(source), "the reference"
    )
    ref_text = f"{whose} AUC ({float(auc):.2f})" if isinstance(auc, (int, float)) else f"{whose} AUC"
    return (
        "unlearn-assert: privleak -100% means the unlearned model still tells every forget text from every holdout "
        "text by its loss (forget-vs-holdout AUC 0): it still shows which texts it was trained on. privleak is "
        f"(AUC - AUC_R) / AUC_R with AUC_R {ref_text}, so 0% is retrain-like and |privleak| <= the budget passes."
    )


def _item_parts(item: str) -> tuple[str | None, str | None]:
    """("rtn-w4g128", "knowmem_f") from "test_budget[rtn-w4g128-knowmem_f]"; check names hold no "-"."""
    if "[" not in item or not item.endswith("]"):
        return None, None
    param = item[item.index("[") + 1 : -1]
    if "-" not in param:
        return None, param or None
    quantizer, check = param.rsplit("-", 1)
    return quantizer, check


def verdict_quantizer(v: Mapping[str, Any]) -> str | None:
    """The quantizer a verdict is about ("fp" for the full-precision check); parsed from the item id
    for minimal reports that only carry DESIGN's required keys."""
    return v.get("quantizer") or _item_parts(str(v.get("item", "")))[0]


def verdict_check(v: Mapping[str, Any]) -> str:
    return v.get("check") or _item_parts(str(v.get("item", "")))[1] or str(v.get("item", "?"))


def verdict_outcome(v: Mapping[str, Any]) -> str:
    """ "passed" / "failed" / "skipped", from ``outcome`` or, when absent, from ``passed``."""
    outcome = v.get("outcome")
    if outcome in ("passed", "failed", "skipped"):
        return str(outcome)
    passed = v.get("passed")
    return "skipped" if passed is None else ("passed" if passed else "failed")


def quantizer_order(report: ReportDict) -> list[str]:
    """fp first, then the user's order (settings.quantizers), then any other quantizer seen."""
    order = ["fp"]
    settings = report.get("provenance", {}).get("settings") or {}
    seen = [*settings.get("quantizers", []), *(r["quantizer"] for r in report.get("rows", []))]
    seen += [q for q in (verdict_quantizer(v) for v in report.get("verdicts", [])) if q]
    for q in seen:
        if q not in order:
            order.append(q)
    return order


def ordered_rows(report: ReportDict) -> list[RowDict]:
    """Unlearned rows (fp, then each quantizer), then the references: target fp, q(T), retrain."""
    qrank = {q: i for i, q in enumerate(quantizer_order(report))}
    mrank = {m: i for i, m in enumerate(ROLES)}
    return sorted(
        report.get("rows", []), key=lambda r: (mrank.get(r["model"], len(mrank)), qrank.get(r["quantizer"], len(qrank)))
    )


def aggregate_verdict(verdicts: Sequence[VerdictDict], quantizer: str) -> str:
    """FAIL if any check of this quantizer failed, SKIP if all were skipped, PASS otherwise; "-" if none."""
    outcomes = [verdict_outcome(v) for v in verdicts if verdict_quantizer(v) == quantizer]
    if not outcomes:
        return "-"
    if "failed" in outcomes:
        return "FAIL"
    return "SKIP" if all(o == "skipped" for o in outcomes) else "PASS"


def failed_checks(report: ReportDict, quantizer: str) -> tuple[str, ...]:
    """The checks of one quantizer's row that failed (a forget metric by its short name: vm, km) in the report's
    metric order, ``utility`` last: a FAIL row names what failed, so a reader never takes a privleak failure for a
    recovery failure."""
    failed = {
        verdict_check(v)
        for v in report.get("verdicts", [])
        if verdict_quantizer(v) == quantizer and verdict_outcome(v) == "failed"
    }
    metrics = report_metrics(report)
    order = {str(m["name"]): i for i, m in enumerate(metrics)}
    short = {str(m["name"]): str(m.get("short") or m["name"]) for m in metrics if m.get("role") == "forget"}
    return tuple(short.get(c, c) for c in sorted(failed, key=lambda c: (order.get(c, len(order)), c)))


def verdict_cell(verdict: str, failed: Sequence[str]) -> str:
    """ "FAIL: km, privleak" for a failing row, else the verdict itself."""
    return f"{verdict}: {', '.join(failed)}" if verdict == "FAIL" and failed else verdict


def _compact(reason: str, width: int = SKIP_REASON_WIDTH) -> str:
    reason = one_line(reason) or "no reason given"
    return reason if len(reason) <= width else reason[: width - 3].rstrip() + "..."


def table_rows(report: ReportDict) -> list[TableRow]:
    """The summary table as display strings, in display order (shared by terminal and HTML)."""
    verdicts = report.get("verdicts", [])
    columns = metric_columns(report)
    units = {m["name"]: str(m.get("unit", "")) for m in report_metrics(report)}
    out: list[TableRow] = []
    for row in ordered_rows(report):
        values = row.get("values") or {}
        verdict = aggregate_verdict(verdicts, row["quantizer"]) if row["model"] == "unlearned" else "-"
        skip_reason: str | None = None
        if row.get("status") == "skipped":
            skip_reason = one_line(row.get("skip_reason") or "") or "no reason given"
            # in the left-aligned recovery column, so the right-aligned number columns stay narrow
            metric_cells = (*("" for _ in columns), "skipped: " + _compact(skip_reason), "")
        else:
            metric_cells = (
                *(fmt_value(values.get(m), units.get(m, "")) for m in columns),
                fmt_recovery(row.get("recovery"), row.get("recovery_ci"), report),
                fmt_pct(row.get("code_agreement")),
            )
        failed = failed_checks(report, row["quantizer"]) if verdict == "FAIL" else ()
        cells = (row["model"], row["quantizer"], *metric_cells, verdict_cell(verdict, failed))
        out.append(TableRow(row=row, cells=cells, verdict=verdict, skip_reason=skip_reason, failed=failed))
    return out


# --------------------------------------------------------------------------- public renderers


def render_table(report: ReportDict, *, color: bool = False) -> str:
    """The summary table as plain text (tabulate "simple"); ``color`` adds ANSI colors to verdicts."""
    body = []
    for tr in table_rows(report):
        cells = list(tr.cells)
        if color and tr.verdict in _ANSI:
            cells[-1] = f"{_ANSI[tr.verdict]}{tr.verdict}{_RESET}" + cells[-1][len(tr.verdict) :]
        body.append(cells)
    columns = metric_columns(report)
    headers = (*LEAD_HEADERS, *columns, *TAIL_HEADERS)
    align = ("left", "left", *("right" for _ in columns), "left", "right", "left")
    return tabulate(body, headers=headers, tablefmt="simple", colalign=align, disable_numparse=True)


def render_failures(report: ReportDict) -> list[str]:
    """One line per failed budget check: the item id and its message."""
    return [
        f"FAILED {v.get('item', '?')}: {one_line(v.get('message', ''))}"
        for v in report.get("verdicts", [])
        if verdict_outcome(v) == "failed"
    ]


#: (label, count keys) of the evaluated splits, in the table's column order; privleak is forget/holdout(/retain).
COUNT_LABELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("verbmem", ("verbmem_forget",)),
    ("knowmem_f", ("knowmem_forget_qa",)),
    ("knowmem_r", ("knowmem_retain_qa",)),
    ("privleak", ("privleak_forget", "privleak_holdout")),
)


def counts_line(report: ReportDict) -> str | None:
    """The evaluated items per split, for the summary's header, e.g. "evaluated items: verbmem 100,
    knowmem_f 100, knowmem_r 100, privleak 100/100 (forget/holdout)", so a number in the table can be
    read against the size of the split it averages (and a --unlearn-max-samples cut is visible).
    None when the report carries no counts."""
    provenance = report.get("provenance") or {}
    counts = (provenance.get("data") or {}).get("counts") or {}
    parts = []
    labels = COUNT_LABELS if not provenance.get("benchmark") else tuple((k, (k,)) for k in counts)
    for label, keys in labels:
        values = [counts.get(k) for k in keys]
        if any(v is not None for v in values):
            suffix = " (forget/holdout)" if len(keys) > 1 else ""
            parts.append(f"{label} {'/'.join('-' if v is None else str(v) for v in values)}{suffix}")
    if not parts:
        return None
    line = "evaluated items: " + ", ".join(parts)
    max_samples = (provenance.get("settings") or {}).get("max_samples")
    if max_samples:
        line += f"; at most {max_samples} per split (--unlearn-max-samples)"
    return line


def compute_line(report: ReportDict) -> str | None:
    """How the numbers were computed, for the summary's header, e.g. "computed in float32 on CPU
    (AVX2, no native bf16)": the dtype depends on the machine under ``--unlearn-dtype auto``."""
    dtypes = sorted({str(r.get("dtype")) for r in report.get("rows", []) if r.get("dtype")})
    machine: dict[str, Any] = dict(cast(Any, report.get("provenance", {})).get("machine") or {})
    cpu: dict[str, Any] = dict(machine.get("cpu") or {})
    if not dtypes:
        return None
    where = f"on {machine['cuda']}" if machine.get("cuda") else "on CPU"
    if cpu and not machine.get("cuda"):
        where += f" ({cpu.get('cpu_capability')}, {'native' if cpu.get('native_bf16') else 'no native'} bf16)"
    return f"computed in {', '.join(dtypes)} {where}"


def summary_line(report: ReportDict) -> str:
    """One line for the end of a run, e.g. "unlearn-assert: 3 of 12 budget checks failed
    (rtn-w4g128: knowmem_f, verbmem_f; fp: knowmem_f)"."""
    verdicts = report.get("verdicts", [])
    if not verdicts:
        return "unlearn-assert: no budget checks ran"
    outcomes = [verdict_outcome(v) for v in verdicts]
    n_failed, n_skipped = outcomes.count("failed"), outcomes.count("skipped")
    skipped = f", {n_skipped} skipped" if n_skipped else ""
    if not n_failed:
        n_passed = len(verdicts) - n_skipped
        return f"unlearn-assert: {n_passed} of {len(verdicts)} budget checks passed{skipped}"
    failed_by_q: dict[str, list[str]] = {}
    for v, outcome in zip(verdicts, outcomes):
        if outcome == "failed":
            failed_by_q.setdefault(verdict_quantizer(v) or "?", []).append(verdict_check(v))
    qrank = {q: i for i, q in enumerate(quantizer_order(report))}
    groups = "; ".join(
        f"{q}: {', '.join(checks)}"
        for q, checks in sorted(failed_by_q.items(), key=lambda kv: qrank.get(kv[0], len(qrank)))
    )
    return f"unlearn-assert: {n_failed} of {len(verdicts)} budget checks failed ({groups}){skipped}"
