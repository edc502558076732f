"""HQQ (half-quadratic quantization) through hqq's own ``HQQLinear``: ids ``hqq-w<bits>g<group>``.

transformers' ``HqqConfig`` is not implemented in transformers 5 (``NotImplementedError``), so there
is no loader path to copy; this backend swaps modules **in place**: every ``nn.Linear`` not matched by
``skip_modules`` is replaced in its parent by an ``HQQLinear`` built from a clone of its weight, and
the original module objects are put back on exit (also when the body raises). Why in place and not a
copy: a copy would need a full-precision model first (hqq quantizes from fp weights), while the
swap needs no extra fp weights at all (one layer's clone at a time) and restoring is exact by
construction: the original modules and tensors are never written to. As with rtn, do not use the
source model concurrently inside the block.

Settings: hqq's ``BaseQuantizeConfig(nbits, group_size)`` defaults (``axis=1``: groups of
``group_size`` consecutive weights of the row-major weight; the proximal zero-point optimizer on;
zero rounded for 4-bit), ``compute_dtype`` = the model's dtype, HQQ's default PyTorch backend
(forward = ``x @ dequantize().T``). HQQ is affine (zero point) only, so ``-sym`` ids are refused;
hqq supports 2, 3, 4, 5, 6 and 8 bits.

Report (T quantized by the same ``Quantizer.quantize`` call, without bit packing):

* ``changed_fraction``: ``HQQLinear.dequantize()`` (compute dtype) differs from the source weight.
* ``code_agreement``: U's integer code (``HQQLinear.unpack()``) equals T's code.
* ``small_delta_fraction``: ``|U - T| < s_T / 2``, ``s_T`` the (dequantization) scale of T's
  group: the grid is uniform, so this is rtn's "less than half a step".
* ``same_cell_fraction``: ``clamp(round(U * (1 / s_T) + z_T), 0, 2^b - 1)`` equals the same
  expression for T, in float32 as hqq rounds. Both sides go through the same arithmetic on purpose:
  hqq rounds with its pre-inversion scale, which ``1 / s_T`` recovers only up to one float32 rounding,
  so comparing against hqq's own code for T let a weight that sits on a cell boundary count as
  "moved" when nothing moved (an AVX2-only CPU gave 0.9999946 for U = T; hqq itself is deterministic
  there, it is the boundary weights that differ between kernels). With the same expression on both
  sides, U = T gives exactly 1.0 on every CPU.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from hqq.core.quantize import BaseQuantizeConfig, HQQLinear, Quantizer
from torch import nn

from ..errors import QuantizerError
from ..variants.quantizers import QuantSpec
from .base import DEFAULT_SKIP, QuantDetails, layer_weight, skipped

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

#: Bit widths hqq 0.2.8 packs (1.58 and 1 are outside the id grammar).
HQQ_BITS = (2, 3, 4, 5, 6, 8)
#: Packing splits the (numel / group) rows of codes into 2 (4-bit) or 4 (2-bit) parts.
ROW_MULTIPLE = {4: 2, 2: 4}


def hqq_codes(layer: HQQLinear) -> torch.Tensor:
    """Integer codes of an ``HQQLinear`` (float32, flat, row-major weight order)."""
    n = layer.in_features * layer.out_features
    rows = n // layer.meta["group_size"]
    return layer.unpack(dtype=torch.float32)[:rows].reshape(-1)


def _counts(
    layer: HQQLinear, w: torch.Tensor, t: torch.Tensor | None, params: dict[str, Any], device: str
) -> list[int]:
    """(n, changed, agree, small, same) for one layer; T is quantized here and dropped."""
    n = w.numel()
    changed = int((layer.dequantize() != w).sum())
    if t is None:
        return [n, changed, 0, 0, 0]
    group, top = params["group_size"], 2 ** params["nbits"] - 1
    t_q, meta = Quantizer.quantize(t.clone(), **params, bitpack=False, compute_dtype=layer.compute_dtype, device=device)
    t_codes = t_q.float().reshape(-1, group)
    s_t, z_t = meta["scale"].float().reshape(-1, 1), meta["zero"].float().reshape(-1, 1)
    u64, t64 = w.double().reshape(-1, group), t.double().reshape(-1, group)
    agree = int((hqq_codes(layer).reshape(-1, group) == t_codes).sum())
    small = int(((u64 - t64).abs() < s_t.double() / 2).sum())
    inv = 1.0 / s_t
    u_cell = torch.round(w.float().reshape(-1, group) * inv + z_t).clamp(0, top)
    t_cell = torch.round(t.float().reshape(-1, group) * inv + z_t).clamp(0, top)
    same = int((u_cell == t_cell).sum())
    return [n, changed, agree, small, same]


class HqqBackend:
    """``hqq-w<bits>g<group>`` by swapping ``HQQLinear`` modules in (see the module docstring)."""

    name = "hqq"
    takes_target_codes = False
    codes = None

    def __init__(self, spec: QuantSpec) -> None:
        if spec.backend != self.name or spec.bits is None or spec.group_size is None:
            raise QuantizerError(f"HqqBackend cannot run quantizer '{spec.id}'; use hqq-w<bits>g<group>")
        if spec.symmetric:
            raise QuantizerError(
                f"quantizer '{spec.id}': hqq quantizes with a zero point only; drop '-sym' (e.g. hqq-w4g64)"
            )
        if spec.bits not in HQQ_BITS:
            raise QuantizerError(
                f"quantizer '{spec.id}': hqq supports {', '.join(map(str, HQQ_BITS))} bits, not {spec.bits}"
            )
        if spec.group_size % 8:
            raise QuantizerError(
                f"quantizer '{spec.id}': hqq needs a group size that is a multiple of 8, got {spec.group_size}"
            )
        self.spec = spec
        self.quant_config = BaseQuantizeConfig(nbits=spec.bits, group_size=spec.group_size)
        self.swapped: dict[str, nn.Module] = {}

    @property
    def weight_params(self) -> dict[str, Any]:
        return dict(self.quant_config["weight_quant_params"])

    def _check_shape(self, name: str, weight: torch.Tensor) -> None:
        group = self.spec.group_size
        assert group is not None and self.spec.bits is not None
        rows, rest = divmod(weight.numel(), group)
        if rest or rows % ROW_MULTIPLE.get(self.spec.bits, 1):
            raise QuantizerError(
                f"quantizer '{self.spec.id}' cannot pack '{name}' ({tuple(weight.shape)}): its size must be a multiple "
                "of "
                f"{group * ROW_MULTIPLE.get(self.spec.bits, 1)}; pick another group size or skip the module"
            )

    @contextmanager
    def apply(
        self,
        loaded: LoadedModel,
        *,
        target: LoadedModel | None = None,
        skip_modules: Sequence[str] = DEFAULT_SKIP,
        calibration: Calibration | None = None,
        target_codes: Any = None,
    ) -> Iterator[tuple[Any, QuantDetails]]:
        """Swap ``HQQLinear`` modules into ``loaded.model`` for the block; yield (model, report).
        ``calibration`` and ``target_codes`` are ignored (see :class:`~.base.Backend`)."""
        start = time.perf_counter()
        model = loaded.model
        dtype = getattr(torch, loaded.dtype)
        device = str(loaded.device)
        modules = dict(model.named_modules())  # captured before any swap (target may be the same model)
        target_modules = None if target is None else dict(target.model.named_modules())
        todo = {
            n: m
            for n, m in modules.items()
            if isinstance(m, nn.Linear) and m.weight.ndim == 2 and not skipped(n, skip_modules)
        }
        for name, module in todo.items():
            self._check_shape(name, module.weight)
        params = self.weight_params
        totals = [0, 0, 0, 0, 0]  # n, changed, agree, small, same
        try:
            with torch.no_grad():
                for name, module in todo.items():
                    w = module.weight.detach()
                    t = None if target_modules is None else layer_weight(target, target_modules, name, w.shape)  # type: ignore[arg-type]
                    # a Parameter: hqq 0.2.8's from_weights assigns the bias to an nn.Linear, which refuses a
                    # plain tensor (TypeError on every biased layer: Qwen2's q/k/v projections)
                    bias = (
                        None if module.bias is None else nn.Parameter(module.bias.detach().clone(), requires_grad=False)
                    )
                    layer = HQQLinear.from_weights(
                        w.clone(),
                        bias,
                        quant_config=self.quant_config,
                        compute_dtype=dtype,
                        device=device,
                        del_orig=True,
                    )
                    counts = _counts(layer, w, None if t is None else t.to(w.device), params, device)
                    totals = [a + b for a, b in zip(totals, counts)]
                    parent, _, child = name.rpartition(".")
                    setattr(model.get_submodule(parent) if parent else model, child, layer)
                    self.swapped[name] = module
            details = QuantDetails.from_counts(
                self.spec,
                self.name,
                list(self.swapped),
                totals,
                has_target=target is not None,
                seconds=time.perf_counter() - start,
            )
            yield model, details
        finally:
            for name, original in self.swapped.items():
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent) if parent else model, child, original)
            self.swapped.clear()
            gc.collect()
