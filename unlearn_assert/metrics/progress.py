"""Progress inside a long computation: items done out of the total, the time so far and the expected
remainder, at most one line per :data:`EVERY` seconds (issue 31).

Why: a MUSE split of 100 items takes about 20 minutes per row on a CPU, and a CI log that says
``evaluate unlearned fp`` and then nothing for 20 minutes looks hung (CI systems kill jobs that
print nothing for 10). Why at most one line per 30 s: so the same CI log stays readable. A
computation shorter than 30 s prints nothing.

The metrics call :meth:`Meter.update` often (every decode step, every forward of privleak); a line
is printed by the first update at least 30 s after the start and after the last line, so lines
come every 30 s plus at most one forward pass. The clock is injectable (tests drive a fake one).
Training runs (unlearning, relearning) print their own step lines; :class:`StepLog` decides which
are due: every ``log_every`` steps while the run is short, at most one per 30 s once it is
expected to take longer, and always the last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["EVERY", "Meter", "StepLog", "duration"]

#: Seconds between two progress lines, at least; and before the first (read when a meter starts).
EVERY = 30.0


def duration(seconds: float) -> str:
    """A duration for a log line: ``45 s``, ``3m05s``, ``1h02m``."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Meter:
    """Progress of ``total`` items of one computation (``what``), reported through ``say``.

    ``update(done)`` takes the items done so far (fractions while a batch is under way); the line
    shows the whole items done, the elapsed time and the remainder expected at the rate so far:
    ``verbmem_f: 37/100 forget passages, 1m05s elapsed, about 1m50s left``. Without ``say`` it does
    nothing (and costs one comparison per update)."""

    def __init__(
        self,
        say: Callable[[str], None] | None,
        what: str,
        total: int,
        unit: str = "items",
        *,
        every: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.say, self.what, self.total, self.unit = say, what, int(total), unit
        self.every = EVERY if every is None else float(every)
        self.clock = clock or time.monotonic
        self.done = 0.0
        self.lines = 0
        self.start = self.clock() if say is not None else 0.0
        self._last = self.start

    def update(self, done: float | None = None) -> None:
        """Record ``done`` items (None: no new item, only look at the clock) and print a line if due."""
        if self.say is None:
            return
        if done is not None:
            self.done = min(max(self.done, float(done)), float(self.total))
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self.lines += 1
            self.say(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.start
        left = elapsed * (self.total - self.done) / self.done if self.done > 0 else math.inf
        whole = math.floor(self.done + 1e-9)
        return (
            f"{self.what}: {whole}/{self.total} {self.unit}, {duration(elapsed)} elapsed, about {duration(left)} left"
        )


class StepLog:
    """Which step lines of a training run to print: step ``log_every`` and its multiples while the
    run is expected to take at most :data:`EVERY` seconds (its rate so far times its steps), then
    at most one per :data:`EVERY` seconds (still on a multiple of ``log_every``), and the last step
    always. :meth:`left` is the expected remainder for the line."""

    def __init__(
        self, steps: int, log_every: int, *, every: float | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        self.steps, self.log_every = int(steps), max(1, int(log_every))
        self.every = EVERY if every is None else float(every)
        self.clock = clock or time.monotonic
        self.start = self.clock()
        self._last: float | None = None

    def due(self, step: int) -> bool:
        now = self.clock()
        if step == self.steps:
            return True
        if step % self.log_every:
            return False
        elapsed = now - self.start
        long_run = elapsed / max(step, 1) * self.steps > self.every
        if long_run and self._last is not None and now - self._last < self.every:
            return False
        if long_run and self._last is None and elapsed < self.every:
            return False
        self._last = now
        return True

    def left(self, step: int) -> str:
        """The expected remainder after ``step`` steps, at the rate so far: ``about 3m05s left``."""
        elapsed = self.clock() - self.start
        return f"about {duration(elapsed / max(step, 1) * (self.steps - step))} left"
