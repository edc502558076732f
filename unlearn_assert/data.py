"""MUSE-layout corpora: loading, validation and a location-independent content hash.

Why this module is strict: the data directory is user input that reaches the gate in CI, and a
malformed file (a numeric answer, a truncated JSON, a Latin-1 text) would otherwise surface much
later as an obscure tokenizer or ROUGE error. So every problem becomes one :class:`DataError` line
that names the file, the item and the fix. Why it is cheap: ``pytest --co`` imports it, so no torch,
no transformers. Why it only reads: the directory may be shared, read-only or a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

__all__ = [
    "MuseData",
    "QAItem",
    "VerbItem",
    "data_fingerprint",
    "load_data",
    "REQUIRED_FILES",
    "OPTIONAL_FILES",
]

# Relative paths (POSIX form) of the MUSE layout; these, and only these, are read and hashed.
VERBMEM_FORGET = "verbmem/forget.json"
KNOWMEM_FORGET_QA = "knowmem/forget_qa.json"
KNOWMEM_RETAIN_QA = "knowmem/retain_qa.json"
KNOWMEM_FORGET_ICL = "knowmem/forget_qa_icl.json"
KNOWMEM_RETAIN_ICL = "knowmem/retain_qa_icl.json"
PRIVLEAK_FORGET = "privleak/forget.json"
PRIVLEAK_HOLDOUT = "privleak/holdout.json"
PRIVLEAK_RETAIN = "privleak/retain.json"
RAW_FORGET = "raw/forget.txt"
RAW_RETAIN = "raw/retain.txt"

REQUIRED_FILES: tuple[str, ...] = (
    VERBMEM_FORGET,
    KNOWMEM_FORGET_QA,
    KNOWMEM_RETAIN_QA,
    KNOWMEM_FORGET_ICL,
    KNOWMEM_RETAIN_ICL,
    PRIVLEAK_FORGET,
    PRIVLEAK_HOLDOUT,
)
OPTIONAL_FILES: tuple[str, ...] = (PRIVLEAK_RETAIN, RAW_FORGET, RAW_RETAIN)

_VERB_FIELDS = ("prompt", "gt")
_QA_FIELDS = ("question", "answer")
_CHUNK = 1 << 20
_LAYOUT_HINT = (
    "a MUSE data dir needs verbmem/forget.json, knowmem/{forget,retain}_qa.json, "
    "knowmem/{forget,retain}_qa_icl.json and privleak/{forget,holdout}.json "
    "(privleak/retain.json and raw/{forget,retain}.txt are optional)"
)


@dataclass(frozen=True)
class VerbItem:
    """One verbatim-memorization probe: the model continues ``prompt``; ROUGE against ``gt``."""

    prompt: str
    gt: str


@dataclass(frozen=True)
class QAItem:
    """One knowledge-memorization question with its short reference answer."""

    question: str
    answer: str


@dataclass(frozen=True)
class MuseData:
    """A validated MUSE-layout corpus; immutable so it can be shared across cells and workers.

    ``fingerprint`` is the sha256 of the files' content (see :func:`data_fingerprint`), so cached
    results survive a copy of the directory and are invalidated by any one-byte change.
    """

    path: str
    verbmem_forget: tuple[VerbItem, ...]
    knowmem_forget_qa: tuple[QAItem, ...]
    knowmem_retain_qa: tuple[QAItem, ...]
    knowmem_forget_icl: tuple[QAItem, ...]
    knowmem_retain_icl: tuple[QAItem, ...]
    privleak_forget: tuple[str, ...]
    privleak_holdout: tuple[str, ...]
    privleak_retain: tuple[str, ...] | None
    raw_forget: str | None
    raw_retain: str | None
    fingerprint: str

    def limited(self, max_samples: int | None) -> MuseData:
        """A copy with at most ``max_samples`` items in every evaluated split (smoke runs, CI budgets).

        The ICL demonstrations and raw text are kept whole: they shape every prompt / the training
        text, they are not samples. The fingerprint depends on the content actually kept: when no
        split is cut, ``self`` is returned unchanged (same fingerprint, so the cache still hits);
        otherwise it is ``sha256(fingerprint + ":max=N")``.
        """
        if max_samples is None:
            return self
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(f"max_samples must be a positive integer or None, got {max_samples!r}; pass e.g. --unlearn-max-samples 32")
        splits = [self.verbmem_forget, self.knowmem_forget_qa, self.knowmem_retain_qa, self.privleak_forget, self.privleak_holdout]
        if self.privleak_retain is not None:
            splits.append(self.privleak_retain)
        if all(len(split) <= max_samples for split in splits):
            return self
        n = max_samples
        return replace(
            self,
            verbmem_forget=self.verbmem_forget[:n],
            knowmem_forget_qa=self.knowmem_forget_qa[:n],
            knowmem_retain_qa=self.knowmem_retain_qa[:n],
            privleak_forget=self.privleak_forget[:n],
            privleak_holdout=self.privleak_holdout[:n],
            privleak_retain=None if self.privleak_retain is None else self.privleak_retain[:n],
            fingerprint=hashlib.sha256(f"{self.fingerprint}:max={n}".encode()).hexdigest(),
        )

    @property
    def name(self) -> str:
        """The directory's base name, for reports."""
        return Path(self.path).name

    def counts(self) -> dict[str, int]:
        """Items per split, for reports and logs."""
        out = {
            "verbmem_forget": len(self.verbmem_forget),
            "knowmem_forget_qa": len(self.knowmem_forget_qa),
            "knowmem_retain_qa": len(self.knowmem_retain_qa),
            "knowmem_forget_icl": len(self.knowmem_forget_icl),
            "knowmem_retain_icl": len(self.knowmem_retain_icl),
            "privleak_forget": len(self.privleak_forget),
            "privleak_holdout": len(self.privleak_holdout),
        }
        if self.privleak_retain is not None:
            out["privleak_retain"] = len(self.privleak_retain)
        return out


# --------------------------------------------------------------------------- files


def _where(rel: str, directory: Path) -> str:
    return f"data file '{rel}' in data dir '{directory}'"


def _check_dir(path: str | os.PathLike[str]) -> Path:
    directory = Path(path).expanduser()
    if not directory.exists():
        raise DataError(f"data path '{path}' does not exist; pass a directory in MUSE's layout ({_LAYOUT_HINT})")
    if not directory.is_dir():
        raise DataError(f"data path '{path}' is not a directory; pass the directory that holds verbmem/, knowmem/ and privleak/ ({_LAYOUT_HINT})")
    return directory


def _files_to_read(directory: Path) -> list[str]:
    """The relative paths load_data reads: all required ones (checked) plus the optional ones present."""
    missing = [rel for rel in REQUIRED_FILES if not (directory / rel).exists()]
    if missing:
        raise DataError(
            f"data dir '{directory}' is missing required file(s) {', '.join(missing)}; {_LAYOUT_HINT}"
        )
    for rel in REQUIRED_FILES + OPTIONAL_FILES:
        if (directory / rel).exists() and not (directory / rel).is_file():
            raise DataError(f"{_where(rel, directory)} is not a regular file; replace it with the file MUSE's layout expects")
    return sorted(list(REQUIRED_FILES) + [rel for rel in OPTIONAL_FILES if (directory / rel).is_file()])


def _hash_files(directory: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        file = directory / rel
        try:
            size = file.stat().st_size
            # length-prefixed name and size, so no two layouts can produce the same byte stream
            digest.update(f"{len(rel)}:{rel}:{size}:".encode())
            with file.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(f"cannot read {_where(rel, directory)} ({exc.strerror or exc}); check its permissions") from None
    return digest.hexdigest()


def data_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 over (relative path, bytes) of every file load_data reads, sorted, streamed.

    Relative paths only, so copying or moving the directory keeps the fingerprint (and the cache).
    """
    directory = _check_dir(path)
    return _hash_files(directory, _files_to_read(directory))


def _read_text(directory: Path, rel: str) -> str:
    try:
        raw = (directory / rel).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {_where(rel, directory)} ({exc.strerror or exc}); check its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{_where(rel, directory)} is not valid UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from None


def _read_json_list(directory: Path, rel: str, expected: str) -> list[Any]:
    text = _read_text(directory, rel)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{_where(rel, directory)} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); "
            f"it must be a JSON list of {expected}"
        ) from None
    if not isinstance(value, list):
        raise DataError(f"{_where(rel, directory)} must be a JSON list of {expected}, but its top level is a JSON {_json_type(value)}; wrap the items in [ ... ]")
    if not value:
        raise DataError(f"{_where(rel, directory)} is an empty list; it needs at least one of {expected}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe(fields: tuple[str, ...]) -> str:
    return "objects with non-empty string fields " + " and ".join(f"'{f}'" for f in fields)


def _records(directory: Path, rel: str, fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Parse a list of objects; each must carry ``fields`` as non-empty strings (extra keys ignored, as in real MUSE files)."""
    expected = _describe(fields)
    out: list[tuple[str, ...]] = []
    for index, item in enumerate(_read_json_list(directory, rel, expected)):
        where = f"{_where(rel, directory)}, item {index}"
        if not isinstance(item, dict):
            raise DataError(f"{where} is a JSON {_json_type(item)}, expected an object; every item must be one of {expected}")
        values: list[str] = []
        for key in fields:
            if key not in item:
                raise DataError(f"{where} is missing key '{key}'; every item must be one of {expected}")
            value = item[key]
            if not isinstance(value, str):
                raise DataError(f"{where} has '{key}' of type {_json_type(value)}, expected a string; quote it (items must be {expected})")
            if not value.strip():
                raise DataError(f"{where} has an empty '{key}'; give it text or remove the item (items must be {expected})")
            values.append(value)
        out.append(tuple(values))
    return out


def _strings(directory: Path, rel: str) -> tuple[str, ...]:
    expected = "non-empty strings (one text per item)"
    out: list[str] = []
    for index, item in enumerate(_read_json_list(directory, rel, expected)):
        where = f"{_where(rel, directory)}, item {index}"
        if not isinstance(item, str):
            raise DataError(f"{where} is a JSON {_json_type(item)}, expected a string; privleak files are JSON lists of {expected}")
        if not item.strip():
            raise DataError(f"{where} is an empty string; give it text or remove it (privleak files are JSON lists of {expected})")
        out.append(item)
    return tuple(out)


def _raw(directory: Path, rel: str) -> str | None:
    if not (directory / rel).is_file():
        return None
    text = _read_text(directory, rel)
    if not text.strip():
        raise DataError(f"{_where(rel, directory)} is empty; put the training text in it or delete the file (raw/*.txt are optional)")
    return text


# --------------------------------------------------------------------------- loading


def load_data(path: str | os.PathLike[str]) -> MuseData:
    """Read and validate a MUSE-layout directory (read-only); every problem is one DataError line."""
    directory = _check_dir(path)
    files = _files_to_read(directory)
    verb = tuple(VerbItem(prompt=p, gt=g) for p, g in _records(directory, VERBMEM_FORGET, _VERB_FIELDS))

    def qa(rel: str) -> tuple[QAItem, ...]:
        return tuple(QAItem(question=q, answer=a) for q, a in _records(directory, rel, _QA_FIELDS))

    privleak_retain = _strings(directory, PRIVLEAK_RETAIN) if PRIVLEAK_RETAIN in files else None
    return MuseData(
        path=str(directory),
        verbmem_forget=verb,
        knowmem_forget_qa=qa(KNOWMEM_FORGET_QA),
        knowmem_retain_qa=qa(KNOWMEM_RETAIN_QA),
        knowmem_forget_icl=qa(KNOWMEM_FORGET_ICL),
        knowmem_retain_icl=qa(KNOWMEM_RETAIN_ICL),
        privleak_forget=_strings(directory, PRIVLEAK_FORGET),
        privleak_holdout=_strings(directory, PRIVLEAK_HOLDOUT),
        privleak_retain=privleak_retain,
        raw_forget=_raw(directory, RAW_FORGET) if RAW_FORGET in files else None,
        raw_retain=_raw(directory, RAW_RETAIN) if RAW_RETAIN in files else None,
        fingerprint=_hash_files(directory, files),
    )
