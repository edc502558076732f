"""GGUF files without numpy or torch: the header parser, the llama.cpp tensor names of the Llama
family, and the option-time check of a user's ``.gguf`` file against the target.

Why pure Python: ``--unlearn-quantized NAME=FILE.gguf`` is validated while pytest parses options,
in milliseconds, before any model loads; importing ``gguf`` (numpy) or torch there would cost more
than the check. Only the header is read: magic, version, the key-value metadata (string arrays such
as the vocabulary are skipped by their lengths) and the tensor infos; the file size is compared with
the end of the last tensor, so a truncated download fails here, not an hour into the run.

The target's side is read from its files by :func:`unlearn_assert.models.read_model_files`,
the reader ``--unlearn-quantized NAME=DIR`` uses too (directory, safetensors headers, config.json).

The name table (:func:`gguf_name`) is what a user's Llama-family file is read back with
(``quant/gguf_convert.py``; the ``gguf-*`` quantizers convert with llama.cpp's own converter and map back
with transformers' tables, :mod:`.llama_cpp`); ``tests/quant/test_gguf.py`` checks it against ``gguf.TensorNameMap``.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

MAGIC = b"GGUF"
#: ``model_type`` of a Hugging Face config -> llama.cpp architecture (``general.architecture``).
ARCHITECTURES: dict[str, str] = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
#: What the one-line error for another architecture lists.
SUPPORTED_TEXT = "Llama, Mistral, Qwen2, Qwen3 and SmolLM (model_type llama, mistral, qwen2, qwen3)"
#: llama.cpp architectures whose Q/K rows are stored permuted for its interleaved RoPE; qwen2/qwen3
#: use NEOX RoPE (rotate-half, as Hugging Face does) and are stored as they are.
PERMUTED_QK = frozenset({"llama"})

#: GGML tensor type id -> (name, weights per block, bytes per block), for every type the ``gguf``
#: package can dequantize (``gguf.quants``). Other ids (removed ARM repacks, integer tensors) are
#: "unsupported type". Cross-checked against ``gguf.constants.GGML_QUANT_SIZES`` in the tests.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("f32", 1, 4),
    1: ("f16", 1, 2),
    2: ("q4_0", 32, 18),
    3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22),
    7: ("q5_1", 32, 24),
    8: ("q8_0", 32, 34),
    10: ("q2_k", 256, 84),
    11: ("q3_k", 256, 110),
    12: ("q4_k", 256, 144),
    13: ("q5_k", 256, 176),
    14: ("q6_k", 256, 210),
    16: ("iq2_xxs", 256, 66),
    17: ("iq2_xs", 256, 74),
    18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50),
    20: ("iq4_nl", 32, 18),
    21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82),
    23: ("iq4_xs", 256, 136),
    29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2),
    34: ("tq1_0", 256, 54),
    35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17),
}

_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
#: metadata keys worth keeping (hyper-parameters and split info); everything else is skipped unread
_KEEP = re.compile(
    r"general\.(architecture|file_type|alignment|name)|split\..*|[a-z0-9_]+\.(block_count|embedding_length|vocab_size)"
)
_SPLIT_NAME = re.compile(r"-\d{5}-of-(\d{5})\.gguf$")

# --------------------------------------------------------------------------- names

_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's name of a Hugging Face Llama-family tensor (``model.layers.3.mlp.up_proj.weight``
    -> ``blk.3.ffn_up.weight``), or None for a tensor llama.cpp does not store (``rotary_emb``)."""
    module, dot, suffix = hf_name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return None
    if module in _GLOBAL:
        return f"{_GLOBAL[module]}.{suffix}"
    match = _LAYER_RE.fullmatch(module)
    if match and match[2] in _LAYER:
        return f"blk.{match[1]}.{_LAYER[match[2]]}.{suffix}"
    return None


def architecture(config: dict[str, Any], where: str) -> str:
    """The llama.cpp architecture of a Hugging Face config, or one line listing what is supported."""
    model_type = str(config.get("model_type", ""))
    if model_type not in ARCHITECTURES:
        raise ConfigError(
            f"{where}: architecture '{model_type or 'unknown'}' is not supported for GGUF; supported: {SUPPORTED_TEXT}"
        )
    return ARCHITECTURES[model_type]


# --------------------------------------------------------------------------- header


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne0 (the row width) first, i.e. the reverse of torch's
    type_id: int
    offset: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.type_id, (f"type {self.type_id}", 1, 0))[0]

    def nbytes(self) -> int:
        _, block, size = GGML_TYPES[self.type_id]
        n = 1
        for d in self.shape:
            n *= d
        return n // block * size


@dataclass
class GgufHeader:
    path: str
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    file_size: int
    types: dict[str, int] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))


class _Truncated(Exception):
    pass


def _read(f: IO[bytes], n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _Truncated
    return data


def _u32(f: IO[bytes]) -> int:
    return int(struct.unpack("<I", _read(f, 4))[0])


def _u64(f: IO[bytes]) -> int:
    return int(struct.unpack("<Q", _read(f, 8))[0])


def _string(f: IO[bytes]) -> str:
    return _read(f, _u64(f)).decode("utf-8", errors="replace")


def _value(f: IO[bytes], vtype: int, keep: bool) -> Any:
    if vtype in _SCALARS:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        etype, count = _u32(f), _u64(f)
        if etype in _SCALARS and not keep:  # skip a numeric array in one seek
            size = struct.calcsize(_SCALARS[etype]) * count
            f.seek(size, os.SEEK_CUR)
            return None
        items = [_value(f, etype, keep) for _ in range(count)]
        return items if keep else None
    raise ValueError(f"unknown metadata value type {vtype}")


def read_header(path: str | Path, where: str) -> GgufHeader:
    """Parse a GGUF file's header; one :class:`ConfigError` line (prefixed ``where``) when it is not
    GGUF, truncated, or holds a tensor type the ``gguf`` package cannot dequantize."""
    p = Path(path)
    try:
        size = p.stat().st_size
        f = p.open("rb")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file ({exc.strerror}); pass an existing .gguf file") from None
    with f:
        try:
            magic = f.read(4)
            if magic != MAGIC:
                raise ConfigError(
                    f"{where}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); pass a llama.cpp .gguf file"
                )
            version = _u32(f)
            if version not in (2, 3):
                raise ConfigError(
                    f"{where}: GGUF version {version} is not supported (2 and 3 are); re-convert it with a current "
                    "llama.cpp"
                )
            n_tensors, n_kv = _u64(f), _u64(f)
            if n_tensors > 1_000_000 or n_kv > 1_000_000:
                raise ConfigError(
                    f"{where}: the GGUF header is corrupt ({n_tensors} tensors, {n_kv} keys); download the file again"
                )
            metadata: dict[str, Any] = {}
            for _ in range(n_kv):
                key = _string(f)
                vtype = _u32(f)
                keep = bool(_KEEP.fullmatch(key))
                value = _value(f, vtype, keep)
                if keep:
                    metadata[key] = value
            tensors = []
            for _ in range(n_tensors):
                name = _string(f)
                n_dims = _u32(f)
                if n_dims > 4:
                    raise ConfigError(
                        f"{where}: tensor '{name}' has {n_dims} dimensions; the GGUF header is corrupt, download the "
                        "file again"
                    )
                shape = tuple(_u64(f) for _ in range(n_dims))
                tensors.append(TensorInfo(name, shape, _u32(f), _u64(f)))
            end = f.tell()
        except _Truncated:
            raise ConfigError(
                f"{where}: the file is truncated (it ends inside the GGUF header, at {size} bytes); download it again"
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: the GGUF header is corrupt ({exc}); download the file again") from None
    alignment = int(metadata.get("general.alignment", 32) or 32)
    data_offset = (end + alignment - 1) // alignment * alignment
    header = GgufHeader(str(p), version, metadata, tensors, data_offset, size)
    for t in tensors:
        if t.type_id not in GGML_TYPES:
            raise ConfigError(
                f"{where}: tensor '{t.name}' has GGML type {t.type_id}, which the gguf package cannot dequantize; "
                f"supported: {', '.join(sorted(n for n, _, _ in GGML_TYPES.values()))}"
            )
        header.types[t.type_name] = header.types.get(t.type_name, 0) + 1
    split = metadata.get("split.count")
    match = _SPLIT_NAME.search(p.name)
    if (isinstance(split, int) and split > 1) or (match and int(match[1]) > 1):
        count = split if isinstance(split, int) and split > 1 else int(match[1]) if match else 0
        raise ConfigError(
            f"{where}: this is one part of a split GGUF file ({count} parts); merge it first with "
            "llama-gguf-split --merge FIRST-00001-of-N.gguf OUT.gguf and pass OUT.gguf"
        )
    need = max((data_offset + t.offset + t.nbytes() for t in tensors), default=data_offset)
    if size < need:
        raise ConfigError(f"{where}: the file is truncated ({size} bytes, its tensors need {need}); download it again")
    return header


# --------------------------------------------------------------------------- the option-time check


def expected_tensors(target: str | Path) -> tuple[str, dict[str, tuple[int, ...]], bool]:
    """(llama.cpp architecture, {gguf name: ggml shape}, tied embeddings) for the target directory,
    from its config.json and safetensors headers only."""
    from ..models import read_model_files

    where = f"--unlearn-target {target}"
    _, config, weights = read_model_files(str(target), where, "re-save the target with model.save_pretrained(DIR)")
    arch = architecture(config, where)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in weights.items():
        g = gguf_name(name)
        if g is not None:
            shapes[g] = tuple(reversed(shape))
    tied = bool(config.get("tie_word_embeddings", False)) or "output.weight" not in shapes
    if tied:
        shapes.pop("output.weight", None)
    return arch, shapes, tied


def check_gguf_file(name: str, path: str, target: str | None) -> GgufHeader:
    """Validate ``--unlearn-quantized NAME=FILE.gguf`` from its header: GGUF, complete, one part,
    supported types, the target's architecture, and the target's tensor names and shapes."""
    where = f"--unlearn-quantized {name}={path}"
    header = read_header(path, where)
    if target is None:
        return header
    arch, shapes, tied = expected_tensors(target)
    if header.architecture != arch:
        raise ConfigError(
            f"{where}: the file's architecture is '{header.architecture or 'unset'}' but the target's is '{arch}'; "
            f"pass a GGUF file of the unlearned model (supported: {SUPPORTED_TEXT})"
        )
    found = {t.name: t.shape for t in header.tensors}
    missing = [n for n in shapes if n not in found]
    if missing:
        raise ConfigError(
            f"{where}: the file has no tensor {missing[0]} ({len(missing)} of the target's {len(shapes)} missing); "
            "pass a GGUF file of the unlearned model of this target"
        )
    for n, shape in shapes.items():
        if tuple(found[n]) != shape:
            raise ConfigError(
                f"{where}: shape mismatch: tensor {n} is {list(found[n])} in the file but {list(shape)} in the target "
                "(ggml order); pass a GGUF file of the unlearned model of this target"
            )
    return header
