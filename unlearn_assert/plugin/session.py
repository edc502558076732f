"""UnlearnSession: the pytest-side state of one run, kept in ``config.stash``, and nothing more.

It holds the validated run, this process's gate (made when the first item needs it, on this process's
share of the machine: :func:`unlearn_assert.scaleout.workers.divide_machine`), and the two ends of the
results channel: the :class:`~.channel.Outbox` every process sends its rows and verdicts through, and,
on the controller, the :class:`~.channel.Inbox` they arrive in and the :class:`~.writer.ReportWriter`
that builds the report from it.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ..config import RunConfig
from .channel import PAYLOAD_ATTR, Inbox, Outbox
from .internal import internal_error
from .writer import ReportWriter

if TYPE_CHECKING:  # pragma: no cover
    from ..data.muse import MuseData
    from ..engine import Gate, GateView, Verdict

__all__ = ["UnlearnSession", "is_xdist_worker"]


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class UnlearnSession:
    """The run config, this process's gate (lazy), and the channel of results (see the module docstring)."""

    def __init__(self, config: pytest.Config, run: RunConfig) -> None:
        self.config = config
        self.run = run
        self._gate: Gate | None = None
        #: a directory the workers of an xdist run share (set by the unlearn_session fixture on workers)
        self.shared_dir: Path | None = None
        #: how this process uses the machine (threads, device), sent to the controller once
        self.execution: dict[str, Any] | None = None
        #: where the run computes its rows (the controller's decision, :mod:`unlearn_assert.scaleout.placement`)
        self.placement: dict[str, Any] = {}
        #: problems that change no outcome (a cache entry not written), sent to the controller's summary
        self.warnings: list[str] = []
        self.outbox = Outbox()
        self.inbox = Inbox()
        self.writer = ReportWriter(run, self.inbox, self._data)

    # ------------------------------------------------------------------ this process's gate

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            from ..cache import ResultCache
            from ..engine import Gate
            from ..scaleout.workers import divide_machine

            cache_dir = self.run.cache_dir
            if cache_dir is None and getattr(self.config, "cache", None) is not None:
                cache_dir = str(self.config.cache.mkdir("unlearn-assert"))
            workerinput = getattr(self.config, "workerinput", None)
            placement = self.placement or None
            device, self.execution = divide_machine(self.run.device, self.run.devices, workerinput, placement)
            cache = ResultCache(cache_dir, enabled=not self.run.no_cache, on_write_error=self.warn)
            self._gate = Gate(self.run, cache, progress=self.progress, shared=self.shared_dir, device=device)
        return self._gate

    @property
    def view(self) -> GateView:
        """What the fixtures see of the gate (data, models, variants, measurements)."""
        return self.gate.view

    def check(self, variant: str, check: str, budget: Any = None) -> Verdict:
        """Run one budget item (loading, quantizing and evaluating only what it needs)."""
        return self.gate.check(variant, check, budget)

    def warn(self, message: str) -> None:
        """A problem that changes no outcome: one line in the summary (from a worker, with the next test report)."""
        self.warnings.append(message)

    def internal_error(self, exc: BaseException, item: str) -> str:
        """The one line for an internal error raised while running ``item``, naming the row being computed."""
        computing = self._gate.computing if self._gate is not None else None
        what = (
            f"while computing the row {computing[0]} {computing[1]} for {item}"
            if computing
            else f"while judging {item}"
        )
        return internal_error(self.config, exc, what)

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

    @property
    def computed(self) -> bool:
        """True once this process made its gate (so it imported torch and loaded models)."""
        return self._gate is not None

    def close(self) -> None:
        if self._gate is not None:
            self._gate.close()

    # ------------------------------------------------------------------ the results channel

    def payload(self, verdict: Verdict | None) -> str | None:
        """What this process has not sent yet (rows, the item's verdict, its execution, warnings), as JSON."""
        if self._gate is None and verdict is None:
            return None
        rows = self._gate.rows if self._gate is not None else {}
        return self.outbox.payload(rows, verdict, self.execution, self.warnings)

    def receive(self, report: pytest.TestReport) -> None:
        """Controller: merge what a test report carried."""
        self.inbox.receive(getattr(report, PAYLOAD_ATTR, None))

    def _data(self) -> MuseData | None:
        """The data for the report: this process's when it ran the gate (an xdist controller did not: read it, as the
        run's benchmark reads it)."""
        from ..benchmark import benchmark_for
        from ..errors import UnlearnAssertError

        try:
            if self._gate is not None:
                return self._gate.view.data
            return benchmark_for(self.run).load(str(self.run.data)).limited(self.run.max_samples)
        except UnlearnAssertError:  # the data error was already reported by the items
            return None
