"""Variants from the backend registry: a quantizer id applied to U, and to T for the reference row."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...names import Role
from ...variants.quantizers import BACKENDS, parse_quantizer_id
from .base import Applied

if TYPE_CHECKING:  # pragma: no cover
    from ...config import RunConfig
    from ..inputs import Inputs


class QuantizerSource:
    """``rtn-*``, ``bnb-*``, ``hqq-*``, ``gptq-*``, ``awq-*``: :func:`unlearn_assert.quant.quantized`
    with the target (for code agreement) and, for a calibrated backend, the run's calibration text."""

    roles: tuple[Role, ...] = ("unlearned", "target")

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool:
        return (
            run.artifact(variant) is None
        )  # the kinds before it took theirs; the rest were validated as quantizer ids

    def __init__(self, variant: str, run: RunConfig) -> None:
        self.variant = variant
        self.spec = parse_quantizer_id(variant)
        self.calibrated = BACKENDS[self.spec.backend].calibrated

    def key_parts(self, role: Role, inputs: Inputs) -> dict[str, Any]:
        """The canonical id (``rtn-w8-sym`` is ``rtn-w8``), the calibration text of GPTQ/AWQ, and for
        U the target: code agreement depends on it."""
        parts: dict[str, Any] = {"variant": self.spec.canonical_id}
        calibration = inputs.calibration() if self.calibrated else None
        if calibration is not None:
            parts["calibration"] = calibration.fingerprint
        if role == "unlearned":
            parts["target"] = inputs.fingerprint("target")
        return parts

    @contextmanager
    def apply(self, role: Role, inputs: Inputs, handoff: Any = None) -> Iterator[Applied]:
        from ...quant import quantized

        loaded = inputs.model(role)
        target = inputs.model("target") if role == "unlearned" else None
        calibration = inputs.calibration() if self.calibrated else None
        with quantized(loaded, self.spec, target=target, calibration=calibration, target_codes=handoff) as q:
            details = q.details.to_dict()
            if calibration is not None:
                details["calibration"] = calibration.summary()
            yield Applied(view=q, details=details, handoff=q.backend.codes if role == "target" else None)
