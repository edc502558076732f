"""The CPU dtype policy: ``auto`` computes in float32 on a CPU without native bf16, an explicit dtype
wins, CUDA keeps the checkpoint's dtype; what the capability check sees under AVX2-only kernels."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_assert import hardware
from unlearn_assert.models import load_model, resolve_dtype

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="module")
def bf16_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny target saved in bfloat16, as most Hugging Face checkpoints are."""
    loaded = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    out = tmp_path_factory.mktemp("tiny-bf16")
    loaded.model.config.dtype = "bfloat16"
    loaded.model.save_pretrained(str(out), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(out))
    return out


def test_auto_on_a_cpu_without_native_bf16_computes_in_float32(
    bf16_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    loaded = load_model(bf16_model_dir, device="cpu", dtype="auto")
    assert loaded.dtype == "float32" and loaded.info["checkpoint_dtype"] == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    exact = load_model(bf16_model_dir, device="cpu", dtype="bfloat16")  # an explicit dtype always wins
    assert exact.dtype == "bfloat16" and {p.dtype for p in exact.model.parameters()} == {torch.bfloat16}
    for (name, p32), p16 in zip(loaded.model.named_parameters(), exact.model.parameters()):
        assert torch.equal(p32, p16.float()), f"the upcast of {name} is not exact"
    ids = loaded.tokenizer("Question: who", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert loaded.model(input_ids=ids).logits.dtype == torch.float32
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    assert load_model(bf16_model_dir, device="cpu").dtype == "bfloat16"


def test_resolve_dtype_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    assert resolve_dtype("auto", "bfloat16", "cpu") == torch.float32
    assert resolve_dtype(None, "float16", "cpu") == torch.float32  # fp16 on CPU is emulated as well
    assert resolve_dtype("auto", torch.bfloat16, "cuda") == torch.bfloat16  # on CUDA the checkpoint's dtype
    assert resolve_dtype("auto", "float16", "cuda:0") == torch.float16
    assert resolve_dtype("float16", "bfloat16", "cpu") == torch.float16
    monkeypatch.setattr(hardware, "native_bf16", lambda: True)
    assert resolve_dtype("auto", "bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("auto", None, "cpu") == torch.float32


@pytest.mark.parametrize("qid", ["rtn-w4g64", "bnb-fp4", "bnb-int8", "hqq-w4g64"])
def test_quantizers_on_the_float32_upcast(bf16_model_dir: Path, monkeypatch: pytest.MonkeyPatch, qid: str) -> None:
    """Every in-process backend runs on the float32 compute the policy picks, and says so."""
    import torch

    from unlearn_assert.quant import quantized

    pytest.importorskip("bitsandbytes" if qid.startswith("bnb") else "hqq" if qid.startswith("hqq") else "torch")
    monkeypatch.setattr(hardware, "native_bf16", lambda: False)
    u = load_model(bf16_model_dir, device="cpu")
    t = load_model(bf16_model_dir, device="cpu")
    assert u.dtype == "float32"
    ids = u.tokenizer("Question: who", return_tensors="pt")["input_ids"]
    with quantized(u, qid, target=t) as q:
        assert q.dtype == "float32"
        assert q.details.changed_fraction > 0 and q.details.code_agreement == 1.0
        with torch.no_grad():
            logits = q.model(input_ids=ids).logits
        assert logits.dtype == torch.float32 and bool(torch.isfinite(logits).all())


def test_compute_info_is_plain_json() -> None:
    info = hardware.compute_info()
    assert json.loads(json.dumps(info)) == info
    assert isinstance(info["native_bf16"], bool) and info["cpu_capability"]
    assert info["native_bf16"] == hardware.native_bf16()


@pytest.mark.skipif(not X86, reason="the AVX2 kernel caps are x86 settings")
def test_avx2_only_kernels_report_no_native_bf16() -> None:
    """Under the caps an AVX512 machine computes like an AVX2-only one: /proc/cpuinfo is unchanged,
    the check must still say "no native bf16", and a bf16 matmul is really slower than fp32 there."""
    probe = (
        "import json, time, torch\n"
        "from unlearn_assert.hardware import compute_info\n"
        "torch.set_num_threads(1)\n"
        "a, b = torch.randn(512, 256), torch.randn(256, 688)\n"
        "def ms(x, y):\n"
        "    x @ y\n"
        "    t = time.perf_counter()\n"
        "    for _ in range(5): x @ y\n"
        "    return (time.perf_counter() - t) / 5 * 1e3\n"
        "print(json.dumps({**compute_info(), 'fp32_ms': ms(a, b), 'bf16_ms': ms(a.bfloat16(), b.bfloat16())}))\n"
    )
    env = {**os.environ, **AVX2_ENV}
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["cpu_capability"] == "AVX2" and info["onednn_max_cpu_isa"] == "AVX2"
    assert info["native_bf16"] is False
    assert info["bf16_ms"] > 2 * info["fp32_ms"], info


def test_bf16_weights_on_cpu_are_emulated_in_float32_and_keep_the_regime(target: object, tiny_data_dir: Path) -> None:
    """bf16 weights on CPU: float32 compute, every weight a bf16 value after every step, so an
    update below half a bf16 step is lost (the regime the demo needs); float32 weights keep it."""
    import torch

    from unlearn_assert.data.muse import load_data
    from unlearn_assert.unlearning import unlearn
    from unlearn_assert.unlearning.trainer import UnlearnSettings

    data = load_data(tiny_data_dir)
    common = dict(method="npo_klr", steps=3, batch_size=2, max_length=32, lr=1e-6, seed=0)
    bf16 = unlearn(target, data, UnlearnSettings(**common, dtype="bfloat16"))  # type: ignore[arg-type]
    fp32 = unlearn(target, data, UnlearnSettings(**common, dtype="float32"))  # type: ignore[arg-type]
    assert bf16.compute_dtype == "float32" and bf16.to_json()["compute_dtype"] == "float32"
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    start = {n: p.detach().to(torch.bfloat16) for n, p in target.model.named_parameters()}  # type: ignore[attr-defined]
    moved16 = sum(int((p != start[n]).sum()) for n, p in bf16.model.named_parameters())
    total = sum(p.numel() for p in bf16.model.parameters())
    changed32 = sum(int((p != q).sum()) for p, q in zip(fp32.model.parameters(), target.model.parameters()))  # type: ignore[attr-defined]
    assert changed32 > 0.9 * total  # in float32 an update of 1e-6 moves nearly every weight
    assert 0 < moved16 < 0.2 * total  # in bf16 storage only the near-zero weights can take it


def test_the_row_cache_key_holds_the_compute_dtype(
    bf16_model_dir: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--unlearn-dtype auto`` computes a bf16 checkpoint in bf16 on one CPU and in float32 on
    another: the two results must never share a cache entry (nothing is loaded to tell)."""
    from unlearn_assert.cache import ResultCache
    from unlearn_assert.config import run_config
    from unlearn_assert.engine.inputs import Inputs
    from unlearn_assert.engine.rows import row_key

    run = run_config(model=bf16_model_dir, target=bf16_model_dir, data=tiny_data_dir, device="cpu")
    keys = {}
    for native in (True, False):
        monkeypatch.setattr(hardware, "native_bf16", lambda native=native: native)
        inputs = Inputs(run, ResultCache(None, enabled=False))
        keys[native] = (inputs.compute_dtype("unlearned"), row_key("unlearned", None, inputs))
    assert keys[True][0] == "bfloat16" and keys[False][0] == "float32"
    assert keys[True][1] != keys[False][1]
    explicit = Inputs(
        run_config(model=bf16_model_dir, target=bf16_model_dir, data=tiny_data_dir, device="cpu", dtype="float32"),
        ResultCache(None, enabled=False),
    )
    assert explicit.compute_dtype("target") == "float32"  # an explicit dtype always wins


def test_a_process_without_torch_reports_the_machine_facts_its_workers_sent() -> None:
    """An xdist controller never computes a row: its report takes the GPU and CPU facts from the first execution
    record that carries them instead of importing torch (seconds) for facts about itself; with torch loaded (a
    serial run) the process's own facts are used."""
    code = (
        "import sys\n"
        "from unlearn_assert.engine.report import _machine\n"
        "facts = {'cuda': None, 'cpu': {'cpu_capability': 'AVX2', 'threads': 7}}\n"
        "got = _machine([{'worker': 'gw1', 'threads': {}}, {'worker': 'gw0', 'machine': facts}])\n"
        "assert got == facts, got\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "own = _machine([{'worker': 'gw0', 'machine': facts}])\n"
        "assert own['cpu']['threads'] == torch.get_num_threads() and own['cpu'] != facts['cpu'], own\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
