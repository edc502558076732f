"""Filesystem facts that option-time checks report: why a symbolic link cannot be followed.

Why its own module: a model directory, a data directory and a report path can all be links into
shared storage, and "does not exist" or "has no weight files" is not what is wrong with a link that
points to itself or at a deleted file. Pure standard library, importing nothing of ours.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import ConfigError

__all__ = ["link_problem", "user_path"]


def user_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded. Python raises RuntimeError for a
    ``~user`` with no home directory here; for a path the user typed that is one line that names it."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        head = str(path).split(os.sep, 1)[0]
        raise ConfigError(
            f"path '{path}' starts with '{head}', but there is no user '{head[1:]}' with a home directory here; "
            "write the path out"
        ) from None


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
