"""bitsandbytes FP4 / NF4 / LLM.int8: the real library modules, loaded as ``BitsAndBytesConfig`` loads them.

The paper's 4-bit result is bnb FP4 with transformers' defaults, so this backend does not simulate
bnb: it loads **a fresh quantized copy** of the checkpoint with ``AutoModelForCausalLM.from_pretrained(
path, quantization_config=BitsAndBytesConfig(...))`` and evaluates through the resulting
``bnb.nn.Linear4bit`` / ``bnb.nn.Linear8bitLt`` modules. Why a copy and not in-place replacement:
it is exactly the code path a user of transformers + bitsandbytes runs (which modules get
converted, how weights are cast and quantized), the source :class:`LoadedModel` is never touched
(it stays usable inside the block, and nothing has to be restored if the body raises), and the
copy is 4-bit/8-bit, so the extra memory is about a quarter/half of the model. It is deleted and
garbage-collected on exit. Settings: blocksize 64, no double quant, ``bnb_4bit_compute_dtype`` =
the model's dtype, quant storage uint8; int8 uses ``llm_int8_threshold=6.0``. ``skip_modules``
(fnmatch patterns, as for rtn) are resolved to exact module names and passed as
``llm_int8_skip_modules``. The copy is verified against the source: every unquantized parameter
must be bit-identical and every quantized layer must hold exactly the codes that
``bitsandbytes.functional`` computes from the source weight, else :class:`ModelError` (the
in-memory model differs from its directory, so the report would describe another model).

Report definitions (per weight, summed over layers; T quantized with the same bnb function):

* ``changed_fraction``: the module's dequantized weight (``dequantize_4bit``, in the model dtype;
  int8: ``CB * SCB / 127`` in float32) differs from the source weight.
* ``code_agreement``: U's code equals T's code. 4-bit codes are compared as *levels* (index into
  the sorted distinct codebook values), because FP4's codebook holds +0 and -0 under two codes that
  dequantize identically; int8 codes are the stored int8 values.
* ``small_delta_fraction``: ``|U - T| < w_T / 2``, ``w_T`` the width of the rounding cell of T's
  level: ``absmax_T(block) * (v[i+1] - v[i-1]) / 2`` for an interior level ``v[i]`` of the sorted
  distinct codebook, the one adjacent gap for the end levels ±1. On a uniform grid this is rtn's
  "less than half a step"; int8 (uniform) uses ``w_T = rowabsmax_T / 127``.
* ``same_cell_fraction``: U quantized on T's scales (T's block absmax / row absmax, bnb's
  nearest-level rule: bucketize on the float32 midpoints, ties to the lower level) gets T's level.

**The CPU repack trap** (bitsandbytes 0.50.2): on AVX512-BF16 CPUs the first no-grad forward of a
``Linear4bit`` repacks ``weight.data`` in place, transposes ``absmax`` and rounds it to bf16, and
then computes in bf16 whatever the compute dtype; for a layer with ``in_features % 64 != 0`` or
``out_features % 32 != 0`` the repack raises instead. We switch that path off
(``support_avx512bf16_for_cpu = False`` on every layer), so the forward dequantizes with the fp32
absmax and computes in the model dtype, as on CUDA and on other CPUs: the model evaluated is then
exactly the dequantized weights the report describes, on every machine. The report is also computed
eagerly, before the block (and so any forward) runs, and :func:`dequantized_weight` undoes a repack
if one happened anyway (giving the bf16-rounded absmax the repacked layer really uses).

**Misaligned layers on CPU** (bitsandbytes 0.50.2): ``quantize_4bit`` takes blocks of 64
consecutive weights of the flattened weight, but the native CPU ``dequantize_4bit`` kernel (used by
the CPU forward too) reads the block scales as if every row started a block; for a layer whose
``in_features`` is not a multiple of 64 it returns wrong weights (max error 0.10 instead of 0.02 on
a 96x96 layer), while CUDA is right (on an H200 the CUDA report equalled the corrected CPU one). For such layers on CPU,
:func:`dequantized_weight` and the
layer's forward use bnb's reference formula instead (``code[q] * absmax[block]`` over the flattened
weight, in float32, cast to the compute dtype, then ``F.linear``): the same codes and scales, the
model bnb computes on CUDA. Aligned layers (every real LLM's) run bnb's own kernels untouched.

LLM.int8 logs "MatMul8bitLt: inputs will be cast from torch.float32 to float16" on every forward
(a ``logging`` warning, not a ``warnings`` one); a logging filter drops exactly that message while
a block is open. Devices: the copy goes to ``loaded.device`` (cpu or cuda).
"""

from __future__ import annotations

import copy
import gc
import logging
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from math import prod
from typing import TYPE_CHECKING, Any

import accelerate  # noqa: F401  transformers' bnb loader needs it; imported here so a missing one is BackendUnavailable
import torch
from torch import nn


class _DropMessages(logging.Filter):
    """Drop log records whose message starts with one of ``prefixes`` (and nothing else)."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Importing bitsandbytes on an AVX512-BF16 CPU logs that the optional hub kernel for the packed
# CPU path is missing; this backend never uses that path (see the module docstring).
_IMPORT_NOISE = _DropMessages("Failed to load CPU gemm_4bit_forward")
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_IMPORT_NOISE)
try:
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbF
finally:
    logging.getLogger("bitsandbytes.backends.cpu.ops").removeFilter(_IMPORT_NOISE)

from ..errors import ModelError, QuantizerError  # noqa: E402
from ..models import quiet_transformers  # noqa: E402
from ..variants.quantizers import BNB_4BIT_BLOCKSIZE, QuantSpec  # noqa: E402
from .base import DEFAULT_SKIP, QuantDetails, layer_weight, skipped  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

INT8_THRESHOLD = 6.0
#: Flat elements per chunk of the report's float64 temporaries (a multiple of the 4-bit blocksize).
CHUNK_ELEMENTS = 1 << 22
_INT8_LOGGER = "bitsandbytes.autograd._functions"
_INT8_NOISE = _DropMessages("MatMul8bitLt: inputs will be cast from")
_open_blocks = 0


# --------------------------------------------------------------------------- reading the modules


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """bnb's packed uint8 storage -> one code (0..15, int64) per weight, flat; high nibble first."""
    flat = packed.reshape(-1).view(torch.uint8).to(torch.int64)
    codes = torch.stack([flat >> 4, flat & 0xF], dim=-1).reshape(-1)
    return codes[:n]


def misaligned_on_cpu(module: Any) -> bool:
    """A Linear4bit on CPU whose rows are not whole blocks: bnb's native CPU dequantization is wrong there."""
    state = module.weight.quant_state
    return module.weight.device.type == "cpu" and state.shape[-1] % state.blocksize != 0


def dequantize_4bit_flat(data: torch.Tensor, state: Any) -> torch.Tensor:
    """bnb's reference 4-bit dequantization: ``code[q] * absmax`` per block of the flattened weight,
    in float32, cast to the state's dtype (what ``dequantize_4bit`` computes on CUDA)."""
    n = prod(state.shape)
    absmax = state.absmax
    if state.nested:
        absmax = bnbF.dequantize_blockwise(absmax, state.state2) + state.offset
    code = bnbF.get_4bit_type(state.quant_type, device=data.device).float()
    scales = absmax.float().repeat_interleave(state.blocksize)[:n]
    return (code[unpack_4bit(data, n)] * scales).reshape(state.shape).to(state.dtype)


def dequantized_weight(module: Any) -> torch.Tensor:
    """The weight a bnb layer stands for, shape ``(out, in)``.

    Linear4bit: ``dequantize_4bit`` in the model dtype (:func:`dequantize_4bit_flat` for a
    misaligned layer on CPU); a layer the AVX512-BF16 forward has repacked is unpacked on copies
    first (bnb's inverse leaves absmax transposed, so it is put back).
    Linear8bitLt: ``CB * SCB / 127`` in float32, with ``SCB`` wherever the forward moved it.
    """
    weight: Any = module.weight  # a bnb Params4bit / Int8Params (torch types it as a plain Tensor)
    if isinstance(module, bnb.nn.Linear4bit):
        data, state = weight.data, weight.quant_state
        if getattr(state, "packing_format_for_cpu", False):
            data, state = bnbF._convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
            if not state.nested:
                state.absmax = state.absmax.T.reshape(-1).float()
        if misaligned_on_cpu(module):
            return dequantize_4bit_flat(data, state)
        return bnbF.dequantize_4bit(data, state)
    if isinstance(module, bnb.nn.Linear8bitLt):
        scb: Any = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
        return weight.data.float() * scb.float()[:, None] / 127
    raise TypeError(f"not a bitsandbytes linear layer: {type(module).__name__}")


def _forward_flat(self: Any, x: torch.Tensor) -> torch.Tensor:
    """Linear4bit.forward for a misaligned layer on CPU: bnb's dequantize + linear, with the right scales."""
    inp_dtype = x.dtype
    if self.compute_dtype is not None:
        x = x.to(self.compute_dtype)
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return nn.functional.linear(x, dequantized_weight(self).to(x.dtype), bias).to(inp_dtype)


def prepare_4bit_layers(model: nn.Module) -> None:
    """Make every Linear4bit of ``model`` compute with its true dequantized weight on this machine:
    no AVX512-BF16 repack, and the reference dequantization for misaligned layers on CPU."""
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            if misaligned_on_cpu(module):
                module.forward = types.MethodType(_forward_flat, module)  # type: ignore[method-assign]


class _Levels:
    """The distinct values of a 4-bit codebook, sorted, with what the report needs of them."""

    def __init__(self, scheme: str, device: torch.device) -> None:
        code = bnbF.get_4bit_type(scheme, device=device).float()
        self.values = torch.unique(code)  # sorted; +0 and -0 (FP4) become one level
        self.of_code = torch.searchsorted(self.values, code)  # code index -> level index
        self.midpoints = (self.values[:-1] + self.values[1:]) / 2
        gaps = (self.values[1:] - self.values[:-1]).double()
        self.widths = torch.cat([gaps[:1], (gaps[:-1] + gaps[1:]) / 2, gaps[-1:]])


# --------------------------------------------------------------------------- per-layer counts


def _absmax_per_weight(absmax: torch.Tensor, n: int) -> torch.Tensor:
    return absmax.float().repeat_interleave(BNB_4BIT_BLOCKSIZE)[:n]


def _counts_4bit(
    module: Any, name: str, w: torch.Tensor, t: torch.Tensor | None, levels: _Levels, scheme: str
) -> list[int]:
    """(n, changed, agree, small, same) for one Linear4bit; also checks its codes are the source's."""
    n = w.numel()
    w_flat, packed = w.reshape(-1), module.weight.data.reshape(-1).view(torch.uint8)
    changed = int((dequantized_weight(module) != w).sum())
    agree = small = same = 0
    for a in range(0, n, CHUNK_ELEMENTS):
        b = min(n, a + CHUNK_ELEMENTS)
        own, _ = bnbF.quantize_4bit(
            w_flat[a:b], blocksize=BNB_4BIT_BLOCKSIZE, quant_type=scheme, quant_storage=torch.uint8
        )
        if not torch.equal(own.reshape(-1), packed[a // 2 : (b + 1) // 2]):
            raise ModelError(
                f"bnb layer '{name}' does not hold the quantized source weight: the model in memory differs from its "
                "directory"
            )
        if t is None:
            continue
        t_packed, t_state = bnbF.quantize_4bit(
            t[a:b], blocksize=BNB_4BIT_BLOCKSIZE, quant_type=scheme, quant_storage=torch.uint8
        )
        lvl_u = levels.of_code[unpack_4bit(own, b - a)]
        lvl_t = levels.of_code[unpack_4bit(t_packed, b - a)]
        absmax_t = _absmax_per_weight(t_state.absmax, b - a)
        u64, t64 = w_flat[a:b].double(), t[a:b].double()
        agree += int((lvl_u == lvl_t).sum())
        small += int(((u64 - t64).abs() < absmax_t.double() * levels.widths[lvl_t] / 2).sum())
        scaled = torch.clamp(w_flat[a:b].float() * (1.0 / absmax_t.clamp(min=1e-38)), -1, 1)
        same += int((torch.bucketize(scaled, levels.midpoints) == lvl_t).sum())
    return [n, changed, agree, small, same]


def _counts_int8(module: Any, name: str, w: torch.Tensor, t: torch.Tensor | None) -> list[int]:
    """(n, changed, agree, small, same) for one Linear8bitLt, row chunk by row chunk."""
    cb = module.weight.data
    changed = int((dequantized_weight(module) != w.float()).sum())
    agree = small = same = 0
    step = max(1, CHUNK_ELEMENTS // w.shape[1])
    for r in range(0, w.shape[0], step):
        own, _, _ = bnbF.int8_vectorwise_quant(w[r : r + step].to(torch.float16))
        if not torch.equal(own, cb[r : r + step]):
            raise ModelError(
                f"bnb layer '{name}' does not hold the quantized source weight: the model in memory differs from its "
                "directory"
            )
        if t is None:
            continue
        t16 = t[r : r + step].to(torch.float16)
        t_cb, t_scb, _ = bnbF.int8_vectorwise_quant(t16)
        t_scb = t_scb.float()[:, None]
        agree += int((own == t_cb).sum())
        small += int(((w[r : r + step].double() - t[r : r + step].double()).abs() < t_scb.double() / 127 / 2).sum())
        on_t = torch.round(w[r : r + step].to(torch.float16) * (127.0 / t_scb)).clamp(-127, 127)
        same += int((on_t == t_cb).sum())
    return [w.numel(), changed, agree, small, same]


# --------------------------------------------------------------------------- the backend


class BnbBackend:
    """``bnb-fp4`` / ``bnb-nf4`` / ``bnb-int8`` through a fresh bitsandbytes-quantized copy (see the module
    docstring)."""

    name = "bnb"
    takes_target_codes = False
    codes = None

    def __init__(self, spec: QuantSpec) -> None:
        if spec.backend != self.name or spec.scheme not in ("fp4", "nf4", "int8"):
            raise QuantizerError(f"BnbBackend cannot run quantizer '{spec.id}'; use bnb-fp4, bnb-nf4 or bnb-int8")
        self.spec = spec

    def config(self, dtype: torch.dtype, skip: list[str]) -> Any:
        """The ``BitsAndBytesConfig`` for this quantizer (transformers' defaults otherwise)."""
        from transformers import BitsAndBytesConfig

        if self.spec.scheme == "int8":
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=INT8_THRESHOLD, llm_int8_skip_modules=skip)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.spec.scheme,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=False,
            bnb_4bit_quant_storage=torch.uint8,
            llm_int8_skip_modules=skip,
        )

    def load_copy(self, loaded: LoadedModel, skip: list[str]) -> Any:
        """A fresh quantized copy of ``loaded``'s checkpoint on its device, in its dtype, in eval mode."""
        from transformers import AutoModelForCausalLM

        device = str(loaded.device)
        if torch.device(device).type not in ("cpu", "cuda"):
            raise QuantizerError(
                f"quantizer '{self.spec.id}' runs on cpu or cuda, not '{device}'; pass --unlearn-device=cpu"
            )
        dtype = getattr(torch, loaded.dtype)
        try:
            with quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(
                    loaded.path,
                    quantization_config=self.config(dtype, skip),
                    device_map={"": device},
                    dtype=dtype,
                    local_files_only=True,
                    trust_remote_code=False,
                )
        except Exception as exc:  # transformers/bnb raise many types
            raise ModelError(
                f"bitsandbytes could not load '{loaded.path}' as {self.spec.id} ({type(exc).__name__}: {exc})"
            ) from None
        prepare_4bit_layers(model)  # the CPU repack trap and misaligned layers: see the module docstring
        return model.eval()

    @staticmethod
    def _check_unquantized(model: Any, source: Any, path: str) -> None:
        """Every parameter outside the bnb layers must be the source's, bit for bit.

        The source's names include every alias of a shared parameter (``remove_duplicate=False``):
        with tied embeddings ``named_parameters()`` lists the one tensor once, as
        ``model.embed_tokens.weight``, while the copy is walked module by module and meets it as
        ``lm_head.weight`` too, which then had no counterpart (a false "differs" alarm)."""
        bnb_types = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
        source_params = dict(source.named_parameters(remove_duplicate=False))
        for mod_name, module in model.named_modules():
            if isinstance(module, bnb_types):
                continue
            for p_name, param in module.named_parameters(recurse=False):
                full = f"{mod_name}.{p_name}" if mod_name else p_name
                other = source_params.get(full)
                if other is None or other.shape != param.shape or not torch.equal(other.to(param.device), param):
                    raise ModelError(
                        f"the bnb copy of '{path}' differs from the model in memory at '{full}'; reload the model from "
                        "its directory"
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
        """Yield (quantized copy, report); the source model is never modified. The copy is freed on exit.
        ``calibration`` and ``target_codes`` are ignored (see :class:`~.base.Backend`)."""
        global _open_blocks
        start = time.perf_counter()
        source_modules = dict(loaded.model.named_modules())
        linears = [n for n, m in source_modules.items() if isinstance(m, nn.Linear)]
        skip = [n for n in linears if skipped(n, skip_modules)]
        target_modules = None if target is None else dict(target.model.named_modules())
        model: Any = None
        _open_blocks += 1
        logging.getLogger(_INT8_LOGGER).addFilter(_INT8_NOISE)
        try:
            names: list[str] = []
            totals = [0, 0, 0, 0, 0]  # n, changed, agree, small, same
            if len(skip) < len(linears):  # else nothing to quantize: quantized() reports "took no effect"
                model = self.load_copy(loaded, skip)
                self._check_unquantized(model, loaded.model, loaded.path)
                device = next(model.parameters()).device
                levels = None if self.spec.scheme == "int8" else _Levels(self.spec.scheme, device)  # type: ignore[arg-type]
                with torch.no_grad():
                    for name, module in model.named_modules():
                        if not isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                            continue
                        shape = torch.Size((module.out_features, module.in_features))
                        w = layer_weight(loaded, source_modules, name, shape, "model").to(device)
                        t = None if target is None else layer_weight(target, target_modules, name, shape).to(device)  # type: ignore[arg-type]
                        if levels is None:
                            counts = _counts_int8(module, name, w, t)
                        else:
                            scheme = str(self.spec.scheme)  # a 4-bit spec always names its scheme
                            t_flat = None if t is None else t.reshape(-1)
                            counts = _counts_4bit(module, name, w, t_flat, levels, scheme)
                        totals = [a + b for a, b in zip(totals, counts)]
                        names.append(name)
                        del w, t
            details = QuantDetails.from_counts(
                self.spec, self.name, names, totals, has_target=target is not None, seconds=time.perf_counter() - start
            )
            yield (model if model is not None else loaded.model), details
        finally:
            _open_blocks -= 1
            if _open_blocks == 0:
                logging.getLogger(_INT8_LOGGER).removeFilter(_INT8_NOISE)
            on_cuda = model is not None and any(p.is_cuda for p in model.parameters())
            del model
            gc.collect()
            if on_cuda:
                torch.cuda.empty_cache()
