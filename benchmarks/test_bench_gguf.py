"""GGUF conversion and llama.cpp quantization time per preset, as ratios to ``rtn-w4g128`` in the same process.

Run: ``python -m pytest benchmarks/test_bench_gguf.py -o addopts="" -p no:cacheprovider -s``.
Two sizes: the tests' tiny model and the ~85M-parameter Llama of ``test_bench_quant.py`` (random
weights, timing only; ``UNLEARN_BENCH_LARGE=0`` skips it). For each ``gguf-*`` id the backend's
report gives the time to write the F32 GGUF file (``seconds_convert``) and llama.cpp's
``llama_model_quantize`` (``seconds_quantize``) for one model; ``total`` is entering and leaving
``ua.quantized(model, qid, target=model)`` (so T is converted and quantized too, as in the gate
without a handed-on q(T), plus reading back, dequantizing and the code agreement), like
``rtn-w4g128``'s time it is divided by.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install 'unlearn-assert[gguf]'")

PRESETS = ("gguf-q4_k_m", "gguf-q5_k_m", "gguf-q6_k", "gguf-q8_0", "gguf-q4_0", "gguf-q3_k_m", "gguf-q2_k")


def _run(loaded: Any, qid: str) -> tuple[float, dict[str, Any]]:
    from unlearn_assert.quant import quantized

    start = time.perf_counter()
    with quantized(loaded, qid, target=loaded) as q:
        report = q.report.to_dict()
    return time.perf_counter() - start, report


def _report(name: str, loaded: Any, benchmark: Any) -> dict[str, dict[str, float]]:
    base = min(_run(loaded, "rtn-w4g128")[0] for _ in range(2))
    out: dict[str, dict[str, float]] = {}
    lines = []
    for qid in PRESETS:
        total, r = _run(loaded, qid)
        out[qid] = {"convert_s": r["seconds_convert"], "quantize_s": r["seconds_quantize"], "total_s": total,
                    "convert_x_rtn": r["seconds_convert"] / base, "quantize_x_rtn": r["seconds_quantize"] / base, "total_x_rtn": total / base}
        lines.append(f"{qid}: convert {r['seconds_convert']:.2f} s ({out[qid]['convert_x_rtn']:.1f}x), quantize {r['seconds_quantize']:.2f} s "
                     f"({out[qid]['quantize_x_rtn']:.1f}x), total {total:.2f} s ({out[qid]['total_x_rtn']:.1f}x) {r['tensor_types']}")
    n = sum(p.numel() for p in loaded.model.parameters())
    print(f"\n{name} ({n / 1e6:.1f}M parameters), rtn-w4g128 {base:.2f} s:\n  " + "\n  ".join(lines))
    benchmark.extra_info[name] = {"parameters": n, "rtn_w4g128_s": base, "gguf": out}
    return out


def test_gguf_time_tiny(benchmark: Any, bench_model_dir: Path) -> None:
    from unlearn_assert.models import load_model

    loaded = load_model(bench_model_dir)
    out = _report("tiny", loaded, benchmark)
    benchmark.pedantic(_run, args=(loaded, "gguf-q4_k_m"), rounds=1, iterations=1)
    assert all(v["quantize_s"] > 0 for v in out.values())


@pytest.mark.skipif(os.environ.get("UNLEARN_BENCH_LARGE") == "0", reason="UNLEARN_BENCH_LARGE=0")
def test_gguf_time_85m(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from test_bench_quant import _large_model_dir

    from unlearn_assert.models import load_model

    loaded = load_model(_large_model_dir(tmp_path_factory.mktemp("bench-85m")))
    out = _report("85M", loaded, benchmark)
    benchmark.pedantic(_run, args=(loaded, "gguf-q4_k_m"), rounds=1, iterations=1)
    assert all(v["quantize_s"] > 0 for v in out.values())
