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

Texts are scored in batches (longest first, right padding, so no real token sees a pad).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .generation import ModelIO, auto_batch_size, context_window, pad_token_id
from .rouge import excerpt

__all__ = [
    "ATTACKS",
    "MIN_K_RATIO",
    "PrivleakScores",
    "TextScore",
    "attack_values",
    "context_length",
    "min_k",
    "privleak",
    "privleak_scores",
    "roc_auc",
    "score_texts",
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


def score_texts(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
    max_length: int | None = None,
) -> tuple[list[TextScore], int]:
    """Token statistics for ``texts`` (one forward pass each, batched), and the batch size used."""
    import torch

    if not texts:
        return [], batch_size or 1
    window = context_length(model, max_length)
    encoded = [list(ids) for ids in tokenizer(list(texts))["input_ids"]]
    truncated = [window is not None and len(ids) > window for ids in encoded]
    if window is not None:
        encoded = [ids[:window] for ids in encoded]
    if batch_size is None:
        batch_size = auto_batch_size(model, len(texts), max(len(ids) for ids in encoded), full_logits=True)
    io, pad = ModelIO(model), pad_token_id(tokenizer)
    order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
    results: list[TextScore | None] = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids[row, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                mask[row, : len(encoded[i])] = 1
            positions = torch.arange(width)[None].expand(len(chunk), width)
            logits = io.forward(ids, mask, positions, None, last_only=False)
            for row, i in enumerate(chunk):  # row by row: fp32 temporaries of one text at a time
                n = len(encoded[i]) - 1
                logp = torch.log_softmax(logits[row, :n].float(), dim=-1)
                target = ids[row, 1 : n + 1].to(logp.device)
                token_lp = logp.gather(-1, target[:, None])[:, 0]
                probs = logp.exp()
                mu = (probs * logp).sum(-1)
                sigma = ((probs * logp * logp).sum(-1) - mu * mu).clamp(min=1e-12).sqrt()
                results[i] = TextScore(
                    logprobs=token_lp.cpu().tolist(),
                    zscores=((token_lp - mu) / sigma).cpu().tolist(),
                    n_tokens=len(encoded[i]),
                    truncated=truncated[i],
                )
            del logits
    return [r for r in results if r is not None], batch_size


def privleak_scores(
    model: Any,
    tokenizer: Any,
    forget: Sequence[str],
    holdout: Sequence[str],
    *,
    batch_size: int | None = None,
    max_length: int | None = None,
) -> PrivleakScores:
    """Score forget and holdout texts and compute every attack's AUC (MUSE orientation)."""
    texts = list(forget) + list(holdout)
    scores, used = score_texts(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    values = [attack_values(s, t) for s, t in zip(scores, texts)]
    forget_values, holdout_values = values[: len(forget)], values[len(forget):]
    aucs = {a: roc_auc([v[a] for v in forget_values], [v[a] for v in holdout_values]) for a in ATTACKS}
    samples: list[dict[str, Any]] = []
    for split, split_texts, split_values, offset in (("forget", forget, forget_values, 0), ("holdout", holdout, holdout_values, len(forget))):
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
                }
            )
    extras = {
        "batch_size": used,
        "context": context_length(model, max_length),
        "truncated": sum(s.truncated for s in scores),
        "n_forget": len(forget),
        "n_holdout": len(holdout),
    }
    return PrivleakScores(forget=forget_values, holdout=holdout_values, aucs=aucs, samples=samples, extras=extras)
