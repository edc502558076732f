"""Results cached by content hash, written atomically.

Why: users gate 7B+ models under many quantizers, and a CI re-run on unchanged inputs should do no
model work at all. A cell (one model under one quantizer, evaluated on one data set with one set of
metric settings) is keyed by the sha256 of everything that determines its numbers: the model's
content fingerprint (and the target's, where code agreement depends on it), the quantizer config,
the data hash, the metric settings and the package version. Paths are never part of a key, so a
copied checkpoint hits the cache and a changed byte misses it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .plain import Digest, digest
from .version import __version__

# Bump when a change to the metrics or quantizers changes numbers without changing the version.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """The user cache dir, used when pytest's cache is not available (e.g. ``-p no:cacheprovider``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unlearn-assert" / "results"


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts`` plus the package version and cache format."""
    return digest({**parts, "unlearn_assert": __version__, "cache_format": CACHE_FORMAT})


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``, so a crash
    or a concurrent reader never sees a partial report, and no temp file survives a failure."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a report is meant to be shared, so use the usual 0644
        # (or keep the mode of the file being replaced).
        os.chmod(tmp, p.stat().st_mode & 0o777 if p.exists() else 0o644)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return p


class ResultCache:
    """A directory of ``<key[:2]>/<key>.json`` files. ``enabled=False`` makes it a no-op.

    A write that fails (a full disk, a read-only cache) never fails the run, whose results are
    valid: the first failure is kept in ``write_error`` (one line), given to ``on_write_error`` (or
    warned), and no further entry is written; no partial entry is left (:func:`atomic_write_text`)."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        enabled: bool = True,
        on_write_error: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self.on_write_error = on_write_error
        self.write_error: str | None = None

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError):
            # A damaged entry is a miss, never an error: it is recomputed and overwritten.
            self.misses += 1
            return None
        if not isinstance(value, dict) or value.get("key") != key:
            self.misses += 1
            return None
        self.hits += 1
        result = value.get("value")
        return result if isinstance(result, dict) else None

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        if not self.enabled or self.write_error is not None:
            return
        text = json.dumps({"key": key, "value": value}, sort_keys=True)
        try:
            atomic_write_text(self._path(key), text)
        except OSError as exc:
            self.write_error = (
                f"could not write the result cache entry '{self._path(key)}' ({exc.strerror or exc}), so this run's "
                "results are not cached; free disk space, choose another --unlearn-cache-dir or pass --unlearn-no-cache"
            )
            if self.on_write_error is not None:
                self.on_write_error(self.write_error)
            else:
                warnings.warn(self.write_error, RuntimeWarning, stacklevel=2)


class FingerprintCache:
    """Remembers the content fingerprint of a model directory (or of one file, a GGUF) by the (name, size,
    mtime_ns) of its files, so that an unchanged 15 GB checkpoint is not re-hashed on every CI run. Any
    change to any file's size or modification time forces a full re-hash. With the result cache off
    (``--unlearn-no-cache``) it still remembers within the process."""

    def __init__(self, cache: ResultCache) -> None:
        self.cache = cache
        self._known: dict[str, str] = {}

    @staticmethod
    def _stat_signature(path: Path) -> list[tuple[str, int, int]]:
        files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]

    def fingerprint(self, path: str | os.PathLike[str]) -> str:
        """A model directory's fingerprint (:func:`unlearn_assert.models.fingerprint`), or a file's sha256."""
        from .models import fingerprint

        where = Path(path).resolve()
        key = cache_key({"kind": "fingerprint", "path": str(where), "files": self._stat_signature(where)})
        if key in self._known:
            return self._known[key]
        hit = self.cache.get(key)
        if hit is not None and isinstance(hit.get("sha256"), str):
            value = str(hit["sha256"])
        else:
            value = Digest().file(where).hexdigest() if where.is_file() else fingerprint(where)
            self.cache.put(key, {"sha256": value})
        self._known[key] = value
        return value
