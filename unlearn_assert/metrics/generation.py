"""Batched greedy decoding with left padding, a KV cache, and a shared-prefix cache computed once.

Why our own loop instead of ``model.generate``: MUSE's evaluation is greedy decoding of one prompt
at a time, and nearly all of its cost is per-step overhead and re-reading the same 10-shot ICL
prefix for every KnowMem question. A loop of plain forward passes lets us (a) batch prompts with
left padding, (b) compute the ICL prefix's KV cache once per split and share it across all
questions and batches, (c) drop finished rows and stop a KnowMem row as soon as its answer is
already cut by a stop string, all while producing the tokens that batch-1 ``generate`` produces.

Exactness, and what it rests on:

* Greedy = ``argmax`` of the last position's logits (first index on ties, as ``generate``), stop at
  any EOS id of the model's generation config, at most ``max_new_tokens``. Sampling settings in a
  generation config are ignored, exactly as MUSE's ``do_sample=False`` ignores them.
* Padding is masked and ``position_ids`` are ``cumsum(attention_mask) - 1``, so every real token
  sees the same keys at the same rotary positions as without padding. transformers' ``generate``
  derives positions the same way from the mask for Llama-style models; we pass them explicitly.
* A shared prefix is only reused up to the longest run of tokens that ``tokenizer(prefix)`` and
  ``tokenizer(full_prompt)`` agree on (:func:`plan_prefix`): byte-level BPE tokenizers tokenize the
  prefix's trailing "\\n\\n" differently alone than before "Question", so the cache stops before
  it, and the remaining prefix tokens are fed with the question. Prompts that disagree earlier
  than :data:`PREFIX_SLACK` tokens before the end of the prefix take the full-prompt path and are
  counted as fallbacks. Causal attention makes the cached keys/values those of the full prompt.
* Prompts are never truncated (MUSE does not truncate them either); prompts whose length plus
  ``max_new_tokens`` exceeds the model's context window are counted (``over_context``) so a
  report can say that those numbers rest on positions the model was not trained for.
* Batching changes matrix shapes and where padding sits, so logits can differ in the last float
  bits between batch sizes, and a greedy token flips where the top two logits are that close.
  Measured on the tiny Llama (100 VerbMem prompts x 128 tokens, 60 KnowMem questions): in fp32
  batch 1, batch 64 and the prefix path give identical tokens, and the engine's numbers equal
  one-``generate``-per-prompt MUSE exactly (tests). In bf16, ``batch_size=1`` (prefix cache
  included) still equals batch-1 ``generate`` exactly, but batch 64 flips a token in ~1 of 5
  VerbMem rows somewhere within 128 tokens (bf16 keeps 8 mantissa bits, so near-ties are
  common): verbmem_f 8.75 -> 8.55 there. That is why the automatic batch size depends only on
  the config, compute dtype and machine (:func:`auto_batch_size`): U, T and q(U) of one
  architecture are evaluated with the same batches. Pass ``batch_size=1`` for numbers
  bit-comparable with MUSE's sequential code in half precision.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = [
    "MAX_AUTO_BATCH",
    "PREFIX_SLACK",
    "Generated",
    "ModelIO",
    "auto_batch_size",
    "context_window",
    "eos_token_ids",
    "ignored_generation_settings",
    "greedy_generate",
    "plan_prefix",
    "resolve_batch_size",
]

#: Upper bound of the automatic batch size: beyond it the per-step overhead is already amortized.
MAX_AUTO_BATCH = 64
#: How many trailing prefix tokens may be re-tokenized differently in a full prompt (BPE merges
#: across the prefix/question boundary) before the prompt falls back to the full-prompt path.
PREFIX_SLACK = 4


@dataclass
class Generated:
    """Greedy continuations (EOS included when produced) in the order of the prompts, plus how."""

    ids: list[list[int]]
    batch_size: int
    prefix_tokens: int = 0
    fallbacks: int = 0
    forward_passes: int = 0
    over_context: int = 0


class ModelIO:
    """The few model calls the loop needs, across transformers versions and model wrappers.

    transformers 5 renamed ``past_key_values`` to ``cache`` and 4.4x named ``logits_to_keep``
    ``num_logits_to_keep``; we look at the forward signature once instead of pinning a version.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        params: Mapping[str, Any]
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - exotic wrappers
            params = {}
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        # models that derive positions themselves (e.g. ALiBi) may not take position_ids
        self.positions = "position_ids" in params or not params
        self.logits_kw = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)
        from ..models import input_device

        self.device = input_device(model)

    def new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # transformers < 4.56 takes no config
            return DynamicCache()

    def forward(self, ids: Any, mask: Any, pos: Any, cache: Any, *, last_only: bool) -> Any:
        """Logits of the last position ([B, V], when ``last_only``) or of all positions ([B, T, V])."""
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "use_cache": cache is not None,
        }
        if self.positions:
            kwargs["position_ids"] = pos.to(self.device)
        if cache is not None:
            kwargs[self.cache_kw] = cache
        if last_only and self.logits_kw is not None:
            kwargs[self.logits_kw] = 1
        logits = self.model(**kwargs).logits
        return logits[:, -1, :] if last_only else logits


def eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """The ids that end a generation, as ``generate`` takes them (generation config, then config,
    then tokenizer)."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None), tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is not None:
            return frozenset([value] if isinstance(value, int) else (int(v) for v in value))
    return frozenset()


# Logits processors that ``generate(do_sample=False)`` would apply if a generation config set
# them, with their inactive values. Our loop is plain argmax, so a config that sets one of these
# would make MUSE's ``generate`` and this engine differ: we report it rather than hide it.
_PROCESSORS: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "encoder_repetition_penalty": 1.0,
}


def ignored_generation_settings(model: Any) -> list[str]:
    """Generation-config settings that ``generate`` would honour in greedy mode but we do not.

    Sampling settings (``temperature``, ``top_p``...) are not listed: MUSE's ``do_sample=False``
    ignores them too.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return []
    return sorted(name for name, inactive in _PROCESSORS.items() if getattr(config, name, inactive) not in (inactive, None, [], 0))


def context_window(model: Any) -> int | None:
    """The model's context window from its config (None when the config does not say)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 1:
            return value
    return None


def pad_token_id(tokenizer: Any) -> int:
    """A placeholder id for padded slots (always masked, so any valid id works)."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if value is not None:
            return int(value)
    return 0  # pragma: no cover


# --------------------------------------------------------------------------- batch size


def _memory_budget(model: Any, weights: int) -> int:
    """Bytes we allow activations and KV caches to use.

    Deterministic, and the same for every model of one architecture and compute dtype on one
    machine: free memory changes from run to run, and the real weight footprint changes with
    quantization, while a batch size that changes can flip near-tied greedy tokens in half
    precision (see the module docstring) and so blur the very difference between U and q(U)
    that is measured. So the budget is half of the GPU memory that ``weights`` (the
    *unquantized* size, from the config) leave, or a quarter of physical RAM on CPU.
    """
    import torch

    device = next(iter(model.parameters())).device
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(int((0.9 * total - weights) * 0.5), 1 << 28)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 << 30
    return max(total // 4, 1 << 28)


def _compute_element_size(model: Any) -> int:
    """Bytes per activation/KV element: the model's floating dtype (packed 4-bit weights are
    stored as uint8, but bitsandbytes computes and caches in fp16/bf16)."""
    import torch

    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return torch.empty((), dtype=dtype).element_size()
    floating = next((p for p in model.parameters() if p.is_floating_point()), None)
    return floating.element_size() if floating is not None else 2


def auto_batch_size(
    model: Any,
    n_items: int,
    prompt_tokens: int,
    new_tokens: int = 0,
    *,
    full_logits: bool = False,
    cap: int = MAX_AUTO_BATCH,
) -> int:
    """The largest batch (<= ``cap``, <= ``n_items``) whose estimated peak memory fits the budget.

    Per row: the KV cache for ``prompt_tokens + new_tokens``, the prefill activations (MLP
    intermediates and, in the worst case, the attention score matrix) and fp32 logits (all
    positions with ``full_logits``, for scoring; the last one otherwise). Everything is derived
    from the config and the compute dtype, never from the (possibly quantized) weights.
    """
    cfg = getattr(model, "config", None)

    def get(*names: str, default: int) -> int:
        for name in names:
            value = getattr(cfg, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return default

    hidden = get("hidden_size", "n_embd", "d_model", default=4096)
    layers = get("num_hidden_layers", "n_layer", "num_layers", default=32)
    heads = get("num_attention_heads", "n_head", default=32)
    kv_heads = get("num_key_value_heads", default=heads)
    head_dim = get("head_dim", default=max(hidden // heads, 1))
    inter = get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)
    vocab = get("vocab_size", default=32000)
    elt = _compute_element_size(model)
    weights = (2 * vocab * hidden + layers * (2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter)) * elt
    seq = max(prompt_tokens, 1)
    kv = 2 * layers * kv_heads * head_dim * (seq + new_tokens) * elt
    activations = seq * (6 * hidden + 3 * inter) * 4 + heads * seq * seq * 4
    logits = (seq if full_logits else 1) * vocab * 4 * (4 if full_logits else 2)
    per_row = kv + activations + logits
    fit = _memory_budget(model, weights) // max(per_row, 1)
    return int(max(1, min(cap, max(n_items, 1), fit)))


def resolve_batch_size(batch_size: int | str | None) -> int | None:
    """``None``/``"auto"``/``0`` -> None (automatic); a positive int -> itself; else ConfigError."""
    if batch_size is None or batch_size == "auto" or batch_size == 0:
        return None
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ConfigError(f"batch size must be a positive integer or 'auto', got {batch_size!r}; pass e.g. --unlearn-batch-size 8")
    return batch_size


# --------------------------------------------------------------------------- shared prefix


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_prefix(prefix_ids: Sequence[int], prompts: Sequence[Sequence[int]], slack: int = PREFIX_SLACK) -> tuple[int, list[int]]:
    """How many leading tokens to serve from the prefix cache, and which prompts cannot use it.

    The cached length is the shortest agreement between ``prefix_ids`` and the eligible prompts'
    ids, so for every eligible prompt ``prompt[:length] == prefix_ids[:length]`` holds exactly and
    each keeps at least one token of its own to feed. A prompt is a fallback when its ids leave
    ``prefix_ids`` more than ``slack`` tokens before the prefix ends (or it has no own token).
    """
    need = max(len(prefix_ids) - slack, 1)
    common = [_common_length(prefix_ids, p) for p in prompts]
    eligible = [i for i, c in enumerate(common) if c >= need and len(prompts[i]) > need]
    if not eligible:
        return 0, list(range(len(prompts)))
    length = min(min(common[i], len(prompts[i]) - 1) for i in eligible)
    chosen = set(eligible)
    return length, [i for i in range(len(prompts)) if i not in chosen]


# --------------------------------------------------------------------------- decoding


def _run_batch(
    io: ModelIO,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int,
    eos: frozenset[int],
    prefix_cache: Any = None,
    prefix_len: int = 0,
    stop: Callable[[list[int]], bool] | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy-decode one batch. Layout per row: [cached prefix][left padding][own tokens]."""
    import torch

    n = len(rows)
    width = max(len(r) for r in rows)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, prefix_len + width), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        mask[i, prefix_len + width - len(row):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        if n > 1:
            cache.batch_repeat_interleave(n)
    else:
        cache = io.new_cache()
    logits = io.forward(ids, mask, positions[:, prefix_len:], cache, last_only=True)
    passes = 1
    next_pos = positions[:, -1:] + 1
    out: list[list[int]] = [[] for _ in range(n)]
    active = list(range(n))
    for step in range(max_new_tokens):
        tokens = logits.argmax(dim=-1).cpu()
        keep: list[int] = []
        for j, (index, token) in enumerate(zip(active, tokens.tolist())):
            out[index].append(token)
            if token not in eos and not (stop is not None and stop(out[index])):
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):  # drop finished rows from the batch and the cache
            kept = torch.tensor(keep, dtype=torch.long)
            cache.batch_select_indices(kept.to(io.device))
            mask, next_pos, tokens = mask[kept], next_pos[kept], tokens[kept]
            active = [active[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
        logits = io.forward(tokens[:, None], mask, next_pos, cache, last_only=True)
        passes += 1
        next_pos = next_pos + 1
    return out, passes


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch_size: int | None = None,
    prefix_ids: Sequence[int] | None = None,
    stop: Callable[[list[int]], bool] | None = None,
) -> Generated:
    """Greedy continuations of tokenized ``prompts`` (ids as ``tokenizer(prompt)`` gives them).

    ``prefix_ids``: the tokenization of a text that every prompt starts with; its KV cache is
    computed once and shared (see :func:`plan_prefix`). ``stop(ids)``: a per-row early stop after
    each new token (EOS always stops). ``batch_size=None`` picks one from memory
    (:func:`auto_batch_size`). Prompts are batched longest first (less padding, and the largest
    batch runs first so an out-of-memory error comes early); results keep the input order.
    """
    import torch

    n = len(prompts)
    if n == 0 or max_new_tokens <= 0:
        return Generated(ids=[[] for _ in range(n)], batch_size=batch_size or 1)
    io = ModelIO(model)
    eos, pad = eos_token_ids(model, tokenizer), pad_token_id(tokenizer)
    prefix_len, fallbacks = (0, list(range(n))) if prefix_ids is None else plan_prefix(prefix_ids, prompts)
    if batch_size is None:
        batch_size = auto_batch_size(model, n, max(len(p) for p in prompts), max_new_tokens)
    results: list[list[int]] = [[] for _ in range(n)]
    passes = 0
    with torch.inference_mode():
        groups: list[tuple[list[int], int, Any]] = []
        shared = sorted(set(range(n)) - set(fallbacks))
        if shared:
            cache = io.new_cache()
            ids = torch.tensor([list(prefix_ids or [])[:prefix_len]], dtype=torch.long)
            io.forward(ids, torch.ones_like(ids), torch.arange(prefix_len)[None], cache, last_only=True)
            passes += 1
            groups.append((shared, prefix_len, cache))
        if fallbacks:
            groups.append((fallbacks, 0, None))
        for members, offset, cache in groups:
            order = sorted(members, key=lambda i: -len(prompts[i]))
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                rows = [list(prompts[i])[offset:] for i in chunk]
                outs, used = _run_batch(io, rows, max_new_tokens, pad_id=pad, eos=eos, prefix_cache=cache, prefix_len=offset, stop=stop)
                passes += used
                for i, generated in zip(chunk, outs):
                    results[i] = generated
    n_fallbacks = len(fallbacks) if prefix_ids is not None else 0
    window = context_window(model)
    over = 0 if window is None else sum(len(p) + max_new_tokens > window for p in prompts)
    return Generated(
        ids=results, batch_size=batch_size, prefix_tokens=prefix_len, fallbacks=n_fallbacks, forward_passes=passes, over_context=over
    )
