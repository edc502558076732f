"""GGUF conversion and llama.cpp quantization time per preset, as ratios to ``rtn-w4g128`` in the same process.

Run: ``python -m pytest benchmarks/test_bench_gguf.py -o addopts="" -p no:cacheprovider -s``.
Two sizes: the tests' tiny model and the ~85M-parameter Llama of ``test_bench_quant.py`` (random
weights, timing only; ``UNLEARN_BENCH_LARGE=0`` skips it). For each ``gguf-*`` id the backend's
report gives the time to write the F32 GGUF file (``seconds_convert``) and llama.cpp's
``llama_model_quantize`` (``seconds_quantize``) for one model; ``total`` is entering and leaving
``ua.quantized(model, qid, target=model)`` (so T is converted and quantized too, as in the gate
without a handed-on q(T), plus reading back, dequantizing and the code agreement), like
``rtn-w4g128``'s time it is divided by.

Every id, rtn-w4g128 included, runs ``rounds`` times (3 on the tiny model, 2 on the 85M one) and
each time is the minimum over its rounds: on a shared machine one run is noise (the first llama.cpp
call also pays its backend init). The CPU model and the load average before and after are printed
with the table, for the record in docs/quantizers.md.
"""

from __future__ import annotations

import os
import platform
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
        report = q.details.to_dict()
    return time.perf_counter() - start, report


def _best(loaded: Any, qid: str, rounds: int) -> tuple[float, float, float, dict[str, int]]:
    """(total, convert, quantize) seconds, each the minimum over ``rounds``, and llama.cpp's tensor types."""
    runs = [_run(loaded, qid) for _ in range(rounds)]
    types = runs[0][1].get("tensor_types") or {}
    assert all((r.get("tensor_types") or {}) == types for _, r in runs)  # llama.cpp's choice is deterministic
    return (
        min(t for t, _ in runs),
        min(r.get("seconds_convert", 0.0) for _, r in runs),
        min(r.get("seconds_quantize", 0.0) for _, r in runs),
        types,
    )


def _machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def _report(name: str, loaded: Any, rounds: int, benchmark: Any) -> dict[str, dict[str, float]]:
    load_before = os.getloadavg()
    _run(loaded, "gguf-q8_0")  # llama.cpp's backend init, outside every timing
    base = min(_run(loaded, "rtn-w4g128")[0] for _ in range(rounds))
    out: dict[str, dict[str, float]] = {}
    lines = []
    for qid in PRESETS:
        total, convert, quant, types = _best(loaded, qid, rounds)
        out[qid] = {
            "convert_s": convert,
            "quantize_s": quant,
            "total_s": total,
            "convert_x_rtn": convert / base,
            "quantize_x_rtn": quant / base,
            "total_x_rtn": total / base,
        }
        lines.append(
            f"| {name} | {qid} | {convert:.3f} s ({convert / base:.2f}x) | {quant:.3f} s ({quant / base:.2f}x) | "
            f"{total:.2f} s ({total / base:.2f}x) | {types} |"
        )
    load_after = os.getloadavg()
    n = sum(p.numel() for p in loaded.model.parameters())
    print(
        f"\n{name} ({n / 1e6:.1f}M parameters) on {_machine()}, load average {load_before[0]:.2f} -> "
        f"{load_after[0]:.2f}; "
        f"min of {rounds} rounds; rtn-w4g128 {base:.3f} s (with target)\n"
        "| model | id | convert (x rtn) | quantize (x rtn) | total (x rtn) | types |\n" + "\n".join(lines)
    )
    benchmark.extra_info[name] = {
        "parameters": n,
        "rtn_w4g128_s": base,
        "rounds": rounds,
        "machine": _machine(),
        "load_average": [load_before[0], load_after[0]],
        "gguf": out,
    }
    return out


def test_gguf_time_tiny(benchmark: Any, bench_model_dir: Path) -> None:
    from unlearn_assert.models import load_model

    loaded = load_model(bench_model_dir)
    out = _report("tiny", loaded, 3, benchmark)
    benchmark.pedantic(_run, args=(loaded, "gguf-q4_k_m"), rounds=1, iterations=1)
    assert all(v["quantize_s"] > 0 for v in out.values())


@pytest.mark.skipif(os.environ.get("UNLEARN_BENCH_LARGE") == "0", reason="UNLEARN_BENCH_LARGE=0")
def test_gguf_time_85m(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from test_bench_quant import _large_model_dir

    from unlearn_assert.models import load_model

    loaded = load_model(_large_model_dir(tmp_path_factory.mktemp("bench-85m")))
    out = _report("85M", loaded, 2, benchmark)
    benchmark.pedantic(_run, args=(loaded, "gguf-q4_k_m"), rounds=1, iterations=1)
    assert all(v["quantize_s"] > 0 for v in out.values())
