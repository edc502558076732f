"""plugin/session.py on its own: the holder makes no gate (and loads nothing) until an item needs one, and passes
what an item decided through the channel to the controller's Inbox, warnings included."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from unlearn_assert.config import run_config
from unlearn_assert.engine import Verdict
from unlearn_assert.plugin.channel import PAYLOAD_ATTR
from unlearn_assert.plugin.session import UnlearnSession, is_xdist_worker

MUSE = str(Path(__file__).resolve().parents[2] / "fixtures" / "tiny-muse")


@pytest.fixture
def session(pytester: pytest.Pytester) -> UnlearnSession:
    config = pytester.parseconfig()
    return UnlearnSession(config, run_config(model="m", target="t", data=MUSE))


def test_nothing_to_send_before_an_item_ran_and_no_gate_is_made(session: UnlearnSession) -> None:
    assert session.payload(None) is None
    session.close()  # closing a session whose gate was never made is fine
    assert not is_xdist_worker(session.config)


def test_an_items_verdict_and_warnings_reach_the_controllers_inbox(session: UnlearnSession) -> None:
    verdict = Verdict(
        item="test_budget[fp-knowmem_f]", variant="fp", check="knowmem_f", outcome="skipped", message="no model"
    )
    session.warn("cache entry not written (disk full)")
    report = SimpleNamespace(**{PAYLOAD_ATTR: session.payload(verdict)})
    session.receive(report)  # type: ignore[arg-type]
    assert Verdict.from_dict(session.inbox.verdicts[verdict.item]) == verdict
    assert session.inbox.warnings == ["cache entry not written (disk full)"]
    session.receive(SimpleNamespace())  # type: ignore[arg-type]  # a report without a payload
    assert list(session.inbox.verdicts) == [verdict.item]


def test_an_internal_error_outside_a_row_names_the_item(session: UnlearnSession) -> None:
    line = session.internal_error(RuntimeError("boom"), "test_budget[fp-knowmem_f]")
    assert "while judging test_budget[fp-knowmem_f]" in line.splitlines()[0]
    assert "RuntimeError" in line and "boom" in line
