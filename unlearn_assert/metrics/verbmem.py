"""VerbMem on the forget set (``verbmem_f``): does the model continue forget passages verbatim?

MUSE (``metrics/verbmem.py``), reproduced step by step:

1. ``input_ids = tokenizer(prompt, add_special_tokens=True)``: BOS included.
2. Greedy decoding of ``max_new_tokens=128`` new tokens (``do_sample=False``), stopping at EOS.
   One fork samples with temperature 0.9 here; that is not MUSE's definition and we do not copy it.
3. The generation is decoded with ``skip_special_tokens=True`` and the transformers-4 clean-up.
4. The reference is ``tokenizer(gt, add_special_tokens=True).input_ids[:, :128]`` decoded the same
   way. Note what this means: the BOS token is one of the 128, so the reference holds the first
   127 tokens of ``gt`` for a tokenizer that adds BOS (and skip_special_tokens then drops BOS).
5. Score = ROUGE-L F1 (no stemmer); ``verbmem_f`` = 100 x the mean over items.

What we do differently is only *how*: prompts are batched with left padding (see
:mod:`.generation`), which the tests show yields the same tokens as one ``generate`` per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .generation import Generated, greedy_generate, truncation_record
from .progress import Meter
from .rouge import decode, excerpt, rouge_l_f1
from .stats import MetricResult

__all__ = ["VERBMEM_MAX_NEW_TOKENS", "reference_text", "verbmem_f", "verbmem_generations"]

#: MUSE's ``verbmem_max_new_tokens``; also the length of the reference in tokens (BOS included).
VERBMEM_MAX_NEW_TOKENS = 128


def reference_text(tokenizer: Any, gt: str, max_tokens: int = VERBMEM_MAX_NEW_TOKENS) -> str:
    """MUSE's reference: the first ``max_tokens`` ids of ``tokenizer(gt)`` (special tokens
    included), decoded with special tokens skipped."""
    return decode(tokenizer, tokenizer(gt)["input_ids"][:max_tokens])


def verbmem_generations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    batch_size: int | None = None,
    max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
    meter: Meter | None = None,
    truncate: bool = False,
) -> tuple[list[list[int]], Generated]:
    """Greedy continuation ids for each prompt, and the generation record (batch size used...).
    ``truncate``: a prompt beyond the context window keeps its end (:func:`.generation.left_truncate`)."""
    encoded = [list(ids) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []
    out = greedy_generate(
        model, tokenizer, encoded, max_new_tokens, batch_size=batch_size, meter=meter, truncate=truncate
    )
    return out.ids, out


def verbmem_f(
    model: Any,
    tokenizer: Any,
    items: Sequence[Any],
    *,
    batch_size: int | None = None,
    max_new_tokens: int = VERBMEM_MAX_NEW_TOKENS,
    meter: Meter | None = None,
    truncate: bool = False,
) -> MetricResult:
    """``verbmem_f`` over ``items`` (objects with ``.prompt`` and ``.gt``), with per-sample records (a prompt
    cut by ``truncate`` carries ``truncation``: its tokens, those kept, and which end). ``meter``: progress
    lines (:mod:`.progress`)."""
    prompts = [item.prompt for item in items]
    ids, out = verbmem_generations(
        model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, meter=meter, truncate=truncate
    )
    scores: list[float] = []
    samples: list[dict[str, Any]] = []
    for index, (item, generated) in enumerate(zip(items, ids)):
        generation = decode(tokenizer, generated)
        reference = reference_text(tokenizer, item.gt, max_new_tokens)
        score = rouge_l_f1(reference, generation)
        scores.append(score)
        samples.append(
            {
                "id": index,
                "prompt": excerpt(item.prompt, tail=True),
                "generation": generation,
                "reference": reference,
                "score": score * 100.0,
                "new_tokens": len(generated),
                **truncation_record(out, index),
            }
        )
    value = sum(scores) / len(scores) * 100.0 if scores else float("nan")
    extras = {
        "batch_size": out.batch_size,
        "n": len(items),
        "over_context": out.over_context,
        "truncated": len(out.truncated),
        "seconds_split": {"prefill": out.prefill_seconds, "decode": out.decode_seconds},
    }
    return MetricResult(value=value, scores=scores, samples=samples, extras=extras)
