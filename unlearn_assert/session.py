"""UnlearnSession: the pytest-side state of one run, kept in ``config.stash``.

Why rows travel on test reports: under xdist every worker is its own session with its own engine.
Each worker attaches the rows it computed (once each) and each item's verdict to that item's test
report as a JSON string; reports are serialised to the controller by xdist (plain data only), and
the controller merges them. In a serial run the same path is taken, so the two cannot drift.
Report files are written by the controller only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .config import RunConfig

if TYPE_CHECKING:  # pragma: no cover
    from .engine import Gate, Verdict
    from .report.schema import ReportDict

PAYLOAD_ATTR = "unlearn_assert_payload"
BUG_REPORT = "this is a bug in unlearn-assert; please report it with the JSON report"


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _log_traceback(config: pytest.Config, what: str, text: str) -> Path | None:
    """Append a traceback to ``internal-errors.log`` in pytest's cache dir (else the temp dir); None if
    that cannot be written either (the one-line message then points at -v)."""
    try:
        cache = getattr(config, "cache", None)
        folder = Path(cache.mkdir("unlearn-assert")) if cache is not None else Path(tempfile.gettempdir())
        log = folder / "internal-errors.log"
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: internal error {what}\n{text}\n")
        return log
    except Exception:  # noqa: BLE001 - the log is a convenience; never let it hide the error itself
        return None


def internal_error(config: pytest.Config, exc: BaseException, what: str) -> str:
    """One line for an exception that is not one of ours (an ``UnlearnAssertError`` names its own fix):
    what failed and why, that it is a bug, and where the traceback is. The full traceback goes to a
    log file, and into the message only with ``-v``."""
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())
    detail = detail if len(detail) <= 300 else detail[:297] + "..."
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log = _log_traceback(config, what, text)
    where = f"full traceback in {log} (or rerun with -v)" if log is not None else "rerun with -v for the full traceback"
    line = f"unlearn-assert: internal error {what} ({detail}); {BUG_REPORT}; {where}"
    return line + "\n" + text if config.option.verbose > 0 else line


class UnlearnSession:
    """Holds the run config, the (lazy) gate on this process, and the merged results."""

    def __init__(self, config: pytest.Config, run: RunConfig) -> None:
        self.config = config
        self.run = run
        self._gate: Gate | None = None
        self._shipped: set[tuple[str, str]] = set()
        #: a directory the workers of an xdist run share (set by the unlearn_session fixture on workers)
        self.shared_dir: Path | None = None
        #: how this process uses the machine (threads, device), shipped to the controller once
        self.execution: dict[str, Any] | None = None
        self._execution_shipped = False
        self.workers: dict[str, dict[str, Any]] = {}  # controller: each process's execution info
        # controller side: what the reports carried, as plain data
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.report: ReportDict | None = None
        self.written: list[str] = []
        self.errors: list[str] = []
        self._errors_shipped = 0

    # ------------------------------------------------------------------ the gate (worker or serial)

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            from .cache import ResultCache
            from .engine import Gate

            cache_dir = self.run.cache_dir
            if cache_dir is None and getattr(self.config, "cache", None) is not None:
                cache_dir = str(self.config.cache.mkdir("unlearn-assert"))
            device = self._divide_the_machine()
            cache = ResultCache(cache_dir, enabled=not self.run.no_cache, on_write_error=self.warn)
            self._gate = Gate(self.run, cache, progress=self.progress, shared=self.shared_dir, device=device)
        return self._gate

    def _divide_the_machine(self) -> str:
        """On an xdist worker: its share of the cores and its GPU (:mod:`.workers`); recorded for provenance."""
        import torch

        from .workers import apply_thread_budget, worker_device, worker_index

        workerinput = getattr(self.config, "workerinput", None) or {}
        worker_id = workerinput.get("workerid")
        workers = int(workerinput.get("workercount", 1) or 1)
        device = worker_device(self.run.device, self.run.devices, worker_index(worker_id),
                               torch.cuda.device_count() if torch.cuda.is_available() else 0)
        self.execution = {"worker": worker_id or "main", "workers": workers, "threads": apply_thread_budget(workers), "device": device}
        return device


    def warn(self, message: str) -> None:
        """A problem that changes no outcome (a cache entry not written): one line in the summary (from
        an xdist worker, it travels to the controller with the next test report)."""
        self.errors.append(message)

    def internal_error(self, exc: BaseException, item: str) -> str:
        """The one line for an internal error raised while running ``item`` (see :func:`internal_error`),
        naming the row the gate was computing."""
        computing = getattr(self._gate, "computing", None)
        what = f"while computing the row {computing[0]} {computing[1]} for {item}" if computing else f"while judging {item}"
        return internal_error(self.config, exc, what)

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
        execution = None
        if self.execution is not None and not self._execution_shipped:
            execution, self._execution_shipped = self.execution, True
        errors = self.errors[self._errors_shipped:] if is_xdist_worker(self.config) else []
        self._errors_shipped = len(self.errors)
        if not rows and verdict is None and execution is None and not errors:
            return None
        return json.dumps({"rows": rows, "verdict": verdict.to_dict() if verdict else None, "execution": execution, "errors": errors})

    # ------------------------------------------------------------------ controller side

    def receive(self, report: pytest.TestReport) -> None:
        raw = getattr(report, PAYLOAD_ATTR, None)
        if not raw:
            return
        payload = json.loads(raw)
        for row in payload.get("rows", []):
            key = (row["model"], row["quantizer"])
            known = self.rows.get(key)
            if known is None or (known.get("cached") and not row.get("cached")):  # the worker that computed it tells it best
                self.rows[key] = row
        execution = payload.get("execution")
        if execution:
            self.workers[str(execution.get("worker"))] = execution
        verdict = payload.get("verdict")
        if verdict:
            self.verdicts[verdict["item"]] = verdict
        self.errors.extend(e for e in payload.get("errors", []) if e not in self.errors)

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
        execution = [self.workers[w] for w in sorted(self.workers)] or None
        self.report = build_report(self.run, rows, verdicts, data=data, execution=execution).to_dict()
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
                except OSError as exc:  # atomic: no partial file is left, and an earlier report stays
                    self.errors.append(f"could not write {path} ({exc.strerror or exc}); free disk space or choose another path")

    def terminal_summary(self, reporter: Any) -> None:
        """The summary table; never raises (a broken summary must not hide test outcomes)."""
        try:
            report = self.report or self.build_report()
            if report is None:
                return
            from .report import terminal
            from .report.terminal import compute_line, counts_line, render_table, resolution_lines, summary_line

            reporter.write_sep("-", "unlearning budget summary")
            for line in (counts_line(report), compute_line(report)):
                if line:
                    reporter.write_line(line)
            for line, warning in resolution_lines(report):  # up front: what the forget set can resolve at all
                reporter.write_line(line, yellow=warning)
            for line in render_table(report).splitlines():
                reporter.write_line(line)
            note = terminal.privleak_note(report)
            if note:
                reporter.write_line(note)
            reporter.write_line(summary_line(report))
            for path in self.written:
                reporter.write_line(f"unlearn-assert: wrote {path}")
        except Exception as exc:  # noqa: BLE001 - report, never raise from the summary
            self.errors.append(f"could not render the summary: {type(exc).__name__}: {exc}")
        finally:  # the warnings show even when there is no table
            for err in self.errors:
                reporter.write_line(f"unlearn-assert: {err}", yellow=True)
