"""Hugging Face Llama-family model <-> GGUF file, with the ``gguf`` package (writer, reader, dequantize).

Written for this project after reading what llama.cpp's ``convert_hf_to_gguf.py`` writes for these
architectures (nothing is copied from it); what llama.cpp needs to load and run the file:

* metadata: ``general.architecture`` (``llama`` for Llama, Mistral and SmolLM; ``qwen2``; ``qwen3``),
  context length, embedding length, block count, feed-forward length, head counts, RMS-norm epsilon,
  RoPE base and dimension count, key/value length when ``head_dim != hidden / heads`` (Qwen3), the
  vocabulary size, ``general.file_type`` = ALL_F32, and for Llama 3's RoPE scaling the
  ``rope_freqs`` tensor (the per-frequency factors, computed as transformers computes them);
* tensors: llama.cpp's names (:func:`unlearn_assert.quant.gguf_header.gguf_name`), stored as F32
  (exact for f32, bf16 and f16 checkpoints). For ``llama``, Q and K rows are permuted from Hugging
  Face's rotate-half layout to llama.cpp's interleaved RoPE pairs (``(heads, 2, d/2) -> (heads, d/2, 2)``
  per weight row block); qwen2/qwen3 run NEOX RoPE and are stored as they are. Tied embeddings
  write no ``output.weight`` (llama.cpp then reuses ``token_embd``);
* the tokenizer: a byte-level BPE ``tokenizer.json`` becomes ``tokenizer.ggml.model = gpt2`` (tokens,
  token types, merges), a BPE with byte fallback (Llama 2 / Mistral's SentencePiece form) becomes
  ``llama`` (tokens, scores = minus the token id, i.e. the merge order, token types with BYTE for
  ``<0xXX>``, and ``add_space_prefix`` from the tokenizer's dummy prefix: a ``Prepend("▁")``
  normalizer or a ``Metaspace`` pre-tokenizer); special token ids and ``add_bos`` come from
  ``gguf.SpecialVocab``. The pre-tokenizer is named from the model family (``qwen2``, ``llama-bpe``
  for a 128256-token Llama 3 vocabulary, ``smollm`` for SmolLM's 49152), else ``gpt-2`` for a bare
  ``ByteLevel`` pre-tokenizer with GPT-2's regex, else ``default``. The gate evaluates with the
  Hugging Face tokenizer; llama.cpp needs these keys to load the file and tokenizes with them when a
  user runs it (``tests/test_quant_gguf.py`` compares its ids with Hugging Face's).

Reading back (:func:`read_quantized`, :func:`load_into`): every tensor of a GGUF file is
dequantized with ``gguf.quants.dequantize``, un-permuted, and copied into the torch model in place
(the originals are kept and put back on exit).
"""

from __future__ import annotations

import json
import logging
import math
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

_TOKEN_NORMAL, _TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER, _TOKEN_BYTE = 1, 2, 3, 4, 6
_ROPE_OK = ("default", "linear", "llama3")


def _cfg(config: Any, key: str, default: Any = None) -> Any:
    return getattr(config, key, default) if not isinstance(config, dict) else config.get(key, default)


def arch_of(config: Any) -> str:
    """llama.cpp's architecture for a transformers config, or one line listing what is supported."""
    model_type = str(_cfg(config, "model_type", ""))
    if model_type not in ARCHITECTURES:
        raise QuantizerError(f"GGUF conversion does not support architecture '{model_type or 'unknown'}'; supported: {SUPPORTED_TEXT}")
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
        raise QuantizerError(f"GGUF conversion supports RoPE {', '.join(_ROPE_OK)}, not '{rope_type}'; gate this model with rtn-*/bnb-* quantizers")
    theta = float(rope.get("rope_theta") or _cfg(config, "rope_theta", 10000.0) or 10000.0)
    return Hparams(
        arch=arch, n_layers=int(_cfg(config, "num_hidden_layers")), hidden=hidden, ffn=int(_cfg(config, "intermediate_size")),
        n_head=n_head, n_head_kv=int(_cfg(config, "num_key_value_heads") or n_head),
        head_dim=int(_cfg(config, "head_dim") or hidden // n_head), eps=float(_cfg(config, "rms_norm_eps", 1e-6)),
        rope_theta=theta, rope={**rope, "rope_type": rope_type}, context=int(_cfg(config, "max_position_embeddings", 2048)),
        vocab=int(_cfg(config, "vocab_size")), tied=bool(_cfg(config, "tie_word_embeddings", False)),
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


# --------------------------------------------------------------------------- tokenizer


def _pre_tokenizer(hp: Hparams, model_type: str, pre: Any) -> str:
    """llama.cpp's name for the byte-level BPE's pre-tokenizer regex: the model family's, else
    ``gpt-2`` for a bare ``ByteLevel`` pre-tokenizer with its regex on (GPT-2's split, which
    ``default`` is not: it splits ``'s`` into two pieces), else ``default``."""
    if hp.arch in ("qwen2", "qwen3"):
        return "qwen2"
    if hp.vocab == 128256:
        return "llama-bpe"
    if hp.vocab == 49152 and model_type == "llama":
        return "smollm"
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


def _space_prefix(data: dict[str, Any]) -> bool:
    """Whether a byte-fallback BPE puts a ``▁`` before the text (SentencePiece's dummy prefix):
    a ``Prepend("▁")`` normalizer (Llama 2, Mistral) or a ``Metaspace`` pre-tokenizer whose
    ``prepend_scheme`` is not ``never``. llama.cpp's ``llama`` tokenizer adds it when
    ``tokenizer.ggml.add_space_prefix`` is true, which is also its default."""
    def parts(node: Any, key: str) -> list[dict[str, Any]]:
        if not isinstance(node, dict):
            return []
        return [p for child in node.get(key, []) for p in parts(child, key)] if node.get("type") == "Sequence" else [node]

    normalizers = parts(data.get("normalizer"), "normalizers")
    if any(n.get("type") == "Prepend" and n.get("prepend") == "\u2581" for n in normalizers):
        return True
    pre = parts(data.get("pre_tokenizer"), "pretokenizers")
    return any(p.get("type") == "Metaspace" and p.get("prepend_scheme", "always") != "never" and p.get("add_prefix_space", True) for p in pre)


def _add_tokenizer(writer: gguf.GGUFWriter, directory: Path, hp: Hparams, model_type: str) -> None:
    file = directory / "tokenizer.json"
    if not file.is_file():
        raise QuantizerError(f"GGUF conversion needs '{file}' (a fast tokenizer); re-save the tokenizer with tokenizer.save_pretrained(DIR)")
    data = json.loads(file.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise QuantizerError(f"GGUF conversion supports BPE tokenizers (tokenizer.json), not '{model.get('type')}'; supported: {SUPPORTED_TEXT}")
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    added = {t["content"]: t for t in data.get("added_tokens", [])}
    for text, tok in added.items():
        vocab[text] = tok["id"]
    spm = bool(model.get("byte_fallback"))
    by_id = {i: t for t, i in vocab.items()}
    n = max(hp.vocab, max(by_id, default=-1) + 1)
    unk = model.get("unk_token")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(_TOKEN_USER)
            continue
        tokens.append(text)
        if text in added:
            types.append(_TOKEN_CONTROL if added[text].get("special") else _TOKEN_USER)
        elif spm and text == unk:
            types.append(_TOKEN_UNKNOWN)
        elif spm and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(_TOKEN_BYTE)
        else:
            types.append(_TOKEN_NORMAL)
    writer.add_tokenizer_model("llama" if spm else "gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(hp, model_type, data.get("pre_tokenizer")))
    if spm:
        writer.add_add_space_prefix(_space_prefix(data))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if spm:
        writer.add_token_scores([-float(i) for i in range(n)])
    logging.getLogger("gguf.vocab").setLevel(logging.ERROR)  # "Unknown separator token" of a pair template, irrelevant here
    gguf.SpecialVocab(directory, load_merges=not spm, n_vocab=n).add_to_gguf(writer, quiet=True)


# --------------------------------------------------------------------------- writing


def _rope_factors(hp: Hparams) -> np.ndarray:
    """Llama 3's per-frequency RoPE factors (``rope_type = llama3``), as transformers applies them."""
    rope = hp.rope
    factor = float(rope.get("factor", 8.0))
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old = float(rope.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def tensor_plan(model: nn.Module, hp: Hparams) -> dict[str, str]:
    """{gguf name: Hugging Face state-dict name} for every tensor llama.cpp stores; an unknown weight
    is an error (a converter that silently dropped one would gate another model)."""
    plan: dict[str, str] = {}
    tied = hp.tied or _is_tied(model)
    for name in model.state_dict():
        g = gguf_name(name)
        if g is None:
            if name.endswith((".weight", ".bias")):
                raise QuantizerError(f"GGUF conversion has no llama.cpp name for tensor '{name}'; supported: {SUPPORTED_TEXT}")
            continue
        if g == "output.weight" and tied:
            continue
        plan[g] = name
    return plan


def _is_tied(model: nn.Module) -> bool:
    emb = getattr(model, "get_input_embeddings", lambda: None)()
    out = getattr(model, "get_output_embeddings", lambda: None)()
    return emb is not None and out is not None and emb.weight is out.weight


def write_f32_gguf(model: nn.Module, config: Any, tokenizer_dir: str | Path, path: str | Path) -> dict[str, str]:
    """Write ``model`` as an F32 GGUF file that llama.cpp loads; return the tensor plan."""
    import torch

    hp = hparams(config)
    plan = tensor_plan(model, hp)
    state = model.state_dict()
    writer = gguf.GGUFWriter(str(path), hp.arch)
    writer.add_name(str(_cfg(config, "_name_or_path", "") or "unlearn-assert"))
    writer.add_context_length(hp.context)
    writer.add_embedding_length(hp.hidden)
    writer.add_block_count(hp.n_layers)
    writer.add_feed_forward_length(hp.ffn)
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(hp.eps)
    writer.add_rope_freq_base(hp.rope_theta)
    writer.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim != hp.hidden // hp.n_head:
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if hp.rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(hp.rope.get("factor", 1.0)))
    writer.add_vocab_size(hp.vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, Path(tokenizer_dir), hp, str(_cfg(config, "model_type", "")))
    if hp.rope["rope_type"] == "llama3":
        writer.add_tensor("rope_freqs.weight", _rope_factors(hp))
    with torch.no_grad():
        for g, name in plan.items():
            w = state[name].detach().to("cpu", torch.float32).numpy()
            heads = qk_heads(g, hp)
            writer.add_tensor(g, np.ascontiguousarray(permute_qk(w, heads) if heads else w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return plan


# --------------------------------------------------------------------------- reading

FLOAT_TYPE_IDS = frozenset({int(gguf.GGMLQuantizationType.F32), int(gguf.GGMLQuantizationType.F16), int(gguf.GGMLQuantizationType.BF16)})


@dataclass
class GgufDetails(QuantDetails):
    """A :class:`QuantDetails` with llama.cpp's choices: the tensor types of the file and the preset."""

    preset: str = ""
    tensor_types: dict[str, int] = field(default_factory=dict)
    seconds_convert: float = 0.0
    seconds_quantize: float = 0.0



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
        return np.asarray(gguf.quants.dequantize(self.raw, gguf.GGMLQuantizationType(self.type_id)), dtype=np.float32).reshape(self.shape)


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
            raise QuantizerError(f"the GGUF file has no tensor '{g}' (for '{name}'); pass a GGUF file of this model's architecture")
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
                raise QuantizerError(f"tensor '{name}' is {list(value.shape)} in the GGUF file but {list(dst.shape)} in the model; "
                                     "pass a GGUF file of this model")
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
