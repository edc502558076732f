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
* Prompts are not truncated (MUSE does not truncate them either); prompts whose length plus
  ``max_new_tokens`` exceeds the model's context window are counted (``over_context``) so a
  report can say that those numbers rest on positions the model was not trained for. The gate
  refuses such an item before it loads anything (``--unlearn-overlong=error``), or asks for
  ``truncate=True`` (``--unlearn-overlong=truncate``): a prompt too long keeps its last
  ``window - max_new_tokens`` tokens, as lm-evaluation-harness cuts a context (``left_truncate_len``),
  so the continuation follows the text it continues; :attr:`Generated.truncated` says which.
* Batching changes matrix shapes and where padding sits, so logits can differ in the last float
  bits between batch sizes, and a greedy token flips where the top two logits are that close.
  Measured on the tiny Llama (100 VerbMem prompts x 128 tokens, 60 KnowMem questions): in fp32
  batch 1, batch 64 and the prefix path give identical tokens, and the engine's numbers equal
  one-``generate``-per-prompt MUSE exactly (tests); ``bnb-int8`` is the exception in any dtype, as
  LLM.int8 computes in fp16 every feature column in which any row of the batch has an outlier
  (|x| >= 6), so its tokens depend on the batch's other rows. In bf16, ``batch_size=1`` (prefix
  cache included) still equals batch-1 ``generate`` exactly, but batch 64 flips a token in ~1 of 5
  VerbMem rows somewhere within 128 tokens (bf16 keeps 8 mantissa bits, so near-ties are
  common): verbmem_f 8.75 -> 8.55 there. That is why the automatic batch size depends only on
  the config, compute dtype and machine (:func:`auto_batch_size`): U, T and q(U) of one
  architecture are evaluated with the same batches. Pass ``batch_size=1`` for numbers
  bit-comparable with MUSE's sequential code in half precision.

Speed and memory (issue 19): prompts are grouped in length buckets (:func:`length_buckets`),
prefilled a few rows at a time within a quarter of the memory budget (:func:`memory_budget`; a
prompt longer than that in chunks over its own cache), then decoded together in a pre-sized KV
cache written in place (:func:`presized_cache`) under one additive mask opened a column per step.
Only the last position's logits are ever computed. On the tiny fixture model every greedy token
is unchanged by this (tests); chunked prefill changes matrix shapes, so in half precision it can
flip a near-tie like a different batch size does.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from ..errors import ConfigError
from .progress import Meter

__all__ = [
    "CONTEXT_WINDOW_KEYS",
    "CPU_BUDGET_FACTOR",
    "MAX_AUTO_BATCH",
    "MIN_BUDGET",
    "PREFIX_SLACK",
    "Generated",
    "GenerationPlan",
    "ModelIO",
    "ModelShape",
    "auto_batch_size",
    "sdpa_gqa_on_cpu",
    "context_window",
    "eos_token_ids",
    "ignored_generation_settings",
    "greedy_generate",
    "left_truncate",
    "length_buckets",
    "memory_budget",
    "plan_generation",
    "plan_prefix",
    "presized_cache",
    "resolve_batch_size",
    "truncation_record",
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
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    #: prompt index -> its length before ``truncate=True`` cut it to :attr:`kept` tokens
    truncated: dict[int, int] = field(default_factory=dict)
    kept: int | None = None


def _gqa_kernel(attention_mask: Any, key: Any, value: Any) -> bool:
    """transformers' ``use_gqa_in_sdpa`` as we answer it on CPU: SDPA's own grouped-query path
    (``enable_gqa=True``), with or without a mask, whenever key and value heads have one width."""
    return bool(key.shape[-1] == value.shape[-1])


@contextmanager
def sdpa_gqa_on_cpu(device: Any) -> Iterator[None]:
    """While active, transformers' SDPA attention on CPU lets torch group the query heads over
    the K/V heads (``enable_gqa=True``) instead of copying K and V ``heads / kv_heads`` times.

    Why: with an attention mask (every padded batch, every decode step) transformers only uses
    ``enable_gqa`` on CUDA and otherwise calls ``repeat_kv``, which copies the whole KV cache in
    every layer at every decode step: measured on this CPU (8 rows, 1,000 cached positions, 9 query
    / 3 KV heads, one thread) 7.0 ms per layer and step against 1.0 ms, i.e. most of a GQA model's
    decode time (SmolLM-135M's shape: verbmem decode 38.3 s -> 17.4 s for 8 prompts). torch's CPU kernel gives
    bit-identical outputs either way (tested for fp32 and bf16,
    bool and additive masks, prefill and decode shapes, AVX2 and AVX512 kernels). Not on CUDA: there
    a mask sends ``enable_gqa`` to the math kernel, so transformers' choice is kept. A no-op when
    the transformers internals differ (other versions), or torch predates ``enable_gqa`` (2.5)."""
    import torch

    if getattr(device, "type", "cpu") != "cpu" or tuple(int(x) for x in torch.__version__.split(".")[:2]) < (2, 5):
        yield
        return
    try:
        from transformers.integrations import sdpa_attention as module

        original = module.use_gqa_in_sdpa
    except (ImportError, AttributeError):  # pragma: no cover - other transformers versions
        yield
        return
    module.use_gqa_in_sdpa = _gqa_kernel
    try:
        yield
    finally:
        module.use_gqa_in_sdpa = original


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
        dtype = getattr(model, "dtype", None)
        floating = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        self.dtype: Any = (
            dtype if getattr(dtype, "is_floating_point", False) else (floating or __import__("torch").float32)
        )

    def attention_mask(self, mask: Any, start: int, queries: int) -> Any:
        """The mask for ``queries`` new tokens at absolute columns ``start``.. over the 2D padding
        ``mask`` [B, kv]: a 4D additive float mask (causal and padding, built once per forward)
        where the attention implementation takes one (sdpa, eager), else ``mask`` itself.

        Why: for a chunk or a padded batch, transformers builds a boolean mask that SDPA converts
        to float in every layer (measured: a fifth of a chunked privleak pass on CPU). Allowed
        positions add 0 and masked ones ``finfo.min`` (exp gives exactly 0, like -inf, but a
        fully masked pad row stays finite), so real rows compute what the boolean mask gives."""
        import torch

        impl = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if impl not in ("sdpa", "eager"):
            return mask
        kv = mask.shape[1]
        cols = torch.arange(kv)
        causal = cols[None, :] <= (start + torch.arange(queries))[:, None]
        allowed = causal[None] & mask.bool()[:, None, :]
        out = torch.zeros(allowed.shape, dtype=self.dtype)
        out.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        return out[:, None]

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
        with sdpa_gqa_on_cpu(self.device):
            logits = self.model(**kwargs).logits
        return logits[:, -1, :] if last_only else logits

    def hidden(self, ids: Any, mask: Any, pos: Any, cache: Any) -> Any:
        """The last hidden states ([B, T, H]) of a decoder body (a ``*Model``, not ``*ForCausalLM``)."""
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "use_cache": cache is not None,
        }
        if self.positions:
            kwargs["position_ids"] = pos.to(self.device)
        if cache is not None:
            kwargs[self.cache_kw] = cache
        with sdpa_gqa_on_cpu(self.device):
            return self.model(**kwargs).last_hidden_state


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
    return sorted(
        name for name, inactive in _PROCESSORS.items() if getattr(config, name, inactive) not in (inactive, None, [], 0)
    )


#: The config keys that give a model's context window, the first one set wins (also read from config.json
#: when the options are checked, :mod:`unlearn_assert.engine.overlong`).
CONTEXT_WINDOW_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_window(model: Any) -> int | None:
    """The model's context window from its config (None when the config does not say)."""
    cfg = getattr(model, "config", None)
    for name in CONTEXT_WINDOW_KEYS:
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


# --------------------------------------------------------------------------- memory budget

#: The smallest budget we plan with (the GPU's floor too): below it the runtime's own overhead (allocator, Python,
#: torch) dominates anyway, and a small model decodes its 64 rows together instead of a few: per-step overhead is
#: most of a small model's decode (the demo's 4M-parameter Llama: 1.5x faster per row than at 16 MiB, the same
#: values but bnb-int8's, whose LLM.int8 picks its outlier columns from the whole batch; docs/metrics.md).
MIN_BUDGET = 256 << 20
#: CPU: KV caches, activations and logits may use this many times the weight bytes, so the whole
#: evaluation stays within 1 + CPU_BUDGET_FACTOR = 2.5x the model's weights (issue 19).
CPU_BUDGET_FACTOR = 1.5


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer read from its config, for memory and FLOP estimates.

    Derived from the config and the compute dtype only, never from the (possibly quantized)
    weights, so U, T and q(U) of one architecture get the same plan (see the module docstring)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    vocab: int
    tied: bool
    element_size: int
    eager_attention: bool = False

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        cfg = getattr(model, "config", None)

        def get(*names: str, default: int) -> int:
            for name in names:
                value = getattr(cfg, name, None)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return default

        hidden = get("hidden_size", "n_embd", "d_model", default=4096)
        heads = get("num_attention_heads", "n_head", default=32)
        return cls(
            hidden=hidden,
            layers=get("num_hidden_layers", "n_layer", "num_layers", default=32),
            heads=heads,
            kv_heads=get("num_key_value_heads", default=heads),
            head_dim=get("head_dim", default=max(hidden // heads, 1)),
            inter=get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden),
            vocab=get("vocab_size", default=32000),
            tied=bool(getattr(cfg, "tie_word_embeddings", False)),
            element_size=_compute_element_size(model),
            eager_attention=getattr(cfg, "_attn_implementation", None) == "eager",
        )

    @property
    def body_params(self) -> int:
        """Parameters of the transformer blocks (attention and MLP matrices; norms are negligible)."""
        attn = 2 * self.hidden * self.heads * self.head_dim + 2 * self.hidden * self.kv_heads * self.head_dim
        return self.layers * (attn + 3 * self.hidden * self.inter)

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def weight_bytes(self) -> int:
        """Unquantized weight bytes in the compute dtype (tied embeddings counted once)."""
        return (self.body_params + self.head_params * (1 if self.tied else 2)) * self.element_size

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.element_size

    def activation_bytes_per_token(self, keys: int = 0) -> int:
        """Live activations of one query token inside a block (MLP peak: three ``inter`` wide
        tensors next to the residual stream), its row of the 4D additive attention mask over ``keys``
        positions (compute dtype, plus the two boolean temporaries :meth:`ModelIO.attention_mask`
        builds it from), and its attention-score row when the eager kernel materializes scores
        (SDPA's CPU and GPU kernels do not)."""
        scores = self.heads * keys * 4 if self.eager_attention else 0
        mask = keys * (self.element_size + 2)
        return (3 * self.inter + 4 * self.hidden) * self.element_size + scores + mask


def memory_budget(model: Any) -> int:
    """Bytes we allow KV caches, activations and logits to use (on top of the weights).

    Deterministic, and the same for every model of one architecture and compute dtype on one
    machine: free memory changes from run to run, and the real weight footprint changes with
    quantization, while a batch size that changes can flip near-tied greedy tokens in half
    precision (see the module docstring) and so blur the very difference between U and q(U)
    that is measured. CPU: 1.5x the (unquantized, from the config) weight bytes, so weights plus
    evaluation stay within 2.5x, but at most a quarter of physical RAM. GPU: half of the memory
    the weights leave (of 90% of the device), so peak allocated <= weights + this budget.
    """
    import torch

    weights = ModelShape.of(model).weight_bytes
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(int((0.9 * total - weights) * 0.5), 1 << 28)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        ram = 8 << 30
    return max(min(int(CPU_BUDGET_FACTOR * weights), ram // 4), MIN_BUDGET)


def _compute_element_size(model: Any) -> int:
    """Bytes per activation/KV element: the model's floating dtype (packed 4-bit weights are
    stored as uint8, but bitsandbytes computes and caches in fp16/bf16)."""
    import torch

    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return torch.empty((), dtype=dtype).element_size()
    floating = next((p for p in model.parameters() if p.is_floating_point()), None)
    return floating.element_size() if floating is not None else 2


@dataclass(frozen=True)
class GenerationPlan:
    """How a generation run uses its memory budget: rows decoded together and prompt tokens per
    prefill forward (a longer prompt is prefilled in chunks of that many tokens)."""

    rows: int
    prefill_tokens: int
    budget: int


def plan_generation(
    model: Any, n_items: int, prompt_tokens: int, new_tokens: int, *, prefix_tokens: int = 0, cap: int = MAX_AUTO_BATCH
) -> GenerationPlan:
    """Split the budget: a quarter for prefill activations (at least 64 tokens per forward), the rest for the pre-sized
    KV cache and last-position logits of
    the decode rows. Prefill runs on few rows at a time (a 900-token prompt is already a large
    matrix product), decode on many (one token per row per step: per-step overhead dominates)."""
    shape = ModelShape.of(model)
    budget = memory_budget(model)
    seq = max(prompt_tokens, 1) + prefix_tokens
    per_token = shape.activation_bytes_per_token(seq)
    prefill = int(max(budget // 4 // max(per_token, 1), 64))
    per_row = (
        shape.kv_bytes_per_token * (seq + new_tokens)
        + shape.vocab * 4 * 2
        + shape.activation_bytes_per_token(seq + new_tokens)
    )
    fit = (budget - prefill * per_token) // max(per_row, 1)
    return GenerationPlan(rows=int(max(1, min(cap, max(n_items, 1), fit))), prefill_tokens=prefill, budget=budget)


def auto_batch_size(
    model: Any, n_items: int, prompt_tokens: int, new_tokens: int = 0, *, cap: int = MAX_AUTO_BATCH
) -> int:
    """The largest number of rows (<= ``cap``, <= ``n_items``) decoded together within the budget
    (:func:`plan_generation`). Derived from the config, compute dtype and machine only."""
    return plan_generation(model, n_items, prompt_tokens, new_tokens, cap=cap).rows


def resolve_batch_size(batch_size: int | str | None) -> int | None:
    """``None``/``"auto"``/``0`` -> None (automatic); a positive int -> itself; else ConfigError."""
    if batch_size is None or batch_size == "auto" or batch_size == 0:
        return None
    if isinstance(batch_size, str) and batch_size.strip().isdigit():
        batch_size = int(batch_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ConfigError(
            f"batch size must be a positive integer or 'auto', got {batch_size!r}; pass e.g. --unlearn-batch-size 8"
        )
    return batch_size


# --------------------------------------------------------------------------- shared prefix


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_prefix(
    prefix_ids: Sequence[int], prompts: Sequence[Sequence[int]], slack: int = PREFIX_SLACK
) -> tuple[int, list[int]]:
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


# --------------------------------------------------------------------------- pre-sized KV cache


class _Window:
    """Which rows of the pre-sized buffers the next forward writes, and from which position."""

    def __init__(self, rows: int, max_len: int) -> None:
        self.rows_total, self.max_len = rows, max_len
        self.rows = slice(0, rows)
        self.start = 0


def presized_cache(rows: int, max_len: int) -> Any:
    """A transformers ``Cache`` whose per-layer K/V buffers ([rows, heads, max_len, dim]) are
    allocated once and written in place, instead of ``DynamicCache``'s ``torch.cat`` per step
    (which copies the whole cache every token: for a 1,000-token prompt that is most of the decode
    memory traffic, and transiently doubles the cache).

    Why not ``StaticCache``: in transformers 5.x its layers ignore ``cache_position`` and always
    return (and mask) all ``max_len`` positions, and it cannot write one sub-batch of rows or drop
    finished rows. Here the caller sets ``cache.window`` (rows and start position) before each
    forward; ``get_seq_length`` reports that start, so transformers builds the usual causal +
    padding mask from our 2D attention mask, for every attention implementation.
    """
    from transformers.cache_utils import Cache, DynamicLayer

    window = _Window(rows, max_len)

    class PresizedLayer(DynamicLayer):  # type: ignore[misc]
        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            heads = key_states.shape[1]
            self.k_buf = key_states.new_zeros((window.rows_total, heads, window.max_len, key_states.shape[-1]))
            self.v_buf = value_states.new_zeros((window.rows_total, heads, window.max_len, value_states.shape[-1]))
            self.keys, self.values = self.k_buf[:, :, :0], self.v_buf[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = window.start + key_states.shape[-2]
            self.k_buf[window.rows, :, window.start : end].copy_(key_states)
            self.v_buf[window.rows, :, window.start : end].copy_(value_states)
            self.keys, self.values = self.k_buf[window.rows, :, :end], self.v_buf[window.rows, :, :end]
            if window.start == 0:  # nothing before: attend exactly as a fresh cache would
                return key_states, value_states
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return window.start if self.is_initialized else 0

        def fill(self, keys: Any, values: Any) -> None:
            """Copy a batch-1 cache's K/V (a shared prefix) into every row, positions 0..n-1."""
            self.lazy_initialization(keys, values)
            self.k_buf[:, :, : keys.shape[-2]].copy_(keys.expand(window.rows_total, -1, -1, -1))
            self.v_buf[:, :, : values.shape[-2]].copy_(values.expand(window.rows_total, -1, -1, -1))

        def compact(self, indices: Any, length: int) -> None:
            """Move the kept rows to the front, in place (no new buffers)."""
            if self.is_initialized:
                n = indices.shape[0]
                self.k_buf[:n, :, :length] = self.k_buf[indices, :, :length]
                self.v_buf[:n, :, :length] = self.v_buf[indices, :, :length]

    class PresizedCache(Cache):  # type: ignore[misc]
        window: _Window

        def fill_prefix(self, prefix: Any) -> None:
            for index, layer in enumerate(prefix.layers):
                while len(self.layers) <= index:
                    self.layers.append(PresizedLayer())
                cast(Any, self.layers[index]).fill(layer.keys, layer.values)

        def compact(self, indices: Any, length: int) -> None:
            for layer in self.layers:
                cast(Any, layer).compact(indices, length)

    cache = PresizedCache(layer_class_to_replicate=PresizedLayer)
    cache.window = window
    return cache


# --------------------------------------------------------------------------- decoding


@dataclass
class _Timer:
    """Seconds spent in prefill and decode forwards (the rest of a metric is scoring)."""

    prefill: float = 0.0
    decode: float = 0.0


def length_buckets(order: Sequence[int], lengths: Sequence[int], rows: int) -> list[list[int]]:
    """Consecutive groups of ``order`` (longest first) of at most ``rows`` prompts, cut where a
    prompt is more than an eighth (and 64 tokens) shorter than its group's longest, so no batch
    pads (or attends over) a 400-token prompt's 550 missing positions next to a 950-token one."""
    groups: list[list[int]] = []
    for i in order:
        if (
            groups
            and len(groups[-1]) < rows
            and lengths[groups[-1][0]] - lengths[i] <= max(lengths[groups[-1][0]] // 8, 64)
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _prefill_groups(lengths: Sequence[int], tokens: int) -> list[tuple[int, int]]:
    """Row ranges [a, b) of a longest-first batch whose padded prefill fits ``tokens``."""
    out: list[tuple[int, int]] = []
    a = 0
    while a < len(lengths):
        b = a + 1
        while b < len(lengths) and (b + 1 - a) * lengths[a] <= tokens:
            b += 1
        out.append((a, b))
        a = b
    return out


def _run_batch(
    io: ModelIO,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    pad_id: int,
    eos: frozenset[int],
    prefill_tokens: int,
    timer: _Timer,
    prefix_cache: Any = None,
    prefix_len: int = 0,
    stop: Callable[[list[int]], bool] | None = None,
    on_step: Callable[[float], None] | None = None,
) -> tuple[list[list[int]], int]:
    """Greedy-decode one batch (rows longest first). Layout per row of the pre-sized cache:
    [cached prefix][left padding][own tokens][new tokens]. Prompts are prefilled a few rows at a
    time (at most ``prefill_tokens`` padded tokens per forward; a longer prompt alone, in chunks),
    then all rows decode together, one in-place cache write per step. ``on_step(share)`` is called
    after every forward with the share of the batch's decoding done (progress lines)."""
    import time

    import torch

    n = len(rows)
    width = max(len(r) for r in rows)
    total = prefix_len + width + max_new_tokens
    mask = torch.zeros((n, total), dtype=torch.long)
    mask[:, :prefix_len] = 1
    for i, row in enumerate(rows):
        mask[i, prefix_len + width - len(row) : prefix_len + width] = 1
    positions = (mask[:, : prefix_len + width].cumsum(dim=1) - 1).clamp(min=0)
    cache = presized_cache(n, total)
    if prefix_cache is not None:
        cache.fill_prefix(prefix_cache)
    window = cache.window
    passes = 0
    begin = time.perf_counter()
    first: list[Any] = []
    for a, b in _prefill_groups([len(r) for r in rows], prefill_tokens):
        sub = len(rows[a])  # this group's padded width (rows are longest first)
        ids = torch.full((b - a, sub), pad_id, dtype=torch.long)
        for j, row in enumerate(rows[a:b]):
            ids[j, sub - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        window.rows = slice(a, b)
        offset = prefix_len + width - sub
        for c in range(0, sub, prefill_tokens):  # chunks only when one prompt exceeds the budget
            window.start = offset + c
            end = min(c + prefill_tokens, sub)
            attn = io.attention_mask(mask[a:b, : offset + end], offset + c, end - c)
            logits = io.forward(ids[:, c:end], attn, positions[a:b, offset + c : offset + end], cache, last_only=True)
            passes += 1
            if on_step is not None:
                on_step(0.0)
        first.append(logits)
    logits = torch.cat(first) if len(first) > 1 else first[0]
    timer.prefill += time.perf_counter() - begin
    begin = time.perf_counter()
    length = prefix_len + width
    next_pos = positions[:, -1:] + 1
    # decode masks: one 4D additive mask for the whole run, opened one column per step in place
    # (instead of transformers rebuilding a boolean mask from the 2D one at every step)
    step_mask = io.attention_mask(mask, total - 1, 1)
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
            cache.compact(kept.to(io.device), length)
            mask, next_pos, tokens, step_mask = mask[kept], next_pos[kept], tokens[kept], step_mask[kept]
            active = [active[j] for j in keep]
        mask[:, length] = 1
        if step_mask.ndim == 4:
            step_mask[:, :, :, length] = 0
        window.rows, window.start = slice(0, len(active)), length
        attn = step_mask[:, :, :, : length + 1] if step_mask.ndim == 4 else mask[:, : length + 1]
        logits = io.forward(tokens[:, None], attn, next_pos, cache, last_only=True)
        passes += 1
        length += 1
        next_pos = next_pos + 1
        if on_step is not None:
            on_step((step + 1) / max_new_tokens)
    timer.decode += time.perf_counter() - begin
    return out, passes


def _progress(meter: Meter, before: int, rows: int) -> Callable[[float], None]:
    """A batch's ``on_step``: its rows count as done in proportion to its decode steps."""

    def on_step(share: float) -> None:
        meter.update(before + rows * share)

    return on_step


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    batch_size: int | None = None,
    prefix_ids: Sequence[int] | None = None,
    stop: Callable[[list[int]], bool] | None = None,
    meter: Meter | None = None,
    truncate: bool = False,
) -> Generated:
    """Greedy continuations of tokenized ``prompts`` (ids as ``tokenizer(prompt)`` gives them).

    ``prefix_ids``: the tokenization of a text that every prompt starts with; its KV cache is
    computed once and shared (see :func:`plan_prefix`). ``stop(ids)``: a per-row early stop after
    each new token (EOS always stops). ``batch_size=None`` picks the rows per batch from the memory
    budget (:func:`plan_generation`). Prompts are batched longest first in length buckets
    (:func:`length_buckets`; the largest batch runs first so an out-of-memory error comes early);
    results keep the input order. ``meter``: told the prompts done after every forward (a batch's
    rows count as done in proportion to its decode steps), for progress lines. ``truncate``: a prompt whose
    length plus ``max_new_tokens`` exceeds the context window keeps its last ``window - max_new_tokens`` tokens
    (see the module docstring).
    """
    import time

    import torch

    n = len(prompts)
    if n == 0 or max_new_tokens <= 0:
        return Generated(ids=[[] for _ in range(n)], batch_size=batch_size or 1)
    prompts, truncated, kept = left_truncate(prompts, context_window(model) if truncate else None, max_new_tokens)
    io = ModelIO(model)
    eos, pad = eos_token_ids(model, tokenizer), pad_token_id(tokenizer)
    prefix_len, fallbacks = (0, list(range(n))) if prefix_ids is None else plan_prefix(prefix_ids, prompts)
    longest = max(len(p) for p in prompts)
    plan = plan_generation(model, n, longest, max_new_tokens)
    rows_per_batch = batch_size if batch_size is not None else plan.rows
    timer = _Timer()
    results: list[list[int]] = [[] for _ in range(n)]
    passes, used, done = 0, 0, 0
    with torch.inference_mode():
        groups: list[tuple[list[int], int, Any]] = []
        shared = sorted(set(range(n)) - set(fallbacks))
        if shared:
            begin = time.perf_counter()
            cache = io.new_cache()
            ids = torch.tensor([list(prefix_ids or [])[:prefix_len]], dtype=torch.long)
            io.forward(ids, torch.ones_like(ids), torch.arange(prefix_len)[None], cache, last_only=True)
            timer.prefill += time.perf_counter() - begin
            if meter is not None:
                meter.update()
            passes += 1
            groups.append((shared, prefix_len, cache))
        if fallbacks:
            groups.append((fallbacks, 0, None))
        for members, offset, cache in groups:
            order = sorted(members, key=lambda i: -len(prompts[i]))
            own = [len(p) - offset for p in prompts]
            for chunk in length_buckets(order, own, rows_per_batch):
                rows = [list(prompts[i])[offset:] for i in chunk]
                on_step = None if meter is None else _progress(meter, done, len(chunk))
                outs, count = _run_batch(
                    io,
                    rows,
                    max_new_tokens,
                    pad_id=pad,
                    eos=eos,
                    prefill_tokens=plan.prefill_tokens,
                    timer=timer,
                    prefix_cache=cache,
                    prefix_len=offset,
                    stop=stop,
                    on_step=on_step,
                )
                done += len(chunk)
                if meter is not None:
                    meter.update(done)
                passes += count
                used = max(used, len(chunk))
                for i, generated in zip(chunk, outs):
                    results[i] = generated
    n_fallbacks = len(fallbacks) if prefix_ids is not None else 0
    window = context_window(model)
    over = 0 if window is None else sum(len(p) + max_new_tokens > window for p in prompts)
    return Generated(
        ids=results,
        batch_size=batch_size if batch_size is not None else used,
        prefix_tokens=prefix_len,
        fallbacks=n_fallbacks,
        forward_passes=passes,
        over_context=over,
        prefill_seconds=timer.prefill,
        decode_seconds=timer.decode,
        truncated=truncated,
        kept=kept,
    )


def truncation_record(out: Generated, index: int) -> dict[str, Any]:
    """``{"truncation": {"tokens": N, "kept": K, "keep": "end"}}`` for a prompt that ``truncate=True`` cut (the
    per-item record the report carries), else ``{}``."""
    if index not in out.truncated:
        return {}
    return {"truncation": {"tokens": out.truncated[index], "kept": out.kept, "keep": "end"}}


def left_truncate(
    prompts: Sequence[Sequence[int]], window: int | None, new_tokens: int
) -> tuple[Sequence[Sequence[int]], dict[int, int], int | None]:
    """``prompts`` with each one longer than ``window - new_tokens`` cut to its last ``window - new_tokens``
    tokens (lm-evaluation-harness's ``left_truncate_len``: the BOS of a cut prompt goes too), the original
    lengths of those cut, and the length kept (None without a window: nothing is cut)."""
    if window is None:
        return prompts, {}, None
    room = window - new_tokens
    if room < 1:
        raise ConfigError(
            f"the model's context window of {window} tokens cannot hold the {new_tokens} tokens a metric "
            "generates; use a model with a longer context window"
        )
    truncated = {i: len(p) for i, p in enumerate(prompts) if len(p) > room}
    if not truncated:
        return prompts, {}, room
    return [list(p)[-room:] if i in truncated else p for i, p in enumerate(prompts)], truncated, room


def model_parts(model: Any, caller: str) -> tuple[Any, Any]:
    """(the torch model, the tokenizer) of a loaded model or quantized view; one ModelError line naming
    ``caller`` (the public function that was given something else) otherwise."""
    from ..errors import ModelError

    hf, tokenizer = getattr(model, "model", None), getattr(model, "tokenizer", None)
    if hf is None or tokenizer is None:
        raise ModelError(
            f"{caller}() needs a loaded model (with .model and .tokenizer), got {type(model).__name__}; "
            "load one with unlearn_assert.load_model(DIR) or pass a quantized view"
        )
    return hf, tokenizer


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Dropout off while evaluating (determinism, as MUSE's ``evaluate``), the caller's mode restored after."""
    training = bool(getattr(model, "training", False))
    if training:
        model.eval()
    try:
        yield
    finally:
        if training:
            model.train()
