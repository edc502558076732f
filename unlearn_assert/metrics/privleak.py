"""PrivLeak: a membership-inference AUC on forget vs holdout texts, relative to a retrained model.

MUSE (``metrics/privleak.py`` and ``eval.py``), reproduced:

* Per text, ``input_ids = tokenizer.encode(text)`` (BOS included) and one forward pass; the
  log-prob of every token after the first under the logits of the previous position
  (``log_softmax`` in fp32, as transformers 4.x Llama returned fp32 logits).
* Min-40% = ``-mean(sorted(logprobs)[:int(0.4 * n)])`` with n the number of scored tokens. MUSE
  takes the mean of an empty slice (NaN) for texts under 3 tokens; we use k >= 1 instead.
* AUC: scikit-learn ``roc_curve(y, -values)`` and ``auc``, forget texts labelled 0 and holdout
  texts labelled 1 (MUSE's ``forget_holdout_Min-40%`` key). So the score is ``-Min-40%``, high for
  texts the model finds likely, and a model that memorized the forget set has an AUC near 0.
* ``privleak = (AUC - AUC_R) / AUC_R * 100``, AUC_R from the retrained model. One fork indexes its
  retrain-AUC table with a wrong key; we take AUC_R from the caller (see ``evaluate``).

For the report only (never for verdicts), the same orientation is applied to the loss attack
(MUSE's "PPL" key: the mean token NLL), zlib (loss / zlib-compressed byte length of the text,
MUSE's "PPL/zlib") and Min-K%++ (Zhang et al. 2024: each token's log-prob standardized by the
mean and standard deviation of log-probs under the model's next-token distribution, lowest 40%
averaged, negated like Min-K%).

Long texts: one forward pass per text, so a text longer than the context window (the model
config's ``max_position_embeddings``, or ``max_length``) is *truncated* to its first ``context``
tokens (BOS included) and those are scored; the count is reported. A sliding window would score
late tokens with less context than MUSE and need several passes per text; MUSE's own texts fit
Llama-2's 4096 tokens, so for them nothing changes. zlib uses the whole text, as MUSE.

Short texts are scored in batches by tokens (right padding to a width that depends on the text
alone, see :func:`padded_width`, so no real token sees a pad and no score depends on the batch);
a text of :data:`SOLO_TOKENS` tokens or more runs alone and unpadded, so it needs no mask and SDPA
takes its causal kernel (see :func:`score_texts`). Full-vocabulary logits are never formed for a
whole batch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .generation import MAX_AUTO_BATCH, ModelIO, ModelShape, context_window, memory_budget, pad_token_id, presized_cache
from .progress import Meter
from .rouge import excerpt

__all__ = [
    "ATTACKS",
    "MIN_K_RATIO",
    "PrivleakScores",
    "ScoringPlan",
    "TextScore",
    "attack_values",
    "context_length",
    "min_k",
    "padded_width",
    "plan_scoring",
    "privleak",
    "privleak_scores",
    "roc_auc",
    "score_ids",
    "score_texts",
    "split_head",
]

#: MUSE's k for Min-K% (``forget_holdout_Min-40%``); also used for Min-K%++.
MIN_K_RATIO = 0.4
#: Attack keys in the order they are reported; "min_40" is the one privleak is computed from.
ATTACKS = ("min_40", "loss", "zlib", "mink_pp")


@dataclass
class TextScore:
    """Token-level statistics of one text: log-probs of tokens 2..n and their Min-K%++ z-scores."""

    logprobs: list[float]
    zscores: list[float]
    n_tokens: int
    truncated: bool
    #: its length before the context window cut it (``n_tokens`` when nothing was cut)
    source_tokens: int = 0


@dataclass
class PrivleakScores:
    """Attack values per text for forget and holdout, and the AUC per attack (MUSE orientation)."""

    forget: list[dict[str, float]]
    holdout: list[dict[str, float]]
    aucs: dict[str, float]
    samples: list[dict[str, Any]]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def auc(self) -> float:
        """The Min-40% AUC, the one privleak uses."""
        return self.aucs["min_40"]


def min_k(logprobs: Sequence[float], ratio: float = MIN_K_RATIO) -> float:
    """MUSE's Min-K% value: minus the mean of the ``int(ratio * n)`` lowest values (k >= 1)."""
    import numpy as np

    if not logprobs:
        return float("nan")
    k = max(int(len(logprobs) * ratio), 1)
    return float(-np.mean(np.sort(np.asarray(logprobs, dtype=np.float64))[:k]).item())


def attack_values(score: TextScore, text: str) -> dict[str, float]:
    """Per-text values of every attack; lower = "more likely a member", as MUSE's Min-K% and PPL."""
    import numpy as np

    loss = float(-np.mean(np.asarray(score.logprobs, dtype=np.float64))) if score.logprobs else float("nan")
    return {
        "min_40": min_k(score.logprobs),
        "loss": loss,
        "zlib": loss / len(zlib.compress(text.encode("utf-8"))),
        "mink_pp": min_k(score.zscores),
    }


def roc_auc(forget_values: Sequence[float], holdout_values: Sequence[float]) -> float:
    """MUSE's ``sweep``: ROC AUC with forget labelled 0, holdout 1 and score ``-value``."""
    import numpy as np
    from sklearn.metrics import auc, roc_curve

    values = np.asarray(list(forget_values) + list(holdout_values), dtype=np.float64)
    labels = np.asarray([0] * len(forget_values) + [1] * len(holdout_values))
    fpr, tpr, _ = roc_curve(labels, -values)
    return float(auc(fpr, tpr))


def privleak(auc: Any, reference_auc: float) -> Any:
    """``(AUC - AUC_R) / AUC_R * 100``: about 0 when the model leaks as much as a retrained one.

    The one place the formula lives (the engine derives every row's privleak through it). Works
    elementwise on numpy arrays (bootstrap replicates). None (undefined) when ``auc`` is None or
    AUC_R is not positive: a "retrain" model that separates every forget text from every holdout
    text has seen the forget set, and there is nothing to divide by."""
    if auc is None or not reference_auc > 0:
        return None
    return (auc - reference_auc) / reference_auc * 100.0


def context_length(model: Any, max_length: int | None = None) -> int | None:
    """The longest token sequence scored in one pass: ``max_length`` or the config's window."""
    return int(max_length) if max_length is not None else context_window(model)


@dataclass(frozen=True)
class ScoringPlan:
    """How privleak scoring uses the memory budget: padded tokens per body forward (rows are
    batched by tokens; a text longer than this runs alone, in chunks over a KV cache) and
    positions per ``lm_head`` chunk (the only full-vocabulary tensors)."""

    tokens: int
    head_positions: int
    budget: int


def plan_scoring(model: Any) -> ScoringPlan:
    """Half the budget for body activations, a quarter for the fp32 logit chunk and its
    log-softmax temporaries (three [positions, vocab] fp32 tensors), the rest for the KV
    cache of a chunked text. From the config and compute dtype only (deterministic)."""
    shape = ModelShape.of(model)
    budget = memory_budget(model)
    per_token = shape.activation_bytes_per_token(context_window(model) or 2048) + 2 * shape.hidden * shape.element_size
    tokens = max(budget // 2 // max(per_token, 1), 64)
    head = max(budget // 4 // (shape.vocab * 4 * 3), 16)
    return ScoringPlan(tokens=int(tokens), head_positions=int(head), budget=budget)


def split_head(model: Any, probe: Sequence[int]) -> tuple[Any, Any] | None:
    """``(body, lm_head)`` when the model's logits are exactly ``lm_head(body(x))`` (Llama,
    Mistral, Qwen...), checked on ``probe`` (a few real tokens) against the model's own forward;
    None for models that post-process logits (soft-capping, scaling) or hide their head."""
    import torch

    get_decoder, get_head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    if not callable(get_decoder) or not callable(get_head):
        return None
    try:
        body, head = get_decoder(), get_head()
    except (AttributeError, NotImplementedError, ValueError):  # pragma: no cover - exotic wrappers
        return None
    if body is None or body is model or head is None or not probe:
        return None
    ids = torch.tensor([list(probe)], dtype=torch.long)
    mask = torch.ones_like(ids)
    pos = torch.arange(ids.shape[1])[None]
    try:
        full = ModelIO(model).forward(ids, mask, pos, None, last_only=False).float()
        split = head(ModelIO(body).hidden(ids, mask, pos, None)).float()
    except (TypeError, AttributeError, RuntimeError):  # pragma: no cover - a body that wants other inputs
        return None
    return (body, head) if split.shape == full.shape and torch.allclose(split, full, rtol=1e-4, atol=1e-5) else None


#: A text at least this long is scored alone, unpadded: its forward is already a large matrix
#: product, and without padding transformers passes no mask, so SDPA runs its causal kernel, which
#: skips the upper triangle. A padded batch needs a mask, and SDPA then computes the full square:
#: measured on SmolLM-135M's shape (one thread), 3 texts of ~1,850 tokens took 17.7 s as one padded
#: batch and 11.9 s one by one (MUSE's privleak texts are ~1,850 tokens).
SOLO_TOKENS = 512


def padded_width(n: int, window: int | None = None) -> int:
    """The width a text of ``n`` tokens is padded to: ``n`` rounded up to a sixteenth of its
    power of two (at least 16 tokens), at most ``window``.

    Padding changes a row's floats in the last bits (the attention kernel reduces over the padded
    width), so a width that depends on the text alone makes its score independent of which other
    texts share its batch: duplicates score identically, and a subset scores as in the full set.
    The cost is at most ~6% padding (MUSE's 1,805-1,887-token texts: widths 1,856 and 1,920)."""
    if n <= 16:
        return n
    grain = max(16, 1 << (n.bit_length() - 5))
    width = -(-n // grain) * grain
    return max(n, min(width, window)) if window is not None else width


def _row_groups(
    widths: Sequence[int], tokens: int, cap: int, solo: Sequence[bool] | None = None
) -> list[tuple[int, int]]:
    """Row ranges [a, b) of texts sorted by width (widest first) that share one padded width and
    fit ``tokens`` padded tokens (and ``cap`` rows) per forward; a ``solo`` text is a range of its own."""
    out: list[tuple[int, int]] = []
    a = 0
    while a < len(widths):
        b = a + 1
        while (
            b < len(widths)
            and not (solo and (solo[a] or solo[b]))
            and widths[b] == widths[a]
            and b - a < cap
            and (b + 1 - a) * widths[a] <= tokens
        ):
            b += 1
        out.append((a, b))
        a = b
    return out


class _Workspace:
    """Preallocated [positions, vocab] fp32 buffers for the per-chunk statistics, reused for every
    chunk: a fresh multi-megabyte tensor per op costs a page fault per 4 KB (measured on a 2-core
    VM: ``exp`` of a [124, 4096] tensor 8 ms into a new tensor, 0.15 ms into a reused one), and the
    memory stays bounded at two buffers whatever the allocator keeps."""

    def __init__(self, head: Any, positions: int, vocab: int, device: Any) -> None:
        import torch

        weight = getattr(head, "weight", None)
        plain = (
            type(head) is torch.nn.Linear
            and getattr(head, "bias", None) is None
            and weight is not None
            and weight.dtype == torch.float32
            and weight.shape[0] == vocab
            # a head that accelerate dispatched (--unlearn-device-map) holds a meta weight and loads
            # the real one in its forward hook: only head(hidden) computes it
            and weight.device.type != "meta"
            and not hasattr(head, "_hf_hook")
        )
        self.weight = weight if plain else None  # logits straight into the buffer (same GEMM as nn.Linear)
        self.logits = torch.empty((positions, vocab), dtype=torch.float32, device=device)
        self.logp = torch.empty((positions, vocab), dtype=torch.float32, device=device)

    def stats(self, head: Any, hidden: Any, targets: Any, moments: bool = True) -> tuple[Any, Any]:
        """Log-probs of ``targets`` and their Min-K%++ z-scores under fp32 ``log_softmax(head(hidden))``
        (no z-scores, None, without ``moments``: teacher-forced losses need only the log-probs)."""
        import torch

        n = hidden.shape[0]
        logits, logp = self.logits[:n], self.logp[:n]
        if self.weight is not None and hidden.dtype == torch.float32:
            torch.mm(hidden, self.weight.t(), out=logits)
        else:
            logits.copy_(head(hidden))
        torch.log_softmax(logits, dim=-1, out=logp)
        token_lp = logp.gather(-1, targets[:, None])[:, 0]
        if not moments:
            return token_lp, None
        weighted = torch.exp(logp, out=logits).mul_(logp)  # p * log p, then p * log p * log p, in place
        mu = weighted.sum(-1)
        second = weighted.mul_(logp).sum(-1)
        sigma = (second - mu * mu).clamp(min=1e-12).sqrt()
        return token_lp, (token_lp - mu) / sigma


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
    max_length: int | None = None,
    timings: dict[str, float] | None = None,
    meter: Meter | None = None,
) -> tuple[list[TextScore], int]:
    """Token statistics for ``texts`` (one causal pass each, batched by tokens), and the largest
    number of texts scored together: ``tokenizer(text)`` (BOS included), then :func:`score_ids`.
    ``timings`` (if given) receives seconds spent in the body (``forward``) and in ``lm_head`` +
    statistics (``scoring``)."""
    if not texts:
        return [], batch_size or 1
    encoded = [list(ids) for ids in tokenizer(list(texts))["input_ids"]]
    return score_ids(
        model,
        encoded,
        pad_id=pad_token_id(tokenizer),
        batch_size=batch_size,
        max_length=max_length,
        timings=timings,
        meter=meter,
    )


def score_ids(
    model: Any,
    encoded: Sequence[Sequence[int]],
    *,
    pad_id: int,
    first: Sequence[int] | None = None,
    moments: bool = True,
    batch_size: int | None = None,
    max_length: int | None = None,
    timings: dict[str, float] | None = None,
    meter: Meter | None = None,
    keep_end: bool = False,
) -> tuple[list[TextScore], int]:
    """Token statistics for tokenized sequences (one causal pass each, batched by tokens), and the
    largest number of sequences scored together.

    No ``[B, T, V]`` tensor is formed: the decoder body runs once per batch (or per chunk of a
    sequence too long for the budget, over a pre-sized KV cache), and ``lm_head`` plus the fp32
    log-softmax run per chunk of :attr:`ScoringPlan.head_positions` positions. Per position the
    arithmetic is the one of a full forward followed by ``log_softmax(logits.float())``.
    ``first[i]`` (default 1): the index of sequence i's first token to score, so ``logprobs`` holds
    tokens ``first[i]..n-1`` and no head is computed for the positions before (a teacher-forced
    answer after its question). ``moments=False`` skips the Min-K%++ z-scores (``zscores`` empty).
    ``batch_size`` caps the sequences per forward (the token budget still applies). Sequences longer
    than the context window (``max_length`` or the config's) are truncated to it (``truncated``): to their
    first ``window`` tokens, or with ``keep_end`` to their last ones (lm-evaluation-harness's loglikelihood
    keeps the continuation and drops the start of the context), ``first`` moving with the cut.
    ``timings`` (if given) receives seconds spent in the body (``forward``) and in ``lm_head`` +
    statistics (``scoring``). ``meter``: told the sequences done after every forward (progress lines).
    """
    import time

    import torch

    if not encoded:
        return [], batch_size or 1
    window = context_length(model, max_length)
    sources = [len(ids) for ids in encoded]
    truncated = [window is not None and len(ids) > window for ids in encoded]
    starts = [1] * len(encoded) if first is None else [max(int(f), 1) for f in first]
    if keep_end and window is not None:
        starts = [max(s - (n - window), 1) if cut else s for s, n, cut in zip(starts, sources, truncated)]
        encoded = [list(ids[-window:]) if cut else list(ids) for ids, cut in zip(encoded, truncated)]
    else:
        encoded = [list(ids[:window]) if window is not None else list(ids) for ids in encoded]
    cap = batch_size if batch_size is not None else MAX_AUTO_BATCH
    plan = plan_scoring(model)
    # a long text (or one too long to share a forward) runs alone, unpadded (still independent of the others)
    padded = [padded_width(len(ids), window) for ids in encoded]
    alone = [2 * w > plan.tokens or len(ids) >= SOLO_TOKENS for ids, w in zip(encoded, padded)]
    widths = [len(ids) if solo else w for ids, w, solo in zip(encoded, padded, alone)]
    order = sorted(range(len(encoded)), key=lambda i: (-widths[i], -len(encoded[i])))
    results: list[TextScore | None] = [None] * len(encoded)
    clock = {"forward": 0.0, "scoring": 0.0}
    used = 0
    with torch.inference_mode():
        split = split_head(model, encoded[order[-1]][:8])
        io = ModelIO(split[0] if split is not None else model)
        vocab = ModelShape.of(model).vocab
        work = _Workspace(split[1] if split is not None else None, plan.head_positions, vocab, io.device)
        for a, b in _row_groups([widths[i] for i in order], plan.tokens, cap, [alone[i] for i in order]):
            chunk = order[a:b]
            used = max(used, len(chunk))
            width = widths[chunk[0]]
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                mask[row, : len(encoded[i])] = 1
            positions = torch.arange(width)[None].expand(len(chunk), width)
            stats: list[list[tuple[Any, Any]]] = [[] for _ in chunk]
            step = width if split is None or width <= plan.tokens else plan.tokens
            cache = presized_cache(len(chunk), width) if step < width else None
            for s in range(0, width, step):  # one pass, or chunks of a long text over the cache
                e = min(s + step, width)
                begin = time.perf_counter()
                if cache is not None:
                    cache.window.start = s
                attn = io.attention_mask(mask[:, :e], s, e - s) if cache is not None else mask[:, :e]
                if split is not None:
                    out = io.hidden(ids[:, s:e], attn, positions[:, s:e], cache)
                else:  # full logits of this batch (models whose head we cannot split off)
                    out = io.forward(ids[:, s:e], mask[:, :e], positions[:, s:e], None, last_only=False)
                clock["forward"] += time.perf_counter() - begin
                begin = time.perf_counter()
                for row, i in enumerate(chunk):
                    n = min(len(encoded[i]) - 1, e) - s  # positions s.. that predict a real next token
                    # from the position that predicts token starts[i] (0 for every MUSE text)
                    for q in range(max(starts[i] - 1 - s, 0), max(n, 0), plan.head_positions):
                        r = min(q + plan.head_positions, n)
                        target = ids[row, s + q + 1 : s + r + 1].to(io.device)
                        head = split[1] if split is not None else (lambda x: x)  # full logits: the identity
                        extra = () if moments else (False,)
                        stats[row].append(work.stats(head, out[row, q:r], target, *extra))
                clock["scoring"] += time.perf_counter() - begin
                del out
                if meter is not None:  # the group's texts count as done in proportion to their positions
                    meter.update(a + len(chunk) * e / width)
            for row, i in enumerate(chunk):
                lp = [x.cpu() for x, _ in stats[row]]
                zs = [z.cpu() for _, z in stats[row] if z is not None]
                results[i] = TextScore(
                    logprobs=torch.cat(lp).tolist() if lp else [],
                    zscores=torch.cat(zs).tolist() if zs else [],
                    n_tokens=len(encoded[i]),
                    truncated=truncated[i],
                    source_tokens=sources[i],
                )
    if timings is not None:
        for key, value in clock.items():
            timings[key] = timings.get(key, 0.0) + value
    return [r for r in results if r is not None], used


def _truncation(score: TextScore) -> dict[str, Any]:
    """A scored text's ``truncation`` record (its first ``n_tokens`` kept) when the window cut it, else ``{}``."""
    if not score.truncated:
        return {}
    return {"truncation": {"tokens": score.source_tokens, "kept": score.n_tokens, "keep": "start"}}


def privleak_scores(
    model: Any,
    tokenizer: Any,
    forget: Sequence[str],
    holdout: Sequence[str],
    *,
    batch_size: int | None = None,
    max_length: int | None = None,
    meter: Meter | None = None,
) -> PrivleakScores:
    """Score forget and holdout texts and compute every attack's AUC (MUSE orientation);
    ``meter``: progress lines."""
    texts = list(forget) + list(holdout)
    timings: dict[str, float] = {}
    scores, used = score_texts(
        model, tokenizer, texts, batch_size=batch_size, max_length=max_length, timings=timings, meter=meter
    )
    values = [attack_values(s, t) for s, t in zip(scores, texts)]
    forget_values, holdout_values = values[: len(forget)], values[len(forget) :]
    aucs = {a: roc_auc([v[a] for v in forget_values], [v[a] for v in holdout_values]) for a in ATTACKS}
    samples: list[dict[str, Any]] = []
    for split, split_texts, split_values, offset in (
        ("forget", forget, forget_values, 0),
        ("holdout", holdout, holdout_values, len(forget)),
    ):
        for index, (text, value) in enumerate(zip(split_texts, split_values)):
            samples.append(
                {
                    "id": f"{split}:{index}",
                    "split": split,
                    "prompt": excerpt(text),
                    "generation": None,
                    "reference": None,
                    "score": value["min_40"],
                    "attacks": {k: (v if math.isfinite(v) else None) for k, v in value.items()},
                    "tokens": scores[offset + index].n_tokens,
                    "truncated": scores[offset + index].truncated,
                    **_truncation(scores[offset + index]),
                }
            )
    extras = {
        "batch_size": used,
        "context": context_length(model, max_length),
        "truncated": sum(s.truncated for s in scores),
        "n_forget": len(forget),
        "n_holdout": len(holdout),
        "seconds_split": timings,
    }
    return PrivleakScores(forget=forget_values, holdout=holdout_values, aucs=aucs, samples=samples, extras=extras)
