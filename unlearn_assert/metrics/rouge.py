"""ROUGE-L F1 exactly as MUSE computes it, and the text post-processing that comes before it.

Why a module of its own: every generation metric (verbmem_f, knowmem_f, knowmem_r) is "decode the
generated ids, post-process the text, score it against a reference with ROUGE-L F1". Small
differences in any of these steps (stemming on or off, the tokenizer's clean-up, where a stop
string cuts) move the number by points, and the whole point of this tool is that its numbers can
be set beside published MUSE numbers. So the three steps live here, once, and are unit-tested on
hand-checked strings.

MUSE details reproduced here (muse_bench ``metrics/logger.py``, ``metrics/verbmem.py``,
``metrics/knowmem.py``):

* Scores are ``rouge_score``'s ROUGE-L ``fmeasure`` with ``use_stemmer=False``, called as
  ``scorer.score(reference, generation)``. (ROUGE-L F1 is symmetric, but we keep the order.)
* Text is decoded with ``skip_special_tokens=True, clean_up_tokenization_spaces=True``. MUSE ran on
  transformers 4.x, where that clean-up (" ." -> "." and nine similar replacements) was applied to
  Llama-2's BPE tokenizer. transformers >= 5 silently *ignores* the flag for BPE tokenizers, which
  would shift scores; so we decode with the flag off and apply the transformers-4 clean-up
  ourselves (:func:`clean_up_tokenization`), identical on every transformers version.
* KnowMem answers are cut with MUSE's ``get_prefix_before_words_occur(text, ["\\n\\n",
  "\\nQuestion", "Question:"])``: successive ``split(word)[0]``, i.e. the text before the earliest
  occurrence of any stop string (:func:`cut_at_stop_strings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

__all__ = [
    "KNOWMEM_STOP_STRINGS",
    "clean_up_tokenization",
    "contains_stop_string",
    "cut_at_stop_strings",
    "decode",
    "excerpt",
    "rouge_l_f1",
    "rouge_l_recall_stemmed",
]

#: MUSE's stop strings for KnowMem answers, in MUSE's order (the order does not change the result).
KNOWMEM_STOP_STRINGS: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")

# transformers 4.x ``PreTrainedTokenizerBase.clean_up_tokenization``, in its order.
_CLEAN_UP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


@lru_cache(maxsize=1)
def _scorer() -> Any:
    """One shared RougeScorer (building it is cheap, but it is called per sample)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(reference: str, generation: str) -> float:
    """ROUGE-L F1 in [0, 1] of ``generation`` against ``reference`` (``rouge_score``, no stemmer).

    ``rouge_score`` lower-cases, keeps only [a-z0-9] runs as tokens and scores 0 when either side
    has no token, so an empty generation scores 0.0 rather than raising.
    """
    return float(_scorer().score(reference, generation)["rougeL"].fmeasure)


@lru_cache(maxsize=1)
def _stemming_scorer() -> Any:
    """open-unlearning's scorer (``eval_text_similarity``): rouge1 and rougeL, Porter stemmer on."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_l_recall_stemmed(reference: str, generation: str) -> float:
    """ROUGE-L recall in [0, 1] of ``generation`` against ``reference`` with the stemmer on: TOFU's
    ROUGE as open-unlearning computes it (``scorer.score(gt, gen)["rougeL"].recall``), not MUSE's."""
    return float(_stemming_scorer().score(reference, generation)["rougeL"].recall)


def clean_up_tokenization(text: str) -> str:
    """The transformers 4.x decode clean-up that MUSE's published numbers went through."""
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    """Decode as MUSE does: special tokens skipped, transformers-4 clean-up applied.

    ``clean_up_tokenization_spaces=False`` is passed so that no transformers version applies (or
    warns about) its own variant; we then apply the 4.x one explicitly.
    """
    text = tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return clean_up_tokenization(text)


def cut_at_stop_strings(text: str, stops: Iterable[str] = KNOWMEM_STOP_STRINGS) -> str:
    """The text before the first occurrence of any stop string (MUSE's successive splits)."""
    for stop in stops:
        text = text.split(stop)[0]
    return text


def contains_stop_string(text: str, stops: Iterable[str] = KNOWMEM_STOP_STRINGS) -> bool:
    """Whether :func:`cut_at_stop_strings` would cut ``text``.

    Used to stop generating a KnowMem answer early: once a stop string is in the decoded text,
    later tokens are cut away whatever they are, so generating them cannot change the score.
    """
    return any(stop in text for stop in stops)


def excerpt(text: str, limit: int = 160, *, tail: bool = False) -> str:
    """A one-glance excerpt for per-sample records: the head (or, with ``tail``, the end that the
    model continues) of ``text``, marked with an ellipsis where cut."""
    if len(text) <= limit:
        return text
    return "..." + text[-limit:] if tail else text[:limit] + "..."
