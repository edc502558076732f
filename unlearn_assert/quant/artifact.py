"""Checkpoints the user already quantized (``--unlearn-quantized NAME=DIR``): gate the exact artifact
a provider publishes, as one more quantizer row named NAME.

Why a separate path: the other rows quantize the unlearned model here, which answers "what would a
user's quantizer do"; a provider who ships a quantized artifact must gate *that* file, made by
their own pipeline and settings. So the artifact is loaded as it is and evaluated like any other
row; it is compared with ``--unlearn-model`` (the full-precision unlearned model it should have been
made from) for the report's changed fraction.

Formats (read from ``config.json``'s ``quantization_config``):

* ``compressed-tensors`` (llm-compressor's GPTQ/AWQ/RTN output; the format vLLM serves): loaded
  through transformers with ``CompressedTensorsConfig(dequantize=True)``, i.e. dense weights
  decompressed by compressed-tensors itself. Needs ``unlearn-assert[gptq]``.
* ``bitsandbytes`` (4-bit FP4/NF4 or LLM.int8 saved with ``save_pretrained``): loaded through
  transformers into the real bitsandbytes modules, with the CPU fixes of ``quant/bnb.py``. Needs
  ``unlearn-assert[bnb]``.
* ``gptq`` (auto-gptq / gptqmodel / optimum exports, 2/4/8 bits, v1 or v2 zero points, act-order
  ``g_idx``) and ``awq`` (AutoAWQ GEMM, 4 bits): transformers loads them only through gptqmodel,
  which does not install next to this project's torch pin, so :mod:`unlearn_assert.quant.packed`
  decodes their integer packing to dense weights (no extra library).

A missing library is a skip with the install command, as for the backends; an unsupported or
malformed artifact is a usage error at option time.

Report: bits/group/symmetric from the config; ``changed_fraction`` over the linear layers whose
weights differ from ``--unlearn-model``'s (a re-quantized or mismatched artifact shows here); code
agreement and the cell fractions are None: the target quantized by *the same* pipeline is not
available, and they need it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, ModelError
from ..variants.quantizers import BNB_4BIT_BLOCKSIZE

if TYPE_CHECKING:  # pragma: no cover
    from ..models import LoadedModel
    from .base import QuantDetails

#: quant_method -> (module that must import, pip command)
SUPPORTED = {
    "compressed-tensors": ("compressed_tensors", "pip install 'unlearn-assert[gptq]'"),
    "bitsandbytes": ("bitsandbytes", "pip install 'unlearn-assert[bnb]'"),
    "gptq": ("safetensors", "pip install unlearn-assert"),
    "awq": ("safetensors", "pip install unlearn-assert"),
}
CONFIG_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")


@dataclass(frozen=True)
class ArtifactInfo:
    """What ``config.json`` says about a quantized checkpoint."""

    name: str
    path: str
    method: str
    bits: int | None
    group_size: int | None
    symmetric: bool
    scheme: str | None = None


def _describe(method: str, qc: dict[str, Any], where: str) -> tuple[int | None, int | None, bool, str | None]:
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            return 4, BNB_4BIT_BLOCKSIZE, True, str(qc.get("bnb_4bit_quant_type", "fp4"))
        if qc.get("load_in_8bit"):
            return 8, None, True, "int8"
        raise ConfigError(
            f"{where}: bitsandbytes config has neither load_in_4bit nor load_in_8bit; re-save the quantized model"
        )
    if method in ("gptq", "awq"):
        bits = int(qc.get("bits", qc.get("w_bit", 4)))
        group = int(qc.get("group_size", qc.get("q_group_size", 128)))
        sym = bool(qc.get("sym", True)) if method == "gptq" else not qc.get("zero_point", True)
        if method == "gptq" and bits not in (2, 4, 8):
            raise ConfigError(
                f"{where}: GPTQ {bits}-bit packing is not supported (2, 4, 8 are); re-export it with llm-compressor"
            )
        if method == "awq" and (bits != 4 or str(qc.get("version", "gemm")).lower() != "gemm"):
            raise ConfigError(
                f"{where}: AWQ {qc.get('version')} {bits}-bit is not supported (GEMM 4-bit is); re-export it with "
                "llm-compressor"
            )
        return bits, None if group <= 0 else group, sym, method
    groups = qc.get("config_groups") or {}
    weights = next((g.get("weights") for g in groups.values() if isinstance(g, dict) and g.get("weights")), None)
    if not isinstance(weights, dict):
        raise ConfigError(
            f"{where}: compressed-tensors config has no weight quantization in config_groups; re-export it with "
            "llm-compressor"
        )
    return (
        weights.get("num_bits"),
        weights.get("group_size"),
        bool(weights.get("symmetric", True)),
        weights.get("strategy"),
    )


def read_artifact(name: str, path: str, target: str | None = None) -> ArtifactInfo:
    """Validate the artifact ``NAME=DIR`` (no torch; the name's syntax is checked by
    :func:`unlearn_assert.config.parse_artifacts`): the directory, safetensors weights, a supported
    ``quantization_config``, and the target's architecture when given."""
    from ..models import read_model_files

    where = f"--unlearn-quantized {name}={path}"
    directory, config, _ = read_model_files(path, where, "re-save the checkpoint")
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        raise ConfigError(
            f"{where}: config.json has no quantization_config, so this is not a quantized checkpoint; "
            "gate a full-precision model with --unlearn-model and a quantizer id in --unlearn-quantizers"
        )
    method = str(qc.get("quant_method", ""))
    if method not in SUPPORTED:
        raise ConfigError(
            f"{where}: quantization method '{method}' is not supported; "
            "use a compressed-tensors, bitsandbytes, GPTQ or AWQ (GEMM) checkpoint"
        )
    if target is not None:
        try:
            t_config = json.loads((Path(target) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            t_config = {}
        for key in CONFIG_KEYS:
            if key in t_config and key in config and t_config[key] != config[key]:
                raise ConfigError(
                    f"{where}: its {key} is {config[key]} but the target's is {t_config[key]}; "
                    "pass a checkpoint made from the unlearned model of this target"
                )
    bits, group, sym, scheme = _describe(method, qc, where)
    return ArtifactInfo(
        name=name, path=str(directory), method=method, bits=bits, group_size=group, symmetric=sym, scheme=scheme
    )


def quant_method(path: str) -> str | None:
    """The ``quant_method`` a checkpoint's ``config.json`` names (None when it cannot be read): for
    the report's provenance, after :func:`read_artifact` validated the directory; a .gguf file is ``gguf``)."""
    if path.lower().endswith(".gguf"):
        return "gguf"
    try:
        qc = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    return str(qc.get("quant_method")) if isinstance(qc, dict) and qc.get("quant_method") else None


def _load(info: ArtifactInfo, device: str, dtype: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from ..errors import BackendUnavailable
    from ..models import quiet_transformers, resolve_device, resolve_dtype

    module, install = SUPPORTED[info.method]
    try:
        if info.method == "bitsandbytes":
            from . import bnb  # noqa: F401  imports bitsandbytes with its import-time noise filtered
        else:
            __import__(module)
    except ImportError:
        raise BackendUnavailable(
            f"checkpoint '{info.name}' ({info.method}) needs {module}, which is not installed; install it with: "
            f"{install}",
            install=install,
        ) from None
    kwargs: dict[str, Any] = {}
    config = json.loads((Path(info.path) / "config.json").read_text(encoding="utf-8"))
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, config.get("dtype") or config.get("torch_dtype"), dev)
    if info.method in ("gptq", "awq"):
        from .packed import load_packed

        try:
            model = load_packed(info, config, torch_dtype, dev)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"cannot decode {info.method} checkpoint '{info.name}' from '{info.path}' ({type(exc).__name__}: "
                f"{exc}); "
                "re-export it with llm-compressor"
            ) from None
        model.eval()
        return model, str(torch_dtype).removeprefix("torch."), dev
    if info.method == "compressed-tensors":
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    else:
        kwargs["device_map"] = {"": dev}
        if torch_dtype == torch.bfloat16 and info.bits == 8:
            torch_dtype = torch.float16  # LLM.int8 computes in fp16
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                info.path,
                dtype=torch_dtype,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                **kwargs,
            )
    except Exception as exc:
        raise ModelError(
            f"cannot load quantized checkpoint '{info.name}' from '{info.path}' ({type(exc).__name__}: {exc}); "
            "re-save it with the library that made it"
        ) from None
    if info.method == "bitsandbytes":
        from .bnb import prepare_4bit_layers

        prepare_4bit_layers(model)
    else:
        model.to(dev)  # type: ignore[arg-type]  # transformers types .to() through a decorator mypy misreads
    model.eval()
    return model, str(torch_dtype).removeprefix("torch."), dev


def _changed(model: Any, info: ArtifactInfo, source: LoadedModel) -> tuple[list[str], int, int]:
    """(quantized layer names, weights in them, weights that differ from the source's); a layer
    identical to the source's was not quantized (it counts in neither)."""
    import torch
    from torch import nn

    src = dict(source.model.named_modules())
    names: list[str] = []
    n = changed = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            ref = src.get(name)
            if not isinstance(ref, nn.Linear):
                continue
            if info.method == "bitsandbytes":
                import bitsandbytes as bnb

                from .bnb import dequantized_weight

                if not isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)):
                    continue
                w = dequantized_weight(module).reshape(ref.weight.shape)
            else:
                w = module.weight.detach()
            r = ref.weight.detach()
            if tuple(w.shape) != tuple(r.shape):
                raise ModelError(
                    f"checkpoint '{info.name}': layer {name} is {tuple(w.shape)} but the unlearned model's is "
                    f"{tuple(r.shape)}; "
                    "pass the checkpoint made from --unlearn-model"
                )
            diff = int((w.to(device=r.device, dtype=r.dtype) != r).sum())
            if diff == 0:  # a layer the artifact left in full precision (e.g. lm_head)
                continue
            names.append(name)
            n += r.numel()
            changed += diff
    return names, n, changed


@contextmanager
def open_artifact(
    info: ArtifactInfo,
    source: LoadedModel,
    *,
    device: str | None = None,
    dtype: str | None = None,
    known_fingerprint: str | None = None,
) -> Iterator[tuple[LoadedModel, QuantDetails]]:
    """Load the artifact for the block; yield (model, details). Only this one extra model is held."""
    import gc

    from ..models import LoadedModel, fingerprint, load_tokenizer
    from .base import QuantDetails

    start = time.perf_counter()
    model, dt, dev = _load(info, device or source.device, dtype)
    try:
        names, n, changed = _changed(model, info, source)
        if n == 0 or changed == 0:
            raise ModelError(
                f"checkpoint '{info.name}' at '{info.path}' has no quantized linear layer that differs from the "
                "unlearned model; "
                "pass a quantized checkpoint of --unlearn-model"
            )
        try:
            tokenizer = load_tokenizer(Path(info.path))
        except ModelError:
            tokenizer = source.tokenizer  # quantization tools often save no tokenizer
        loaded = LoadedModel(
            model=model,
            tokenizer=tokenizer,
            path=info.path,
            fingerprint=known_fingerprint or fingerprint(info.path),
            device=dev,
            dtype=dt,
            info={**source.info, "quantizer": info.name},
        )
        details = QuantDetails(
            quantizer=info.name,
            backend=f"checkpoint:{info.method}",
            bits=info.bits,
            group_size=info.group_size,
            symmetric=info.symmetric,
            modules=names,
            n_weights=n,
            changed_fraction=changed / n,
            seconds=time.perf_counter() - start,
        )
        yield loaded, details
    finally:
        del model
        gc.collect()
