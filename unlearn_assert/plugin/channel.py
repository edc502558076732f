"""Results crossing from the processes that run items to the one that reports: plain JSON on test reports.

Why rows travel on test reports: under xdist every worker is its own pytest session with its own gate.
Each worker attaches what it has not sent yet (the rows it computed or read, once each, the item's
verdict, how it used the machine, its warnings) to the item's test report as one JSON string; xdist
serialises reports to the controller (plain data only), and the controller merges them. A serial run
takes the same path, so the two cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..engine import Row, Verdict
    from ..engine.rows import RowKey

__all__ = ["PAYLOAD_ATTR", "Outbox", "Inbox"]

#: The test-report attribute the payload travels in.
PAYLOAD_ATTR = "unlearn_assert_payload"


class Outbox:
    """The sending side (every process that runs items): each row and warning is sent once."""

    def __init__(self) -> None:
        self._sent_rows: set[RowKey] = set()
        self._sent_execution = False
        self._sent_warnings = 0

    def payload(
        self, rows: Mapping[RowKey, Row], verdict: Verdict | None, execution: dict[str, Any] | None, warnings: list[str]
    ) -> str | None:
        """What has not been sent yet, as JSON; None when there is nothing new."""
        new_rows = [row.to_dict() for key, row in rows.items() if key not in self._sent_rows]
        self._sent_rows.update(rows)
        if execution is not None and self._sent_execution:
            execution = None
        self._sent_execution = self._sent_execution or execution is not None
        new_warnings = warnings[self._sent_warnings :]
        self._sent_warnings = len(warnings)
        if not new_rows and verdict is None and execution is None and not new_warnings:
            return None
        return json.dumps(
            {
                "rows": new_rows,
                "verdict": verdict.to_dict() if verdict else None,
                "execution": execution,
                "errors": new_warnings,
            }
        )


@dataclass
class Inbox:
    """The receiving side (the controller, or the one process of a serial run): everything merged, as plain data."""

    rows: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: each process's execution record (threads, device), by worker id
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def receive(self, raw: str | None) -> None:
        if not raw:
            return
        payload = json.loads(raw)
        for row in payload.get("rows", []):
            key = (row["model"], row["quantizer"])
            known = self.rows.get(key)
            if known is None or (
                known.get("cached") and not row.get("cached")
            ):  # the worker that computed it tells it best
                self.rows[key] = row
        execution = payload.get("execution")
        if execution:
            self.workers[str(execution.get("worker"))] = execution
        verdict = payload.get("verdict")
        if verdict:
            self.verdicts[verdict["item"]] = verdict
        self.warnings.extend(w for w in payload.get("errors", []) if w not in self.warnings)

    @property
    def empty(self) -> bool:
        return not self.rows and not self.verdicts
