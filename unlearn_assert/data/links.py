"""Which forget document each verbmem and knowmem item comes from, and the relearn split built on it.

Why: ``relearn-forget-<n>`` fine-tunes on part of the forget text and must measure the forget
metrics only on items whose source text it never saw; otherwise a "recovery" is just the training
text repeated back. MUSE's layout does not link items to documents, so the link is defined here:

* **documents**: the raw forget documents in the data set's order (``raw/forget.json`` or the
  ``forget`` split of the Hugging Face form). A single document (a ``raw/forget.txt``) is cut on
  blank lines, the inverse of MUSE's ``"\\n\\n".join`` that wrote the .txt twin. Blank documents are
  left out; indices count the rest.
* **verbmem item** -> every document that contains its prompt or its reference continuation
  (``gt``): MUSE's verbmem prompts are excerpts of the raw forget text.
* **knowmem QA pair** -> every document that contains its answer; when no document contains the
  answer as a phrase, every document that contains each of its words.
* Text is compared case-folded with whitespace collapsed. An item that reaches no document is
  *unlinked*: it is left out of relearn-forget rows, and the split says so in a note.

**The split** (:func:`relearn_split`): the first half of the documents (``n // 2``) is held in
(trained on); an item is evaluated only when it is linked and none of its documents is held in.
:meth:`RelearnSplit.check` re-verifies that invariant wherever a split is used. Pure Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import DataError
from ..plain import digest
from .muse import DOC_JOINER, RAW_FORGET_HINT, MuseData

__all__ = ["ItemLinks", "RelearnSplit", "forget_documents", "forget_split", "link_items", "relearn_split", "restricted"]

_WORD = re.compile(r"\w+")


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def forget_documents(data: MuseData) -> tuple[tuple[str, ...], str]:
    """The forget documents (see the module docstring) and a phrase saying where they came from."""
    docs = data.raw_forget_docs
    if not docs:
        raise DataError(
            f"data dir '{data.path}' has no raw forget text ({RAW_FORGET_HINT}); relearn-forget trains on "
            "part of it, so add it or use relearn-retain-<steps>"
        )
    source = data.sources.get("raw_forget_docs", "raw forget text")
    if len(docs) == 1:
        docs, source = tuple(docs[0].split(DOC_JOINER)), f"{source}, cut on blank lines"
    return tuple(d for d in docs if d.strip()), source


@dataclass(frozen=True)
class ItemLinks:
    """For each verbmem / knowmem_f item (by index), the documents its text is found in (empty: unlinked)."""

    n_documents: int
    source: str
    items: dict[str, tuple[frozenset[int], ...]]
    fallback: dict[str, tuple[int, ...]] = field(default_factory=dict)  # QA items linked word by word


def link_items(data: MuseData, documents: Sequence[str] | None = None, source: str = "given documents") -> ItemLinks:
    """Link every verbmem and forget-QA item of ``data`` to the documents that contain its text
    (``documents``: default :func:`forget_documents`)."""
    if documents is None:
        documents, source = forget_documents(data)
    docs = [_norm(d) for d in documents]
    words = [set(_WORD.findall(d)) for d in docs]

    def containing(text: str) -> set[int]:
        needle = _norm(text)
        return {i for i, d in enumerate(docs) if needle and needle in d}

    verb = tuple(frozenset(containing(item.prompt) | containing(item.gt)) for item in data.verbmem_forget)
    qa: list[frozenset[int]] = []
    fallback: list[int] = []
    for index, item in enumerate(data.knowmem_forget_qa):
        found = containing(item.answer)
        if not found:
            needed = set(_WORD.findall(_norm(item.answer)))
            found = {i for i, w in enumerate(words) if needed and needed <= w}
            if found:
                fallback.append(index)
        qa.append(frozenset(found))
    return ItemLinks(len(docs), source, {"verbmem_f": verb, "knowmem_f": tuple(qa)}, {"knowmem_f": tuple(fallback)})


@dataclass(frozen=True)
class RelearnSplit:
    """Which documents relearn-forget trains on and which items it evaluates (indices into the data's splits)."""

    n_documents: int
    document_source: str
    trained_documents: tuple[int, ...]
    evaluated: dict[str, tuple[int, ...]]
    #: items left out because one of their documents is trained on / because they reach no document
    excluded_trained: dict[str, tuple[int, ...]]
    unlinked: dict[str, tuple[int, ...]]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """What the JSON row records."""
        return {
            "n_documents": self.n_documents,
            "document_source": self.document_source,
            "trained_documents": list(self.trained_documents),
            "evaluated": {m: list(v) for m, v in self.evaluated.items()},
            "excluded_trained": {m: list(v) for m, v in self.excluded_trained.items()},
            "unlinked": {m: list(v) for m, v in self.unlinked.items()},
            "notes": list(self.notes),
        }

    @property
    def fingerprint(self) -> str:
        return digest(self.to_dict())

    def check(self, links: ItemLinks) -> None:
        """Fail loudly if an evaluated item is linked to a trained document, or is unlinked (a bug, never bad input)."""
        trained = set(self.trained_documents)
        for metric, indices in self.evaluated.items():
            for i in indices:
                docs = links.items[metric][i]
                if not docs or docs & trained:
                    raise AssertionError(
                        f"relearn split: {metric} item {i} is evaluated but comes from documents "
                        f"{sorted(docs)}, of which {sorted(docs & trained)} are trained on"
                    )


def relearn_split(data: MuseData, links: ItemLinks | None = None) -> RelearnSplit:
    """Hold in the first half of the forget documents; evaluate the items that come only from the other half.
    A data set that cannot be split (fewer than two documents, or no item of a forget metric left to
    evaluate) is a :class:`DataError` that says why."""
    links = links or link_items(data)
    n = links.n_documents
    if n < 2:
        raise DataError(
            f"data dir '{data.path}' has {n} forget document(s) ({links.source}); relearn-forget needs at least 2, "
            "to train on the first half and measure the other; use relearn-retain-<steps> instead"
        )
    trained = tuple(range(n // 2))
    held_in = set(trained)
    evaluated: dict[str, tuple[int, ...]] = {}
    excluded: dict[str, tuple[int, ...]] = {}
    unlinked: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for metric, items in links.items.items():
        evaluated[metric] = tuple(i for i, docs in enumerate(items) if docs and not docs & held_in)
        excluded[metric] = tuple(i for i, docs in enumerate(items) if docs & held_in)
        unlinked[metric] = tuple(i for i, docs in enumerate(items) if not docs)
        what = "prompt or continuation" if metric == "verbmem_f" else "answer"
        if unlinked[metric]:
            notes.append(
                f"{metric}: {len(unlinked[metric])} of {len(items)} items (indices {_short(unlinked[metric])}) could "
                "not be "
                f"linked to a forget document (their {what} is in none of the {n}); relearn-forget rows leave them out"
            )
        fallback = links.fallback.get(metric, ())
        if fallback:
            notes.append(
                f"{metric}: {len(fallback)} items (indices {_short(fallback)}) were linked word by word (their answer "
                "is "
                "not a phrase of any document)"
            )
        if not evaluated[metric]:
            raise DataError(
                f"data dir '{data.path}' is too small to split for relearn-forget: none of its {len(items)} {metric} "
                "items comes only "
                f"from the held-out documents {n // 2}..{n - 1} of {n} ({links.source}; {len(excluded[metric])} touch "
                "the trained "
                f"half, {len(unlinked[metric])} reach no document); add forget documents with their items, or use "
                "relearn-retain-<steps>"
            )
    split = RelearnSplit(n, links.source, trained, evaluated, excluded, unlinked, tuple(notes))
    split.check(links)
    return split


def forget_split(data: MuseData) -> tuple[RelearnSplit, tuple[str, ...]]:
    """relearn-forget's split of ``data`` and the forget documents it indexes."""
    documents, source = forget_documents(data)
    return relearn_split(data, link_items(data, documents, source)), documents


def _short(indices: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, indices[:limit]))
    return shown + (f", ... ({len(indices) - limit} more)" if len(indices) > limit else "")


def training_text(documents: Sequence[str], split: RelearnSplit) -> str:
    """The held-in documents as one text, joined as MUSE's .txt twins are."""
    return DOC_JOINER.join(documents[i] for i in split.trained_documents)


def restricted(data: MuseData, split: RelearnSplit) -> MuseData:
    """``data`` with the verbmem and forget-QA splits cut to the evaluated items (the other splits whole);
    its fingerprint names the cut."""
    verb = tuple(data.verbmem_forget[i] for i in split.evaluated["verbmem_f"])
    qa = tuple(data.knowmem_forget_qa[i] for i in split.evaluated["knowmem_f"])
    cut = digest({"data": data.fingerprint, "relearn_split": split.fingerprint})
    return replace(data, fingerprint=cut, verbmem_forget=verb, knowmem_forget_qa=qa)
