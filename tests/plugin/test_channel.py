"""plugin/channel.py on its own: what a process sends (each row, the execution record and each warning once)
and how the controller merges it (a computed row tells it better than a cached one)."""

from __future__ import annotations

import json

from unlearn_assert.engine import Row, Verdict
from unlearn_assert.plugin.channel import Inbox, Outbox


def _row(role: str = "unlearned", variant: str = "rtn-w4", *, cached: bool = False, value: float = 50.0) -> Row:
    return Row(role=role, variant=variant, cached=cached, values={"knowmem_f": value}, seconds=1.5)  # type: ignore[arg-type]


def _verdict(item: str = "test_budget[rtn-w4-knowmem_f]") -> Verdict:
    return Verdict(
        item=item,
        variant="rtn-w4",
        check="knowmem_f",
        outcome="failed",
        message="recovery 60% > 25%",
        value=0.6,
        budget=0.25,
        ci=(0.3, 0.9),
        decided=True,
    )


def test_each_row_is_sent_once_and_nothing_new_sends_nothing() -> None:
    out = Outbox()
    rows = {("unlearned", "rtn-w4"): _row()}
    first = json.loads(out.payload(rows, None, None, []) or "null")
    assert [r["quantizer"] for r in first["rows"]] == ["rtn-w4"]  # schema 1's key for the variant
    assert out.payload(rows, None, None, []) is None
    rows[("target", "rtn-w4")] = _row("target")
    second = json.loads(out.payload(rows, None, None, []) or "null")
    assert [(r["model"], r["quantizer"]) for r in second["rows"]] == [("target", "rtn-w4")]


def test_execution_goes_once_and_warnings_go_as_they_come() -> None:
    out = Outbox()
    warnings = ["cache entry not written"]
    execution = {"worker": "gw0", "threads": 1}
    one = json.loads(out.payload({}, None, execution, warnings) or "null")
    assert one["execution"] == execution and one["errors"] == ["cache entry not written"]
    warnings.append("second")
    two = json.loads(out.payload({}, None, execution, warnings) or "null")
    assert two["execution"] is None and two["errors"] == ["second"]
    assert out.payload({}, None, execution, warnings) is None


def test_the_controller_merges_rows_verdicts_workers_and_warnings() -> None:
    out, inbox = Outbox(), Inbox()
    assert inbox.empty
    inbox.receive(None)
    inbox.receive("")
    assert inbox.empty
    verdict = _verdict()
    inbox.receive(out.payload({("unlearned", "rtn-w4"): _row()}, verdict, {"worker": "gw1"}, ["w"]))
    assert not inbox.empty
    assert Verdict.from_dict(inbox.verdicts[verdict.item]) == verdict
    assert inbox.workers == {"gw1": {"worker": "gw1"}}
    assert Row.from_dict(inbox.rows[("unlearned", "rtn-w4")]) == _row()
    inbox.receive(Outbox().payload({}, None, None, ["w", "x"]))
    assert inbox.warnings == ["w", "x"]  # one line per warning, however many processes sent it


def test_a_computed_row_replaces_a_cached_one_and_not_the_other_way() -> None:
    inbox = Inbox()
    inbox.receive(Outbox().payload({("unlearned", "rtn-w4"): _row(cached=True, value=1.0)}, None, None, []))
    inbox.receive(Outbox().payload({("unlearned", "rtn-w4"): _row(value=2.0)}, None, None, []))
    assert inbox.rows[("unlearned", "rtn-w4")]["values"] == {"knowmem_f": 2.0}
    inbox.receive(Outbox().payload({("unlearned", "rtn-w4"): _row(cached=True, value=3.0)}, None, None, []))
    assert inbox.rows[("unlearned", "rtn-w4")]["values"] == {"knowmem_f": 2.0}
