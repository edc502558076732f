"""KnowMem on the forget and retain QA sets (``knowmem_f``, ``knowmem_r``).

MUSE (``metrics/knowmem.py``), reproduced step by step:

1. ``general_prompt`` = for *every* ICL pair of the split's ``*_qa_icl.json`` (MUSE ships 10, any
   number works), ``"Question: {q}\\nAnswer: {a}\\n\\n"``, concatenated.
2. Prompt = ``general_prompt + "Question: {q}\\nAnswer: "`` (trailing space included), tokenized
   whole with ``tokenizer(prompt, add_special_tokens=True)``: BOS first.
3. Greedy decoding, ``max_new_tokens=32``, stop at EOS; decoded with special tokens skipped and
   the transformers-4 clean-up; cut before the first "\\n\\n", "\\nQuestion" or "Question:".
4. Score = ROUGE-L F1 (no stemmer) against the answer; the metric is 100 x the mean.

What we do differently is only *how*: every prompt of a split starts with the same ICL text, so
its KV cache is computed once per split and shared by all questions and batches (up to the last
token on which ``tokenizer(prefix)`` and ``tokenizer(prompt)`` agree, see
:func:`.generation.plan_prefix`), and a row stops generating as soon as its decoded text already
contains a stop string (the cut makes later tokens irrelevant). The tests check equality with
the naive full-prompt, one-``generate``-per-question path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .generation import Generated, greedy_generate, truncation_record
from .progress import Meter
from .rouge import KNOWMEM_STOP_STRINGS, contains_stop_string, cut_at_stop_strings, decode, rouge_l_f1
from .stats import MetricResult

__all__ = ["KNOWMEM_MAX_NEW_TOKENS", "icl_prefix", "knowmem", "knowmem_generations", "knowmem_prompt"]

#: MUSE's ``knowmem_max_new_tokens``.
KNOWMEM_MAX_NEW_TOKENS = 32


def icl_prefix(icl: Sequence[Any]) -> str:
    """MUSE's ``general_prompt``: every ICL pair (objects with ``.question``/``.answer``)."""
    return "".join(f"Question: {pair.question}\nAnswer: {pair.answer}\n\n" for pair in icl)


def knowmem_prompt(prefix: str, question: str) -> str:
    """The full prompt for one question (note the trailing space after "Answer:", as MUSE)."""
    return prefix + f"Question: {question}\nAnswer: "


def knowmem_generations(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    icl: Sequence[Any],
    *,
    batch_size: int | None = None,
    max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
    reuse_prefix: bool = True,
    early_stop: bool = True,
    meter: Meter | None = None,
    truncate: bool = False,
) -> tuple[list[str], Generated]:
    """Cut answer texts for ``questions`` and the raw generation record.

    ``reuse_prefix=False`` feeds every full prompt from scratch and ``early_stop=False`` always
    decodes ``max_new_tokens`` (or to EOS): both exist so the tests can compare the fast path with
    the naive one inside the same engine. ``truncate``: a prompt beyond the context window keeps its end
    (:func:`.generation.left_truncate`; it then no longer starts with the ICL prefix, so it takes the
    full-prompt path).
    """
    prefix = icl_prefix(icl)
    prompts = [knowmem_prompt(prefix, q) for q in questions]
    encoded = [list(ids) for ids in tokenizer(prompts)["input_ids"]] if prompts else []
    prefix_ids = list(tokenizer(prefix)["input_ids"]) if reuse_prefix and prefix else None

    def stop(ids: list[int]) -> bool:
        return contains_stop_string(decode(tokenizer, ids), KNOWMEM_STOP_STRINGS)

    out = greedy_generate(
        model,
        tokenizer,
        encoded,
        max_new_tokens,
        batch_size=batch_size,
        prefix_ids=prefix_ids,
        stop=stop if early_stop else None,
        meter=meter,
        truncate=truncate,
    )
    texts = [cut_at_stop_strings(decode(tokenizer, ids), KNOWMEM_STOP_STRINGS) for ids in out.ids]
    return texts, out


def knowmem(
    model: Any,
    tokenizer: Any,
    qa: Sequence[Any],
    icl: Sequence[Any],
    *,
    batch_size: int | None = None,
    max_new_tokens: int = KNOWMEM_MAX_NEW_TOKENS,
    reuse_prefix: bool = True,
    meter: Meter | None = None,
    truncate: bool = False,
) -> MetricResult:
    """``knowmem_f`` / ``knowmem_r`` over ``qa`` with the split's ``icl`` pairs (``meter``: progress lines; a
    prompt cut by ``truncate`` carries ``truncation`` in its record)."""
    texts, out = knowmem_generations(
        model,
        tokenizer,
        [item.question for item in qa],
        icl,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        reuse_prefix=reuse_prefix,
        meter=meter,
        truncate=truncate,
    )
    scores: list[float] = []
    samples: list[dict[str, Any]] = []
    for index, (item, text) in enumerate(zip(qa, texts)):
        score = rouge_l_f1(item.answer, text)
        scores.append(score)
        samples.append(
            {
                "id": index,
                "prompt": item.question,
                "generation": text,
                "reference": item.answer,
                "score": score * 100.0,
                **truncation_record(out, index),
            }
        )
    value = sum(scores) / len(scores) * 100.0 if scores else float("nan")
    extras = {
        "batch_size": out.batch_size,
        "n": len(qa),
        "icl_pairs": len(icl),
        "prefix_tokens": out.prefix_tokens,
        "prefix_fallbacks": out.fallbacks,
        "forward_passes": out.forward_passes,
        "over_context": out.over_context,
        "truncated": len(out.truncated),
        "seconds_split": {"prefill": out.prefill_seconds, "decode": out.decode_seconds},
    }
    return MetricResult(value=value, scores=scores, samples=samples, extras=extras)
