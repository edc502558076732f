"""UnlearnSession: the pytest-side state of one run, kept in ``config.stash``.

Why rows travel on test reports: under xdist every worker is its own session with its own engine.
Each worker attaches the rows it computed (once each) and each item's verdict to that item's test
report as a JSON string; reports are serialised to the controller by xdist (plain data only), and
the controller merges them. In a serial run the same path is taken, so the two cannot drift.
Report files are written by the controller only.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import pytest

from .config import RunConfig

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Gate, Verdict
    from .report.schema import ReportDict

PAYLOAD_ATTR = "unlearn_assert_payload"


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class UnlearnSession:
    """Holds the run config, the (lazy) gate on this process, and the merged results."""

    def __init__(self, config: pytest.Config, run: RunConfig) -> None:
        self.config = config
        self.run = run
        self._gate: Gate | None = None
        self._shipped: set[tuple[str, str]] = set()
        # controller side: what the reports carried, as plain data
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.report: ReportDict | None = None
        self.written: list[str] = []
        self.errors: list[str] = []

    # ------------------------------------------------------------------ the gate (worker or serial)

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            from .cache import ResultCache
            from .engine import Gate

            cache_dir = self.run.cache_dir
            if cache_dir is None and getattr(self.config, "cache", None) is not None:
                cache_dir = str(self.config.cache.mkdir("unlearn-assert"))
            self._gate = Gate(self.run, ResultCache(cache_dir, enabled=not self.run.no_cache), progress=self.progress)
        return self._gate

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()

    def progress(self, message: str) -> None:
        """One short line per phase, shown without ``-s`` and silent under ``-q``/on xdist workers."""
        if self.config.option.verbose < 0 or is_xdist_worker(self.config):
            return
        reporter = self.config.pluginmanager.getplugin("terminalreporter")
        if reporter is None:
            return
        capman = self.config.pluginmanager.getplugin("capturemanager")
        ctx = capman.global_and_fixture_disabled() if capman is not None else nullcontext()
        with ctx:
            reporter.ensure_newline()
            reporter.write_line(f"unlearn-assert: {message}")

    def check(self, quantizer: str, check: str, budget: Any = None) -> Verdict:
        """Run one budget check (loading, quantizing and evaluating only what it needs)."""
        return self.gate.check(quantizer, check, budget)

    def payload(self, verdict: Verdict | None) -> str | None:
        """Rows not yet shipped from this process (and the item's verdict), as JSON."""
        if self._gate is None and verdict is None:
            return None
        rows = []
        if self._gate is not None:
            for key, row in self._gate.rows.items():
                if key not in self._shipped:
                    self._shipped.add(key)
                    rows.append(row.to_dict())
        if not rows and verdict is None:
            return None
        return json.dumps({"rows": rows, "verdict": verdict.to_dict() if verdict else None})

    # ------------------------------------------------------------------ controller side

    def receive(self, report: pytest.TestReport) -> None:
        raw = getattr(report, PAYLOAD_ATTR, None)
        if not raw:
            return
        payload = json.loads(raw)
        for row in payload.get("rows", []):
            self.rows[(row["model"], row["quantizer"])] = row
        verdict = payload.get("verdict")
        if verdict:
            self.verdicts[verdict["item"]] = verdict

    def build_report(self) -> ReportDict | None:
        """The run's report from what the items' reports carried (the same builder ``ua.gate`` uses)."""
        if not self.rows and not self.verdicts:
            return None
        from .data import load_data
        from .engine import Row, Verdict, build_report
        from .errors import UnlearnAssertError

        try:  # this process's data when it ran the gate (xdist controller: it did not, so read it)
            data = self._gate.inputs.data if self._gate is not None else load_data(str(self.run.data)).limited(self.run.max_samples)
        except UnlearnAssertError:  # the data error was already reported by the items
            data = None
        rows = [Row.from_dict(r) for r in self.rows.values()]
        verdicts = [Verdict.from_dict(v) for v in self.verdicts.values()]
        self.report = build_report(self.run, rows, verdicts, data=data).to_dict()
        return self.report

    def write_reports(self) -> None:
        """Write --unlearn-json / --unlearn-html (controller only, atomically)."""
        if is_xdist_worker(self.config) or not (self.run.json or self.run.html):
            return
        report = self.build_report()
        if report is None:
            self.errors.append("no budget item ran, so no report was written")
            return
        from .report import write_html, write_json

        for path, writer in ((self.run.json, write_json), (self.run.html, write_html)):
            if path:
                try:
                    writer(report, path)
                    self.written.append(path)
                except OSError as exc:
                    self.errors.append(f"could not write {path}: {exc}")

    def terminal_summary(self, reporter: Any) -> None:
        """The summary table; never raises (a broken summary must not hide test outcomes)."""
        try:
            report = self.report or self.build_report()
            if report is None:
                return
            from .report.terminal import render_table, resolution_lines, summary_line

            reporter.write_sep("-", "unlearning budget summary")
            for line, warning in resolution_lines(report):  # up front: what the forget set can resolve at all
                reporter.write_line(line, yellow=warning)
            for line in render_table(report).splitlines():
                reporter.write_line(line)
            reporter.write_line(summary_line(report))
            for path in self.written:
                reporter.write_line(f"unlearn-assert: wrote {path}")
        except Exception as exc:  # noqa: BLE001 - report, never raise from the summary
            self.errors.append(f"could not render the summary: {type(exc).__name__}: {exc}")
        for err in self.errors:
            reporter.write_line(f"unlearn-assert: {err}", yellow=True)
