"""Checks the backend tests share: a model left bit-identical, and logits of one fixed prompt."""

from __future__ import annotations

from typing import Any

import torch

PROMPT = "Question: who wrote it?\nAnswer:"


def snapshot(loaded: Any) -> dict[str, torch.Tensor]:
    """A copy of every tensor of the model's state dict."""
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def assert_bit_identical(loaded: Any, before: dict[str, torch.Tensor]) -> None:
    """Same keys, same dtypes, same values, bit for bit, as at :func:`snapshot` time."""
    after = loaded.model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert after[name].dtype == value.dtype and torch.equal(after[name], value), name


def logits(model: Any, tokenizer: Any) -> torch.Tensor:
    """Logits of :data:`PROMPT` (float32, on the CPU) from a model on any device."""
    device = next(model.parameters()).device
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"].to(device)
    with torch.no_grad():
        return model(input_ids=ids).logits.float().cpu()
