"""SURE: saliency-based module selection, so unlearning updates only the modules that matter.

Why: with a small learning rate, the standard methods move weights so little that 4-bit
quantization rounds most of them back to the target's codes, and the forgotten knowledge returns.
SURE ("Catastrophic Failure of LLM Unlearning via Quantization") trains with a *large* learning
rate, and to keep utility it only updates the modules most salient for forgetting.

What is selected, and what is never touched:

* candidates are the ``nn.Linear`` modules (attention and MLP projections); ``lm_head`` is a
  candidate only with ``include_lm_head=True`` (off by default: like the quantizers, which leave it
  unquantized, we treat it as part of the vocabulary interface), and never when it shares its weight
  with the input embedding (updating it would update the embedding);
* embeddings and normalization layers are never selected and never updated;
* saliency of a module = Frobenius norm of the forget loss's gradient over the module's own
  parameters (weight and, when present, bias), accumulated over a few forget batches at the
  *original* weights, before any update;
* selection = the top fraction ``top`` of candidates by saliency (``ceil(top * n)``, at least one),
  or every candidate whose saliency exceeds ``threshold``.

The mask is applied twice, so nothing can leak: the optimizer only receives the selected
parameters, and every other parameter has ``requires_grad=False`` (no gradient, so no weight decay,
no momentum, no update of any kind). The published implementation put its mask in a Trainer hook
that is never called; tests/unlearning/test_trainer.py checks that every non-selected parameter is
bit-identical after training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError

__all__ = ["SureSelection", "apply_mask", "candidate_modules", "compute_saliency", "select_modules"]


@dataclass
class SureSelection:
    """What SURE chose and why: every candidate's saliency and the selected module names."""

    saliency: dict[str, float]
    selected: list[str]
    rule: str
    n_batches: int
    include_lm_head: bool = False
    notes: list[str] = field(default_factory=list)

    def selected_with_scores(self) -> list[dict[str, Any]]:
        return [{"module": name, "saliency": self.saliency[name]} for name in self.selected]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "n_batches": self.n_batches,
            "include_lm_head": self.include_lm_head,
            "n_candidates": len(self.saliency),
            "selected": self.selected_with_scores(),
            "saliency": dict(self.saliency),
            "notes": list(self.notes),
        }


def _lm_head_is_tied(model: Any) -> bool:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return out is not None and inp is not None and out.weight is inp.weight


def candidate_modules(model: Any, include_lm_head: bool = False) -> dict[str, torch.nn.Module]:
    """The linear modules SURE may select, in the model's module order (norms and embeddings never)."""
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = _lm_head_is_tied(model)
    found: dict[str, torch.nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if module is out_emb and (not include_lm_head or tied):
            continue
        found[name] = module
    if not found:
        raise ConfigError("SURE found no linear modules to select in this model; train without --sure")
    return found


def compute_saliency(
    model: Any,
    loss_fn: Callable[[Any], torch.Tensor],
    batches: Iterable[Any],
    *,
    include_lm_head: bool = False,
) -> tuple[dict[str, float], int]:
    """Per-module Frobenius norm of the forget-loss gradient, averaged over ``batches``.

    ``loss_fn(batch)`` returns the method's forget loss for one batch. Gradients are accumulated
    (loss / n per batch, so the scale does not depend on the number of batches) and cleared
    afterwards, leaving the model exactly as it was. Returns (saliency, number of batches).
    """
    modules = candidate_modules(model, include_lm_head)
    batches = list(batches)
    if not batches:
        raise ConfigError("SURE needs at least one forget batch to compute saliency")
    model.zero_grad(set_to_none=True)
    for batch in batches:
        (loss_fn(batch) / len(batches)).backward()
    saliency: dict[str, float] = {}
    for name, module in modules.items():
        total = 0.0
        for p in module.parameters(recurse=False):
            if p.grad is not None:
                total += float(p.grad.detach().float().pow(2).sum())
        saliency[name] = math.sqrt(total)
    model.zero_grad(set_to_none=True)
    return saliency, len(batches)


def select_modules(
    saliency: dict[str, float], *, top: float | None = None, threshold: float | None = None
) -> tuple[list[str], str]:
    """Pick modules by ``top`` fraction or by ``threshold``; returns (names by descending saliency, rule)."""
    if (top is None) == (threshold is None):
        raise ConfigError("SURE needs exactly one of sure_top (e.g. 0.1) or sure_threshold")
    ranked = sorted(saliency, key=lambda n: (-saliency[n], n))
    if top is not None:
        if not 0.0 < top <= 1.0:
            raise ConfigError(f"sure_top must be in (0, 1], got {top}; e.g. 0.1 selects the top 10% of linear modules")
        k = max(1, math.ceil(top * len(ranked) - 1e-9))
        return ranked[:k], f"top {top:g} ({k} of {len(ranked)} linear modules)"
    assert threshold is not None
    chosen = [n for n in ranked if saliency[n] > threshold]
    if not chosen:
        best = saliency[ranked[0]]
        raise ConfigError(
            f"no module has saliency above sure_threshold {threshold:g} (the largest is {best:.4g}); lower the "
            "threshold or use --sure-top"
        )
    return chosen, f"saliency > {threshold:g} ({len(chosen)} of {len(ranked)} linear modules)"


def apply_mask(model: Any, selected: Iterable[str]) -> list[torch.nn.Parameter]:
    """Freeze every parameter except those of the ``selected`` modules; returns the trainable ones.

    Give the returned list (and only it) to the optimizer.
    """
    modules = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[torch.nn.Parameter] = []
    for name in selected:
        if name not in modules:
            raise ConfigError(f"SURE selected module '{name}' is not in the model")
        for p in modules[name].parameters(recurse=False):
            p.requires_grad_(True)
            trainable.append(p)
    return trainable
