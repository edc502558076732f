"""llama.cpp's GGUF quantizers: ids ``gguf-q4_k_m``, ``gguf-q5_k_m``, ``gguf-q6_k``, ``gguf-q8_0``,
``gguf-q4_0``, ``gguf-q3_k_m``, ``gguf-q2_k`` (extra ``[gguf]``: ``gguf`` + ``llama-cpp-python``).

What llama.cpp and Ollama users run is a GGUF file made by llama.cpp's ``llama-quantize``; its
k-quants (super-blocks of 256 weights, 6-bit block scales and mins, a searched scale, a per-tensor
type mix inside one preset) round differently from rtn and bitsandbytes, so they are gated as they
are, by llama.cpp's own code:

1. the model's directory is converted to an F32 GGUF file in a temporary directory by llama.cpp's own
   ``convert_hf_to_gguf.py`` (:mod:`.llama_cpp`; never in the model's directory), and the file is
   checked to map back onto the model exactly (:func:`.llama_cpp.check_round_trip`);
2. ``llama_model_quantize`` (llama-cpp-python's binding of the library behind ``llama-quantize``)
   quantizes it with the preset, on the run's thread budget;
3. the result is read back with ``gguf.GGUFReader``, dequantized with ``gguf.quants.dequantize``,
   mapped to the torch parameters by transformers' GGUF loader tables (:func:`.llama_cpp.tensor_map`)
   and copied into the torch model in place for the ``with`` block (the originals are put back).

llama.cpp picks each tensor's type itself (the preset's mix, and per-tensor fallbacks for rows that
are not a multiple of 256: q4_K -> q5_0, q6_K -> q8_0), so the report records what it chose in
``tensor_types`` (``{"q4_k": 154, "q6_k": 15, "f32": 61}``), never the preset's nominal types.
llama.cpp quantizes ``token_embd`` and ``output`` too (Q4_K_M stores ``output`` as q6_K): the file is
what users run, so ``skip_modules`` other than the default is refused.

Report:

* ``changed_fraction``: share of the weights of the tensors llama.cpp stored quantized (any type but
  f32) whose dequantized value differs from the model's.
* ``code_agreement``: share of those weights whose *code* in q(U) equals the code in q(T). A block
  of llama.cpp holds scale fields (d, dmin, the packed 6-bit sub-block scales and mins) and the
  weights' quantized values; per type, :data:`SCALE_BYTES` says which bytes are the scale fields. U's
  code bytes are decoded on T's scale fields (the scale bytes of U's block replaced by T's, then
  ``gguf.quants.dequantize``), and a weight agrees when that value equals q(T)'s dequantized value:
  equal codes on the same scales give equal values, different codes give different values (unless
  the sub-block scale is 0, where every code means the same value). A tensor whose type differs
  between q(U) and q(T) agrees nowhere; a type without a layout entry (i-quants, from a user's file)
  is compared on dequantized values.
* ``small_delta_fraction`` / ``same_cell_fraction``: None (llama.cpp's grids are not uniform steps).
* ``seconds_convert`` / ``seconds_quantize``: writing the F32 file / llama.cpp's quantization (for U;
  the benchmarks report them as ratios to rtn-w4g128).

T's quantized tensors are handed on from the q(T) row (:attr:`codes`, ``takes_target_codes``), so T
is converted and quantized once per run.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import llama_cpp
import numpy as np

from ..errors import QuantizerError
from ..variants.quantizers import QuantSpec
from .base import DEFAULT_SKIP, QuantDetails
from .gguf_convert import FLOAT_TYPE_IDS, GgufDetails, QTensor, load_into, read_quantized, restore, type_counts
from .gguf_header import read_header
from .llama_cpp import Converter, check_round_trip, tensor_map, to_torch

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .calibration import Calibration

#: id scheme -> llama.cpp's ``llama_ftype`` preset
FTYPES: dict[str, int] = {
    "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "q5_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
    "q6_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q6_K,
    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    "q3_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q3_K_M,
    "q2_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
}

#: GGML type -> byte ranges of the scale fields in one block (the rest are the weights' codes),
#: from the block layouts ``gguf.quants`` decodes.
SCALE_BYTES: dict[int, tuple[tuple[int, int], ...]] = {
    gguf.GGMLQuantizationType.Q4_0: ((0, 2),),
    gguf.GGMLQuantizationType.Q4_1: ((0, 4),),
    gguf.GGMLQuantizationType.Q5_0: ((0, 2),),
    gguf.GGMLQuantizationType.Q5_1: ((0, 4),),
    gguf.GGMLQuantizationType.Q8_0: ((0, 2),),
    gguf.GGMLQuantizationType.IQ4_NL: ((0, 2),),
    gguf.GGMLQuantizationType.Q2_K: ((0, 16), (80, 84)),
    gguf.GGMLQuantizationType.Q3_K: ((96, 110),),
    gguf.GGMLQuantizationType.Q4_K: ((0, 16),),
    gguf.GGMLQuantizationType.Q5_K: ((0, 16),),
    gguf.GGMLQuantizationType.Q6_K: ((192, 210),),
}

_initialized = False


@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send the C library's stderr (llama.cpp logs every tensor) to ``path`` for the block."""
    fd = os.dup(2)
    with path.open("wb") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def llama_quantize(src: Path, dst: Path, scheme: str, threads: int) -> None:
    """Quantize the GGUF file ``src`` into ``dst`` with llama.cpp's preset ``scheme``."""
    global _initialized
    if not _initialized:
        llama_cpp.llama_backend_init()
        _initialized = True
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[scheme]
    params.nthread = threads
    log = dst.with_suffix(".log")
    with _stderr_to(log):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        raise QuantizerError(
            f"llama.cpp could not quantize to {scheme.upper()} (llama_model_quantize returned {rc}: "
            f"{lines[-1] if lines else 'no message'}); check the model's shapes"
        )


@dataclass
class Converted:
    """One model converted by llama.cpp and quantized: the file's tensors and how they map back."""

    tensors: dict[str, QTensor]
    plan: dict[str, str]  # GGUF tensor name -> state-dict name, the model's weights only
    processor: Any  # transformers' TensorProcessor of the architecture (GGUF values -> torch values)
    originals: dict[str, np.ndarray]  # the F32 file's tensors (the model's weights in llama.cpp's layout)
    seconds_convert: float
    seconds_quantize: float
    fallback_pre: str | None  # the pre-tokenizer written where llama.cpp did not recognise the tokenizer


def convert_and_quantize(loaded: LoadedModel, scheme: str, directory: Path, threads: int) -> Converted:
    """llama.cpp's conversion of ``loaded``'s directory, checked against the model, then its quantization."""
    start = time.perf_counter()
    f32 = directory / "model-f32.gguf"
    answer = Converter.shared().convert(loaded.path, f32)
    converted = time.perf_counter()
    f32_tensors = read_quantized(f32)
    arch = read_header(f32, str(f32)).architecture
    plan, processor = tensor_map(loaded.model, arch, set(f32_tensors))
    originals = {g: f32_tensors[g].dequantize() for g in plan}
    del f32_tensors
    check_round_trip(loaded.model, plan, processor, originals, f"'{loaded.path}'")
    mapped = time.perf_counter()
    out = directory / f"model-{scheme}.gguf"
    llama_quantize(f32, out, scheme, threads)
    f32.unlink()
    tensors = read_quantized(out)
    out.unlink()
    return Converted(
        tensors, plan, processor, originals, converted - start, time.perf_counter() - mapped, answer.get("fallback_pre")
    )


def code_agreement(u: QTensor, t: QTensor) -> int:
    """Weights of one tensor whose code in q(U) equals q(T)'s (see the module docstring)."""
    n = int(np.prod(u.shape))
    if u.type_id != t.type_id or u.raw.shape != t.raw.shape:
        return 0
    ranges = SCALE_BYTES.get(u.type_id)
    qtype = gguf.GGMLQuantizationType(u.type_id)
    t_values = np.asarray(gguf.quants.dequantize(t.raw, qtype)).reshape(-1)
    if ranges is None:
        return int((np.asarray(gguf.quants.dequantize(u.raw, qtype)).reshape(-1) == t_values).sum())
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    spliced = u.raw.reshape(-1, type_size).copy()
    t_blocks = t.raw.reshape(-1, type_size)
    for a, b in ranges:
        spliced[:, a:b] = t_blocks[:, a:b]
    u_on_t = np.asarray(gguf.quants.dequantize(spliced.reshape(u.raw.shape), qtype)).reshape(-1)
    agree = int((u_on_t == t_values).sum())
    return min(agree, n)


def compare(
    tensors: dict[str, QTensor],
    originals: dict[str, np.ndarray],
    plan: dict[str, str],
    target: dict[str, QTensor] | None,
) -> tuple[list[str], list[int]]:
    """(quantized tensor names, [weights, changed, same code as q(T), 0, 0]) over the tensors
    llama.cpp stored in a non-float type."""
    totals = [0, 0, 0, 0, 0]
    names: list[str] = []
    for g, name in plan.items():
        q = tensors[g]
        if q.type_id in FLOAT_TYPE_IDS:
            continue
        names.append(name)
        value = q.dequantize()
        totals[0] += value.size
        totals[1] += int((value != originals[g]).sum())
        if target is not None and g in target:
            totals[2] += code_agreement(q, target[g])
    return names, totals


class GgufBackend:
    """``gguf-<preset>``: llama.cpp quantizes, ``gguf`` dequantizes (see the module docstring)."""

    name = "gguf"
    takes_target_codes = True

    def __init__(self, spec: QuantSpec) -> None:
        if spec.backend != self.name or spec.scheme not in FTYPES:
            raise QuantizerError(
                f"GgufBackend cannot run quantizer '{spec.id}'; use one of {', '.join('gguf-' + s for s in FTYPES)}"
            )
        self.spec = spec
        self.codes: dict[str, QTensor] | None = None

    def _quantize(self, loaded: LoadedModel) -> Converted:
        import torch

        assert self.spec.scheme is not None
        with tempfile.TemporaryDirectory(prefix="unlearn-assert-gguf-") as tmp:
            return convert_and_quantize(loaded, self.spec.scheme, Path(tmp), max(1, torch.get_num_threads()))

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
        """Put llama.cpp's quantization of ``loaded`` into its model for the block; yield (model, report).
        ``target_codes``: T's quantized tensors from an earlier ``apply`` on T (else T is quantized here)."""
        if tuple(skip_modules) != DEFAULT_SKIP:
            raise QuantizerError(
                f"quantizer '{self.spec.id}' quantizes what llama.cpp's preset quantizes (embeddings and output "
                "included); "
                "drop skip_modules for gguf-* ids"
            )
        start = time.perf_counter()
        model = loaded.model
        mine = self._quantize(loaded)
        t_tensors: dict[str, QTensor] | None = target_codes
        if target is not None and t_tensors is None:
            t_tensors = self._quantize(target).tensors
        weights = {name: to_torch(mine.processor, g, mine.tensors[g].dequantize()) for g, name in mine.plan.items()}
        names, totals = compare(mine.tensors, mine.originals, mine.plan, t_tensors)
        originals = load_into(model, weights)
        del weights
        try:
            base = QuantDetails.from_counts(
                self.spec, self.name, names, totals, has_target=target is not None, seconds=time.perf_counter() - start
            )
            details = GgufDetails(
                **vars(base),
                preset=self.spec.scheme or "",
                tensor_types=type_counts(mine.tensors),
                seconds_convert=mine.seconds_convert,
                seconds_quantize=mine.seconds_quantize,
                converter=Converter.shared().source,
                tokenizer_pre_fallback=mine.fallback_pre,
            )
            details.small_delta_fraction = details.same_cell_fraction = None
            self.codes = mine.tensors if target is None else None
            yield model, details
        finally:
            restore(model, originals)
