"""A provider's own takedown request: MUSE's evaluation sets derived from the documents alone.

The layout (read-only)::

    DIR/forget/    documents to be forgotten: *.txt files (one document each) and/or *.jsonl files
                   (one document per line, in a "text" field); required
    DIR/holdout/   text of the same kind the model never trained on (same forms); required
    DIR/retain/    documents the model must keep (same forms); optional
    DIR/forget_qa.json, DIR/retain_qa.json            optional QA pairs [{"question", "answer"}]
    DIR/forget_qa_icl.json, DIR/retain_qa_icl.json    optional in-context examples for them

What is derived, the way MUSE built its News sets (the data-preparation script of MUSE's authors:
the split's documents joined with "\\n\\n" into one text, cut into consecutive 2,048-token chunks,
``random.seed(seed); random.sample(chunks, 100)`` per split; and MUSE-News' released files, measured in
``jaechan-repo/muse_bench`` @54719c5, ``data/bbc``: every privleak text is a chunk found verbatim in
``raw/forget.txt`` that starts mid-document, 1,267-1,462 words (median 1,358.5); every verbmem prompt
starts at a chunk start, 611-736 words (median 673.5), its ground truth follows it directly in the raw
text, 69-98 words (median 82): the prompt is the chunk's first 1,024 Llama-2 tokens and the ground
truth the next 128):

* **verbmem**: from a seeded sample of forget chunks, prompt = the chunk's first ``prompt_words``
  words, ground truth = the next ``gt_words`` words;
* **privleak**: a seeded sample of forget chunks against a seeded sample of holdout chunks (and of
  retain chunks, when ``retain/`` is given), whole chunks;
* **knowmem**: only from the QA pairs given. MUSE prompts each split's questions after 10
  in-context pairs of that split (``*_qa_icl.json``); without that file, ``icl_pairs`` pairs are
  drawn (seeded) from the QA file and not evaluated.

We count in words (whitespace-separated), not tokens, so the items are a function of the
documents, the seed and the settings alone, the same for every model and tokenizer; the defaults
are MUSE-News' measured medians (a chunk of 2,048 Llama-2 tokens is about 1,358 words of news text).
Two differences from MUSE's script, both recorded: MUSE completes the last, partial chunk with the
start of the text; here a partial last chunk is kept when it holds half a chunk or is the only one,
so no text appears twice. And where a split has fewer chunks than items asked for, all are taken.

The result is a :class:`~unlearn_assert.data.muse.MuseData`, so MUSE's metric code runs on it unchanged,
plus :attr:`DocumentsData.derivation`: a JSON record of every derived item (which chunk, which words
of which documents) for the report. A rerun with the same documents, seed and settings derives the
same items (tested).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..fs import user_path
from ..plain import Digest
from .muse import DOC_JOINER, MuseData, QAItem, VerbItem, content_fingerprint

__all__ = [
    "DERIVATION_VERSION",
    "DerivationSettings",
    "Document",
    "DocumentsData",
    "chunk_text",
    "derive",
    "detect_documents",
    "load_documents",
]

DERIVATION_VERSION = "documents-derivation:v1"
_SUFFIXES = (".txt", ".jsonl")
_LAYOUT = (
    'a documents dir holds forget/ and holdout/ (each *.txt files, or *.jsonl with a "text" field per line), '
    "optionally retain/ and forget_qa.json / retain_qa.json"
)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class DerivationSettings:
    """The settings that decide the derived items (all part of the fingerprint and the record).

    Defaults are MUSE's: its data-preparation seed (42), 100 items per split, and its lengths in
    words of news text (medians of MUSE-News' files: chunks 1,358, prompts 674, ground truths 82
    words; MUSE cut 2,048 / 1,024 / 128 Llama-2 tokens). ``icl_pairs``: in-context QA pairs drawn from
    a QA file that has no ``*_qa_icl.json`` beside it (MUSE: 10)."""

    seed: int = 42
    chunk_words: int = 1358
    prompt_words: int = 674
    gt_words: int = 82
    verbmem_items: int = 100
    privleak_items: int = 100
    icl_pairs: int = 10

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            low = 0 if name in ("seed", "icl_pairs") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"documents setting {name} must be an integer >= {low}, got {value!r}")
        if self.prompt_words + self.gt_words > self.chunk_words:
            raise ConfigError(
                f"documents settings: prompt_words + gt_words ({self.prompt_words} + {self.gt_words}) must fit "
                f"in chunk_words ({self.chunk_words}); a verbmem item is cut from one chunk, as in MUSE"
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Document:
    """One document and where it came from (``forget/a.txt``, or ``holdout/news.jsonl:3`` for line 3)."""

    source: str
    text: str


@dataclass(frozen=True)
class DocumentsData:
    """A validated documents dir and what was derived from it.

    ``muse``: the MuseData the metrics read (verbmem_forget, privleak_forget/holdout/retain, knowmem_*;
    knowmem splits are empty without QA pairs: see :meth:`available_metrics`). ``derivation``: the
    JSON record of the derived items. ``fingerprint``: sha256 of the documents, the QA pairs, the
    settings and the derived items (the same as ``muse.fingerprint``).
    """

    path: str
    forget: tuple[Document, ...]
    holdout: tuple[Document, ...]
    retain: tuple[Document, ...] | None
    settings: DerivationSettings
    muse: MuseData
    derivation: dict[str, Any]
    fingerprint: str

    @property
    def name(self) -> str:
        return Path(self.path).name

    def available_metrics(self) -> tuple[str, ...]:
        """The MUSE metrics this data supports: verbmem_f and privleak always, knowmem_f / knowmem_r
        only with forget / retain QA pairs."""
        out = ["verbmem_f"]
        if self.muse.knowmem_forget_qa:
            out.append("knowmem_f")
        if self.muse.knowmem_retain_qa:
            out.append("knowmem_r")
        out.append("privleak")
        return tuple(out)


# --------------------------------------------------------------------------- derivation (pure)


def chunk_text(documents: Sequence[str], chunk_words: int) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """The documents joined with "\\n\\n" (MUSE's .txt twin), their word spans (character offsets), and
    the chunks as word ranges ``[a, b)``: consecutive runs of ``chunk_words`` words; a partial last
    chunk is kept when it is the only one or holds at least half a chunk."""
    text = DOC_JOINER.join(documents)
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    chunks = [(a, min(a + chunk_words, len(spans))) for a in range(0, len(spans), chunk_words)]
    if len(chunks) > 1 and chunks[-1][1] - chunks[-1][0] < (chunk_words + 1) // 2:
        chunks.pop()
    return text, spans, chunks


def _doc_bounds(documents: Sequence[Document]) -> list[tuple[int, str]]:
    """(character offset where each document starts in the joined text, its source)."""
    out, at = [], 0
    for doc in documents:
        out.append((at, doc.source))
        at += len(doc.text) + len(DOC_JOINER)
    return out


def _sources(bounds: Sequence[tuple[int, str]], start: int, end: int) -> list[str]:
    return [
        src
        for i, (at, src) in enumerate(bounds)
        if at < end and (bounds[i + 1][0] if i + 1 < len(bounds) else 1 << 62) > start
    ]


def _sample(n: int, k: int, seed: int) -> list[int]:
    """MUSE's ``random.seed(seed); random.sample(population, k)`` on chunk indices, a fresh generator
    per split (MUSE reseeds before every sample); all of them when there are fewer than ``k``."""
    return random.Random(seed).sample(range(n), min(k, n))


def _texts(
    documents: Sequence[Document], settings: DerivationSettings, split: str, k: int
) -> tuple[list[str], list[dict[str, Any]], int]:
    """``k`` seeded whole chunks of a split: their texts, their records, and the chunk count."""
    text, spans, chunks = chunk_text([d.text for d in documents], settings.chunk_words)
    bounds = _doc_bounds(documents)
    texts: list[str] = []
    records: list[dict[str, Any]] = []
    for i, c in enumerate(_sample(len(chunks), k, settings.seed)):
        a, b = chunks[c]
        start, end = spans[a][0], spans[b - 1][1]
        texts.append(text[start:end])
        records.append({"id": i, "chunk": c, "words": [a, b], "sources": _sources(bounds, start, end)})
    return texts, records, len(chunks)


def _verbmem(
    documents: Sequence[Document], settings: DerivationSettings
) -> tuple[list[VerbItem], list[dict[str, Any]], int]:
    text, spans, chunks = chunk_text([d.text for d in documents], settings.chunk_words)
    bounds = _doc_bounds(documents)
    need = settings.prompt_words + settings.gt_words
    eligible = [c for c, (a, b) in enumerate(chunks) if b - a >= need]
    items: list[VerbItem] = []
    records: list[dict[str, Any]] = []
    for i, pick in enumerate(_sample(len(eligible), settings.verbmem_items, settings.seed)):
        c = eligible[pick]
        a = chunks[c][0]
        p_end, g_end = a + settings.prompt_words, a + need
        prompt = text[spans[a][0] : spans[p_end - 1][1]]
        gt = text[spans[p_end][0] : spans[g_end - 1][1]]
        items.append(VerbItem(prompt=prompt, gt=gt))
        records.append(
            {
                "id": i,
                "chunk": c,
                "prompt_words": [a, p_end],
                "gt_words": [p_end, g_end],
                "sources": _sources(bounds, spans[a][0], spans[g_end - 1][1]),
            }
        )
    return items, records, len(eligible)


def _knowmem(
    qa: Sequence[QAItem] | None, icl: Sequence[QAItem] | None, settings: DerivationSettings, icl_source: str | None
) -> tuple[tuple[QAItem, ...], tuple[QAItem, ...], dict[str, Any] | None]:
    if not qa:
        return (), (), None
    if icl is not None:
        return tuple(qa), tuple(icl), {"items": len(qa), "icl": icl_source, "icl_pairs": len(icl)}
    k = min(settings.icl_pairs, len(qa) // 2)
    drawn = sorted(random.Random(settings.seed).sample(range(len(qa)), k))
    taken = set(drawn)
    return (
        tuple(q for i, q in enumerate(qa) if i not in taken),
        tuple(qa[i] for i in drawn),
        {"items": len(qa) - k, "icl": "drawn from the QA file", "icl_indices": drawn, "icl_pairs": k},
    )


def derive(
    forget: Sequence[Document],
    holdout: Sequence[Document],
    retain: Sequence[Document] | None,
    settings: DerivationSettings,
    *,
    forget_qa: Sequence[QAItem] | None = None,
    retain_qa: Sequence[QAItem] | None = None,
    forget_icl: Sequence[QAItem] | None = None,
    retain_icl: Sequence[QAItem] | None = None,
    icl_sources: tuple[str | None, str | None] = (None, None),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The MuseData fields derived from the documents (and QA pairs), and the derivation record.
    A pure function of its arguments."""
    verbmem, verb_records, eligible = _verbmem(forget, settings)
    pf, pf_records, n_forget = _texts(forget, settings, "forget", settings.privleak_items)
    ph, ph_records, n_holdout = _texts(holdout, settings, "holdout", settings.privleak_items)
    pr, pr_records, n_retain = _texts(retain, settings, "retain", settings.privleak_items) if retain else ([], [], 0)
    kf, kf_icl, kf_rec = _knowmem(forget_qa, forget_icl, settings, icl_sources[0])
    kr, kr_icl, kr_rec = _knowmem(retain_qa, retain_icl, settings, icl_sources[1])
    values: dict[str, Any] = {
        "verbmem_forget": tuple(verbmem),
        "knowmem_forget_qa": kf,
        "knowmem_retain_qa": kr,
        "knowmem_forget_icl": kf_icl,
        "knowmem_retain_icl": kr_icl,
        "privleak_forget": tuple(pf),
        "privleak_holdout": tuple(ph),
        "privleak_retain": tuple(pr) if retain else None,
        "raw_forget_docs": tuple(d.text for d in forget),
        "raw_retain_docs": tuple(d.text for d in retain) if retain else None,
    }

    def words(docs: Sequence[Document] | None) -> list[dict[str, Any]] | None:
        return None if docs is None else [{"source": d.source, "words": len(_WORD.findall(d.text))} for d in docs]

    record = {
        "version": DERIVATION_VERSION,
        "settings": settings.as_dict(),
        "unit": "words (whitespace-separated)",
        "documents": {"forget": words(forget), "holdout": words(holdout), "retain": words(retain)},
        "chunks": {
            "forget": n_forget,
            "holdout": n_holdout,
            "retain": n_retain if retain else None,
            "forget_verbmem_eligible": eligible,
        },
        "verbmem": verb_records,
        "privleak_forget": pf_records,
        "privleak_holdout": ph_records,
        "privleak_retain": pr_records if retain else None,
        "knowmem_forget": kf_rec,
        "knowmem_retain": kr_rec,
        "shortfalls": {
            name: {"asked": asked, "got": got}
            for name, asked, got in (
                ("verbmem", settings.verbmem_items, len(verbmem)),
                ("privleak_forget", settings.privleak_items, len(pf)),
                ("privleak_holdout", settings.privleak_items, len(ph)),
                *((("privleak_retain", settings.privleak_items, len(pr)),) if retain else ()),
            )
            if got < asked
        },
    }
    return values, record


# --------------------------------------------------------------------------- reading


def metrics_of(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The MUSE metrics a documents dir supports, from its file names alone (no text is read): verbmem_f and
    privleak always, knowmem_f with ``forget_qa.json``, knowmem_r with ``retain_qa.json``."""
    directory = Path(os.fspath(path)).expanduser()
    out = ["verbmem_f"]
    if (directory / "forget_qa.json").is_file():
        out.append("knowmem_f")
    if (directory / "retain_qa.json").is_file():
        out.append("knowmem_r")
    return (*out, "privleak")


def detect_documents(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a documents dir (forget/ and holdout/ directories; names only, cheap)."""
    directory = Path(os.fspath(path))
    return (directory / "forget").is_dir() and (directory / "holdout").is_dir()


def _read(path: Path, rel: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read document '{rel}' ({exc.strerror or exc}); check its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"document '{rel}' is not valid UTF-8 (bad byte at offset {exc.start}); re-save it as UTF-8"
        ) from None


def _documents(directory: Path, split: str) -> tuple[Document, ...]:
    """The documents of ``split/``: its .txt files and the lines of its .jsonl files, by file name."""
    folder = directory / split
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    docs: list[Document] = []
    for path in files:
        rel = f"{split}/{path.name}"
        if path.is_dir():
            raise DataError(
                f"'{rel}' in documents dir '{directory}' is a directory; documents are the *.txt and *.jsonl "
                f"files directly in {split}/ (move its files up or remove it)"
            )
        if path.suffix not in _SUFFIXES:
            raise DataError(
                f"'{rel}' in documents dir '{directory}' is neither .txt nor .jsonl; documents are *.txt files "
                'or *.jsonl files with a "text" field per line (rename or move it)'
            )
        text = _read(path, rel)
        if path.suffix == ".txt":
            if not text.strip():
                raise DataError(
                    f"document '{rel}' in documents dir '{directory}' is empty; put its text in it or delete it"
                )
            docs.append(Document(source=rel, text=text))
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            at = f"'{rel}' line {number} in documents dir '{directory}'"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{at} is not valid JSON ({exc.msg}: column {exc.colno}); each line must be an object "
                    'with a "text" string'
                ) from None
            value = record.get("text") if isinstance(record, dict) else None
            if not isinstance(value, str) or not value.strip():
                why = (
                    'has no "text" field'
                    if not isinstance(record, dict) or "text" not in record
                    else 'has no text in "text"'
                )
                raise DataError(f'{at} {why}; each line must be an object with a non-empty "text" string')
            docs.append(Document(source=f"{rel}:{number}", text=value))
    if not docs:
        raise DataError(f"{split}/ in documents dir '{directory}' holds no documents; {_LAYOUT}")
    return tuple(docs)


def _qa(directory: Path, name: str) -> tuple[QAItem, ...] | None:
    """``name`` (a JSON list of {"question", "answer"}) when present, validated."""
    if not (directory / name).is_file():
        return None
    where = f"'{name}' in documents dir '{directory}'"
    want = 'a JSON list of {"question": ..., "answer": ...} objects with non-empty strings'
    try:
        value = json.loads(_read(directory / name, name))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{where} is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); it must be {want}"
        ) from None
    if not isinstance(value, list) or not value:
        raise DataError(f"{where} must be {want} (with at least one pair); fix it or remove the file")
    out: list[QAItem] = []
    for index, item in enumerate(value):
        fields = [item.get(k) if isinstance(item, dict) else None for k in ("question", "answer")]
        missing = [k for k, v in zip(("question", "answer"), fields) if not isinstance(v, str) or not v.strip()]
        if missing:
            raise DataError(
                f"{where}, item {index} has no text in {' and '.join(repr(k) for k in missing)}; it must be {want}"
            )
        out.append(QAItem(question=str(fields[0]), answer=str(fields[1])))
    return tuple(out)


def load_documents(path: str | os.PathLike[str], settings: DerivationSettings | None = None) -> DocumentsData:
    """Read and validate a documents dir (read-only) and derive MUSE's evaluation sets from it; every
    problem is one DataError line. ``settings``: seed and lengths (default: MUSE's)."""
    settings = settings or DerivationSettings()
    directory = user_path(path)
    if not directory.is_dir():
        raise DataError(
            f"documents path '{path}' {'does not exist' if not directory.exists() else 'is not a directory'}; {_LAYOUT}"
        )
    missing = [s for s in ("forget", "holdout") if not (directory / s).is_dir()]
    if missing:
        raise DataError(f"documents dir '{directory}' has no {' and no '.join(m + '/' for m in missing)}; {_LAYOUT}")
    forget = _documents(directory, "forget")
    holdout = _documents(directory, "holdout")
    retain = _documents(directory, "retain") if (directory / "retain").is_dir() else None
    forget_qa, retain_qa = _qa(directory, "forget_qa.json"), _qa(directory, "retain_qa.json")
    forget_icl, retain_icl = _qa(directory, "forget_qa_icl.json"), _qa(directory, "retain_qa_icl.json")
    for icl, qa, name in ((forget_icl, forget_qa, "forget"), (retain_icl, retain_qa, "retain")):
        if icl is not None and qa is None:
            raise DataError(
                f"documents dir '{directory}' has {name}_qa_icl.json but no {name}_qa.json; the in-context "
                f"pairs go with the questions they introduce (add {name}_qa.json or remove the file)"
            )
    need = settings.prompt_words + settings.gt_words
    total = sum(len(_WORD.findall(d.text)) for d in forget)
    values, record = derive(
        forget,
        holdout,
        retain,
        settings,
        forget_qa=forget_qa,
        retain_qa=retain_qa,
        forget_icl=forget_icl,
        retain_icl=retain_icl,
        icl_sources=("forget_qa_icl.json" if forget_icl else None, "retain_qa_icl.json" if retain_icl else None),
    )
    if not values["verbmem_forget"]:
        raise DataError(
            f"the forget documents in '{directory}' hold {total} words in chunks of {settings.chunk_words}, "
            f"and no chunk has the {need} words one verbmem item needs "
            f"(prompt_words {settings.prompt_words} + gt_words {settings.gt_words}); "
            "give more text or smaller lengths (chunk_words, prompt_words, gt_words)"
        )
    settings_blob = json.dumps(settings.as_dict(), sort_keys=True)
    content = Digest().text(f"{DERIVATION_VERSION}\0{settings_blob}\0")
    for split, docs in (("forget", forget), ("holdout", holdout), ("retain", retain)):
        content.text(f"{split}:{'absent' if docs is None else len(docs)};")
        for doc in docs or ():
            data = doc.text.encode("utf-8")
            content.text(f"{len(data)}:").data(data)
    content.text(content_fingerprint(values))
    fingerprint = content.hexdigest()
    sources = {
        "verbmem_forget": "derived from forget/",
        "privleak_forget": "derived from forget/",
        "privleak_holdout": "derived from holdout/",
        "raw_forget_docs": "forget/",
    }
    if retain is not None:
        sources.update(privleak_retain="derived from retain/", raw_retain_docs="retain/")
    if forget_qa:
        sources.update(
            knowmem_forget_qa="forget_qa.json",
            knowmem_forget_icl="forget_qa_icl.json" if forget_icl else "forget_qa.json",
        )
    if retain_qa:
        sources.update(
            knowmem_retain_qa="retain_qa.json",
            knowmem_retain_icl="retain_qa_icl.json" if retain_icl else "retain_qa.json",
        )
    forget_docs, retain_docs = values["raw_forget_docs"], values["raw_retain_docs"]
    muse = MuseData(
        path=str(directory),
        verbmem_forget=values["verbmem_forget"],
        knowmem_forget_qa=values["knowmem_forget_qa"],
        knowmem_retain_qa=values["knowmem_retain_qa"],
        knowmem_forget_icl=values["knowmem_forget_icl"],
        knowmem_retain_icl=values["knowmem_retain_icl"],
        privleak_forget=values["privleak_forget"],
        privleak_holdout=values["privleak_holdout"],
        privleak_retain=values["privleak_retain"],
        raw_forget=DOC_JOINER.join(forget_docs),
        raw_retain=None if retain_docs is None else DOC_JOINER.join(retain_docs),
        fingerprint=fingerprint,
        raw_forget_docs=forget_docs,
        raw_retain_docs=retain_docs,
        form="documents",
        location=str(directory),
        sources=sources,
    )
    return DocumentsData(
        path=str(directory),
        forget=forget,
        holdout=holdout,
        retain=retain,
        settings=settings,
        muse=muse,
        derivation=record,
        fingerprint=fingerprint,
    )
