"""A Hugging Face model directory -> an F32 GGUF file by llama.cpp's own converter, and the file's tensors
-> the torch model's parameters.

Forward (:class:`Converter`): llama.cpp's ``convert_hf_to_gguf.py`` (:mod:`.llama_cpp_source` says which
one) runs in one long-lived subprocess (:mod:`.llama_cpp_driver`), so its imports are paid once per
process, not once per model. It reads the model's directory, as llama.cpp users convert it: the gate's
model in memory is that directory's (its fingerprint is the directory's content).

Backward (:func:`tensor_map`, :func:`to_torch`): llama.cpp renames every tensor and changes a few values
(Q/K rows permuted to interleaved RoPE pairs for ``llama``, ``1 + w`` for Gemma's norms, ...). Mapping a
GGUF tensor back is what transformers' GGUF loader does (``transformers.modeling_gguf_pytorch_utils``):
``get_gguf_hf_weights_map`` for the names (from gguf's ``TensorNameMap``) and the architecture's
``TensorProcessor`` for the values, maintained by Hugging Face for every architecture it loads from
GGUF. They are used as they are; what they do not know is caught by :func:`check_round_trip`: the F32
file, mapped back, must give the model's own weights (to float32 rounding of ``(1 + w) - 1``), else
the row is one error naming the tensor, never a gate of another model.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BackendUnavailable, QuantizerError
from .llama_cpp_source import SETUP, describe, find_converter

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

DRIVER = Path(__file__).with_name("llama_cpp_driver.py")
#: |value mapped back - model weight| allowed by :func:`check_round_trip`: llama.cpp stores Gemma's norms
#: as ``1 + w`` in float32, and ``(1 + w) - 1`` differs from ``w`` by at most half an ulp of 1 (2**-24).
ROUND_TRIP_ATOL = 2.0**-23


def _pre_tokenizer(directory: Path) -> str:
    """The pre-tokenizer name written for a byte-level BPE llama.cpp does not recognise (only then):
    ``gpt-2`` for a bare ``ByteLevel`` pre-tokenizer with GPT-2's regex (``default`` would split ``'s``
    into two pieces), else ``default``."""
    try:
        data = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "default"
    pre = data.get("pre_tokenizer") if isinstance(data, dict) else None
    if isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


class Converter:
    """llama.cpp's converter in a subprocess that serves one conversion at a time (see the module docstring)."""

    _shared: Converter | None = None
    _shared_lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = describe(root)
        self._log = tempfile.NamedTemporaryFile(prefix="unlearn-assert-llama-cpp-", suffix=".log", delete=False)  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, str(DRIVER), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()

    @classmethod
    def shared(cls) -> Converter:
        """The process's converter, started on first use (BackendUnavailable with the setup command
        when there is none)."""
        root, reason = find_converter()
        if root is None:
            raise BackendUnavailable(f"gguf-* quantizers need llama.cpp's converter: {reason}", install=SETUP)
        with cls._shared_lock:
            if cls._shared is None or cls._shared.root != root or cls._shared._proc.poll() is not None:
                if cls._shared is not None:
                    cls._shared.close()
                cls._shared = cls(root)
                atexit.register(cls._shared.close)
            return cls._shared

    def log_tail(self, lines: int = 5) -> str:
        text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())

    def convert(self, model_dir: str | Path, out: Path) -> dict[str, Any]:
        """Write ``model_dir`` as an F32 GGUF file ``out``; return the driver's answer."""
        request = {
            "model": str(Path(model_dir).resolve()),
            "out": str(out),
            "fallback_pre": _pre_tokenizer(Path(model_dir)),
        }
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except (BrokenPipeError, OSError):
                line = ""
        if not line:
            raise QuantizerError(
                f"llama.cpp's converter stopped while converting '{model_dir}' ({self.log_tail()}); "
                "see the log line, or report it with the model's config.json"
            )
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise QuantizerError(
                f"llama.cpp's convert_hf_to_gguf.py ({self.source}) could not convert '{model_dir}': "
                f"{answer.get('error')}; gate this model with rtn-*/bnb-*/hqq-*/gptq-*/awq-* ids"
            )
        return answer

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


# --------------------------------------------------------------------------- back to torch


def _processor(arch: str, config: Any) -> Any:
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    return TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=config.to_dict())


def tensor_map(model: nn.Module, arch: str, names: set[str] | list[str]) -> tuple[dict[str, str], Any]:
    """({GGUF tensor name: state-dict name} for every tensor of the file that is a weight of ``model``,
    the architecture's value processor). A weight of the model that the file lacks, other than an output
    tied to the embeddings, is an error: a converter that dropped it would gate another model."""
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    processor = _processor(arch, model.config)  # type: ignore[operator]
    try:
        full = get_gguf_hf_weights_map(model, processor, model_type=arch)
    except NotImplementedError as exc:
        raise QuantizerError(
            f"the installed gguf package has no tensor names for llama.cpp architecture '{arch}' "
            f"({exc}); upgrade gguf, or gate this model with rtn-*/bnb-* ids"
        ) from None
    plan = {g: h for g, h in full.items() if g in names}
    state = model.state_dict()
    covered = {state[h].data_ptr() for h in plan.values()}
    params = dict(model.named_parameters(remove_duplicate=False))
    lost = [n for n, p in params.items() if p.data_ptr() not in covered]
    if lost:
        raise QuantizerError(
            f"llama.cpp's GGUF file of this {type(model).__name__} has no tensor for '{lost[0]}' "
            f"({len(lost)} weights unmapped); gate this model with rtn-*/bnb-* ids, "
            "or report the architecture"
        )
    return plan, processor


def to_torch(processor: Any, gguf_name: str, value: np.ndarray) -> np.ndarray:
    """A GGUF tensor (torch's shape, llama.cpp's layout and values) -> the torch parameter's values."""
    return np.asarray(processor.process(weights=value, name=gguf_name).weights, dtype=np.float32)


def check_round_trip(
    model: nn.Module, plan: dict[str, str], processor: Any, f32: dict[str, np.ndarray], what: str
) -> None:
    """The F32 file mapped back must be the model's weights (see :data:`ROUND_TRIP_ATOL`)."""
    import torch

    state = model.state_dict()
    for g, name in plan.items():
        mine = state[name].detach().to("cpu", torch.float32).numpy()
        back = to_torch(processor, g, f32[g])
        if back.shape != mine.shape or not np.allclose(back, mine, rtol=0.0, atol=ROUND_TRIP_ATOL):
            shape = back.shape != mine.shape
            err = f"shape {list(back.shape)}" if shape else f"max error {float(np.abs(back - mine).max()):.3g}"
            raise QuantizerError(
                f"llama.cpp's F32 GGUF file of {what} does not map back onto '{name}' "
                f"(tensor {g}, {err}): transformers' GGUF loader does not invert this "
                "architecture's conversion; "
                "gate this model with rtn-*/bnb-* ids, or report the architecture"
            )
