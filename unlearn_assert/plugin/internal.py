"""One line for an error that is not the user's: what failed, that it is a bug, and where its traceback is.

Why its own module: the hooks (options time, the summary), the suite's items and the report writer all
turn an unexpected exception into the same one line, and a traceback in a log file, never a wall of text
in a release-CI log.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

import pytest

__all__ = ["BUG_REPORT", "internal_error"]

BUG_REPORT = "this is a bug in unlearn-assert; please report it with the JSON report"


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
