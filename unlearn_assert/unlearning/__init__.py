"""The standard unlearning methods (GA, NPO with the GDR / KLR retain regularizers) and SURE.

Why they ship with a release gate: a provider whose gate fails ("quantization brings the forgotten
knowledge back") needs a way to produce a better checkpoint, and the gate's own tests need
unlearned checkpoints made the way the literature makes them. The methods follow the MUSE / NPO
papers; SURE (saliency-based module selection with a large learning rate) is the remediation
proposed by "Catastrophic Failure of LLM Unlearning via Quantization".

This ``__init__`` stays light (no torch): ``unlearn-assert --help`` imports the CLI parser, which
only needs the method names below. The heavy API is loaded lazily on first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# method name -> (forget loss, retain regularizer or None). Names are case-insensitive at the API.
METHODS: dict[str, tuple[str, str | None]] = {
    "ga": ("ga", None),
    "ga_gdr": ("ga", "gdr"),
    "ga_klr": ("ga", "klr"),
    "npo": ("npo", None),
    "npo_gdr": ("npo", "gdr"),
    "npo_klr": ("npo", "klr"),
}

_LAZY = {
    "UnlearnSettings": "unlearn_assert.unlearning.trainer:UnlearnSettings",
    "UnlearnResult": "unlearn_assert.unlearning.trainer:UnlearnResult",
    "unlearn": "unlearn_assert.unlearning.trainer:unlearn",
    "save_unlearned": "unlearn_assert.unlearning.trainer:save_unlearned",
    "chunk_text": "unlearn_assert.unlearning.trainer:chunk_text",
    "SureSelection": "unlearn_assert.unlearning.sure:SureSelection",
    "add_unlearn_parser": "unlearn_assert.unlearning.cli:add_unlearn_parser",
    "run_unlearn": "unlearn_assert.unlearning.cli:run_unlearn",
}

__all__ = ["METHODS", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'unlearn_assert.unlearning' has no attribute '{name}'")
    module, attr = target.split(":")
    value = getattr(import_module(module), attr)
    globals()[name] = value
    return value
