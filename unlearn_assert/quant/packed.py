"""Decode GPTQ and AWQ packed checkpoints (auto-gptq / gptqmodel / AutoAWQ exports) to dense weights.

Why our own decoder: transformers loads these formats only through gptqmodel, which does not
install next to this project's torch pin (docs/quantizers.md), yet they are what most quantized
models on the hub are. The formats are plain integer packing, so decoding them is a few tensor
operations, written from the format descriptions below and tested against hand-packed words:

* **GPTQ** (``quant_method: gptq``; bits 2, 4 or 8): per linear layer ``qweight`` int32
  ``(in * bits / 32, out)`` packs ``32 / bits`` consecutive *input* rows per word, lowest bits
  first; ``qzeros`` int32 ``(groups, out * bits / 32)`` packs consecutive *output* columns the same
  way; ``scales`` ``(groups, out)``; ``g_idx`` int32 ``(in,)``, the group of each input row (absent:
  ``row // group_size``). ``checkpoint_format: gptq`` (v1, the default) stores every zero point
  minus one; ``gptq_v2`` stores it as is. ``W[o, i] = scales[g, o] * (q[i, o] - zero[g, o])`` with
  ``g = g_idx[i]``.
* **AWQ GEMM** (``quant_method: awq``, ``version: gemm``, 4 bits): ``qweight`` int32
  ``(in, out / 8)`` and ``qzeros`` int32 ``(groups, out / 8)`` pack 8 output columns per word in
  the interleaved order 0, 2, 4, 6, 1, 3, 5, 7 (nibble ``k`` holds column ``ORDER[k]``); ``scales``
  ``(groups, out)``; groups are consecutive input rows. ``W[o, i] = scales[g, o] * (q[i, o] - zero[g, o])``.

The model is built from its config (without the ``quantization_config``) with uninitialized
weights, and every tensor is decoded and copied into it one layer at a time; a weight the
checkpoint lacks, or one the architecture does not have, is an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ModelError

#: AWQ's GEMM packing: nibble k of a word holds output column AWQ_ORDER[k] of its 8.
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def unpack_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 ``(n, m)`` with ``32 / bits`` values per word along dim 0 -> int32 ``(n * 32 / bits, m)``."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32, device=packed.device)
    vals = (packed[:, None, :] >> shifts[None, :, None]) & (2**bits - 1)
    return vals.reshape(packed.shape[0] * per, packed.shape[1])


def unpack_cols(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """int32 ``(n, m)`` with ``32 / bits`` values per word along dim 1 -> int32 ``(n, m * 32 / bits)``."""
    return unpack_rows(packed.T.contiguous(), bits).T


def decode_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor | None,
    bits: int,
    group_size: int,
    v1: bool = True,
) -> torch.Tensor:
    """Dense ``(out, in)`` float32 weight of one GPTQ layer (see the module docstring)."""
    if bits not in (2, 4, 8):
        raise ModelError(
            f"GPTQ {bits}-bit packing is not supported (2, 4 and 8 are); re-export the model with llm-compressor"
        )
    q = unpack_rows(qweight.to(torch.int32), bits)  # (in, out)
    zeros = unpack_cols(qzeros.to(torch.int32), bits) + (1 if v1 else 0)  # (groups, out)
    n_in = q.shape[0]
    if g_idx is None:
        g_idx = torch.arange(n_in, device=q.device) // group_size
    g = g_idx.long()
    w = (q - zeros[g, : q.shape[1]]).float() * scales.float()[g, : q.shape[1]]
    return w.T.contiguous()


def decode_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dense ``(out, in)`` float32 weight of one AWQ GEMM 4-bit layer (see the module docstring)."""
    order = torch.tensor(AWQ_ORDER, device=qweight.device)
    inverse = torch.argsort(order)  # column c of a word is nibble inverse[c]

    def unpack(packed: torch.Tensor) -> torch.Tensor:
        nibbles = unpack_cols(packed.to(torch.int32), 4).reshape(packed.shape[0], -1, 8)  # (..., word, nibble)
        return nibbles[:, :, inverse].reshape(packed.shape[0], -1)

    q, zeros = unpack(qweight), unpack(qzeros)  # (in, out), (groups, out)
    g = torch.arange(q.shape[0], device=q.device) // group_size
    w = (q - zeros[g]).float() * scales.float()[g]
    return w.T.contiguous()


def iter_dense(
    tensors: dict[str, torch.Tensor],
    method: str,
    bits: int,
    group_size: int | None,
    where: str,
    dtype: torch.dtype = torch.float32,
    v1: bool = True,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(key, tensor)`` of the dense state dict, one tensor at a time, consuming ``tensors``:
    every packed layer (``<name>.qweight`` ...) becomes ``<name>.weight`` in ``dtype`` (decoded in
    float32 one layer at a time), every other tensor passes through. ``group_size`` None means one
    group per row (a checkpoint's ``-1``); bits and format were validated with the checkpoint's
    config (:func:`unlearn_assert.quant.artifact.read_artifact`)."""
    layers = sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))
    if not layers:
        raise ModelError(
            f"{where}: no packed layer (<name>.qweight) in the weights; is this really a {method} checkpoint?"
        )
    for name in layers:
        try:
            qweight, qzeros, scales = (
                tensors.pop(f"{name}.qweight"),
                tensors.pop(f"{name}.qzeros"),
                tensors.pop(f"{name}.scales"),
            )
        except KeyError as exc:
            raise ModelError(
                f"{where}: layer {name} has a qweight but no {exc.args[0]}; the checkpoint is incomplete"
            ) from None
        g_idx = tensors.pop(f"{name}.g_idx", None)
        # None: one group per row, i.e. the layer's whole input width
        group = group_size or (qweight.shape[0] * (32 // bits) if method == "gptq" else qweight.shape[0])
        if method == "gptq":
            w = decode_gptq(qweight, qzeros, scales, g_idx, bits, group, v1)
        else:
            w = decode_awq(qweight, qzeros, scales, group)
        yield f"{name}.weight", w.to(dtype)
    for key in list(tensors):
        value = tensors.pop(key)
        yield key, value.to(dtype) if value.is_floating_point() else value


def _empty_model(cfg: Any, dtype: torch.dtype) -> Any:
    """The architecture with allocated but uninitialized weights (they are all overwritten next):
    random initialization of a 7B model takes minutes on a CPU."""
    from contextlib import nullcontext

    from transformers import AutoModelForCausalLM

    from ..models import quiet_transformers

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # pragma: no cover - older transformers
        no_init_weights = nullcontext  # type: ignore[assignment]
    with quiet_transformers(), no_init_weights():
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def load_packed(info: Any, config: dict[str, Any], dtype: torch.dtype, device: str) -> Any:
    """Build the model from ``config`` (minus its quantization_config) and copy the decoded weights
    into it layer by layer: peak memory is the model plus the packed checkpoint plus one float32 layer."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoConfig

    from ..models import weight_files

    where = f"checkpoint '{info.path}'"
    root = Path(info.path)
    v1 = str(config["quantization_config"].get("checkpoint_format", "gptq")) != "gptq_v2"
    index = root / "model.safetensors.index.json"
    if index.is_file():  # sharded: exactly the files the index names
        files = sorted({root / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    else:
        files = weight_files(root)
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        tensors.update(load_file(str(file)))
    cfg = AutoConfig.for_model(
        **{k: v for k, v in config.items() if k not in ("quantization_config", "transformers_version")}
    )
    model = _empty_model(cfg, dtype)
    state = model.state_dict(keep_vars=True)
    filled: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for key, value in iter_dense(tensors, info.method, int(info.bits), info.group_size, where, dtype, v1):
            target = state.get(key)
            if target is None:
                unexpected.append(key)
                continue
            if tuple(target.shape) != tuple(value.shape):
                raise ModelError(
                    f"{where}: {key} decodes to {tuple(value.shape)} but the architecture expects "
                    f"{tuple(target.shape)}; "
                    "re-export the model with llm-compressor"
                )
            target.data.copy_(value)
            filled.add(key)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    tied = (
        set(getattr(model, "_tied_weights_keys", None) or ()) if getattr(cfg, "tie_word_embeddings", False) else set()
    )
    persistent = set(model.state_dict())  # non-persistent buffers (rotary inv_freq) are computed by the model itself
    missing = sorted(k for k in persistent if k not in filled and k not in tied)
    if missing or unexpected:
        raise ModelError(
            f"{where}: decoded weights do not match the architecture (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); re-export the model with llm-compressor"
        )
    return model.to(device)
