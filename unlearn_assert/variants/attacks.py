"""Attack ids: the grammar of the variants that are not quantizers (relearning). Pure Python, no torch.

Why beside the quantizer grammar (:mod:`unlearn_assert.variants.quantizers`) and not inside it: a relearning
attack has no backend, bits or codes; it shares only the place where users name it
(``--unlearn-quantizers`` / ``--unlearn-attacks``) and the items it is judged by. Parsing happens
while pytest parses options, so a typo fails in milliseconds with one line.

Grammar: ``relearn-<corpus>-<steps>[-lora]``

* ``corpus`` ``forget``: fine-tune on the held-in part of the raw forget text (the first half of
  the forget documents, in the data set's order) and measure the forget metrics only on items of
  the other half (:mod:`unlearn_assert.data.links`); ``retain``: benign relearning on the raw
  retain text, no forget data at all.
* ``steps``: optimizer steps, :data:`STEPS_RANGE`, written without leading zeros.
* ``-lora``: train LoRA adapters (peft, extra ``[relearn]``) instead of every weight.

The training settings are fixed, so an id names one experiment (docs/relearning.md gives their
sources): :data:`RELEARN_DEFAULTS`, :data:`LORA_DEFAULTS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from ..errors import QuantizerError

__all__ = [
    "ATTACK_GRAMMAR",
    "LORA_DEFAULTS",
    "RELEARN_DEFAULTS",
    "STEPS_RANGE",
    "RelearnSpec",
    "is_attack_id",
    "parse_attack_id",
]

#: Every attack id starts with this (no quantizer backend is called "relearn").
PREFIX: Final = "relearn-"
#: Optimizer steps an id may name: a relearning *attack* is a short fine-tune; beyond a few thousand
#: steps it is ordinary training, and on CPU it would not finish in a CI job.
STEPS_RANGE: Final = range(1, 5001)
CORPORA: Final = ("forget", "retain")
ATTACK_GRAMMAR: Final = f"relearn-{{forget,retain}}-<steps>[-lora] (steps {STEPS_RANGE.start}..{STEPS_RANGE.stop - 1})"
EXAMPLES: Final = ("relearn-forget-50", "relearn-retain-50", "relearn-forget-50-lora")
_PATTERN = re.compile(r"relearn-(?P<corpus>[a-z]+)-(?P<steps>\d{1,9})(?P<lora>-lora)?")

#: The fine-tune of every relearn attack (see docs/relearning.md for where each number comes from).
#: ``dtype`` is the weights' dtype while training: fp32 on CPU, bf16 on a GPU.
RELEARN_DEFAULTS: Final[dict[str, Any]] = {
    "optimizer": "adamw",
    "lr": 2e-5,
    "schedule": "constant",
    "weight_decay": 0.0,
    "batch_size": 4,
    "max_length": 128,
    "seed": 0,
    "dtype": {"cpu": "float32", "cuda": "bfloat16"},
    "held_in": "first half of the forget documents (data set order)",
}
#: LoRA adapters of ``-lora`` ids: rank 8, alpha 16, no dropout (determinism), every linear
#: projection of the blocks (not the embeddings or lm_head).
LORA_DEFAULTS: Final[dict[str, Any]] = {
    "r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "bias": "none",
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class RelearnSpec:
    """A parsed attack id; ``id`` is what the user wrote (item names use it)."""

    id: str
    corpus: str
    steps: int
    lora: bool = False

    @property
    def canonical_id(self) -> str:
        return f"relearn-{self.corpus}-{self.steps}" + ("-lora" if self.lora else "")

    def settings(self, device: str) -> dict[str, Any]:
        """Every setting the fine-tune runs with on ``device`` ("cpu" or "cuda..."): the row's cache key part and
        record."""
        out = {k: v for k, v in RELEARN_DEFAULTS.items() if k not in ("dtype", "held_in")}
        out.update(
            corpus=self.corpus,
            steps=self.steps,
            dtype=train_dtype(device),
            lora=dict(LORA_DEFAULTS) if self.lora else None,
        )
        if self.corpus == "forget":
            out["held_in"] = RELEARN_DEFAULTS["held_in"]
        return out


def train_dtype(device: str) -> str:
    """fp32 weights on CPU (bf16 arithmetic there is emulated and slow), bf16 weights on a GPU."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def is_attack_id(text: str) -> bool:
    """True when ``text`` is meant as an attack id (it may still be malformed)."""
    return isinstance(text, str) and text.strip().startswith(PREFIX)


def _known() -> str:
    return f"{', '.join(EXAMPLES)} ({ATTACK_GRAMMAR})"


def parse_attack_id(text: str) -> RelearnSpec:
    """Parse and validate an attack id; raise :class:`QuantizerError` (one line) otherwise."""
    qid = text.strip()
    match = _PATTERN.fullmatch(qid)
    if match is None:
        raise QuantizerError(f"unknown attack '{qid}'; known: {_known()}")
    corpus = match["corpus"]
    if corpus not in CORPORA:
        raise QuantizerError(
            f"unknown attack '{qid}': relearn on 'forget' or 'retain', not '{corpus}'; known: {_known()}"
        )
    steps = int(match["steps"])
    if str(steps) != match["steps"]:
        raise QuantizerError(
            f"invalid attack '{qid}': write the steps without leading zeros ({steps}); known: {_known()}"
        )
    if steps not in STEPS_RANGE:
        raise QuantizerError(
            f"invalid attack '{qid}': steps must be {STEPS_RANGE.start}..{STEPS_RANGE.stop - 1}, got {steps}; "
            f"known: {_known()}"
        )
    return RelearnSpec(qid, corpus, steps, bool(match["lora"]))
