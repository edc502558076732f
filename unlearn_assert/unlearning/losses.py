"""Unlearning losses on plain tensors: GA, NPO (forget side) and GDR, KLR (retain side).

Why pure tensor functions: each loss is a formula from a paper, and the easiest way to be sure a
formula is right is to check it on hand-made logits with values computed by hand (see
tests/unlearning/test_trainer.py). The trainer only runs forward passes and calls these.

Conventions (why: one alignment step, done once, keeps every formula free of off-by-one shifts):

* every function takes logits *already aligned* with their targets: ``logits[b, t]`` is the
  distribution that should predict ``targets[b, t]``; :func:`shift_for_lm` does that alignment for
  a causal LM (drop the last position's logits, drop the first token as a target);
* ``mask[b, t]`` is 1 for a real target token and 0 for padding; padding never contributes;
* logits are up-cast to float32 before ``log_softmax``: with pure-bf16 weights the logits are bf16,
  and a bf16 log-softmax over a large vocabulary loses the small differences the losses are made of.

Definitions:

* GA: ``loss = -CE`` (mean token cross-entropy on forget tokens, negated: minimising it is
  gradient *ascent* on the forget NLL).
* NPO (Zhang et al. 2024, "Negative Preference Optimization"), with ``beta = 0.1`` by default:
  ``loss = -(2 / beta) * mean_seq logsigmoid(-beta * (logp_model(y|x) - logp_ref(y|x)))`` where
  ``logp`` is the *sum* of the sequence's token log-probabilities (padding masked). With the
  model equal to the reference it is ``(2 / beta) * log 2``.
* GDR: retain NLL (mean token cross-entropy on retain tokens).
* KLR: ``KL(ref || model) = sum_v p_ref(v) (log p_ref(v) - log p_model(v))`` per retain token
  position, from log-softmax of both, averaged over the (unmasked) positions.

Total loss of a method = forget loss + ``alpha`` * retain loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from . import METHODS

__all__ = [
    "LossInputs",
    "LossParts",
    "Method",
    "ga_loss",
    "gdr_loss",
    "klr_loss",
    "method_loss",
    "nll_loss",
    "npo_loss",
    "parse_method",
    "sequence_logprob",
    "shift_for_lm",
    "token_logprobs",
]


@dataclass(frozen=True)
class Method:
    """A parsed method name: which forget loss, which retain regularizer (or none)."""

    name: str
    forget: str
    retain: str | None

    @property
    def needs_reference(self) -> bool:
        """NPO and KLR compare against the frozen target; GA and GDR do not need it (saves a copy)."""
        return self.forget == "npo" or self.retain == "klr"


def parse_method(name: str) -> Method:
    """``"NPO_KLR"`` / ``"npo-klr"`` -> Method('npo_klr', 'npo', 'klr'); unknown names are a ConfigError."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in METHODS:
        raise ConfigError(f"unknown unlearning method '{name}'; use one of {', '.join(METHODS)}")
    forget, retain = METHODS[key]
    return Method(key, forget, retain)


# --------------------------------------------------------------------------- token-level pieces


def shift_for_lm(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Align a causal LM's outputs with its targets: position t predicts token t + 1."""
    return logits[:, :-1, :], input_ids[:, 1:], attention_mask[:, 1:]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[b, t]) under ``logits[b, t]`` in float32, shape [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def nll_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy over unmasked targets (the usual LM loss)."""
    return _masked_mean(-token_logprobs(logits, targets), mask)


def sequence_logprob(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of token log-probabilities per sequence (padding masked), shape [B]."""
    return (token_logprobs(logits, targets) * mask.to(torch.float32)).sum(dim=-1)


# --------------------------------------------------------------------------- the four losses


def ga_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gradient ascent: minimise ``-CE`` on the forget tokens."""
    return -nll_loss(logits, targets, mask)


def npo_loss(
    logits: torch.Tensor, ref_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, beta: float = 0.1
) -> torch.Tensor:
    """NPO on sequence log-likelihood ratios (not on raw logits), as in the paper."""
    if beta <= 0:
        raise ConfigError(f"NPO beta must be positive, got {beta}; the paper uses 0.1")
    ratio = sequence_logprob(logits, targets, mask) - sequence_logprob(ref_logits.detach(), targets, mask)
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()


def gdr_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gradient-descent regularizer: keep the retain NLL low."""
    return nll_loss(logits, targets, mask)


def klr_loss(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per retain position from log-softmax of both, mean over unmasked positions."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp_ref = F.log_softmax(ref_logits.detach().float(), dim=-1)
    kl = (logp_ref.exp() * (logp_ref - logp)).sum(dim=-1)
    return _masked_mean(kl, mask)


# --------------------------------------------------------------------------- combinations


@dataclass
class LossInputs:
    """Aligned logits, targets and mask of one batch (and the reference's logits, when needed)."""

    logits: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    ref_logits: torch.Tensor | None = None

    def ref(self, what: str) -> torch.Tensor:
        if self.ref_logits is None:
            raise ValueError(f"{what} needs the reference model's logits (ref_logits)")
        return self.ref_logits


@dataclass
class LossParts:
    """The pieces of one step's loss; ``retain`` is None for methods without a regularizer."""

    forget: torch.Tensor
    retain: torch.Tensor | None
    total: torch.Tensor


def forget_loss(kind: str, batch: LossInputs, beta: float = 0.1) -> torch.Tensor:
    """The forget-side loss ``kind`` ('ga' or 'npo') on one batch (also what SURE's saliency differentiates)."""
    if kind == "ga":
        return ga_loss(batch.logits, batch.targets, batch.mask)
    if kind == "npo":
        return npo_loss(batch.logits, batch.ref("NPO"), batch.targets, batch.mask, beta)
    raise ValueError(f"unknown forget loss '{kind}'")


def retain_loss(kind: str, batch: LossInputs) -> torch.Tensor:
    """The retain regularizer ``kind`` ('gdr' or 'klr') on one batch."""
    if kind == "gdr":
        return gdr_loss(batch.logits, batch.targets, batch.mask)
    if kind == "klr":
        return klr_loss(batch.logits, batch.ref("KLR"), batch.mask)
    raise ValueError(f"unknown retain loss '{kind}'")


def method_loss(
    method: str | Method, forget: LossInputs, retain: LossInputs | None = None, *, alpha: float = 1.0, beta: float = 0.1
) -> LossParts:
    """Dispatch a method name to its losses: ``total = forget_loss + alpha * retain_loss``."""
    m = method if isinstance(method, Method) else parse_method(method)
    f = forget_loss(m.forget, forget, beta)
    if m.retain is None:
        return LossParts(forget=f, retain=None, total=f)
    if retain is None:
        raise ValueError(f"method '{m.name}' needs a retain batch")
    r = retain_loss(m.retain, retain)
    return LossParts(forget=f, retain=r, total=f + alpha * r)
