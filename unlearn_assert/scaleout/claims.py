"""Each row computed once per run, however many processes share it: claims on rows, as lock files.

Why: under ``pytest -n N`` every xdist worker is its own process with its own
:class:`~unlearn_assert.engine.runner.Gate`,
and every item needs U's and T's full-precision rows; without coordination each worker computes
them again (and on 2 cores, two workers computing the same rows are slower than one). So the first
process to need a row *claims* it: it creates ``<key>.lock`` beside where the row's result will be
stored (the result cache, or under ``--unlearn-no-cache`` a directory of this run only), computes
the row, stores it and removes the lock. A process that finds the row claimed waits for the result
instead of computing it.

A claim must not outlive its holder: a killed worker leaves its lock behind. The lock names its
holder (host and pid) and the holder renews it (its mtime) while it computes; a waiter breaks a
claim whose holder is gone from this host, or that has not been renewed for :data:`EXPIRY`
seconds (a holder on another machine sharing the cache directory), and then computes the row itself.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["EXPIRY", "RowClaims"]

#: Seconds without renewal after which a claim counts as abandoned.
EXPIRY = 120.0
#: How often a holder renews its claims, and how often a waiter looks for the result.
RENEW_EVERY = 10.0
POLL = 0.2


class RowClaims:
    """Claims on row keys in one directory (shared by the processes of a run)."""

    def __init__(self, directory: str | os.PathLike[str], *, expiry: float = EXPIRY, poll: float = POLL) -> None:
        self.directory = Path(directory)
        self.expiry = expiry
        self.poll = poll
        self.host = socket.gethostname()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.lock"

    def try_claim(self, key: str) -> bool:
        """Claim ``key``; False when another live holder has it. A directory where no lock can be
        written (read-only, full) claims nothing and blocks nobody: the row is computed here."""
        path = self._path(key)
        for _ in range(2):  # a second try after breaking an abandoned claim
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._abandoned(path):
                    return False
                self._break(path)
                continue
            except OSError:
                return True
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": self.host, "pid": os.getpid(), "since": time.time()}, fh)
            return True
        return False

    def release(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    @contextmanager
    def holding(self, key: str) -> Iterator[None]:
        """Renew the claim on ``key`` while the block runs (a long row must not look abandoned); release it after."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(min(RENEW_EVERY, self.expiry / 4)):
                try:
                    os.utime(self._path(key))
                except OSError:
                    return

        thread = threading.Thread(target=renew, name=f"unlearn-assert-claim-{key[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(key)

    def wait(self, key: str, result: Callable[[], Any]) -> Any:
        """Wait while another process holds ``key``; return ``result()`` once it is there, or None when
        the claim ended (released or abandoned) without one (the caller then claims the row itself)."""
        path = self._path(key)
        while True:
            found = result()
            if found is not None:
                return found
            if not path.exists() or self._abandoned(path):
                return result()
            time.sleep(self.poll)

    def _abandoned(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
            holder = json.loads(path.read_text(encoding="utf-8") or "{}")
        except FileNotFoundError:
            return False  # released meanwhile: not ours to break
        except (OSError, ValueError):
            holder = {}  # being written, or damaged: judged by its age alone
            age = time.time() - path.stat().st_mtime if path.exists() else 0.0
        if age > self.expiry:
            return True
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"])
        return False

    @staticmethod
    def _break(path: Path) -> None:
        """Remove an abandoned lock; of several processes breaking it at once, one rename wins."""
        grave = path.with_name(f"{path.name}.broken-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.replace(path, grave)
            grave.unlink()
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
