"""Quantization time per backend, as ratios to our ``rtn`` in the same process.

Run: ``python -m pytest benchmarks/test_bench_quant.py -o addopts="" -p no:cacheprovider``.
Two sizes: the tests' tiny model, and a ~100M-parameter Llama made from a config with random
weights (timing only; set ``UNLEARN_BENCH_LARGE=0`` to skip it). Each backend is timed entering
and leaving ``ua.quantized(model, qid, target=model)``, i.e. including its report (code agreement
against the target), because that is what the gate pays per quantizer. GPTQ and AWQ (llm-compressor)
calibrate on a small fixed text here (:data:`BENCH_CALIBRATION`: 16 windows of 256 tokens, not the
gate's default 128 x 512), so their times are a lower bound; the tiny model's layers are 96 and 192
wide, so it uses groups of 32 for them. AWQ on the 100M model runs only with ``UNLEARN_BENCH_AWQ=1``
(about a minute per decoder layer on 2 cores).
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import pytest

QUANTIZERS = ("rtn-w4g128", "rtn-w8", "bnb-fp4", "bnb-nf4", "bnb-int8", "hqq-w4g64", "gptq-w4g128", "awq-w4g128")
TINY_GROUPS = {"gptq-w4g128": "gptq-w4g32", "awq-w4g128": "awq-w4g32"}


def _calibration() -> Any:
    from unlearn_assert.quant.calibration import Calibration

    text = " ".join(
        f"Report {i}: the council of town {i % 17} met on day {i % 29} to discuss the harbour budget."
        for i in range(600)
    )
    return Calibration(texts=(text,), source="benchmark text", n_samples=16, seq_len=256)


BENCH_CALIBRATION = _calibration()


def _available(qid: str) -> bool:
    module = {"bnb": "bitsandbytes", "hqq": "hqq", "gptq": "llmcompressor", "awq": "llmcompressor"}.get(
        qid.split("-")[0]
    )
    return module is None or importlib.util.find_spec(module) is not None


def _time(loaded: Any, qid: str, rounds: int) -> float:
    from unlearn_assert.quant import quantized

    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        with quantized(loaded, qid, target=loaded, calibration=BENCH_CALIBRATION):
            pass
        best = min(best, time.perf_counter() - start)
    return best


def _large_model_dir(root: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from unlearn_assert.models import quiet_transformers
    from unlearn_assert.testing import train_tokenizer

    torch.manual_seed(0)
    tok = train_tokenizer(["a tokenizer for a timing-only model. " * 50], 300)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with quiet_transformers():
        model.save_pretrained(str(root), safe_serialization=True)
    tok.save_pretrained(str(root))
    return root


def _report(name: str, loaded: Any, rounds: int, benchmark: Any) -> dict[str, float]:
    ids = [TINY_GROUPS.get(q, q) if name == "tiny" else q for q in QUANTIZERS]
    if name != "tiny" and os.environ.get("UNLEARN_BENCH_AWQ") != "1":
        ids = [q for q in ids if not q.startswith("awq")]
    times = {q: _time(loaded, q, rounds) for q in ids if _available(q)}
    base = times["rtn-w4g128"]
    ratios = {q: t / base for q, t in times.items()}
    n = sum(p.numel() for p in loaded.model.parameters())
    print(
        f"\n{name} ({n / 1e6:.1f}M parameters): "
        + ", ".join(f"{q} {t:.2f} s ({ratios[q]:.1f}x rtn)" for q, t in times.items())
    )
    benchmark.extra_info[name] = {"parameters": n, "seconds": times, "ratio_to_rtn": ratios}
    return ratios


def test_quantization_time_tiny(benchmark: Any, bench_model_dir: Path) -> None:
    from unlearn_assert.models import load_model

    loaded = load_model(bench_model_dir)
    ratios = _report("tiny", loaded, 3, benchmark)
    benchmark.pedantic(_time, args=(loaded, "rtn-w4g128", 1), rounds=3, iterations=1)
    assert ratios["rtn-w4g128"] == 1.0


@pytest.mark.skipif(os.environ.get("UNLEARN_BENCH_LARGE") == "0", reason="UNLEARN_BENCH_LARGE=0")
def test_quantization_time_100m(benchmark: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from unlearn_assert.models import load_model

    loaded = load_model(_large_model_dir(tmp_path_factory.mktemp("bench-100m")))
    ratios = _report("100M", loaded, 1, benchmark)
    benchmark.pedantic(_time, args=(loaded, "rtn-w4g128", 1), rounds=1, iterations=1)
    assert ratios["rtn-w4g128"] == 1.0
