"""The backend contract: what every quantizer backend is, what it reports, and the helpers all share.

A backend (``rtn``, ``bnb``, ``hqq``, ``gptq``/``awq``, ``gguf``) is built from a parsed
quantizer id by the registry (:data:`unlearn_assert.variants.quantizers.BACKENDS`) and quantizes one loaded
model for the duration of a ``with`` block (:meth:`Backend.apply`). What it must prove is the same
for all of them, so it is written down here once: the :class:`QuantDetails` (did the quantizer take
effect, and how many of U's codes equal T's), the layer pairing check that every comparison of U's
layer with T's makes (:func:`layer_weight`), and which modules stay unquantized (:func:`skipped`).

**T's codes, handed on.** A code-agreement figure needs T quantized by the same quantizer. Most
backends quantize T's layer on the fly (cheap). A calibrated backend (GPTQ, AWQ) costs minutes per
model, so it declares :attr:`Backend.takes_target_codes`: after ``apply`` on T, :attr:`Backend.codes`
holds T's codes, and a later ``apply`` on U takes them as ``target_codes`` instead of running the
quantizer on T a second time. The engine passes them from the q(T) row to the q(U) row.

No torch at module level: this module is imported with the package, which the plugin imports while
it parses options.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from ..models import LoadedModel
    from ..variants.quantizers import QuantSpec
    from .calibration import Calibration

__all__ = ["DEFAULT_SKIP", "Backend", "QuantDetails", "layer_weight", "skipped"]

#: Modules every backend leaves in full precision by default, as bitsandbytes does.
DEFAULT_SKIP: tuple[str, ...] = ("lm_head",)


@dataclass
class QuantDetails:
    """What a quantizer did, as plain data (``to_dict`` is JSON-ready).

    * ``changed_fraction``: share of the quantized weights whose value changed; 0 means the
      quantizer did not take effect, which :func:`unlearn_assert.quant.quantized` turns into an error.
    * ``code_agreement``: share of weights whose integer code in q(U) equals the code of the
      same weight in q(T), each quantized on its own grid (None without a target). Codes, not
      dequantized values: U's group scales differ from T's by float noise, so values almost never
      match exactly even when unlearning's change was rounded away.
    * ``small_delta_fraction``: share of weights with ``|U - T| < s_T / 2``, ``s_T`` the step of
      T's group for that weight: the paper's "moved by less than half a step" (None without a target).
    * ``same_cell_fraction``: share of weights of U that, quantized on T's grid (T's scale and zero),
      get T's code: the lemma's setting with the scale held fixed (None without a target).
    """

    quantizer: str
    backend: str
    bits: int | None
    group_size: int | None
    symmetric: bool
    modules: list[str] = field(default_factory=list)
    n_weights: int = 0
    changed_fraction: float = 0.0
    code_agreement: float | None = None
    small_delta_fraction: float | None = None
    same_cell_fraction: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_counts(
        cls,
        spec: QuantSpec,
        backend: str,
        modules: list[str],
        totals: Sequence[int],
        *,
        has_target: bool,
        seconds: float,
    ) -> QuantDetails:
        """Build a report from per-layer counts summed over layers, as every backend streams them:
        ``totals = [weights, changed, same code as q(T), small delta, same cell on T's grid]``."""
        n = totals[0]

        def frac(k: int) -> float | None:
            return totals[k] / n if n and has_target else None

        return cls(
            quantizer=spec.id,
            backend=backend,
            bits=spec.bits,
            group_size=spec.group_size,
            symmetric=spec.symmetric,
            modules=modules,
            n_weights=n,
            changed_fraction=totals[1] / n if n else 0.0,
            code_agreement=frac(2),
            small_delta_fraction=frac(3),
            same_cell_fraction=frac(4),
            seconds=seconds,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantDetails:
        """Rebuild a report from :meth:`to_dict` output (e.g. a cache entry); unknown keys are ignored."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


class Backend(Protocol):
    """One quantizer backend, built by the registry from a :class:`QuantSpec`.

    ``apply`` quantizes ``loaded`` (in place and restored on exit, or as a copy that is freed on
    exit) and yields ``(model to evaluate, report)``; with ``target`` the report carries code
    agreement. A backend that sets :attr:`takes_target_codes` keeps its model's codes in
    :attr:`codes` after ``apply`` and accepts them back as ``target_codes`` (see the module docstring);
    the others always have ``codes = None`` and are never passed ``target_codes`` or ``calibration``.
    """

    name: ClassVar[str]
    #: True when ``apply`` accepts ``calibration`` and ``target_codes`` (GPTQ, AWQ).
    takes_target_codes: ClassVar[bool]
    spec: QuantSpec
    #: After ``apply`` on a model without a target: that model's codes, for a later ``target_codes``.
    codes: Any

    def apply(
        self,
        loaded: LoadedModel,
        *,
        target: LoadedModel | None = None,
        skip_modules: Sequence[str] = DEFAULT_SKIP,
        calibration: Calibration | None = None,
        target_codes: Any = None,
    ) -> AbstractContextManager[tuple[Any, QuantDetails]]: ...


def layer_weight(
    owner: LoadedModel, modules: dict[str, nn.Module], name: str, shape: torch.Size, role: str = "target"
) -> torch.Tensor:
    """``owner``'s weight of layer ``name`` (detached), which must have ``shape``: the one pairing
    check every backend makes before comparing U's layer with T's."""
    import torch

    weight = getattr(modules.get(name), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != shape:
        found = "missing" if weight is None else tuple(weight.shape)
        raise ModelError(
            f"{role} '{owner.path}' has no weight '{name}.weight' of shape {tuple(shape)} ({found}); "
            "pass the target the model was unlearned from"
        )
    return weight.detach()


def skipped(name: str, patterns: Sequence[str]) -> bool:
    """A module is skipped when a pattern matches its full name or a dotted suffix of it
    (``lm_head`` matches ``lm_head`` and ``model.lm_head``; globs like ``*.mlp.*`` work too)."""
    return any(fnmatchcase(name, p) or fnmatchcase(name, f"*.{p}") for p in patterns)


def linear_layers(model: nn.Module, skip_modules: Sequence[str]) -> Iterator[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules of ``model`` with a 2-D weight that ``skip_modules`` does not match,
    each shared (tied) weight once: the layers a weight-only backend quantizes."""
    from torch import nn

    seen: set[int] = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module.weight.ndim != 2 or skipped(name, skip_modules):
            continue
        if id(module.weight) in seen:
            continue
        seen.add(id(module.weight))
        yield name, module
