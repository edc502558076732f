"""Quantization-aware unlearning: the method's objectives also on the fake-quantized model.

Why: SURE makes forgetting survive 4-bit rounding indirectly (a large learning rate, so weights
leave their cells) and never looks at the quantized model. Here the forget and retain losses are
also computed on the model *as a quantizer will store it* (DurableUn's SAF does this for INT4 with
a straight-through estimator), so the optimizer sees the quantized model forget and keep utility.

Each training step, for each quantizer Q of ``--quant-aware``:

* every weight Q changes is replaced by its exact dequantized value ``Q(w)`` (computed from the
  current weights, without gradient), and the model runs on those weights with
  :func:`torch.func.functional_call` (the module is not modified);
* the method's loss (same batches, same reference logits as the full-precision loss) is computed
  on that forward and back-propagated with a **straight-through** estimator: ``dQ(w)/dw = 1``, so
  ``w`` receives the gradient of the loss at ``Q(w)``;
* the objective is ``L_fp + weight * mean_Q L_Q``. Each Q's backward runs before the next Q's
  forward, so at most one extra copy of the weights (the current Q's) is alive at any time.

Exactness (tests/unlearning/test_quant_aware.py checks every statement bit for bit): ``Q(w)`` is what the
gate's backend dequantizes to for a model holding ``w`` in the same dtype:

* ``rtn-*``: :func:`unlearn_assert.quant.rtn.rtn_quantize` itself, on the layers the rtn backend
  quantizes (every ``nn.Linear`` but ``lm_head``, a tied weight once).
* ``bnb-fp4`` / ``bnb-nf4``: bitsandbytes' blockwise rule written out in torch with the library's
  own code book (``bitsandbytes.functional.get_4bit_type``): blocks of 64 consecutive weights of the
  flattened weight (a shorter last block), ``absmax`` per block in float32, ``scaled =
  clamp(w * (1 / absmax), -1, 1)`` (the short last block divides by its absmax instead, as bnb does),
  the level by ``bucketize`` on the float32 midpoints of the sorted code book (a tie on a midpoint
  takes the lower level), value ``code * absmax`` in float32, cast to the model dtype. The same
  layers as rtn (transformers' bnb conversion skips ``lm_head`` by our default).
* ``gguf-*``: llama.cpp decides each tensor's type (its preset's mix, its per-tensor fallbacks), so
  the plan is read once from a real ``llama_model_quantize`` of the starting model; every step then
  quantizes each tensor with llama.cpp's own ``ggml_quantize_chunk`` (through llama-cpp-python's
  libggml, no imatrix, as ``llama_model_quantize`` does) and dequantizes it with
  ``gguf.quants.dequantize``, as the gguf backend does. Q/K rows are not permuted here: llama.cpp
  quantizes rows independently, so permuting rows commutes with quantization. Embeddings and the
  output matrix are included (llama.cpp quantizes them); norms stay float32 (llama.cpp's F32).
"""

from __future__ import annotations

import ctypes
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import QuantizerError, UnlearnAssertError
from ..quant.base import DEFAULT_SKIP, linear_layers
from ..variants.quantizers import BNB_4BIT_BLOCKSIZE, QuantSpec, parse_quantizer_id
from .losses import LossInputs, LossParts, Method, RefOutputs, method_loss, shift_for_lm
from .quant_aware_ids import check_quant_aware_ids

__all__ = ["QuantAware", "Simulation", "bnb4_dequantized", "build_simulation", "ggml_dequantized", "straight_through"]


# --------------------------------------------------------------------------- straight-through estimator


class _StraightThrough(torch.autograd.Function):
    """Forward: the given quantized value, exactly. Backward: the gradient, unchanged, to ``w``."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - w only carries the gradient
        return q.view_as(q)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``q`` in the forward (bit for bit, unlike ``w + (q - w).detach()``), identity gradient to ``w``."""
    return _StraightThrough.apply(w, q)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- bitsandbytes FP4 / NF4


@dataclass(frozen=True)
class _CodeBook:
    code: torch.Tensor  # the 16 values, indexed by the 4-bit code (bnb's table)
    midpoints: torch.Tensor  # between consecutive sorted values, float32
    order: torch.Tensor  # sorted position -> code


_BOOKS: dict[tuple[str, str], _CodeBook] = {}


def _codebook(scheme: str, device: torch.device) -> _CodeBook:
    key = (scheme, str(device))
    if key not in _BOOKS:
        import bitsandbytes.functional as bnbF

        from ..quant import bnb as _bnb  # noqa: F401 - imports bitsandbytes with the backend's log filter

        code = bnbF.get_4bit_type(scheme, device=device).float()
        order = torch.argsort(code)
        _BOOKS[key] = _CodeBook(code, (code[order[:-1]] + code[order[1:]]) / 2, order)
    return _BOOKS[key]


def bnb4_dequantized(w: torch.Tensor, scheme: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """What ``dequantize_4bit(quantize_4bit(w, blocksize=64, quant_type=scheme))`` gives in ``dtype``
    (default ``w.dtype``), computed in torch (see the module docstring); no gradient."""
    book = _codebook(scheme, w.device)
    flat = w.detach().reshape(-1).float()
    n = flat.numel()
    rem = n % BNB_4BIT_BLOCKSIZE
    full = n - rem
    blocks = flat[:full].reshape(-1, BNB_4BIT_BLOCKSIZE)
    absmax = blocks.abs().max(dim=-1)[0] if full else flat.new_zeros(0)
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    scales = absmax.repeat_interleave(BNB_4BIT_BLOCKSIZE)
    if rem:
        am = flat[full:].abs().max().clamp(min=1e-38)
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
        scales = torch.cat([scales, am.expand(rem)])
    q = torch.bucketize(scaled, book.midpoints, out_int32=True)
    value = book.code[book.order[q]] * scales
    return value.reshape(w.shape).to(dtype or w.dtype)


# --------------------------------------------------------------------------- llama.cpp (ggml)


def _ggml() -> Any:
    """llama-cpp-python's libggml with ``ggml_quantize_chunk``'s signature declared."""
    from llama_cpp import _ggml as binding

    lib = binding.libggml
    fn = lib.ggml_quantize_chunk
    if getattr(fn, "_unlearn_assert_typed", False) is False:
        fn.restype = ctypes.c_size_t
        fn.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        fn._unlearn_assert_typed = True
    return lib


def ggml_dequantized(w: torch.Tensor, type_id: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``w`` (rows along the last dimension) quantized to GGML type ``type_id`` by llama.cpp's
    ``ggml_quantize_chunk`` and dequantized by ``gguf.quants.dequantize``, in ``dtype`` (default
    ``w.dtype``); no gradient."""
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType(type_id)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_per_row = int(w.shape[-1])
    if n_per_row % block:  # ggml would abort the process: refuse first
        raise QuantizerError(f"rows of {n_per_row} weights cannot be stored as {qtype.name} (blocks of {block})")
    x = np.ascontiguousarray(w.detach().to("cpu", torch.float32).reshape(-1, n_per_row).numpy())
    rows = x.shape[0]
    row_bytes = n_per_row // block * type_size
    dst = np.empty((rows, row_bytes), dtype=np.uint8)
    written = _ggml().ggml_quantize_chunk(int(qtype), x.ctypes.data, dst.ctypes.data, 0, rows, n_per_row, None)
    if written != dst.nbytes:  # pragma: no cover - a libggml whose layout differs from gguf's tables
        raise QuantizerError(
            f"llama.cpp wrote {written} bytes for a {qtype.name} tensor of {rows}x{n_per_row}, expected {dst.nbytes}"
        )
    value = np.asarray(gguf.quants.dequantize(dst, qtype), dtype=np.float32).reshape(tuple(w.shape))
    return torch.from_numpy(value).to(device=w.device, dtype=dtype or w.dtype)


def gguf_plan(model: Any, model_dir: str, scheme: str) -> dict[str, int]:
    """{state-dict name: GGML type} of every tensor llama.cpp's preset ``scheme`` stores in a type
    other than F32, read from a real ``llama_model_quantize`` of ``model_dir`` converted by llama.cpp's own
    converter (in a temporary dir). The plan depends on the architecture, names and shapes only, so the
    directory of the model being unlearned gives ``model``'s (their weights may differ)."""
    import gguf

    from ..quant.gguf import llama_quantize
    from ..quant.gguf_header import read_header
    from ..quant.llama_cpp import Converter, tensor_map

    with tempfile.TemporaryDirectory(prefix="unlearn-assert-quant-aware-") as tmp:
        f32, out = Path(tmp) / "model-f32.gguf", Path(tmp) / f"model-{scheme}.gguf"
        Converter.shared().convert(model_dir, f32)
        arch = read_header(f32, str(f32)).architecture
        llama_quantize(f32, out, scheme, max(1, torch.get_num_threads()))
        reader = gguf.GGUFReader(str(out))
        types = {t.name: int(t.tensor_type) for t in reader.tensors}
        del reader
    plan, _ = tensor_map(model, arch, set(types))
    f32_id = int(gguf.GGMLQuantizationType.F32)
    return {name: types[g] for g, name in plan.items() if types[g] != f32_id}


# --------------------------------------------------------------------------- one quantizer, simulated


@dataclass
class Simulation:
    """One ``--quant-aware`` quantizer: the weights it changes and their exact quantized value."""

    qid: str
    spec: QuantSpec
    #: state-dict name -> function giving that weight's quantized value (same shape and dtype, no gradient)
    targets: dict[str, Callable[[torch.Tensor], torch.Tensor]]
    #: what each weight is stored as, for unlearn_run.json ("rtn-w4g64", "nf4", "q4_k", ...)
    kinds: dict[str, str]

    def quantized(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return self.targets[name](w)


def build_simulation(qid: str, model: Any, model_dir: str | None = None) -> Simulation:
    """The :class:`Simulation` of ``qid`` for ``model`` (gguf ids need ``model_dir``, the directory of the model
    being unlearned, which llama.cpp's converter reads for the type plan)."""
    (canonical,) = check_quant_aware_ids(qid)
    spec = parse_quantizer_id(qid)
    targets: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    kinds: dict[str, str] = {}
    if spec.backend in ("rtn", "bnb"):
        from ..quant.rtn import rtn_quantize

        for name, _ in linear_layers(model, DEFAULT_SKIP):
            key = f"{name}.weight"
            if spec.backend == "rtn":
                bits, group, sym = spec.bits, spec.group_size, spec.symmetric
                targets[key] = lambda w, b=bits, g=group, s=sym: rtn_quantize(w.detach(), b, g, s)  # type: ignore[misc]
                kinds[key] = canonical
            else:
                targets[key] = lambda w, scheme=spec.scheme: bnb4_dequantized(w, scheme)  # type: ignore[misc]
                kinds[key] = str(spec.scheme)
    else:
        import gguf

        if model_dir is None:
            raise UnlearnAssertError(
                f"--quant-aware {qid} needs the target's directory (llama.cpp's converter reads it for the type plan)"
            )
        for key, type_id in gguf_plan(model, model_dir, str(spec.scheme)).items():
            targets[key] = lambda w, t=type_id: ggml_dequantized(w, t)  # type: ignore[misc]
            kinds[key] = gguf.GGMLQuantizationType(type_id).name.lower()
    if not targets:
        raise QuantizerError(f"--quant-aware {qid}: this model has no weight that {qid} quantizes")
    return Simulation(qid, spec, targets, kinds)


# --------------------------------------------------------------------------- the training side


class QuantAware:
    """The quantized half of each step: for each simulation, forward on the fake-quantized weights,
    the method's loss, backward (scaled by ``weight / len(simulations)``)."""

    def __init__(self, simulations: list[Simulation], weight: float) -> None:
        self.simulations = simulations
        self.weight = weight

    @classmethod
    def for_model(cls, ids: tuple[str, ...], model: Any, model_dir: str | None, weight: float) -> QuantAware:
        return cls([build_simulation(q, model, model_dir) for q in ids], weight)

    def describe(self) -> dict[str, Any]:
        """For unlearn_run.json: per quantizer, how many weights of which kind it simulates."""
        out: dict[str, Any] = {}
        for sim in self.simulations:
            kinds: dict[str, int] = {}
            for kind in sim.kinds.values():
                kinds[kind] = kinds.get(kind, 0) + 1
            out[sim.qid] = {
                "tensors": len(sim.targets),
                "kinds": dict(sorted(kinds.items())),
                "modules": sorted(sim.kinds),
            }
        return out

    def fake_quantized(self, model: Any, sim: Simulation) -> dict[str, torch.Tensor]:
        """{name: straight-through Q(w)} for every weight ``sim`` changes (one extra copy of those weights)."""
        params = dict(model.named_parameters())
        return {name: straight_through(params[name], fn(params[name])) for name, fn in sim.targets.items()}

    @staticmethod
    def forward(
        model: Any,
        weights: dict[str, torch.Tensor],
        batch: tuple[torch.Tensor, torch.Tensor],
        ref: RefOutputs | None,
    ) -> LossInputs:
        """The model's forward with ``weights`` in place of its own (the module itself is not changed)."""
        ids, mask = batch
        out = torch.func.functional_call(
            model, weights, args=(), kwargs={"input_ids": ids, "attention_mask": mask, "use_cache": False}
        )
        aligned, targets, target_mask = shift_for_lm(out.logits, ids, mask)
        return LossInputs(aligned, targets, target_mask, ref)

    def backward(
        self,
        model: Any,
        method: Method,
        forget: tuple[torch.Tensor, torch.Tensor],
        retain: tuple[torch.Tensor, torch.Tensor] | None,
        forget_ref: RefOutputs | None,
        retain_ref: RefOutputs | None,
        *,
        alpha: float,
        beta: float,
        step: int,
    ) -> dict[str, dict[str, float | None]]:
        """Accumulate ``weight / n * grad L_Q`` for every simulation; returns each L_Q's parts."""
        scale = self.weight / len(self.simulations)
        record: dict[str, dict[str, float | None]] = {}
        for sim in self.simulations:
            weights = self.fake_quantized(model, sim)  # once for both batches: one extra copy
            f_in = self.forward(model, weights, forget, forget_ref)
            r_in = None if retain is None else self.forward(model, weights, retain, retain_ref)
            parts: LossParts = method_loss(method, f_in, r_in, alpha=alpha, beta=beta)
            total = float(parts.total.detach())
            if not math.isfinite(total):
                raise UnlearnAssertError(
                    f"the {method.name} loss under {sim.qid} became {total} at step {step}; "
                    "lower the learning rate (--lr)"
                )
            (parts.total * scale).backward()
            record[sim.qid] = {
                "forget_loss": float(parts.forget.detach()),
                "retain_loss": None if parts.retain is None else float(parts.retain.detach()),
                "total": total,
            }
            del weights, f_in, r_in, parts
        return record
