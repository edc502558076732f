"""The settings of an unlearning run, in a module of their own so that the demo's recipes (and
anything else that only describes a run) can hold them without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ..errors import ConfigError
from ..names import TRAIN_DTYPES

__all__ = ["UnlearnSettings"]


@dataclass(frozen=True)
class UnlearnSettings:
    """Every knob of an unlearning run (all recorded in unlearn_run.json).

    Exactly one of ``steps`` / ``epochs``. ``sure=True`` without a rule means ``sure_top=0.1``.
    ``retain_batch_size``: retain sequences per step (None: ``batch_size``); fewer make a step cheaper
    (the retain term's forward and backward are about 40% of a demo step) and its estimate noisier.
    ``quant_aware``: quantizer ids whose fake-quantized forward also carries the objectives
    (:mod:`.quant_aware`), weighted ``quant_aware_weight`` against the full-precision loss.
    """

    method: str = "npo_klr"
    lr: float = 1e-5
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 4
    retain_batch_size: int | None = None  # None: batch_size
    max_length: int = 128
    alpha: float = 1.0
    beta: float = 0.1
    seed: int = 0
    dtype: str = "float32"
    weight_decay: float = 0.0
    device: str = "cpu"
    sure: bool = False
    sure_top: float | None = None
    sure_threshold: float | None = None
    sure_batches: int = 4
    sure_lm_head: bool = False
    log_every: int = 10
    quant_aware: tuple[str, ...] = ()
    quant_aware_weight: float = 1.0

    def validated(self) -> UnlearnSettings:
        """A normalized copy (method lower-case, SURE default rule); bad values are one-line ConfigErrors."""
        from .losses import parse_method  # torch: only when a run is validated

        method = parse_method(self.method).name
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError("give exactly one of steps or epochs (e.g. --steps 100 or --epochs 5)")
        for name in ("steps", "epochs", "batch_size", "retain_batch_size", "sure_batches", "log_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.max_length, int) or self.max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2, got {self.max_length!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be a positive number, got {self.beta!r}; NPO's paper uses 0.1")
        if not (self.alpha >= 0 and math.isfinite(self.alpha)) or self.weight_decay < 0:
            raise ConfigError("alpha and weight_decay must be non-negative numbers")
        if self.dtype not in TRAIN_DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(TRAIN_DTYPES)}, got '{self.dtype}'")
        top, threshold = self.sure_top, self.sure_threshold
        if not self.sure and (top is not None or threshold is not None):
            raise ConfigError("sure_top / sure_threshold were given without sure; pass --sure to use SURE")
        if self.sure and top is not None and threshold is not None:
            raise ConfigError("give one of sure_top or sure_threshold, not both")
        if self.sure and top is None and threshold is None:
            top = 0.1
        if top is not None and not 0.0 < top <= 1.0:
            raise ConfigError(f"sure_top must be in (0, 1], got {top}; e.g. 0.1 selects the top 10% of linear modules")
        from .quant_aware_ids import check_quant_aware_ids

        quant_aware = check_quant_aware_ids(self.quant_aware)
        if not (self.quant_aware_weight > 0 and math.isfinite(self.quant_aware_weight)):
            raise ConfigError(f"quant_aware_weight must be a positive number, got {self.quant_aware_weight!r}")
        return replace(self, method=method, sure_top=top, quant_aware=quant_aware)
