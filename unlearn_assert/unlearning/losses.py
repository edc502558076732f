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
    "RefOutputs",
    "ga_loss",
    "gdr_loss",
    "klr_from_logp",
    "klr_loss",
    "method_loss",
    "nll_loss",
    "npo_from_logprobs",
    "npo_loss",
    "parse_method",
    "ref_log_softmax",
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
    return npo_from_logprobs(sequence_logprob(logits, targets, mask), sequence_logprob(ref_logits, targets, mask), beta)


def npo_from_logprobs(seq_logprob: torch.Tensor, ref_seq_logprob: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO from the sequences' summed log-likelihoods under the model and the reference ([B] each)."""
    if beta <= 0:
        raise ConfigError(f"NPO beta must be positive, got {beta}; the paper uses 0.1")
    ratio = seq_logprob - ref_seq_logprob.detach()
    return -(2.0 / beta) * F.logsigmoid(-beta * ratio).mean()


def gdr_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Gradient-descent regularizer: keep the retain NLL low."""
    return nll_loss(logits, targets, mask)


def klr_loss(logits: torch.Tensor, ref_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per retain position from log-softmax of both, mean over unmasked positions."""
    return klr_from_logp(logits, ref_log_softmax(ref_logits), mask)


def ref_log_softmax(ref_logits: torch.Tensor) -> torch.Tensor:
    """The reference's log-distribution per position, in float32 (what KLR compares the model's with)."""
    return F.log_softmax(ref_logits.detach().float(), dim=-1)


def klr_from_logp(logits: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KLR from the reference's log-distribution per position (:func:`ref_log_softmax`)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1)
    return _masked_mean(kl, mask)


# --------------------------------------------------------------------------- combinations


@dataclass(frozen=True)
class RefOutputs:
    """What the losses use of the frozen reference model on one batch: NPO the sequences' summed
    log-likelihoods ([B]), KLR the log-distribution per aligned position ([B, T, V], float32); each
    None where the method does not need it. Why not the logits: both are functions of one sequence
    alone, so the trainer can keep them per chunk (NPO's is one number per chunk) instead of running
    the reference again every time a chunk is drawn."""

    seq_logprob: torch.Tensor | None = None
    logp: torch.Tensor | None = None

    @classmethod
    def from_logits(
        cls, ref_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, npo: bool = True, klr: bool = True
    ) -> RefOutputs:
        """From the reference's aligned logits of the batch (``npo`` / ``klr``: which parts to compute)."""
        ref_logits = ref_logits.detach()
        return cls(
            sequence_logprob(ref_logits, targets, mask) if npo else None, ref_log_softmax(ref_logits) if klr else None
        )


@dataclass
class LossInputs:
    """Aligned logits, targets and mask of one batch (and the reference's outputs, when needed)."""

    logits: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    ref: RefOutputs | None = None

    def ref_seq_logprob(self) -> torch.Tensor:
        if self.ref is None or self.ref.seq_logprob is None:
            raise ValueError("NPO needs the reference model's sequence log-likelihoods (RefOutputs.seq_logprob)")
        return self.ref.seq_logprob

    def ref_logp(self) -> torch.Tensor:
        if self.ref is None or self.ref.logp is None:
            raise ValueError("KLR needs the reference model's log-distributions (RefOutputs.logp)")
        return self.ref.logp


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
        seq_logprob = sequence_logprob(batch.logits, batch.targets, batch.mask)
        return npo_from_logprobs(seq_logprob, batch.ref_seq_logprob(), beta)
    raise ValueError(f"unknown forget loss '{kind}'")


def retain_loss(kind: str, batch: LossInputs) -> torch.Tensor:
    """The retain regularizer ``kind`` ('gdr' or 'klr') on one batch."""
    if kind == "gdr":
        return gdr_loss(batch.logits, batch.targets, batch.mask)
    if kind == "klr":
        return klr_from_logp(batch.logits, batch.ref_logp(), batch.mask)
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
