"""The HTML report: one self-contained file (inline CSS and SVG, no network, no JavaScript).

A release reviewer opens it from a CI artifact, often offline or behind a strict CSP, so nothing
is fetched: charts are inline SVG built here, and the full report is embedded as JSON for tools.
Everything that came from a model or a data set (generations, prompts, paths) is untrusted text:
the jinja2 environment autoescapes, the SVG helpers escape every string they place, and the JSON
blob has ``<``, ``>`` and ``&`` escaped so no string can close its ``<script>`` element.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from ..cache import atomic_write_text
from ..plain import plain
from .schema import ReportDict, RowDict, report_metrics
from .terminal import (
    LEAD_HEADERS,
    TAIL_HEADERS,
    fmt_num,
    metric_columns,
    one_line,
    ordered_rows,
    privleak_note,
    quantizer_order,
    resolution_lines,
    summary_line,
    table_rows,
    verdict_outcome,
)

TEMPLATE_DIR = Path(__file__).with_name("templates")
MAX_SAMPLES_SHOWN = 50  # per (row, metric): enough to eyeball, small enough to keep the file light
PROMPT_EXCERPT = 300  # characters; the end of a prompt is what the generation continues
_REF_STYLES = {"target": ("#c0392b", "6 3"), "retrain": ("#27ae60", "2 3"), "budget": ("#8e44ad", "4 2")}
#: The recovery charts' axis (percent) at most: -50% to 150% keeps a 25% budget line readable; what
#: lies beyond is clipped and marked (a 1000% interval end on a 20-point drop is noise, not a scale).
RECOVERY_AXIS = (-50.0, 150.0)
#: Marks of a clipped bar (a triangle at the edge it passes) and of a clipped interval end (an arrow and its value).
UP, DOWN, ARROW_UP, ARROW_DOWN = "\u25b2", "\u25bc", "\u2191", "\u2193"
#: An error bar: (lo, hi) on the chart's scale; hi None = unbounded above (drawn to the top, open).
ErrorBar = tuple[float, float | None]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """Autoescape is on for the whole template: any string may be hostile markup."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --------------------------------------------------------------------------- embedded JSON


def embed_json(report: Mapping[str, Any]) -> Markup:
    """The report as JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and
    ``&`` only occur inside JSON strings, where their \\u escapes decode to the same text."""
    text = json.dumps(plain(report), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


# --------------------------------------------------------------------------- SVG charts


def _nice_step(span: float, target_ticks: int = 5) -> float:
    raw = span / max(target_ticks, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def nice_ticks(lo: float, hi: float) -> list[float]:
    """Round tick values covering [lo, hi] (both included in the axis, 0 always inside)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-9:
        hi = lo + 1.0
    step = _nice_step(hi - lo)
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(start, stop + 1)]


def _tick_label(v: float) -> str:
    return f"{v:g}"


def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))


def bar_chart_svg(
    title: str,
    bars: Sequence[tuple[str, float | None]],
    refs: Sequence[tuple[str, float, str]],
    y_label: str,
    errors: Sequence[ErrorBar | None] | None = None,
    clip: tuple[float, float] | None = None,
) -> Markup:
    """A bar per (label, value) plus horizontal reference lines (label, value, role) with a legend,
    and an error bar per bar where ``errors`` gives one (its interval; an unbounded end is drawn to
    the top of the plot without a cap, marked "inf").

    ``clip = (lo, hi)`` limits the axis to at most that range (reference lines always stay inside):
    a bar or interval end beyond it is drawn to the plot's edge, without a cap, and marked with an
    arrow and its value, so that a few huge values cannot squeeze the budget line into a hair.

    Every string is escaped here because the result is inserted into the template as Markup.
    """
    width, height = 560, 280
    left, right, top, bottom = 60, 170, 30, 70
    pw, ph = width - left - right, height - top - bottom
    errs: list[ErrorBar | None] = list(errors) if errors is not None else [None] * len(bars)
    ref_values = [v for _, v, _ in refs if math.isfinite(v)]
    finite = [v for _, v in bars if v is not None and math.isfinite(v)] + ref_values
    finite += [x for e in errs if e is not None for x in e if x is not None and math.isfinite(x)]
    data_lo, data_hi = min(finite, default=0.0), max(finite, default=1.0)
    if clip is not None:
        data_lo = max(data_lo, min(clip[0], *ref_values))
        data_hi = min(data_hi, max(clip[1], *ref_values))
    ticks = nice_ticks(data_lo, data_hi)
    lo, hi = ticks[0], ticks[-1]
    clipped = False

    def y(v: float) -> float:
        return top + ph * (hi - min(max(v, lo), hi)) / (hi - lo)

    def beyond(v: float) -> bool:
        return v > hi or v < lo

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text class="chart-title" x="{left}" y="18">{escape(title)}</text>',
    ]
    for t in ticks:
        ty = y(t)
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{_tick_label(t)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    cx, cy = 14, top + ph / 2
    out.append(
        f'<text class="axis-label" x="{cx}" y="{cy:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 {cx} {cy:.1f})">{escape(y_label)}</text>'
    )
    slot = pw / max(len(bars), 1)
    bw = min(48.0, slot * 0.7)
    for i, (label, value) in enumerate(bars):
        bx = left + slot * i + (slot - bw) / 2
        mid = bx + bw / 2
        if value is None or not math.isfinite(value):
            out.append(f'<text class="bar-value" x="{mid:.1f}" y="{y(0) - 4:.1f}" text-anchor="middle">n/a</text>')
        else:
            y0, y1 = sorted((y(0), y(value)))
            cls = "bar fp" if i == 0 and label == "fp" else "bar"
            bar_clipped = beyond(value)
            clipped = clipped or bar_clipped
            cls += " clipped" if bar_clipped else ""
            note = " (beyond the axis: clipped)" if bar_clipped else ""
            out.append(
                f'<rect class="{cls}" x="{bx:.1f}" y="{y0:.1f}" width="{bw:.1f}" height="{max(y1 - y0, 0.5):.1f}">'
                f"<title>{escape(label)}: {fmt_num(value)}{note}</title></rect>"
            )
            vy = y(value) - 4 if value >= 0 else y(value) + 12
            if bar_clipped:  # the true value, inside the plot beside an arrow at the edge it passes
                up = value > hi
                out.append(
                    f'<text class="clip-mark" x="{mid:.1f}" y="{(top + 11) if up else (top + ph - 3):.1f}" '
                    f'text-anchor="middle">{UP if up else DOWN}</text>'
                )
                vy = top + 22 if up else top + ph - 14
            err = errs[i] if i < len(errs) else None
            if err is not None and math.isfinite(err[0]):
                err_hi = err[1]
                open_top = err_hi is None or not math.isfinite(err_hi)
                lo_cut, hi_cut = err[0] < lo, open_top or (err_hi is not None and err_hi > hi)
                clipped = clipped or lo_cut or (hi_cut and not open_top)
                y_lo, y_hi = y(err[0]), (top if err_hi is None or open_top else y(err_hi))
                cap = bw / 4
                hi_text = "inf" if open_top else fmt_num(err[1])
                cap_line = f'<line x1="{mid - cap:.1f}" x2="{mid + cap:.1f}" y1="{{0:.1f}}" y2="{{0:.1f}}"/>'
                out.append(
                    f'<g class="err"><title>{escape(label)}: interval [{fmt_num(err[0])}, {hi_text}]</title>'
                    f'<line x1="{mid:.1f}" x2="{mid:.1f}" y1="{y_lo:.1f}" y2="{y_hi:.1f}"/>'
                    + ("" if lo_cut else cap_line.format(y_lo))
                    + ("" if hi_cut else cap_line.format(y_hi))
                    + "</g>"
                )
                if hi_cut:  # an open or clipped upper end: its value at the top edge
                    text = "inf" if open_top else ARROW_UP + fmt_num(err_hi, 0)
                    out.append(f'<text class="err-open" x="{mid + 3:.1f}" y="{top + 9}">{text}</text>')
                if lo_cut:
                    text = ARROW_DOWN + fmt_num(err[0], 0)
                    out.append(f'<text class="err-open" x="{mid + 3:.1f}" y="{top + ph - 2:.1f}">{text}</text>')
                if not bar_clipped:
                    vy = min(vy, y_hi - 4) if value >= 0 else vy
            out.append(
                f'<text class="bar-value" x="{mid:.1f}" y="{vy:.1f}" text-anchor="middle">{fmt_num(value)}</text>'
            )
        ly = top + ph + 14
        out.append(
            f'<text class="bar-label" x="{mid:.1f}" y="{ly}" text-anchor="end" '
            f'transform="rotate(-30 {mid:.1f} {ly})">{escape(label)}</text>'
        )
    lx, legend_y = left + pw + 16, top + 8
    for j, (label, value, role) in enumerate(refs):
        color, dash = _REF_STYLES.get(role, ("#555", "4 2"))
        ry = y(value)
        out.append(
            f'<line class="ref" x1="{left}" x2="{left + pw}" y1="{ry:.1f}" y2="{ry:.1f}" '
            f'stroke="{color}" stroke-dasharray="{dash}"/>'
        )
        yy = legend_y + 18 * j
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="{yy}" y2="{yy}" stroke="{color}" stroke-width="2" '
            f'stroke-dasharray="{dash}"/>'
        )
        out.append(f'<text class="legend" x="{lx + 28}" y="{yy + 4}">{escape(label)} ({fmt_num(value)})</text>')
    if not refs:
        out.append(f'<text class="legend" x="{lx}" y="{legend_y + 4}">no reference rows</text>')
    if clipped:
        ny = legend_y + 18 * max(len(refs), 1) + 6
        out.append(
            f'<text class="legend clip-note" x="{lx}" y="{ny}">{UP}{ARROW_UP} beyond the axis</text>'
            f'<text class="legend clip-note" x="{lx}" y="{ny + 14}">(clipped; value shown)</text>'
        )
    out.append("</svg>")
    return Markup("\n".join(out))


def _metric(row: RowDict, metric: str) -> float | None:
    value: Any = dict(row.get("values") or {}).get(metric)
    return None if value is None else float(value)


def _error(bounds: Any, scale: float = 1.0) -> ErrorBar | None:
    """An interval from the report ([lo, hi], hi null or inf = unbounded) on a chart's scale."""
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or not _finite(bounds[0]):
        return None
    hi = bounds[1]
    return (float(bounds[0]) * scale, float(hi) * scale if hi is not None and math.isfinite(float(hi)) else None)


def recovery_charts(report: ReportDict) -> list[dict[str, Any]]:
    """One chart per forget metric: each variant's recovery (percent) with its paired interval as an
    error bar, and the recovery budget as a line; none for a report without recoveries."""
    rows = [
        r
        for r in ordered_rows(report)
        if r["model"] == "unlearned" and r["quantizer"] != "fp" and r.get("status") != "skipped" and r.get("recovery")
    ]
    if not rows:
        return []
    budget: Any = (report.get("provenance", {}).get("budgets") or {}).get("recovery")
    charts = []
    for metric in (m["name"] for m in report_metrics(report) if m.get("role") == "forget"):
        bars: list[tuple[str, float | None]] = []
        errors: list[ErrorBar | None] = []
        for r in rows:
            value: Any = dict(r.get("recovery") or {}).get(metric)
            bars.append((r["quantizer"], None if value is None else float(value) * 100))
            errors.append(_error(dict(r.get("recovery_ci") or {}).get(metric), 100.0))
        refs = [("recovery budget", float(budget) * 100, "budget")] if _finite(budget) else []
        charts.append(
            {
                "metric": f"recovery-{metric}",
                "svg": bar_chart_svg(
                    f"{metric} recovery (paired interval)", bars, refs, "recovery (%)", errors, clip=RECOVERY_AXIS
                ),
            }
        )
    return charts


def metric_charts(report: ReportDict) -> list[dict[str, Any]]:
    """One chart per metric: the unlearned model per quantizer (fp first) with each row's interval as
    an error bar, target fp / retrain fp lines."""
    rows = ordered_rows(report)
    unlearned = [r for r in rows if r["model"] == "unlearned"]
    charts = []
    units = {m["name"]: str(m.get("unit", "")) for m in report_metrics(report)}
    for metric in metric_columns(report):
        bars: list[tuple[str, float | None]] = [
            (r["quantizer"], None if r.get("status") == "skipped" else _metric(r, metric)) for r in unlearned
        ]
        errors = [
            None if r.get("status") == "skipped" else _error(dict(r.get("ci") or {}).get(metric)) for r in unlearned
        ]
        refs = []
        for role in ("target", "retrain"):
            ref = next(
                (r for r in rows if r["model"] == role and r["quantizer"] == "fp" and r.get("status") != "skipped"),
                None,
            )
            value = _metric(ref, metric) if ref else None
            if value is not None and math.isfinite(value):
                refs.append((f"{role} fp", float(value), role))
        label = f"{metric} (%)" if units.get(metric) == "%" else units.get(metric, metric)
        charts.append({"metric": metric, "svg": bar_chart_svg(metric, bars, refs, label, errors)})
    return charts


# --------------------------------------------------------------------------- page sections


def _excerpt(text: Any, limit: int = PROMPT_EXCERPT) -> str:
    text = str(text or "")
    return text if len(text) <= limit else "\u2026" + text[-limit:]


def provenance_items(report: ReportDict) -> list[tuple[str, str]]:
    """(label, text) pairs for the provenance table; the template escapes both."""
    prov: Mapping[str, Any] = report.get("provenance") or {}
    items: list[tuple[str, str]] = [("created", str(report.get("created", "-")))]
    for key in ("unlearn_assert", "python", "torch", "transformers"):
        items.append((key, str(prov.get(key) or "-")))
    backends = prov.get("backends") or {}
    items.append(("backends", ", ".join(f"{k} {v or 'not installed'}" for k, v in backends.items()) or "-"))
    machine = prov.get("machine") or {}
    items.append(("machine", "; ".join(f"{k}: {v if v is not None else '-'}" for k, v in machine.items()) or "-"))
    for role, ref in (prov.get("models") or {}).items():
        items.append(
            (f"model: {role}", f"{ref.get('path')} (fingerprint {ref.get('fingerprint') or '-'})" if ref else "-")
        )
    data = prov.get("data") or {}
    counts = ", ".join(f"{k} {v}" for k, v in (data.get("counts") or {}).items())
    items.append(
        (
            "data",
            f"{data.get('path', '-')} (fingerprint {data.get('fingerprint') or '-'})"
            + (f"; {counts}" if counts else ""),
        )
    )
    budgets = dict(prov.get("budgets") or {})
    overrides = [o for o in budgets.pop("overrides", None) or [] if isinstance(o, dict)]
    text = ", ".join(f"{k} {v}" for k, v in budgets.items())
    if overrides:
        text += "; overrides: " + ", ".join(
            f"{o.get('key')}[{o.get('quantizer') or 'all'}] {o.get('value')}" for o in overrides
        )
    items.append(("budgets", text or "-"))
    settings = prov.get("settings") or {}

    def setting(v: Any) -> str:
        if isinstance(v, list):
            return ", ".join(map(str, v))
        if isinstance(v, dict):  # calibration, quantized checkpoints
            return json.dumps(plain(v), ensure_ascii=False) if v else "-"
        return "-" if v is None else str(v)

    items.append(("settings", "; ".join(f"{k}: {setting(v)}" for k, v in settings.items()) or "-"))
    shown = {
        "unlearn_assert",
        "python",
        "torch",
        "transformers",
        "backends",
        "machine",
        "models",
        "data",
        "budgets",
        "settings",
    }
    for key, value in prov.items():  # fields added later still show up, as compact JSON
        if key not in shown:
            items.append((key, value if isinstance(value, str) else json.dumps(plain(value), ensure_ascii=False)))
    return items


def _figure_number(figure: Any, x: Any) -> str:
    """A verdict's estimate, interval end or budget in its figure's unit ("inf" for an unbounded end)."""
    if x is None or (isinstance(x, float) and math.isinf(x)):
        return "inf"
    if figure in ("recovery", "utility"):
        return f"{float(x):.0%}"
    if figure == "privleak":
        return f"{float(x):+.1f}%"
    return fmt_num(x)


def interval_text(v: Mapping[str, Any]) -> str | None:
    """ "estimate 61%, interval [22%, 114%], budget 25%, undecided (n=48, 3 degenerate replicates)",
    for the verdict list; None for verdicts without an estimate (skipped items, old reports)."""
    figure = v.get("figure")
    estimate = v.get("estimate", v.get("value"))
    if estimate is None:
        return None
    parts = [f"estimate {_figure_number(figure, estimate)}"]
    ci = v.get("ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        parts.append(f"interval [{_figure_number(figure, ci[0])}, {_figure_number(figure, ci[1])}]")
    if v.get("budget") is not None:
        budget = _figure_number(figure, v["budget"])
        parts.append(
            f"{'floor' if figure == 'drop' else 'budget'} {'|privleak| <= ' if figure == 'privleak' else ''}"
            f"{budget.lstrip('+')}"
        )
    decided = v.get("decided")
    if decided is not None:
        detail = [f"n={v['n']}"] if v.get("n") is not None else []
        if v.get("degenerate"):
            detail.append(f"{v['degenerate']} degenerate replicates")
        parts.append(("decided" if decided else "undecided") + (f" ({', '.join(detail)})" if detail else ""))
    return ", ".join(parts)


def sorted_verdicts(report: ReportDict) -> list[dict[str, Any]]:
    """Failed first (what a reviewer must read), then passed, then skipped; stable within each."""
    rank = {"failed": 0, "passed": 1, "skipped": 2}
    out = [
        {**v, "outcome": verdict_outcome(v), "message": one_line(v.get("message", "")), "interval": interval_text(v)}
        for v in report.get("verdicts", [])
    ]
    return sorted(out, key=lambda v: rank[v["outcome"]])


def sample_sections(report: ReportDict) -> list[dict[str, Any]]:
    """Per (row, metric) sample tables, rows in table order, first MAX_SAMPLES_SHOWN records each."""
    samples: Mapping[str, Mapping[str, list[Any]]] = report.get("samples") or {}
    qrank = {q: i for i, q in enumerate(quantizer_order(report))}
    roles = ("unlearned", "target", "retrain")

    def key_rank(key: str) -> tuple[int, int, str]:
        model, _, quantizer = key.partition(":")
        return (roles.index(model) if model in roles else len(roles), qrank.get(quantizer, len(qrank)), key)

    sections = []
    for key in sorted(samples, key=key_rank):
        per_metric = samples[key]
        known = [m["name"] for m in report_metrics(report)]
        metric_order = [m for m in known if m in per_metric] + [m for m in per_metric if m not in known]
        for metric in metric_order:
            records = per_metric[metric]
            scores = [float(r["score"]) for r in records if isinstance(r.get("score"), (int, float))]
            sections.append(
                {
                    "key": key,
                    "metric": metric,
                    "total": len(records),
                    "mean": fmt_num(sum(scores) / len(scores)) if scores else "-",
                    "records": [
                        {
                            "id": r.get("id", i),
                            "prompt": _excerpt(r.get("prompt")),
                            "generation": _text(r.get("generation")),
                            "reference": _text(r.get("reference")),
                            "score": fmt_num(r.get("score")),
                        }
                        for i, r in enumerate(records[:MAX_SAMPLES_SHOWN])
                    ],
                }
            )
    return sections


def _text(value: Any) -> str:
    """A sample's text cell; records without one (privleak's scored texts have no generation) show "-"."""
    return "-" if value is None else str(value)


def render_html(report: ReportDict) -> str:
    """The whole report as one self-contained HTML page."""
    prov: Mapping[str, Any] = report.get("provenance") or {}
    models = prov.get("models") or {}
    paths = {role: (ref or {}).get("path") for role, ref in models.items()}
    verdicts = report.get("verdicts", [])
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=f"unlearn-assert report: {paths.get('unlearned') or '?'}",
            paths=paths,
            summary=summary_line(report),
            any_failed=any(verdict_outcome(v) == "failed" for v in verdicts),
            provenance=provenance_items(report),
            headers=(*LEAD_HEADERS, *metric_columns(report), *TAIL_HEADERS),
            table=table_rows(report),
            verdicts=sorted_verdicts(report),
            resolution=[line for line, _ in resolution_lines(report)],
            notes=[line for line in (privleak_note(report),) if line],
            charts=metric_charts(report) + recovery_charts(report),
            samples=sample_sections(report),
            max_samples=MAX_SAMPLES_SHOWN,
            report_json=embed_json(report),
        )
    )


def write_html(report: ReportDict, path: str | os.PathLike[str]) -> Path:
    """Render and write the HTML report atomically; returns the path written."""
    return atomic_write_text(path, render_html(report))
