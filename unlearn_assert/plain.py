"""Plain data, once: the JSON-safe form of a value, and the sha256 digests every fingerprint and cache key is made of.

Why one module: results cross processes (xdist payloads), land in files (the cache, the report) and are
identified by content (model and data fingerprints, cache keys). Two spellings of "NaN becomes null"
or of "hash these parts" drift apart, and a drifted digest silently misses (or worse, hits) a cache
entry. So every conversion to plain data and every sha256 in the package is made here. Standard library
only, importing nothing of ours.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any

__all__ = ["CHUNK", "Digest", "digest", "plain"]

#: Bytes read at a time when hashing files (checkpoints are GBs).
CHUNK = 1 << 20


def plain(value: Any) -> Any:
    """``value`` as plain JSON data: dicts (string keys), lists, str, int, float, bool, None. Non-finite
    floats become None (strict JSON, which every parser and a browser's JSON.parse accept; a report never
    needs to tell NaN from missing), numpy scalars Python numbers, tuples lists, anything else its str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) or hasattr(value, "__index__"):  # numpy integers too
        return int(value)
    if isinstance(value, float) or hasattr(value, "__float__"):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def digest(parts: Any) -> str:
    """The sha256 of ``parts`` as canonical JSON (sorted keys, no spaces; non-JSON values by their str):
    the identity of anything made of settings and other digests (cache keys, derived fingerprints)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Digest:
    """A sha256 fed piece by piece: the content fingerprints of model directories, data sets and files,
    whose exact byte streams are documented where they are built."""

    def __init__(self, start: bytes = b"") -> None:
        self._h = hashlib.sha256(start)

    def data(self, data: bytes) -> Digest:
        self._h.update(data)
        return self

    def text(self, text: str) -> Digest:
        """UTF-8 bytes of ``text``, as they are (callers add their own separators or length prefixes)."""
        self._h.update(text.encode("utf-8"))
        return self

    def file(self, path: str | os.PathLike[str]) -> Digest:
        """Every byte of the file at ``path``, read :data:`CHUNK` bytes at a time."""
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                self._h.update(chunk)
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()
