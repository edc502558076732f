"""Plain fine-tuning for the relearning attacks: next-token NLL on one text, AdamW, constant lr.

Why here and not a second trainer: the data handling is the unlearning trainer's, reused as is
(:func:`~.trainer.chunk_text`: BOS-prefixed chunks of ``max_length`` tokens; :class:`~.trainer.BatchCycler`:
one seeded permutation per epoch), so an attack and an unlearning run see text the same way. Only
the loss differs (the NLL the unlearning removed, :func:`~.losses.nll_loss`).

:func:`finetune` trains the parameters of ``model`` that require grad, in place: the caller decides
what that is (a full copy of the weights, or LoRA adapters around frozen ones) and what it costs.
Deterministic for a given seed, device and thread count: ``torch.manual_seed(seed)`` before the
first step, batches from ``seed``, dropout off (``model.eval()`` while training: the attack's
numbers must not depend on dropout draws).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import DataError, UnlearnAssertError
from ..metrics.progress import StepLog
from .losses import nll_loss, shift_for_lm
from .trainer import BatchCycler, chunk_text

__all__ = ["FinetuneResult", "finetune"]


@dataclass
class FinetuneResult:
    """What the fine-tune did: chunks trained on, loss before and after, seconds."""

    steps: int
    chunks: int
    first_loss: float
    last_loss: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "chunks": self.chunks,
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "seconds": round(self.seconds, 3),
        }


def finetune(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    max_length: int,
    seed: int,
    device: str,
    weight_decay: float = 0.0,
    what: str = "text",
    progress: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Minimise the NLL of ``text`` for ``steps`` AdamW steps (constant ``lr``) on ``model``'s trainable parameters."""
    say = progress or (lambda line: None)
    chunks = chunk_text(tokenizer, text, max_length)
    if len(chunks) == 0:
        raise DataError(f"the {what} has no tokens to fine-tune on; give it text")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # pragma: no cover - the callers always leave something trainable
        raise UnlearnAssertError("nothing to fine-tune: no parameter requires grad")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    cycler = BatchCycler(len(chunks), batch_size, seed)
    was_training = bool(model.training)
    model.eval()  # no dropout: the same id gives the same model
    start = time.perf_counter()
    first = last = float("nan")
    log = StepLog(steps, 25)
    try:
        for step in range(1, steps + 1):
            ids, mask = chunks.batch(cycler.next(), device)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            loss = nll_loss(*shift_for_lm(logits, ids, mask))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise UnlearnAssertError(
                    f"the relearning loss became {value} at step {step}; the model or its dtype cannot be fine-tuned"
                )
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            first = value if step == 1 else first
            last = value
            if log.due(step):  # every 25 steps, at most one line per 30 s in a long run, and the last
                elapsed = time.perf_counter() - start
                say(f"relearn step {step}/{steps}: loss {value:.4f} ({elapsed:.1f} s, {log.left(step)})")
    finally:
        del optimizer
        if was_training:
            model.train()
    return FinetuneResult(steps, len(chunks), first, last, time.perf_counter() - start)
