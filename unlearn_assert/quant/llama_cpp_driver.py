"""Run llama.cpp's own ``convert_hf_to_gguf.py``, in a process of its own that serves many conversions.

Started by :class:`unlearn_assert.quant.llama_cpp.Converter` as ``python llama_cpp_driver.py LLAMA_CPP_DIR``;
it then reads one JSON request per line on stdin, ``{"model": DIR, "out": FILE, "fallback_pre": NAME}``,
converts ``DIR`` to an F32 GGUF file with the converter's ``main()`` (``--outtype f32 --outfile FILE``)
and answers one JSON line on stdout, ``{"ok": true, "fallback_pre": null}`` or ``{"ok": false, "error": ...}``.

Why a separate process started by file path: the converter imports the ``gguf`` package of its own
llama.cpp checkout (``LLAMA_CPP_DIR/gguf-py``), which is newer than the ``gguf`` release the parent reads
files with; two packages of one name cannot live in one interpreter. This file imports nothing of
unlearn_assert (the parent's ``gguf`` would come with it). Why one process for many conversions: importing
torch, transformers and the converter's ~90 model modules takes seconds (tens of seconds on a loaded
2-core machine), the conversion of a small model milliseconds.

What it changes in llama.cpp's converter, and only this: a byte-level BPE tokenizer llama.cpp does not
recognise (its pre-tokenizer hash is not in ``get_vocab_base_pre``, as for every locally trained
tokenizer) makes the converter stop with ``NotImplementedError``. Tensors and hyper-parameters do not
depend on it, so there the driver writes the request's ``fallback_pre`` (chosen by the parent from
``tokenizer.json``: ``gpt-2`` for GPT-2's byte-level regex, else ``default``) and says so in its answer.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any


def _setup(root: Path) -> Any:
    """Put the checkout's gguf-py and converter first on sys.path; wrap ``get_vocab_base_pre``."""
    # started by path, Python put this file's folder first on sys.path, where quant/gguf.py and
    # quant/hqq.py would shadow the packages of those names that the converter imports
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(root / "gguf-py"), str(root)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    base = importlib.import_module("conversion.base")
    original = base.TextModel.get_vocab_base_pre
    state: dict[str, Any] = {"fallback": "default", "used": None}

    def get_vocab_base_pre(self: Any, tokenizer: Any) -> str:
        try:
            return str(original(self, tokenizer))
        except NotImplementedError:
            state["used"] = state["fallback"]
            return str(state["fallback"])

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    return state


def convert(root: Path, state: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """One conversion with the converter's own ``main()``; its prints go to stderr (stdout answers)."""
    state["fallback"], state["used"] = request.get("fallback_pre") or "default", None
    script = str(root / "convert_hf_to_gguf.py")
    sys.argv = [script, str(request["model"]), "--outtype", "f32", "--outfile", str(request["out"])]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:  # the converter exits 1 after logging "Model X is not supported"
        if exc.code not in (0, None):
            return {"ok": False, "error": f"convert_hf_to_gguf.py exited with status {exc.code}"}
    except Exception as exc:  # the converter raises many types (NotImplementedError, ValueError, KeyError...)
        traceback.print_exc(file=sys.stderr)
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "fallback_pre": state["used"]}


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    answer = sys.stdout
    try:
        state = _setup(root)
    except Exception as exc:  # a broken or foreign checkout: say so on the first request
        error = f"cannot import llama.cpp's converter from {root} ({type(exc).__name__}: {exc})"
        failure = {"ok": False, "error": error}
        for _ in sys.stdin:
            answer.write(json.dumps(failure) + "\n")
            answer.flush()
        return 1
    for line in sys.stdin:
        if line.strip():
            answer.write(json.dumps(convert(root, state, json.loads(line))) + "\n")
            answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
