"""Round-to-nearest (RTN) weight quantization in pure torch: the paper's math, and its backend.

This is the math under test, so every convention is explicit:

* **Groups** run along the last dimension (``in_features`` of an ``nn.Linear`` weight), per
  output row. ``group_size=None`` (or any size >= ``in_features``) means one group per row
  (per-channel). When ``group_size`` does not divide ``in_features`` the **last group of each row
  is shorter** (``in_features % group_size`` weights) and gets its own scale from its own
  weights, exactly as if it were quantized alone; nothing is padded into the statistics.
* **Symmetric**: ``s = max|w| / qmax`` with ``qmax = 2^(b-1) - 1`` (DESIGN.md's formula), codes
  ``clamp(round(w / s), -qmax, qmax)``. The code range is the *restricted* symmetric range
  ``[-(2^(b-1)-1), 2^(b-1)-1]``, not two's complement's ``-2^(b-1)``: with this scale no weight
  ever rounds below ``-qmax`` anyway, and the restricted range makes ``Q(-w) == -Q(w)`` exact.
* **Asymmetric**: min/max affine with a *float* offset, ``zero = min(w)``,
  ``s = (max(w) - min(w)) / (2^b - 1)``, codes ``clamp(round((w - zero) / s), 0, 2^b - 1)``.
  The grid hits each group's min and max (a constant group is reproduced exactly); unlike the
  integer zero points of GPTQ/AWQ checkpoints, 0 itself need not lie on the grid.
* In both cases ``Q(w) = codes * s + zero`` (``zero = 0`` when symmetric).
* **Rounding** is ``torch.round``: round half to *even* (``round(-3.5) = -4``, ``round(2.5) = 2``).
* **Degenerate groups** (all zeros, or constant for asym) would give ``s = 0``; their scale is
  set to 1 so nothing divides by zero: their codes are 0 and ``Q(w) = zero`` (0, or the constant).
* **Precision**: statistics, division and rounding run in float64 (float32 on MPS, which has no
  float64), and ``Q(w)`` is cast back to the weight's dtype. float64 makes the grid exact for any
  fp32/bf16/fp16 input, which is what makes ``Q(Q(w)) == Q(w)`` hold bit for bit and keeps code
  comparisons free of float noise. In bf16/fp16 the returned ``Q(w)`` is rounded to that dtype,
  so it can sit up to half a dtype ulp off the exact grid point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from ..errors import QuantizerError
from ..variants.quantizers import BITS_RANGE, QuantSpec
from .base import DEFAULT_SKIP, QuantDetails, layer_weight, linear_layers

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

Params = tuple[torch.Tensor, torch.Tensor]

#: Rows of a weight are quantized in chunks of about this many elements, so the float64
#: temporaries of one chunk stay small (~128 MiB each) even for a 7B model's largest layers.
CHUNK_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- the math


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """Smallest and largest integer code (see the module docstring for the symmetric choice)."""
    if symmetric:
        top = 2 ** (bits - 1) - 1
        return -top, top
    return 0, 2**bits - 1


def _check(w: Any, bits: int, group_size: int | None) -> None:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise QuantizerError(f"RTN quantizes floating-point tensors, got {getattr(w, 'dtype', type(w).__name__)}")
    if w.ndim == 0 or w.shape[-1] == 0:
        raise QuantizerError(f"RTN needs a tensor with a non-empty last dimension, got shape {tuple(w.shape)}")
    if bits not in BITS_RANGE:
        raise QuantizerError(f"RTN bits must be {BITS_RANGE.start}..{BITS_RANGE.stop - 1}, got {bits}")
    if group_size is not None and group_size < 1:
        raise QuantizerError(f"RTN group_size must be None (per channel) or >= 1, got {group_size}")


def _compute_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``w`` as ``(..., n_groups, g)`` in the compute dtype. A short last group is filled up with
    copies of its own first weight, which changes none of its min, max or max|w|; callers drop
    the fill again with :func:`_ungroup` before looking at per-weight results."""
    x = w.detach().to(_compute_dtype(w.device))
    n_in = x.shape[-1]
    g = n_in if group_size is None else min(group_size, n_in)
    n_groups = -(-n_in // g)
    fill = n_groups * g - n_in
    if fill:
        last = (n_groups - 1) * g
        x = torch.cat([x, x[..., last : last + 1].expand(*x.shape[:-1], fill)], dim=-1)
    return x.reshape(*x.shape[:-1], n_groups, g)


def _ungroup(yg: torch.Tensor, n_in: int) -> torch.Tensor:
    return yg.reshape(*yg.shape[:-2], -1)[..., :n_in]


def _params_of(xg: torch.Tensor, bits: int, symmetric: bool) -> Params:
    low, high = code_range(bits, symmetric)
    if symmetric:
        scale = xg.abs().amax(dim=-1) / high
        zero = torch.zeros_like(scale)
    else:
        zero = xg.amin(dim=-1)
        scale = (xg.amax(dim=-1) - zero) / (high - low)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # degenerate group: codes 0, Q = zero
    return scale, zero


def _as_params(params: Params, xg: torch.Tensor) -> Params:
    scale, zero = (torch.as_tensor(p).to(device=xg.device, dtype=xg.dtype) for p in params)
    if scale.shape != xg.shape[:-1] or zero.shape != xg.shape[:-1]:
        raise QuantizerError(
            f"RTN params must have the group shape {tuple(xg.shape[:-1])}, got {tuple(scale.shape)} and "
            f"{tuple(zero.shape)}"
        )
    return scale, zero


def _codes_of(xg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    low, high = code_range(bits, symmetric)
    return torch.round((xg - zero[..., None]) / scale[..., None]).clamp_(low, high)


def _rtn(
    w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, params: Params | None
) -> tuple[torch.Tensor, torch.Tensor, Params]:
    """Grouped input, grouped float codes and the (scale, zero) used: the one place the math lives."""
    _check(w, bits, group_size)
    xg = _grouped(w, group_size)
    scale, zero = _params_of(xg, bits, symmetric) if params is None else _as_params(params, xg)
    return xg, _codes_of(xg, scale, zero, bits, symmetric), (scale, zero)


def rtn_params(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> Params:
    """Per-group ``(scale, zero)``, each of shape ``(..., n_groups)``, in the compute dtype (float64)."""
    return _rtn(w, bits, group_size, symmetric, None)[2]


def rtn_codes(
    w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True, *, params: Params | None = None
) -> torch.Tensor:
    """Integer codes (int32, same shape as ``w``). ``params`` quantizes on a given grid (e.g. the
    target's) instead of ``w``'s own: that is how "same cell" and the paper's lemma are checked."""
    xg, codes, _ = _rtn(w, bits, group_size, symmetric, params)
    return _ungroup(codes, w.shape[-1]).to(torch.int32)


def rtn_quantize(
    w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True, *, params: Params | None = None
) -> torch.Tensor:
    """``Q(w) = codes * scale + zero``, same shape and dtype as ``w`` (rounded to that dtype)."""
    _, codes, (scale, zero) = _rtn(w, bits, group_size, symmetric, params)
    return _ungroup(codes * scale[..., None] + zero[..., None], w.shape[-1]).to(w.dtype)


def rtn_step(w: torch.Tensor, bits: int, group_size: int | None = None, symmetric: bool = True) -> torch.Tensor:
    """The quantization step ``s`` of each weight's group, broadcast to ``w``'s shape (float64)."""
    xg, _, (scale, _) = _rtn(w, bits, group_size, symmetric, None)
    return _ungroup(scale[..., None].expand_as(xg), w.shape[-1])


# --------------------------------------------------------------------------- the backend


def _layer(
    weight: torch.Tensor, target: torch.Tensor | None, spec: QuantSpec
) -> tuple[int, int, int | None, int | None, int | None]:
    """Quantize one weight in place, chunk of rows by chunk of rows, and count as it goes.

    Returns (n, changed, codes equal to T's, |U - T| < s_T / 2, U on T's grid in T's cell). Only the
    current chunk's temporaries exist at any time; the target's chunk is quantized and dropped.
    """
    bits, group, sym = spec.bits, spec.group_size, spec.symmetric
    assert bits is not None
    n_in = weight.shape[-1]
    step = max(1, CHUNK_ELEMENTS // n_in)
    changed = agree = small = same = 0
    for r0 in range(0, weight.shape[0], step):
        chunk = weight[r0 : r0 + step]  # a view of the 2-D (out, in) weight, so writes land in it
        xg, codes, (scale, zero) = _rtn(chunk, bits, group, sym, None)
        w_hat = _ungroup(codes * scale[..., None] + zero[..., None], n_in).to(chunk.dtype)
        if target is not None:
            t_chunk = target[r0 : r0 + step].to(chunk.device)
            tg, t_codes, (t_scale, t_zero) = _rtn(t_chunk, bits, group, sym, None)
            agree += int(_ungroup(codes == t_codes, n_in).sum())
            small += int(_ungroup((xg - tg).abs() < t_scale[..., None] / 2, n_in).sum())
            same += int(_ungroup(_codes_of(xg, t_scale, t_zero, bits, sym) == t_codes, n_in).sum())
            del t_chunk, tg, t_codes, t_scale, t_zero
        changed += int((w_hat != chunk).sum())
        chunk.copy_(w_hat)  # rows are independent: later chunks read only their own, still original, rows
        del xg, codes, scale, zero, w_hat
    if target is None:
        return weight.numel(), changed, None, None, None
    return weight.numel(), changed, agree, small, same


class RTNBackend:
    """Applies RTN in place to every ``nn.Linear`` weight not matched by ``skip_modules``.

    Memory: exactly one extra copy of the affected weights exists while quantized, the originals,
    kept on the CPU (so a GPU model needs no extra GPU memory but per-chunk temporaries); they are
    copied back bit for bit on exit, also when the body raises. Biases are left alone (weight-only
    quantization, as every backend the paper tests). A tied weight is quantized once.
    """

    name = "rtn"
    takes_target_codes = False
    codes = None

    def __init__(self, spec: QuantSpec) -> None:
        if spec.backend != self.name or spec.bits is None:
            raise QuantizerError(f"RTNBackend cannot run quantizer '{spec.id}'; use an rtn-w<bits>[g<group>][-asym] id")
        self.spec = spec
        self.saved: dict[str, torch.Tensor] = {}

    @property
    def saved_bytes(self) -> int:
        """Bytes held by the saved originals (all of the extra weight memory this backend uses)."""
        return sum(t.numel() * t.element_size() for t in self.saved.values())

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
        """Quantize ``loaded.model`` in place for the duration of the block; yield (model, report).
        ``calibration`` and ``target_codes`` are ignored: RTN needs neither (see :class:`~.base.Backend`)."""
        model = loaded.model
        modules = dict(model.named_modules())
        target_modules = None if target is None else dict(target.model.named_modules())
        names: list[str] = []
        totals = [0, 0, 0, 0, 0]  # n, changed, agree, small, same
        start = time.perf_counter()
        try:
            with torch.no_grad():
                for name, module in linear_layers(model, skip_modules):
                    weight = module.weight.data
                    t_weight = (
                        None
                        if target is None or target_modules is None
                        else layer_weight(target, target_modules, name, weight.shape)
                    )
                    self.saved[name] = weight.to("cpu", copy=True)
                    counts = _layer(weight, t_weight, self.spec)
                    totals = [a + (b or 0) for a, b in zip(totals, counts)]
                    names.append(name)
            details = QuantDetails.from_counts(
                self.spec, self.name, names, totals, has_target=target is not None, seconds=time.perf_counter() - start
            )
            yield model, details
        finally:
            with torch.no_grad():
                for name, original in self.saved.items():
                    modules[name].weight.data.copy_(original)  # type: ignore[union-attr]
            self.saved.clear()
