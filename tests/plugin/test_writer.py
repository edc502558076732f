"""plugin/writer.py on its own: the controller's report built once from an Inbox, written atomically to every
path asked for, a write failure one warning (never an exception), and a summary that never raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearn_assert.config import run_config
from unlearn_assert.engine import Row, Verdict
from unlearn_assert.plugin.channel import Inbox, Outbox
from unlearn_assert.plugin.writer import ReportWriter

MUSE = str(Path(__file__).resolve().parents[2] / "fixtures" / "tiny-muse")


class Reporter:
    """The two methods of pytest's terminal reporter the summary uses, recording lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"{sep * 3} {title}")

    def write_line(self, line: str, **_: Any) -> None:
        self.lines.append(line)


def _inbox() -> Inbox:
    values = {"verbmem_f": 40.0, "knowmem_f": 30.0, "knowmem_r": 50.0, "privleak": 0.0}
    rows = {
        ("target", "fp"): Row(role="target", variant="fp", values=dict(values, knowmem_f=60.0), auc=0.3),
        ("unlearned", "fp"): Row(role="unlearned", variant="fp", values=values, auc=0.5),
    }
    verdict = Verdict(
        item="test_budget[fp-knowmem_f]",
        variant="fp",
        check="knowmem_f",
        outcome="passed",
        message="knowmem_f fell 30.0 points",
        value=30.0,
        budget=5.0,
    )
    inbox = Inbox()
    inbox.receive(Outbox().payload(rows, verdict, {"worker": "main"}, []))  # type: ignore[arg-type]
    return inbox


def test_no_item_ran_means_no_report_and_one_warning(tmp_path: Path) -> None:
    inbox = Inbox()
    writer = ReportWriter(
        run_config(model="m", target="t", data=MUSE, json=str(tmp_path / "r.json")), inbox, lambda: None
    )
    assert writer.build() is None
    writer.write()
    assert not (tmp_path / "r.json").exists()
    assert inbox.warnings == ["no budget item ran, so no report was written"]


def test_the_report_is_built_once_and_written_to_each_path(tmp_path: Path) -> None:
    run = run_config(model="m", target="t", data=MUSE, json=str(tmp_path / "r.json"), html=str(tmp_path / "r.html"))
    writer = ReportWriter(run, _inbox(), lambda: None)
    report = writer.build()
    assert report is not None and writer.build() is report
    writer.write()
    assert writer.written == [str(tmp_path / "r.json"), str(tmp_path / "r.html")]
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert sorted((r["model"], r["quantizer"]) for r in saved["rows"]) == [("target", "fp"), ("unlearned", "fp")]
    assert saved["verdicts"][0]["item"] == "test_budget[fp-knowmem_f]"
    assert "<html" in (tmp_path / "r.html").read_text(encoding="utf-8").lower()


def test_a_report_that_cannot_be_written_is_a_warning_and_the_summary_says_it(tmp_path: Path) -> None:
    blocked = tmp_path / "dir-not-file"
    blocked.mkdir()
    inbox = _inbox()
    writer = ReportWriter(run_config(model="m", target="t", data=MUSE, json=str(blocked)), inbox, lambda: None)
    writer.write()  # a directory where the file should go: no exception
    assert writer.written == []
    assert len(inbox.warnings) == 1 and inbox.warnings[0].startswith(f"could not write {blocked}")
    reporter = Reporter()
    writer.terminal_summary(reporter)
    assert reporter.lines[0] == "--- unlearning budget summary"
    assert any("budget checks" in line for line in reporter.lines)
    assert reporter.lines[-1] == f"unlearn-assert: {inbox.warnings[0]}"


def test_the_summary_never_raises(tmp_path: Path) -> None:
    inbox = _inbox()
    writer = ReportWriter(run_config(model="m", target="t", data=MUSE), inbox, lambda: None)
    writer.report = {"rows": "not a list"}  # type: ignore[typeddict-item]  # a report the renderers cannot read
    reporter = Reporter()
    writer.terminal_summary(reporter)  # must not raise
    assert any(line.startswith("unlearn-assert: could not render the summary: ") for line in reporter.lines)
