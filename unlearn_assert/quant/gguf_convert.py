"""GGUF tensors <-> a Hugging Face Llama-family model, with the ``gguf`` package (reader, dequantize), and
the report type of the ``gguf-*`` rows.

Models are converted *to* GGUF by llama.cpp's own ``convert_hf_to_gguf.py`` (:mod:`.llama_cpp`; this
module's hand-written writer is gone). What stays here is reading: :func:`read_quantized` copies every
tensor of a file out of its memory map, :func:`load_into` / :func:`restore` put dequantized weights into
a torch model for a ``with`` block and back. For a user's own ``.gguf`` file of a Llama-family model
(``--unlearn-quantized NAME=FILE.gguf``, :mod:`unlearn_assert.engine.sources.gguf_file`) the names are
:func:`unlearn_assert.quant.gguf_header.gguf_name`'s table and Q/K rows are un-permuted from llama.cpp's
interleaved RoPE pairs (``llama`` only; qwen2/qwen3 run NEOX RoPE and are stored as they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gguf
import numpy as np

from ..errors import QuantizerError
from .base import QuantDetails
from .gguf_header import ARCHITECTURES, PERMUTED_QK, SUPPORTED_TEXT, gguf_name

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

_ROPE_OK = ("default", "linear", "llama3")


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    return getattr(config, key, default) if not isinstance(config, dict) else config.get(key, default)


def arch_of(config: Any) -> str:
    """llama.cpp's architecture for a transformers config, or one line listing what is supported."""
    model_type = str(_cfg(config, "model_type", ""))
    if model_type not in ARCHITECTURES:
        raise QuantizerError(
            f"GGUF conversion does not support architecture '{model_type or 'unknown'}'; supported: {SUPPORTED_TEXT}"
        )
    return ARCHITECTURES[model_type]


@dataclass(frozen=True)
class Hparams:
    arch: str
    n_layers: int
    hidden: int
    ffn: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_theta: float
    rope: dict[str, Any]
    context: int
    vocab: int
    tied: bool


def hparams(config: Any) -> Hparams:
    arch = arch_of(config)
    n_head = int(_cfg(config, "num_attention_heads"))
    hidden = int(_cfg(config, "hidden_size"))
    rope = dict(_cfg(config, "rope_parameters") or _cfg(config, "rope_scaling") or {})
    rope_type = str(rope.get("rope_type", rope.get("type", "default")) or "default")
    if rope_type not in _ROPE_OK:
        raise QuantizerError(
            f"GGUF conversion supports RoPE {', '.join(_ROPE_OK)}, not '{rope_type}'; gate this model with rtn-*/bnb-* "
            "quantizers"
        )
    theta = float(rope.get("rope_theta") or _cfg(config, "rope_theta", 10000.0) or 10000.0)
    return Hparams(
        arch=arch,
        n_layers=int(_cfg(config, "num_hidden_layers")),
        hidden=hidden,
        ffn=int(_cfg(config, "intermediate_size")),
        n_head=n_head,
        n_head_kv=int(_cfg(config, "num_key_value_heads") or n_head),
        head_dim=int(_cfg(config, "head_dim") or hidden // n_head),
        eps=float(_cfg(config, "rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope={**rope, "rope_type": rope_type},
        context=int(_cfg(config, "max_position_embeddings", 2048)),
        vocab=int(_cfg(config, "vocab_size")),
        tied=bool(_cfg(config, "tie_word_embeddings", False)),
    )


# --------------------------------------------------------------------------- Q/K layout


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's rotate-half rows -> llama.cpp's interleaved pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_heads(gname: str, hp: Hparams) -> int | None:
    if hp.arch not in PERMUTED_QK:
        return None
    if ".attn_q." in gname:
        return hp.n_head
    if ".attn_k." in gname:
        return hp.n_head_kv
    return None


# --------------------------------------------------------------------------- names


def tensor_plan(model: nn.Module, hp: Hparams) -> dict[str, str]:
    """{gguf name: Hugging Face state-dict name} for every tensor llama.cpp stores; an unknown weight
    is an error (a converter that silently dropped one would gate another model)."""
    plan: dict[str, str] = {}
    tied = hp.tied or _is_tied(model)
    for name in model.state_dict():
        g = gguf_name(name)
        if g is None:
            if name.endswith((".weight", ".bias")):
                raise QuantizerError(
                    f"GGUF conversion has no llama.cpp name for tensor '{name}'; supported: {SUPPORTED_TEXT}"
                )
            continue
        if g == "output.weight" and tied:
            continue
        plan[g] = name
    return plan


def _is_tied(model: nn.Module) -> bool:
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    out = getattr(model, "get_output_embeddings", lambda: None)()
    return emb is not None and out is not None and emb.weight is out.weight


# --------------------------------------------------------------------------- reading

FLOAT_TYPE_IDS = frozenset(
    {int(gguf.GGMLQuantizationType.F32), int(gguf.GGMLQuantizationType.F16), int(gguf.GGMLQuantizationType.BF16)}
)


@dataclass
class GgufDetails(QuantDetails):
    """A :class:`QuantDetails` with llama.cpp's choices: the tensor types of the file and the preset."""

    preset: str = ""
    tensor_types: dict[str, int] = field(default_factory=dict)
    seconds_convert: float = 0.0
    seconds_quantize: float = 0.0
    #: which llama.cpp converted the model ("llama.cpp 0c1e57098 (llama-cpp-python 0.3.36)")
    converter: str = ""
    #: the pre-tokenizer name written where llama.cpp did not recognise the model's BPE tokenizer (else None)
    tokenizer_pre_fallback: str | None = None


@dataclass
class QTensor:
    """One tensor of a GGUF file: its type, its raw bytes (quantized blocks) and its torch shape."""

    type_id: int
    raw: np.ndarray
    shape: tuple[int, ...]

    @property
    def type_name(self) -> str:
        return gguf.GGMLQuantizationType(self.type_id).name.lower()

    def dequantize(self) -> np.ndarray:
        return np.asarray(
            gguf.quants.dequantize(self.raw, gguf.GGMLQuantizationType(self.type_id)), dtype=np.float32
        ).reshape(self.shape)


def read_quantized(path: str | Path) -> dict[str, QTensor]:
    """Every tensor of a GGUF file, copied out of the memory map (the file may be deleted after)."""
    reader = gguf.GGUFReader(str(path))
    out: dict[str, QTensor] = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = QTensor(int(t.tensor_type), np.array(t.data, copy=True), shape)
    return out


def type_counts(tensors: dict[str, QTensor]) -> dict[str, int]:
    """{"q4_k": 154, "q6_k": 15, "f32": 61}: the types llama.cpp chose, by number of tensors."""
    counts: dict[str, int] = {}
    for t in tensors.values():
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def dequantized_weights(tensors: dict[str, QTensor], plan: dict[str, str], hp: Hparams) -> dict[str, np.ndarray]:
    """{Hugging Face name: float32 array in torch layout} for every tensor of the plan."""
    out: dict[str, np.ndarray] = {}
    for g, name in plan.items():
        if g not in tensors:
            raise QuantizerError(
                f"the GGUF file has no tensor '{g}' (for '{name}'); pass a GGUF file of this model's architecture"
            )
        w = tensors[g].dequantize()
        heads = qk_heads(g, hp)
        out[name] = unpermute_qk(w, heads) if heads else w
    return out


def load_into(model: nn.Module, weights: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Copy ``weights`` into ``model``'s tensors in place; return the originals (to put back with
    :func:`restore`). A tied weight is written once."""
    import torch

    state = model.state_dict()
    originals: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    with torch.no_grad():
        for name, value in weights.items():
            dst = state[name]
            if tuple(dst.shape) != value.shape:
                raise QuantizerError(
                    f"tensor '{name}' is {list(value.shape)} in the GGUF file but {list(dst.shape)} in the model; "
                    "pass a GGUF file of this model"
                )
            if dst.data_ptr() in seen:
                continue
            seen.add(dst.data_ptr())
            originals[name] = dst.detach().clone()
            dst.copy_(torch.from_numpy(value).to(dst.dtype))
    return originals


def restore(model: nn.Module, originals: dict[str, torch.Tensor]) -> None:
    import torch

    state = model.state_dict()
    with torch.no_grad():
        for name, value in originals.items():
            state[name].copy_(value)
