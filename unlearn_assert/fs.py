"""Filesystem facts that option-time checks report: why a symbolic link cannot be followed.

Why its own module: a model directory, a data directory and a report path can all be links into
shared storage, and "does not exist" or "has no weight files" is not what is wrong with a link that
points to itself or at a deleted file. Pure standard library, importing nothing of ours.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["link_problem"]


def link_problem(path: str | os.PathLike[str]) -> str | None:
    """``"'P' is a symbolic link loop ..."`` or ``"'P' is a dangling symbolic link to 'T' ..."`` when
    ``path`` is a link that cannot be followed; None for anything else (a working link, a plain
    file, a missing path)."""
    p = Path(path)
    try:
        if not p.is_symlink():
            return None
        p.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"'{p}' is a symbolic link loop (it leads back to itself)"
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"'{p}' is a dangling symbolic link to '{target}', which does not exist"
        return f"'{p}' is a symbolic link to '{target}' that cannot be followed ({exc.strerror or exc})"
    return None
