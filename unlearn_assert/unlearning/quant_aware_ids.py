"""Which quantizer ids ``unlearn --quant-aware`` can train against, checked without torch.

Why a module of its own: the CLI checks ``--quant-aware`` while it parses options, and the pytest
summary names the remediation command for the quantizers that failed; neither may import torch. A
quantizer qualifies only when its rounding is simulated *exactly* (the fake-quantized weights are
bit for bit what the real quantizer dequantizes to; see :mod:`.quant_aware` and
tests/unlearning/test_quant_aware.py): every ``rtn-*`` id, bitsandbytes' 4-bit grids ``bnb-fp4`` / ``bnb-nf4``,
and every ``gguf-*`` preset (llama.cpp's own quantizer runs in the forward). Calibrated quantizers
(GPTQ, AWQ), HQQ's optimized zero points and LLM.int8 are refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.util import find_spec

from ..errors import ConfigError, UnlearnAssertError
from ..variants.quantizers import GGUF_PRESETS, parse_quantizer_id, split_id_list

__all__ = ["SUPPORTED_TEXT", "check_quant_aware_ids", "is_quant_aware_id"]

#: What ``--quant-aware`` accepts, as every refusal names it.
SUPPORTED_TEXT = "rtn-w<bits>[g<group>][-asym] (e.g. rtn-w4g64), bnb-fp4, bnb-nf4, " + ", ".join(
    f"gguf-{p}" for p in GGUF_PRESETS
)
#: backend -> (the libraries its simulation imports, the pip command that installs them)
_NEEDS = {
    "bnb": (("bitsandbytes",), "pip install 'unlearn-assert[bnb]'"),
    "gguf": (("gguf", "llama_cpp"), "pip install 'unlearn-assert[gguf]'"),
}


def is_quant_aware_id(qid: str) -> bool:
    """True when ``qid`` parses and its rounding can be simulated exactly (libraries not checked)."""
    try:
        spec = parse_quantizer_id(qid)
    except UnlearnAssertError:
        return False
    return spec.backend in ("rtn", "gguf") or (spec.backend == "bnb" and spec.scheme in ("fp4", "nf4"))


def _checked(qid: str) -> str:
    try:
        spec = parse_quantizer_id(qid)
    except UnlearnAssertError:
        raise ConfigError(f"--quant-aware: unknown quantizer '{qid}'; supported: {SUPPORTED_TEXT}") from None
    if not is_quant_aware_id(qid):
        raise ConfigError(f"--quant-aware cannot simulate '{qid}' exactly; supported: {SUPPORTED_TEXT}")
    modules, install = _NEEDS.get(spec.backend, ((), ""))
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise ConfigError(f"--quant-aware {qid} needs {', '.join(missing)}; install it with {install}")
    return spec.canonical_id


def check_quant_aware_ids(value: str | Iterable[str]) -> tuple[str, ...]:
    """The ids of a ``--quant-aware`` value ("rtn-w4g64,bnb-nf4" or a sequence), each supported and
    listed once; anything else is one ConfigError line naming the supported ids."""
    text = value if isinstance(value, str) else ",".join(value)
    if not text.strip():
        return ()
    try:
        return split_id_list(text, _checked, "quantizer", "rtn-w4g64,bnb-nf4")
    except ConfigError:
        raise
    except UnlearnAssertError as exc:  # an empty entry or a duplicate: the message already names the fix
        raise ConfigError(f"--quant-aware: {exc}") from None
