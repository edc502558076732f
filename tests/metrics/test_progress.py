"""Progress inside a long row (issue 31): a metric that runs longer than 30 s reports the items done,
the time so far and the expected remainder, at most one line per 30 s, through the progress
channel the gate prints; training runs thin their step lines the same way once they run long.

The clock is a fake one (``Clock``): a "slowed" metric is one whose clock advances by seconds per
item or per forward, so the tests take no real time.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from unlearn_assert.metrics.progress import Meter, StepLog, duration

LINE = re.compile(
    r"^(?P<what>[\w ]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>[a-z ]+), "
    r"(?P<elapsed>\S+(?: s)?) elapsed, about (?P<left>\S+(?: s)?) left$"
)


class Clock:
    """A fake monotonic clock: ``now`` seconds; each call advances it by ``tick`` (a forward's time)."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_duration() -> None:
    assert [duration(s) for s in (0, 45, 59.6, 185, 3599, 3720, math.inf)] == [
        "0 s",
        "45 s",
        "1m00s",
        "3m05s",
        "59m59s",
        "1h02m",
        "?",
    ]


def test_a_slowed_metric_reports_counts_and_remainder_at_most_every_30_s() -> None:
    """100 items of 7 s each: the first line after 30 s, then one per 30 s (plus at most one item's
    7 s), each with the items done at that moment and the remainder at the rate so far."""
    clock = Clock()
    lines: list[tuple[float, str]] = []
    meter = Meter(lambda line: lines.append((clock.now, line)), "verbmem_f", 100, "forget passages", clock=clock)
    start = clock.now
    for item in range(1, 101):
        clock.now += 7.0
        meter.update(item)
    times = [t - start for t, _ in lines]
    assert times[0] == 35.0 and lines[0][1] == "verbmem_f: 5/100 forget passages, 35 s elapsed, about 11m05s left"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(30.0 <= g <= 37.0 for g in gaps), gaps
    assert len(lines) == 20 and meter.lines == 20  # 700 s in lines 35 s apart
    for t, line in zip(times, (line for _, line in lines)):
        m = LINE.match(line)
        assert m is not None, line
        done = int(t // 7)
        assert int(m["done"]) == done and int(m["total"]) == 100 and m["unit"] == "forget passages"
        assert m["elapsed"] == duration(t) and m["left"] == duration(t / done * (100 - done))


def test_batches_count_in_proportion_and_a_short_metric_is_silent() -> None:
    clock = Clock()
    lines: list[str] = []
    meter = Meter(lines.append, "knowmem_f", 100, "forget questions", clock=clock)
    for batch in range(4):  # 4 batches of 25 questions, 32 decode steps of 2 s each
        for step in range(1, 33):
            clock.now += 2.0
            meter.update(batch * 25 + 25 * step / 32)
    # at 30 s, step 15 of the first batch: 25 * 15/32 = 11.72 questions done, 30 / 11.72 * 88.28 = 226 s to go
    assert lines[0] == "knowmem_f: 11/100 forget questions, 30 s elapsed, about 3m46s left"
    assert all(int(LINE.match(line)["done"]) <= 100 for line in lines)  # type: ignore[index]
    quiet: list[str] = []
    short = Meter(quiet.append, "privleak", 20, clock=(fast := Clock()))
    for i in range(20):
        fast.now += 1.4
        short.update(i + 1)
    assert quiet == []  # 28 s: no line

    def no_clock() -> float:
        raise AssertionError("a meter without a progress channel must not even read the clock")

    Meter(None, "verbmem_f", 10, clock=no_clock).update(3)


def test_training_step_lines_thin_out_once_the_run_is_long() -> None:
    short = StepLog(5, 2, clock=(clock := Clock(tick=0.1)))
    assert [step for step in range(1, 6) if short.due(step)] == [2, 4, 5]  # as before: every log_every, and the last
    long_clock = Clock()
    log = StepLog(1000, 10, clock=long_clock)
    printed = []
    for step in range(1, 1001):
        long_clock.now += 1.0
        if log.due(step):
            printed.append((step, long_clock.now, log.left(step)))
    steps = [p[0] for p in printed]
    assert steps[0] == 30 and steps[-1] == 1000 and all(s % 10 == 0 for s in steps)
    assert all(b[1] - a[1] >= 30.0 for a, b in zip(printed, printed[1:-1]))
    assert len(printed) == 34  # steps 30, 60, ..., 990 and 1000
    assert printed[0][2] == "about 16m10s left"  # 30 s for 30 steps, 970 to go
    assert clock.now > 1000.0


def test_real_metrics_report_through_evaluate(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    """The tiny model's four metrics on a clock that advances 10 s per reading (each forward reads it
    once): lines for every metric, 30 s apart, counts rising to at most the split's size, and the
    same numbers as without progress."""
    import unlearn_assert as ua

    model, data = ua.load_model(tiny_model_dir), ua.load_data(tiny_data_dir)
    clock = Clock(tick=10.0)
    lines: list[tuple[float, str]] = []
    ev = ua.evaluate(model, data, progress=lambda line: lines.append((clock.now, line)), clock=clock)
    totals = {
        "verbmem_f": len(data.verbmem_forget),
        "knowmem_f": len(data.knowmem_forget_qa),
        "knowmem_r": len(data.knowmem_retain_qa),
        "privleak": len(data.privleak_forget) + len(data.privleak_holdout),
    }
    seen: dict[str, list[int]] = {}
    last: dict[str, float] = {}
    for t, line in lines:
        m = LINE.match(line)
        assert m is not None, line
        what = m["what"]
        assert int(m["total"]) == totals[what], line
        assert t - last.get(what, t - 30.0) == 30.0, (line, t, last.get(what))
        last[what] = t
        seen.setdefault(what, []).append(int(m["done"]))
    assert set(seen) == set(totals)
    assert all(counts == sorted(counts) and counts[-1] <= totals[w] for w, counts in seen.items())
    assert ua.evaluate(model, data).values == ev.values


def test_the_gate_prints_progress_lines_named_after_the_row(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """Through the session's progress channel (``unlearn-assert: ...``), with the interval set to 0 so
    the tiny model's metrics, which take a second, print their lines."""
    from gate_helpers import gate_args

    pytester.makeconftest("import unlearn_assert.metrics.progress as progress\nprogress.EVERY = 0.0\n")
    args = gate_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "cache")
    result = pytester.runpytest_subprocess(*args, "-k", "fp-verbmem_f")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(
        [
            "unlearn-assert: target fp verbmem_f: */8 forget passages, * elapsed, about * left",
            "unlearn-assert: unlearned fp privleak: */* forget and holdout texts, * elapsed, about * left",
        ]
    )


def test_relearning_step_lines_carry_the_remainder(tiny_model_dir: Path) -> None:
    """A short relearning run keeps its step lines (every 25 steps and the last), now with the
    expected remainder."""
    import unlearn_assert as ua
    from unlearn_assert.unlearning.finetune import finetune

    loaded = ua.load_model(tiny_model_dir)
    for p in loaded.model.parameters():
        p.requires_grad_(True)
    lines: list[str] = []
    finetune(
        loaded.model,
        loaded.tokenizer,
        "The quick brown fox jumps over the lazy dog. " * 8,
        steps=3,
        lr=1e-4,
        batch_size=1,
        max_length=16,
        seed=0,
        device="cpu",
        progress=lines.append,
    )
    assert len(lines) == 1, lines
    assert re.fullmatch(r"relearn step 3/3: loss \d+\.\d{4} \(\d+\.\d s, about 0 s left\)", lines[0]), lines
