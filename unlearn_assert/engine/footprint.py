"""What the rows of a run will cost, known when the options are read (before any row runs).

The placement of an xdist run (:mod:`unlearn_assert.scaleout.placement`) weighs it against the fixed cost of
one more process computing rows: the parameter count comes from the safetensors headers, the positions one row
feeds a model from the option-time count of every sequence (:mod:`.overlong`), the rows from the variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import RunConfig

__all__ = ["Footprint", "row_count"]


def row_count(run: RunConfig) -> int:
    """Rows a whole run computes: U and T in full precision (and R), q(U) and q(T) per quantizer or attack, q(U)
    per artifact (the user's own quantized U)."""
    return 2 + (run.retrain is not None) + 2 * len(run.variant_ids) + len(run.artifacts)


@dataclass(frozen=True)
class Footprint:
    """``params``: the target's parameters; ``weight_bytes``: its weight files; ``rows``: :func:`row_count`;
    ``tokens``: positions one row feeds the model (prompts, generated tokens and scored texts; None when not
    counted)."""

    params: int
    weight_bytes: int
    rows: int
    tokens: int | None

    @property
    def flops(self) -> float | None:
        """The forward FLOPs of the run's rows, ``2 x params x tokens x rows`` (None without a token count):
        an upper bound (generation may stop early) that orders runs by cost, not a time."""
        return None if self.tokens is None else 2.0 * self.params * self.tokens * self.rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "weight_bytes": self.weight_bytes,
            "rows": self.rows,
            "tokens_per_row": self.tokens,
            "gflop": None if self.flops is None else round(self.flops / 1e9, 1),
        }
