"""GPTQ and AWQ through llm-compressor on the tiny checkpoints, and the cross-checks against rtn.

The tiny model's layers are 96 and 192 columns wide, so the ids here use groups of 32 (128 does
not divide 192: that case is the clear-error test).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from quant_helpers import assert_bit_identical, snapshot

torch = pytest.importorskip("torch")
pytest.importorskip(
    "llmcompressor", reason="the gptq/awq backends need llm-compressor: pip install 'unlearn-assert[gptq]'"
)

from torch import nn  # noqa: E402

from unlearn_assert.data.muse import load_data  # noqa: E402
from unlearn_assert.errors import QuantizerError  # noqa: E402
from unlearn_assert.models import LoadedModel, load_model  # noqa: E402
from unlearn_assert.quant import get_backend, quant_fingerprint, quantized  # noqa: E402
from unlearn_assert.quant.calibration import Calibration, calibration_from_data  # noqa: E402
from unlearn_assert.quant.llmc import GptqBackend, LlmcBackend, _quiet  # noqa: E402
from unlearn_assert.quant.rtn import rtn_codes, rtn_params  # noqa: E402


@pytest.fixture(scope="module")
def calibration(tiny_data_dir: Path) -> Calibration:
    cal = calibration_from_data(load_data(tiny_data_dir))
    assert cal is not None
    return cal


def _linears(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"
    }


@pytest.mark.parametrize("qid", ["gptq-w4g32", "gptq-w8g32", "awq-w4g32"])
def test_backend_takes_effect_reports_and_leaves_the_source_alone(
    qid: str, unlearned: LoadedModel, target: LoadedModel, calibration: Calibration
) -> None:
    before = snapshot(unlearned)
    ids = unlearned.tokenizer("The river flows", return_tensors="pt")
    with torch.no_grad():
        base = unlearned.model(**ids).logits
    with quantized(unlearned, qid, target=target, calibration=calibration) as q:
        assert q.model is not unlearned.model  # a copy: the source is never written to
        r = q.details
        assert (r.backend, r.bits, r.group_size) == (q.spec.backend, q.spec.bits, 32)
        assert r.bits == int(qid.split("-")[1][1])
        assert r.symmetric is qid.startswith("gptq")
        assert len(r.modules) == 14 and "lm_head" not in r.modules
        assert r.n_weights == sum(w.numel() for w in _linears(unlearned.model).values())
        assert r.changed_fraction > 0.5
        assert r.code_agreement is not None and 0.0 < r.code_agreement <= 1.0
        assert r.same_cell_fraction is None
        assert (r.small_delta_fraction is None) is qid.startswith("awq")
        with torch.no_grad():
            moved = (q.model(**ids).logits - base).abs().max().item()
        assert moved > 1e-4
        assert not any(hasattr(m, "weight_scale") or "forward" in m.__dict__ for m in q.model.modules())
    assert_bit_identical(unlearned, before)


def test_perturbed_model_agrees_less_than_the_target_with_itself(
    unlearned: LoadedModel, target: LoadedModel, calibration: Calibration
) -> None:
    with quantized(target, "gptq-w4g32", target=target, calibration=calibration) as q:
        self_agreement = q.details.code_agreement
    with quantized(unlearned, "gptq-w4g32", target=target, calibration=calibration) as q:
        other = q.details.code_agreement
    assert self_agreement == 1.0  # deterministic: T quantized twice gives the same codes
    assert other is not None and other < 0.99


def test_calibrated_results_are_deterministic_and_keyed_by_calibration(
    target: LoadedModel, calibration: Calibration
) -> None:
    with quantized(target, "gptq-w4g32", calibration=calibration) as q:
        first = _linears(q.model)
        fp1 = q.fingerprint
    with quantized(target, "gptq-w4g32", calibration=calibration) as q:
        second = _linears(q.model)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = Calibration(texts=("A different calibration text about rivers and towns. " * 40,), source="test")
    with quantized(target, "gptq-w4g32", calibration=other) as q:
        third = _linears(q.model)
        fp3 = q.fingerprint
    assert fp1 != fp3
    assert any(not torch.equal(first[k], third[k]) for k in first)  # GPTQ really used the text
    spec_fp = quant_fingerprint(target.fingerprint, q.spec, calibration=calibration)
    assert spec_fp == fp1


def test_materialized_weights_give_the_librarys_own_forward(target: LoadedModel, calibration: Calibration) -> None:
    from llmcompressor.pipelines.cache import IntermediatesCache

    pin_memory = IntermediatesCache.__dict__["pin_memory"]
    backend = get_backend("awq-w4g32")
    ids = target.tokenizer("The council met on Tuesday", return_tensors="pt")
    model, names = backend._quantize_copy(target, calibration, ("lm_head",))
    # AWQ's CPU workaround was for its own oneshot call: llm-compressor is left as it was
    assert IntermediatesCache.__dict__["pin_memory"] is pin_memory
    with torch.no_grad(), _quiet():
        library = model(**ids).logits  # compressed-tensors' fake-quantizing forward
    LlmcBackend._finish(model, names, "cpu")
    assert not any(hasattr(m, "weight_scale") or "forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        plain = model(**ids).logits
    assert torch.equal(library, plain)


def test_rtn_equals_llmcompressor_rtn_once_scales_are_aligned(target: LoadedModel) -> None:
    """llm-compressor's symmetric int grid: s = absmax / 7.5, codes in [-8, 7] (4 bits); ours:
    s = absmax / 7, codes in [-7, 7]. On llm-compressor's scale our rounding gives its codes,
    except that a group's most negative weight (-absmax / s = -7.5, a tie) can round to -8 there
    and is clamped to -7 here (8 bits: 127.5, -128 vs -127); and a weight exactly between two
    codes can round the other way because it divides in float32 where we use float64."""
    import copy

    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import quantize
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    for bits, half in ((4, 7.5), (8, 127.5)):
        model = copy.deepcopy(target.model)
        weights = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=32)
        with _quiet():
            oneshot(
                model=model,
                recipe=QuantizationModifier(
                    config_groups={"g": QuantizationScheme(targets=["Linear"], weights=weights)}, ignore=["lm_head"]
                ),
            )
        n_edge = n_tie = n_all = 0
        for name, w in _linears(target.model).items():
            mod = model.get_submodule(name)
            lc_codes = quantize(w, mod.weight_scale, mod.weight_zero_point, weights).to(torch.int32)
            ours_scale, zero = rtn_params(w, bits, 32)
            top = 2 ** (bits - 1) - 1
            torch.testing.assert_close(mod.weight_scale.double(), ours_scale * top / half, rtol=1e-6, atol=0)
            ours = rtn_codes(w, bits, 32, params=(mod.weight_scale.double(), zero))
            differ = ours != lc_codes
            absmax = w.abs().reshape(w.shape[0], -1, 32).amax(-1).repeat_interleave(32, dim=1)
            ratio = w.double() / mod.weight_scale.double().repeat_interleave(32, dim=1)
            edge = differ & (lc_codes == -(top + 1)) & (ours == -top) & (w == -absmax)
            # the only other differences are ties: w / s within float32 rounding of k + 0.5, which
            # llm-compressor divides in float32 and we in float64, one code apart
            tie = differ & ((ratio - ratio.floor() - 0.5).abs() < 1e-5) & ((ours - lc_codes).abs() == 1)
            assert torch.equal(differ, edge | tie)
            n_edge += int(edge.sum())
            n_tie += int(tie.sum())
            n_all += w.numel()
        assert n_edge > 0  # the difference is real, not vacuous
        assert n_tie < 0.05 * n_all  # bf16-saved weights hit exact ties often (1.4% at 4 bits here)


def test_gptq_with_an_identity_hessian_is_rtn(target: LoadedModel, calibration: Calibration) -> None:
    """With H dominated by its damping (H ~ c I) GPTQ has no error to compensate: its codes are
    round-to-nearest's on the same scales, i.e. rtn's codes on llm-compressor's scale."""
    backend = GptqBackend(get_backend("gptq-w4g32").spec)
    backend.dampening_frac = 1e8
    model, names = backend._quantize_copy(target, calibration, ("lm_head",))
    ordinary = get_backend("gptq-w4g32")
    model_h, _ = ordinary._quantize_copy(target, calibration, ("lm_head",))
    identity = LlmcBackend._finish(model, names, "cpu")
    hessian = LlmcBackend._finish(model_h, names, "cpu")
    source = _linears(target.model)
    differs = 0
    for name in names:
        codes, _, scale = identity[name]
        h_codes = hessian[name][0]
        scale = scale.double()
        w = source[name]
        ours = rtn_codes(w, 4, 32, params=(scale, torch.zeros_like(scale)))
        edge = codes == -8
        assert torch.equal(ours[~edge].to(torch.int8), codes[~edge])
        differs += int((h_codes != codes).sum())
    assert differs > 0  # with the real Hessian GPTQ does move codes: the check can fail


def test_group_size_that_does_not_divide_is_one_clear_error(target: LoadedModel, calibration: Calibration) -> None:
    with pytest.raises(QuantizerError, match=r"group size 128 does not divide .*\(96\).*pick a group size"):
        with quantized(target, "gptq-w4g128", calibration=calibration):
            pass


def test_missing_calibration_is_an_error(target: LoadedModel) -> None:
    with pytest.raises(QuantizerError, match="needs calibration text"):
        with quantized(target, "awq-w4g32"):
            pass


@pytest.mark.gpu
def test_gptq_and_awq_on_cuda(tiny_model_dir: Path, tiny_unlearned_dir: Path, calibration: Calibration) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    t = load_model(tiny_model_dir, device="cuda")
    u = load_model(tiny_unlearned_dir, device="cuda")
    before = snapshot(u)
    ids = u.tokenizer("The river flows", return_tensors="pt").to("cuda")
    for qid in ("gptq-w4g32", "awq-w4g32"):
        with quantized(u, qid, target=t, calibration=calibration) as q:
            assert all(p.device.type == "cuda" for p in q.model.parameters())
            assert q.details.changed_fraction > 0.5 and 0 < q.details.code_agreement <= 1  # type: ignore[operator]
            with torch.no_grad():
                assert torch.isfinite(q.model(**ids).logits).all()
    assert_bit_identical(u, before)


def test_a_library_failure_is_one_clear_error(
    target: LoadedModel, calibration: Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unlearn_assert.quant.llmc as llmc

    def broken(**_: object) -> None:
        raise RuntimeError("no mapping for this layer\nsecond line")

    monkeypatch.setattr(llmc, "oneshot", broken)
    with pytest.raises(
        QuantizerError,
        match=r"llm-compressor could not run gptq-w4g32 on this LlamaForCausalLM \(RuntimeError: no mapping",
    ) as info:
        with quantized(target, "gptq-w4g32", calibration=calibration):
            pass
    assert "\n" not in str(info.value)


def test_quantized_copies_are_freed(unlearned: LoadedModel, target: LoadedModel, calibration: Calibration) -> None:
    """llm-compressor's session and torch.fx's patch table would keep every copy alive."""
    import gc
    import weakref

    refs = []
    for qid in ("gptq-w4g32", "awq-w4g32"):
        with quantized(unlearned, qid, target=target, calibration=calibration) as q:
            refs.append(weakref.ref(q.model))
        del q
        gc.collect()
    assert [r() for r in refs] == [None, None]


def test_a_group_wider_than_a_layer_is_refused_up_front(target: LoadedModel, calibration: Calibration) -> None:
    with pytest.raises(QuantizerError, match=r"group size 256 does not divide .*\(96\)"):
        with quantized(target, "gptq-w4g256", calibration=calibration):
            pass


def test_target_codes_are_reused_by_the_next_unlearned_row(
    unlearned: LoadedModel, target: LoadedModel, calibration: Calibration, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate computes q(T) before q(U) and hands T's codes over: U's code agreement must then
    not quantize T again, and must equal the agreement computed from scratch."""
    import unlearn_assert.quant.llmc as llmc

    with quantized(unlearned, "gptq-w4g32", target=target, calibration=calibration) as q:
        scratch = q.details.code_agreement
    calls = []
    real = llmc.oneshot
    monkeypatch.setattr(llmc, "oneshot", lambda **kw: (calls.append(kw["model"]), real(**kw))[1])
    with quantized(target, "gptq-w4g32", calibration=calibration) as qt:
        grid = qt.backend.codes
    assert grid is not None and set(grid) == set(qt.details.modules)
    with quantized(unlearned, "gptq-w4g32", target=target, calibration=calibration, target_codes=grid) as q:
        reused = q.details.code_agreement
    assert len(calls) == 2 and reused == scratch


def test_the_engine_runs_gptq_once_per_model_for_a_recovery_item(
    tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unlearn_assert.quant.llmc as llmc
    from unlearn_assert.config import build_run_config
    from unlearn_assert.engine import Gate

    options = {
        "model": str(tiny_unlearned_dir),
        "target": str(tiny_model_dir),
        "data": str(tiny_data_dir),
        "quantizers": "gptq-w4g32",
        "no_cache": True,
        "max_samples": 2,
    }
    run = build_run_config(lambda opt: options.get(opt.name, opt.default))
    calls = []
    real = llmc.oneshot
    monkeypatch.setattr(llmc, "oneshot", lambda **kw: (calls.append(kw["model"]), real(**kw))[1])
    with Gate(run) as g:
        verdict = g.check("gptq-w4g32", "knowmem_f")
        assert verdict.outcome in ("passed", "failed")  # computed, not skipped
        assert len(calls) == 2  # q(T) for the target row, q(U) for the unlearned row; T's codes handed over
        quant = g.rows[("unlearned", "gptq-w4g32")].details
        assert quant is not None and quant["code_agreement"] is not None
        assert quant["calibration"]["source"].startswith("raw/retain.txt of ")
        assert g._handoffs == {}  # popped by the unlearned row
