"""Which model families each quantizer backend can gate, decided at option time from config.json alone.

Pure Python (no torch): the plugin's precheck calls :func:`check_families` while pytest parses options,
so a combination that cannot work is one usage-error line naming the family and the backend before any
model loads, never an error row an hour into the run.

What is refused, and why (the architecture matrix in ``tests/e2e/test_architecture_matrix.py`` runs every
backend on Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3, Phi3 and OLMo2, tied and untied):

* rtn, bnb, hqq, gptq, awq quantize ``nn.Linear`` layers. GPT-2's projections are transformers'
  ``Conv1D`` (:data:`CONV1D_FAMILIES`): nothing would be quantized ("took no effect").
* gguf converts with llama.cpp's ``convert_hf_to_gguf.py``: an architecture outside its table
  (``conversion/__init__.py``'s ``TEXT_MODEL_MAP``, read by :mod:`.llama_cpp_source`) is refused, naming
  the llama.cpp version; so is a Gemma, Gemma 2 or Phi-3 directory without the SentencePiece
  ``tokenizer.model`` their converters read (:data:`SENTENCEPIECE_ONLY`), and an untied Gemma or Gemma 2,
  whose converters drop ``lm_head`` (:data:`TIED_ONLY`). Without the converter set up
  nothing is refused here: the gguf items skip with the setup command, as for a missing library.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..variants.quantizers import parse_quantizer_id
from .llama_cpp_source import converted_architectures, describe, find_converter

#: model_type -> family name, for families whose projections are transformers' Conv1D (not nn.Linear).
CONV1D_FAMILIES = {"gpt2": "GPT-2"}
#: backends that quantize nn.Linear layers only
LINEAR_BACKENDS = ("rtn", "bnb", "hqq", "gptq", "awq")
#: model_type -> family name, for families llama.cpp's converter reads only from a SentencePiece
#: ``tokenizer.model`` (their ``set_vocab``); transformers 5's ``save_pretrained`` writes tokenizer.json only.
#: Phi-3 also converts from a BPE tokenizer.json whose tokenizer_config.json names GPT2Tokenizer (Phi-4's form).
SENTENCEPIECE_ONLY = {"gemma": "Gemma", "gemma2": "Gemma 2", "phi3": "Phi-3"}
#: model_type -> family name, for families whose llama.cpp converter drops ``lm_head.weight`` (it assumes the
#: output is tied to the embeddings, as Gemma ships): an untied model of them is not what llama.cpp would run.
TIED_ONLY = {"gemma": "Gemma", "gemma2": "Gemma 2"}


def _config(target: str | Path) -> dict[str, Any]:
    try:
        value = json.loads((Path(target) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the directory checks name a missing or broken config.json
    return value if isinstance(value, dict) else {}


def family(config: dict[str, Any]) -> tuple[str, str]:
    """(model_type, the first architecture class) of a config.json."""
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    return str(config.get("model_type") or "unknown"), arch


def _tokenizer_class(directory: Path) -> str:
    try:
        value = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    return str(value.get("tokenizer_class") or "") if isinstance(value, dict) else ""


def refusal(qid: str, config: dict[str, Any], directory: Path | None = None) -> str | None:
    """Why quantizer ``qid`` cannot gate a model with this config.json (in ``directory``), in one line, or None."""
    backend = parse_quantizer_id(qid).backend
    model_type, arch = family(config)
    name = f"{model_type} ({arch})" if arch else model_type
    if backend in LINEAR_BACKENDS and model_type in CONV1D_FAMILIES:
        return (
            f"{qid} cannot quantize the {CONV1D_FAMILIES[model_type]} family {name}: the {backend} backend "
            "quantizes nn.Linear layers and this family keeps its projections in transformers' Conv1D; "
            "gate it with gguf-* ids"
        )
    if backend == "gguf":
        root, _ = find_converter()
        if root is not None and arch not in converted_architectures(root):
            return (
                f"{qid} cannot quantize the {name} family: llama.cpp's convert_hf_to_gguf.py ({describe(root)}) "
                f"does not convert {arch or 'a config without architectures'}; "
                "gate it with rtn-*/bnb-*/hqq-*/gptq-*/awq-* ids"
            )
        if model_type in TIED_ONLY and config.get("tie_word_embeddings", True) is False:
            return (
                f"{qid} cannot convert this {TIED_ONLY[model_type]} model {name}: its output layer is untied "
                "(tie_word_embeddings false) and llama.cpp's converter drops lm_head.weight for this family "
                "(it runs the embeddings as the output); gate it with rtn-*/bnb-*/hqq-*/gptq-*/awq-* ids"
            )
        spm_only = SENTENCEPIECE_ONLY.get(model_type)
        if (
            directory is not None
            and spm_only
            and not (directory / "tokenizer.model").is_file()
            and not (model_type == "phi3" and _tokenizer_class(directory) == "GPT2Tokenizer")
        ):
            return (
                f"{qid} cannot convert this {spm_only} model {name}: llama.cpp's converter reads its tokenizer "
                f"only from a SentencePiece tokenizer.model, which '{directory}' lacks; copy tokenizer.model from "
                "the original checkpoint into the model directories (transformers 5's save_pretrained "
                "does not write it)"
            )
    return None


def check_families(quantizers: Iterable[str], target: str | Path) -> None:
    """One :class:`ConfigError` line for the first quantizer that cannot gate ``target``'s family."""
    config = _config(target)
    for qid in quantizers:
        reason = refusal(qid, config, Path(target))
        if reason is not None:
            raise ConfigError(f"--unlearn-quantizers: {reason}")
