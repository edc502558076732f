"""The controller's report: built once from what the items' test reports carried, written to files, and
summarised in the terminal.

Why the controller only: under xdist each worker holds part of the rows; the controller has them all
(:class:`~.channel.Inbox`), so it alone builds the report (with the same builder ``ua.gate`` uses) and
writes it, atomically. The summary never raises: a broken summary must not hide test outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .channel import Inbox

if TYPE_CHECKING:  # pragma: no cover
    from ..config import RunConfig
    from ..data.muse import MuseData
    from ..render.schema import ReportDict

__all__ = ["ReportWriter"]


class ReportWriter:
    """Builds, writes and summarises the run's report from an :class:`~.channel.Inbox`."""

    def __init__(self, run: RunConfig, inbox: Inbox, data: Callable[[], MuseData | None]) -> None:
        self.run = run
        self.inbox = inbox
        self._data = data
        self.report: ReportDict | None = None
        #: the report files written, for the summary
        self.written: list[str] = []

    def warn(self, message: str) -> None:
        """A problem that changes no outcome: one line in the summary."""
        if message not in self.inbox.warnings:
            self.inbox.warnings.append(message)

    def build(self) -> ReportDict | None:
        """The run's report (None when no item ran), built once."""
        if self.report is None and not self.inbox.empty:
            from ..engine import Row, Verdict, build_report

            rows = [Row.from_dict(r) for r in self.inbox.rows.values()]
            verdicts = [Verdict.from_dict(v) for v in self.inbox.verdicts.values()]
            execution = [self.inbox.workers[w] for w in sorted(self.inbox.workers)] or None
            self.report = build_report(self.run, rows, verdicts, data=self._data(), execution=execution).to_dict()
        return self.report

    def write(self) -> None:
        """Write --unlearn-json / --unlearn-html (atomically: no partial file, and an earlier report stays)."""
        if not (self.run.json or self.run.html):
            return
        report = self.build()
        if report is None:
            self.warn("no budget item ran, so no report was written")
            return
        from ..render import write_html, write_json

        for path, writer in ((self.run.json, write_json), (self.run.html, write_html)):
            if path:
                try:
                    writer(report, path)
                    self.written.append(path)
                except OSError as exc:
                    self.warn(f"could not write {path} ({exc.strerror or exc}); free disk space or choose another path")

    def terminal_summary(self, reporter: Any) -> None:
        """The summary table, the resolution lines and the warnings; never raises."""
        try:
            report = self.build()
            if report is None:
                return
            from ..render.terminal import (
                compute_line,
                counts_line,
                privleak_note,
                render_table,
                resolution_lines,
                summary_line,
            )

            reporter.write_sep("-", "unlearning budget summary")
            for line in (counts_line(report), compute_line(report)):
                if line:
                    reporter.write_line(line)
            for line, yellow in resolution_lines(report):  # up front: what the forget set can resolve at all
                reporter.write_line(line, yellow=yellow)
            for line in render_table(report).splitlines():
                reporter.write_line(line)
            note = privleak_note(report)
            if note:  # MUSE's -100% reads like a broken number: say what it means
                reporter.write_line(note)
            reporter.write_line(summary_line(report))
            for path in self.written:
                reporter.write_line(f"unlearn-assert: wrote {path}")
            from ..unlearning.remediation import remediation_line

            fix = remediation_line(report, self.run.model)
            if fix:  # last: the command that addresses the failing 4-bit recovery items
                reporter.write_line(fix, yellow=True)
        except Exception as exc:  # noqa: BLE001 - report, never raise from the summary
            self.warn(f"could not render the summary: {type(exc).__name__}: {exc}")
        finally:  # the warnings show even when there is no table
            for warning in self.inbox.warnings:
                reporter.write_line(f"unlearn-assert: {warning}", yellow=True)
