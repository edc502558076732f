"""engine/views.py: the fixtures' one view of a gate (data, models, one variant at a time, measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearn_assert.cache import ResultCache
from unlearn_assert.config import run_config
from unlearn_assert.engine import Gate
from unlearn_assert.models import load_model


def test_a_measurement_computed_in_bf16_never_stands_for_float32(
    tmp_path: Path, tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_data_dir: Path
) -> None:
    """Issue 25's bug: the ``muse`` fixture keyed its cache by ``--unlearn-dtype`` ("auto") instead of the
    dtype ``auto`` resolves to, so a cache shared by an AVX512-BF16 and an AVX2 machine handed one machine's
    bf16 result to the other as float32. Same weights (same fingerprint), two compute dtypes: two measurements."""
    run = run_config(
        model=tiny_unlearned_dir,
        target=tiny_model_dir,
        data=tiny_data_dir,
        device="cpu",
        max_samples=2,
        cache_dir=tmp_path / "cache",
    )
    with Gate(run, ResultCache(tmp_path / "cache")) as g:
        fp32 = load_model(tiny_model_dir, device="cpu", dtype="float32")
        bf16 = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
        assert fp32.fingerprint == bf16.fingerprint and (fp32.dtype, bf16.dtype) == ("float32", "bfloat16")
        first = g.view.measure(fp32, ["knowmem_f"])
        other = g.view.measure(bf16, ["knowmem_f"])
        assert other is not first
        assert g.view.measure(fp32, ["knowmem_f"]) is first  # and the same model is measured once
    with Gate(run, ResultCache(tmp_path / "cache")) as again:  # a new process: from the cache, each under its own key
        cached = again.view.measure(fp32, ["knowmem_f"])
        assert cached.values == first.values and again.cache.hits == 1


def test_the_view_gives_the_data_and_the_models_the_engine_uses(
    tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_data_dir: Path
) -> None:
    run = run_config(
        model=tiny_unlearned_dir, target=tiny_model_dir, data=tiny_data_dir, device="cpu", max_samples=2, no_cache=True
    )
    with Gate(run) as g:
        assert len(g.view.data.knowmem_forget_qa) == 2  # limited by --unlearn-max-samples, like the rows
        target: Any = g.view.model("target")
        assert g.view.model("target") is target  # loaded once
        before = {n: p.detach().clone() for n, p in target.model.named_parameters()}
        q = g.view.quantized("rtn-w8", "target")
        assert g.view.quantized("rtn-w8", "target") is q and q.details.changed_fraction > 0
        g.view.close()  # the variant is undone bit for bit
        assert all((p == before[n]).all() for n, p in target.model.named_parameters())
