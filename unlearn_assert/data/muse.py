"""MUSE data as users hold it: loading, validation and a content hash that is the same in every form.

Forms (see :func:`load_data`): MUSE's own files, exactly as its ``load_data.py`` writes them (raw
text as .json document lists with .txt twins, retain1 + retain2; this project's earlier
``raw/retain.txt`` still works); the Hugging Face form (a hub-style parquet snapshot or
``save_to_disk`` directories, read by :mod:`unlearn_assert.data.hf` with the ``[hf]`` extra); and
``hf:OWNER/NAME`` from the local hub cache. Every form is validated by the same code below.

Why this module is strict: the data directory is user input that reaches the gate in CI, and a
malformed file (a numeric answer, a truncated JSON, a Latin-1 text) would otherwise surface much
later as an obscure tokenizer or ROUGE error. So every problem becomes one :class:`DataError` line
that names the file, the item and the fix. Why it is cheap: ``pytest --co`` imports it, so no torch,
no transformers. Why it only reads: the directory may be shared, read-only or a cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..fs import user_path
from ..plain import Digest, digest

__all__ = [
    "CONTENT_FIELDS",
    "MuseData",
    "QAItem",
    "VerbItem",
    "data_fingerprint",
    "json_type",
    "load_data",
    "raw_files",
    "REQUIRED_FILES",
    "OPTIONAL_FILES",
]

# Relative paths (POSIX form) of the MUSE layout (as MUSE's load_data.py writes it); only the files
# chosen by _json_layout_files are read, and only their content is hashed.
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
#: raw text in MUSE's own layout: each split as a .json list of documents and a .txt twin
#: ("\n\n".join of the documents). The .json is preferred: it keeps document boundaries.
RAW_FORGET_JSON = "raw/forget.json"
RAW_RETAIN_JSON = "raw/retain.json"
RAW_RETAIN_PARTS = ("raw/retain1", "raw/retain2")  # MUSE's order: retain1 then retain2
#: the joiner of MUSE's .txt twins (load_data.py: write_text("\n\n".join(raw), ...))
DOC_JOINER = "\n\n"

REQUIRED_FILES: tuple[str, ...] = (
    VERBMEM_FORGET,
    KNOWMEM_FORGET_QA,
    KNOWMEM_RETAIN_QA,
    KNOWMEM_FORGET_ICL,
    KNOWMEM_RETAIN_ICL,
    PRIVLEAK_FORGET,
    PRIVLEAK_HOLDOUT,
)
OPTIONAL_FILES: tuple[str, ...] = (
    PRIVLEAK_RETAIN,
    RAW_FORGET_JSON,
    RAW_FORGET,
    *(f"{part}.{ext}" for part in RAW_RETAIN_PARTS for ext in ("json", "txt")),
    RAW_RETAIN_JSON,
    RAW_RETAIN,
)

#: The MuseData fields that hold content, in the order the fingerprint hashes them.
CONTENT_FIELDS: tuple[str, ...] = (
    "verbmem_forget",
    "knowmem_forget_qa",
    "knowmem_retain_qa",
    "knowmem_forget_icl",
    "knowmem_retain_icl",
    "privleak_forget",
    "privleak_holdout",
    "privleak_retain",
    "raw_forget_docs",
    "raw_retain_docs",
)

_VERB_FIELDS = ("prompt", "gt")
_QA_FIELDS = ("question", "answer")
_FINGERPRINT_VERSION = "muse-data:v2"
RAW_FORGET_HINT = "raw/forget.json or raw/forget.txt"
RAW_RETAIN_HINT = "raw/retain1.json + raw/retain2.json (or their .txt twins), or raw/retain.txt"
_LAYOUT_HINT = (
    "a MUSE data dir needs verbmem/forget.json, knowmem/{forget,retain}_qa.json, "
    "knowmem/{forget,retain}_qa_icl.json and privleak/{forget,holdout}.json "
    f"(privleak/retain.json and raw text, {RAW_FORGET_HINT} and {RAW_RETAIN_HINT}, are optional), "
    "or MUSE's Hugging Face form (parquet files <config>/<split>-*.parquet or datasets save_to_disk dirs "
    "<config>/<split>/), "
    "or hf:muse-bench/MUSE-News from the local Hugging Face cache"
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

    ``fingerprint`` is the sha256 of the loaded *content* (see :func:`content_fingerprint`), not of
    file bytes: a copy of the directory, or the same data in a Hugging Face form, keeps the cache;
    any change to a text, an item or a document boundary invalidates it.

    ``raw_forget`` / ``raw_retain`` are the raw training texts as one string (documents joined with
    ``"\\n\\n"``, exactly MUSE's .txt twins); ``raw_*_docs`` the same as documents (a .txt file is one
    document). ``sources`` says which file(s) or split(s) each field came from; ``form`` which layout was
    read ("files", "parquet" or "save_to_disk"); ``location`` the directory read (for ``hf:`` specs,
    the cache snapshot; ``path`` is then the spec itself).
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
    raw_forget_docs: tuple[str, ...] | None = None
    raw_retain_docs: tuple[str, ...] | None = None
    form: str = "files"
    location: str = ""
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def limited(self, max_samples: int | None) -> MuseData:
        """A copy with at most ``max_samples`` items in every evaluated split (smoke runs, CI budgets).

        The ICL demonstrations and raw text are kept whole: they shape every prompt / the training
        text, they are not samples. The fingerprint depends on the content actually kept: when no
        split is cut, ``self`` is returned unchanged (same fingerprint, so the cache still hits);
        otherwise it is a digest of the fingerprint and N.
        """
        if max_samples is None:
            return self
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(
                f"max_samples must be a positive integer or None, got {max_samples!r}; pass e.g. --unlearn-max-samples "
                "32"
            )
        splits = [
            self.verbmem_forget,
            self.knowmem_forget_qa,
            self.knowmem_retain_qa,
            self.privleak_forget,
            self.privleak_holdout,
        ]
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
            fingerprint=digest({"data": self.fingerprint, "max_samples": n}),
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


# --------------------------------------------------------------------------- fingerprint


def _item_strings(item: Any) -> tuple[str, ...]:
    if isinstance(item, VerbItem):
        return (item.prompt, item.gt)
    if isinstance(item, QAItem):
        return (item.question, item.answer)
    return (item,)


def content_fingerprint(values: Mapping[str, Any]) -> str:
    """sha256 over the content of every :data:`CONTENT_FIELDS` entry, in that order.

    Why content and not file bytes: the same data read from MUSE's JSON files, a parquet snapshot or
    a ``save_to_disk`` directory must hit the same cache entries. Every split, item and string is
    length-prefixed (UTF-8 bytes), and an absent optional split hashes differently from any present
    one, so no two different data sets produce the same stream. Paths, file names, JSON formatting,
    extra keys/columns and the form are deliberately left out: they do not change what is measured.
    """
    content = Digest().text(f"{_FINGERPRINT_VERSION}\0")
    for name in CONTENT_FIELDS:
        split = values.get(name)
        if split is None:
            content.text(f"{name}:absent;")
            continue
        content.text(f"{name}:{len(split)}:")
        for item in split:
            for text in _item_strings(item):
                data = text.encode("utf-8")
                content.text(f"{len(data)}:").data(data)
    return content.hexdigest()


def data_fingerprint(path: str | os.PathLike[str]) -> str:
    """The content fingerprint of a data set (see :func:`content_fingerprint`); loads and validates it."""
    return load_data(path).fingerprint


# --------------------------------------------------------------------------- files


def _where(rel: str, directory: Path) -> str:
    return f"data file '{rel}' in data dir '{directory}'"


def _check_dir(path: str | os.PathLike[str]) -> Path:
    directory = user_path(path)
    if not directory.exists():
        raise DataError(f"data path '{path}' does not exist; pass a directory in MUSE's layout ({_LAYOUT_HINT})")
    if not directory.is_dir():
        raise DataError(
            f"data path '{path}' is not a directory; pass the directory that holds verbmem/, knowmem/ and privleak/ "
            f"({_LAYOUT_HINT})"
        )
    return directory


def _pick(directory: Path, *candidates: str) -> str | None:
    """The first candidate that exists (the .json before its .txt twin), or None."""
    return next((rel for rel in candidates if (directory / rel).exists()), None)


def raw_files(directory: str | os.PathLike[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The raw forget and retain files load_data reads from a JSON-layout dir, in reading order.

    forget: ``raw/forget.json``, else ``raw/forget.txt``. retain: MUSE's ``raw/retain1`` then
    ``raw/retain2`` (each its .json, else its .txt) when either exists; else ``raw/retain.json``, else
    ``raw/retain.txt`` (this project's earlier single-file layout). Files not chosen are not read.
    """
    d = Path(directory)
    forget = _pick(d, RAW_FORGET_JSON, RAW_FORGET)
    parts = [rel for rel in (_pick(d, f"{part}.json", f"{part}.txt") for part in RAW_RETAIN_PARTS) if rel]
    retain = parts or [rel for rel in (_pick(d, RAW_RETAIN_JSON, RAW_RETAIN),) if rel]
    return ((forget,) if forget else ()), tuple(retain)


def _json_layout_files(directory: Path) -> list[str]:
    """The relative paths load_data reads: all required ones (checked) plus the optional ones chosen."""
    missing = [rel for rel in REQUIRED_FILES if not (directory / rel).exists()]
    if missing:
        raise DataError(f"data dir '{directory}' is missing required file(s) {', '.join(missing)}; {_LAYOUT_HINT}")
    forget, retain = raw_files(directory)
    optional = [PRIVLEAK_RETAIN] if (directory / PRIVLEAK_RETAIN).exists() else []
    files = [*REQUIRED_FILES, *optional, *forget, *retain]
    for rel in files:
        if not (directory / rel).is_file():
            raise DataError(
                f"{_where(rel, directory)} is not a regular file; replace it with the file MUSE's layout expects"
            )
    return files


def _read_text(directory: Path, rel: str) -> str:
    try:
        raw = (directory / rel).read_bytes()
    except OSError as exc:
        raise DataError(
            f"cannot read {_where(rel, directory)} ({exc.strerror or exc}); check its permissions"
        ) from None
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
        raise DataError(
            f"{_where(rel, directory)} must be a JSON list of {expected}, but its top level is a JSON "
            f"{json_type(value)}; wrap the items in [ ... ]"
        )
    if not value:
        raise DataError(f"{_where(rel, directory)} is an empty list; it needs at least one of {expected}")
    return value


def json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words (for one-line data errors)."""
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


_STRINGS = "non-empty strings (one text per item)"
_DOCUMENTS = "strings (one document per item)"


# --------------------------------------------------------------------------- validation (shared by every form)


def _records(items: Sequence[Any], where: str, fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Validate a list of objects; each must carry ``fields`` as non-empty strings (extra keys ignored, as in real MUSE
    files)."""
    expected = _describe(fields)
    out: list[tuple[str, ...]] = []
    for index, item in enumerate(items):
        at = f"{where}, item {index}"
        if not isinstance(item, dict):
            raise DataError(
                f"{at} is a JSON {json_type(item)}, expected an object; every item must be one of {expected}"
            )
        values: list[str] = []
        for key in fields:
            if key not in item:
                raise DataError(f"{at} is missing key '{key}'; every item must be one of {expected}")
            value = item[key]
            if not isinstance(value, str):
                raise DataError(
                    f"{at} has '{key}' of type {json_type(value)}, expected a string; quote it (items must be "
                    f"{expected})"
                )
            if not value.strip():
                raise DataError(
                    f"{at} has an empty '{key}'; give it text or remove the item (items must be {expected})"
                )
            values.append(value)
        out.append(tuple(values))
    return out


def _strings(items: Sequence[Any], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for index, item in enumerate(items):
        at = f"{where}, item {index}"
        if not isinstance(item, str):
            raise DataError(
                f"{at} is a JSON {json_type(item)}, expected a string; privleak splits are lists of {_STRINGS}"
            )
        if not item.strip():
            raise DataError(
                f"{at} is an empty string; give it text or remove it (privleak splits are lists of {_STRINGS})"
            )
        out.append(item)
    return tuple(out)


def _documents(items: Sequence[Any], where: str) -> tuple[str, ...]:
    """Raw documents: strings, kept as they are (an empty one is kept too, as MUSE's .txt twin keeps it),
    but at least one must hold text."""
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise DataError(
                f"{where}, item {index} is a JSON {json_type(item)}, expected a string; raw splits are lists of "
                f"{_DOCUMENTS}"
            )
    if not any(item.strip() for item in items):
        raise DataError(f"{where} has no text; put the training text in it or delete it (raw text is optional)")
    return tuple(items)


# --------------------------------------------------------------------------- the forms


#: Every evaluated split: (MuseData field, Hugging Face config, HF split, kind, JSON-layout file, required).
SPLITS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("verbmem_forget", "verbmem", "forget", "verb", VERBMEM_FORGET, True),
    ("knowmem_forget_qa", "knowmem", "forget_qa", "qa", KNOWMEM_FORGET_QA, True),
    ("knowmem_retain_qa", "knowmem", "retain_qa", "qa", KNOWMEM_RETAIN_QA, True),
    ("knowmem_forget_icl", "knowmem", "forget_qa_icl", "qa", KNOWMEM_FORGET_ICL, True),
    ("knowmem_retain_icl", "knowmem", "retain_qa_icl", "qa", KNOWMEM_RETAIN_ICL, True),
    ("privleak_forget", "privleak", "forget", "text", PRIVLEAK_FORGET, True),
    ("privleak_holdout", "privleak", "holdout", "text", PRIVLEAK_HOLDOUT, True),
    ("privleak_retain", "privleak", "retain", "text", PRIVLEAK_RETAIN, False),
)
#: The raw text in the Hugging Face form: (MuseData field, HF config, HF splits in reading order).
HF_RAW_SPLITS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("raw_forget_docs", "raw", ("forget",)),
    ("raw_retain_docs", "raw", ("retain1", "retain2")),
)
_COLUMNS = {"verb": _VERB_FIELDS, "qa": _QA_FIELDS, "text": ("text",)}


def _validated(kind: str, items: Sequence[Any], where: str) -> tuple[Any, ...]:
    if kind == "verb":
        return tuple(VerbItem(prompt=p, gt=g) for p, g in _records(items, where, _VERB_FIELDS))
    if kind == "qa":
        return tuple(QAItem(question=q, answer=a) for q, a in _records(items, where, _QA_FIELDS))
    return _strings(items, where)


def _read_json_layout(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """MUSE's own files (as its load_data.py writes them): content per field, and where each came from."""
    files = _json_layout_files(directory)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, _config, _split, kind, rel, _required in SPLITS:
        if rel not in files:
            values[name] = None
            continue
        expected = _STRINGS if kind == "text" else _describe(_COLUMNS[kind])
        values[name] = _validated(kind, _read_json_list(directory, rel, expected), _where(rel, directory))
        sources[name] = rel
    forget, retain = raw_files(directory)
    for name, rels in (("raw_forget_docs", forget), ("raw_retain_docs", retain)):
        docs: list[str] = []
        for rel in rels:
            if rel.endswith(".json"):
                docs.extend(_documents(_read_json_list(directory, rel, _DOCUMENTS), _where(rel, directory)))
            else:
                text = _read_text(directory, rel)
                if not text.strip():
                    raise DataError(
                        f"{_where(rel, directory)} is empty; put the training text in it or delete the file (raw text "
                        "is optional)"
                    )
                docs.append(text)
        values[name] = tuple(docs) if rels else None
        if rels:
            sources[name] = " + ".join(rels)
    return values, sources


def _read_hf_form(
    directory: Path, form: str, label: str, spec: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """MUSE as Hugging Face writes it (parquet per config/split, or save_to_disk dirs): the same fields,
    the same validation, messages that name the split and its file(s). ``spec``: the hf: spec it was
    resolved from, so a partial download says how to complete it."""
    from .hf import download_hint, read_split, split_hint

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    missing: list[str] = []
    for name, config, split, kind, _rel, required in SPLITS:
        got = read_split(directory, form, config, split, _COLUMNS[kind], label)
        if got is None:
            values[name] = None
            if required:
                missing.append(f"{config}/{split}")
            continue
        rows, where, source = got
        if not rows:
            raise DataError(
                f"{where} has no rows; it needs at least one of "
                f"{_STRINGS if kind == 'text' else _describe(_COLUMNS[kind])}"
            )
        items = [row["text"] for row in rows] if kind == "text" else rows
        values[name] = _validated(kind, items, where)
        sources[name] = source
    if missing:
        raise DataError(
            f"{label} is missing required split(s) {', '.join(missing)}; "
            f"{download_hint(spec) if spec else split_hint(form)}"
        )
    for name, config, splits in HF_RAW_SPLITS:
        docs: list[str] = []
        used: list[str] = []
        for split in splits:
            got = read_split(directory, form, config, split, ("text",), label)
            if got is not None:
                rows, where, source = got
                docs.extend(_documents([row["text"] for row in rows], where))
                used.append(source)
        values[name] = tuple(docs) if used else None
        if used:
            sources[name] = " + ".join(used)
    return values, sources


# --------------------------------------------------------------------------- loading


def load_data(path: str | os.PathLike[str]) -> MuseData:
    """Read and validate MUSE data (read-only); every problem is one DataError line.

    ``path``: a directory in MUSE's file layout, or holding MUSE's Hugging Face form (parquet files
    ``<config>/<split>-*.parquet`` or ``save_to_disk`` directories ``<config>/<split>/``), or
    ``hf:OWNER/NAME[@REVISION]``, resolved from the local Hugging Face hub cache without any network call.
    """
    spec = os.fspath(path)
    if isinstance(spec, str) and spec.startswith("hf:"):
        from .hf import resolve_hf_spec

        directory = resolve_hf_spec(spec)
        shown, hf_spec = spec, spec
    else:
        directory = _check_dir(path)
        shown, hf_spec = str(directory), None
    form = "files"
    if not any((directory / rel).exists() for rel in REQUIRED_FILES):
        from .hf import detect_form

        form = detect_form(directory) or "files"
    if form == "files":
        values, sources = _read_json_layout(directory)
    else:
        label = f"data dir '{directory}' (MUSE in {form} form{'' if shown == str(directory) else ', from ' + shown})"
        values, sources = _read_hf_form(directory, form, label, hf_spec)
    forget_docs, retain_docs = values["raw_forget_docs"], values["raw_retain_docs"]
    return MuseData(
        path=shown,
        verbmem_forget=values["verbmem_forget"],
        knowmem_forget_qa=values["knowmem_forget_qa"],
        knowmem_retain_qa=values["knowmem_retain_qa"],
        knowmem_forget_icl=values["knowmem_forget_icl"],
        knowmem_retain_icl=values["knowmem_retain_icl"],
        privleak_forget=values["privleak_forget"],
        privleak_holdout=values["privleak_holdout"],
        privleak_retain=values["privleak_retain"],
        raw_forget=None if forget_docs is None else DOC_JOINER.join(forget_docs),
        raw_retain=None if retain_docs is None else DOC_JOINER.join(retain_docs),
        fingerprint=content_fingerprint(values),
        raw_forget_docs=forget_docs,
        raw_retain_docs=retain_docs,
        form=form,
        location=str(directory),
        sources=sources,
    )
