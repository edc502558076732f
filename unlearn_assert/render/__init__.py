"""Reports of a gate run: the versioned JSON schema, the terminal table and the HTML page.

Everything here reads one plain-data report dict (see :mod:`.schema`) and never imports torch, so
``unlearn-assert report`` works anywhere the JSON file can be copied to.
"""

from __future__ import annotations

from typing import Any

from .schema import (
    SCHEMA_VERSION,
    ReportDict,
    ReportError,
    RowDict,
    SampleRecord,
    VerdictDict,
    load_report,
    validate_report,
    write_json,
)
from .terminal import compute_line, counts_line, render_failures, render_table, resolution_lines, summary_line

_LAZY_HTML = ("render_html", "write_html")  # jinja2 is imported only when HTML is asked for

__all__ = [
    "SCHEMA_VERSION",
    "ReportDict",
    "ReportError",
    "RowDict",
    "SampleRecord",
    "VerdictDict",
    "compute_line",
    "counts_line",
    "load_report",
    "render_failures",
    "render_html",
    "render_table",
    "resolution_lines",
    "summary_line",
    "validate_report",
    "write_html",
    "write_json",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_HTML:
        from . import html

        return getattr(html, name)
    raise AttributeError(f"module 'unlearn_assert.render' has no attribute '{name}'")
