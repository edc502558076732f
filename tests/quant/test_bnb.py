"""The bitsandbytes backend on the tiny checkpoints: real bnb modules, exact codebook math, the CPU repack trap."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from quant_helpers import assert_bit_identical, logits, snapshot

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes", reason="the bnb backend needs bitsandbytes: pip install 'unlearn-assert[bnb]'")

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as bnbF  # noqa: E402
from torch import nn  # noqa: E402

from unlearn_assert.errors import BackendUnavailable, ModelError, QuantizerError  # noqa: E402
from unlearn_assert.models import LoadedModel, load_model  # noqa: E402
from unlearn_assert.quant import quantized  # noqa: E402
from unlearn_assert.quant.bnb import dequantized_weight  # noqa: E402

IDS = ["bnb-fp4", "bnb-nf4", "bnb-int8"]

# On CUDA, bnb warns on every forward of a layer whose in_features is not a multiple of 64 (the tiny
# model's 96) that it uses its dequantize + matmul path instead of the fused kernel: a speed note.
pytestmark = pytest.mark.filterwarnings("ignore:inner dimension .* is not aligned for fast kernel:UserWarning")
LAYER = {"bnb-fp4": bnb.nn.Linear4bit, "bnb-nf4": bnb.nn.Linear4bit, "bnb-int8": bnb.nn.Linear8bitLt}

#: The codebooks written out, not taken from the library. FP4 (1 sign, 2 exponent, 1 mantissa bit,
#: bnb's bias) has magnitudes {0, 0.0625, 2, 3, 4, 6, 8, 12} normalised by 12; NF4 is QLoRA's table.
FP4 = [s * m / 12 for s in (1, -1) for m in (0, 0.0625, 8, 12, 4, 6, 2, 3)]
NF4 = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
]


def _source_weight(loaded: LoadedModel, name: str) -> torch.Tensor:
    return loaded.model.get_submodule(name).weight.detach()


@pytest.mark.parametrize("qid", IDS)
def test_each_id_takes_effect_on_a_copy(unlearned: LoadedModel, target: LoadedModel, qid: str) -> None:
    before = snapshot(unlearned)
    fp_logits = logits(unlearned.model, unlearned.tokenizer)
    linears = [n for n, m in unlearned.model.named_modules() if isinstance(m, nn.Linear)]
    with quantized(unlearned, qid, target=target) as q:
        report = q.details
        assert q.model is not unlearned.model
        assert report.modules == [n for n in linears if n != "lm_head"]
        assert all(isinstance(q.model.get_submodule(n), LAYER[qid]) for n in report.modules)
        assert type(q.model.get_submodule("lm_head")) is nn.Linear
        assert not torch.equal(logits(q.model, q.tokenizer), fp_logits)
        assert torch.equal(logits(unlearned.model, unlearned.tokenizer), fp_logits)  # the source is usable meanwhile
    assert_bit_identical(unlearned, before)
    assert (report.bits, report.group_size, report.backend) == (
        (8, None, "bnb") if qid == "bnb-int8" else (4, 64, "bnb")
    )
    assert report.changed_fraction > 0
    assert report.n_weights == sum(_source_weight(unlearned, n).numel() for n in report.modules)
    assert 0 < report.code_agreement < 1  # type: ignore[operator]
    for value in (report.small_delta_fraction, report.same_cell_fraction):
        assert value is not None and 0 < value <= 1


@pytest.mark.parametrize("qid", IDS)
def test_code_agreement_with_itself_is_one(tiny_model_dir: Path, target: LoadedModel, qid: str) -> None:
    twin = load_model(tiny_model_dir, device="cpu")
    for other in (twin, target):
        with quantized(target, qid, target=other) as q:
            assert q.details.code_agreement == 1.0
            assert q.details.small_delta_fraction == 1.0 and q.details.same_cell_fraction == 1.0


@pytest.mark.parametrize("scheme, book", [("fp4", FP4), ("nf4", NF4)])
def test_4bit_dequant_is_nearest_codebook_value(unlearned: LoadedModel, scheme: str, book: list[float]) -> None:
    """Independent FP4/NF4: absmax per block of 64 consecutive weights of the row-major weight (a
    block can span two rows when in_features is not a multiple of 64), nearest codebook value of
    w / absmax, times absmax.
    Exact ties (w / absmax exactly on a float32 midpoint) would go to the lower value in bnb
    (bucketize on midpoints); argmin over the sorted distinct values does the same, and none occur here."""
    code = torch.tensor(book)
    assert torch.equal(torch.sort(code).values, torch.sort(bnbF.get_4bit_type(scheme, device="cpu")).values)
    with quantized(unlearned, f"bnb-{scheme}") as q:
        for name in q.details.modules:
            w = _source_weight(unlearned, name)
            expected = _nearest_codebook(w, book)
            got = dequantized_weight(q.model.get_submodule(name))
            assert got.dtype == w.dtype and torch.equal(got, expected), name


def _nearest_codebook(w: torch.Tensor, book: list[float]) -> torch.Tensor:
    """Nearest codebook value of each weight / its block's absmax, times that absmax (float32).
    Scaled as bnb does, by the float32 reciprocal ``w * (1 / absmax)`` (dividing gave the same codes
    on these weights; either can differ from the other for a weight within an ulp of a midpoint)."""
    levels = torch.unique(torch.tensor(book))
    blocks = w.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    nearest = (blocks * (1 / absmax)).unsqueeze(-1).sub(levels).abs().argmin(dim=-1)
    return (levels[nearest] * absmax).reshape(w.shape)


@pytest.mark.parametrize("scheme, book", [("fp4", FP4), ("nf4", NF4)])
def test_misaligned_layer_on_cpu_uses_flat_blocks(scheme: str, book: list[float]) -> None:
    """bnb 0.50.2's native CPU dequantization misreads the block scales of a layer whose in_features
    (96) is not a multiple of 64; the backend's layers compute with the true FP4/NF4 weights instead."""
    from unlearn_assert.quant.bnb import misaligned_on_cpu, prepare_4bit_layers

    torch.manual_seed(0)
    fp = nn.Linear(96, 32)
    layer = bnb.nn.Linear4bit(
        96, 32, bias=True, compute_dtype=torch.float32, compress_statistics=False, quant_type=scheme
    )
    layer.weight = bnb.nn.Params4bit(
        fp.weight.data.clone(), requires_grad=False, compress_statistics=False, quant_type=scheme, module=layer
    )
    layer.bias = nn.Parameter(fp.bias.data.clone(), requires_grad=False)
    layer = layer.to("cpu")  # quantizes with bnb.functional.quantize_4bit
    prepare_4bit_layers(layer)
    expected = _nearest_codebook(fp.weight.detach(), book)
    assert misaligned_on_cpu(layer) and torch.equal(dequantized_weight(layer), expected)
    x = torch.randn(5, 96)
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(x, expected, fp.bias))


def test_int8_is_rowwise_absmax_and_ignores_the_outlier_threshold(
    unlearned: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    """LLM.int8 stores round(w * 127 / rowabsmax) of the fp16-cast weight, dequantized as
    codes * rowabsmax / 127; its 6.0 outlier threshold only splits activations at matmul time.
    Rounding detail: bnb multiplies by the float32 scale ``127 / rowabsmax`` (one extra rounding), so
    a weight within an ulp of a .5 boundary can land on the neighbouring code (3 of 81920 did on an
    earlier tiny model) against the exact float64 formula; at most 1e-3 of the weights may. The per-forward fp16-cast
    log line is filtered."""
    with quantized(unlearned, "bnb-int8") as q:
        expected = {}
        off = 0
        for name in q.details.modules:
            w16 = _source_weight(unlearned, name).half().float()
            rowabsmax = w16.abs().amax(dim=1, keepdim=True)
            codes = torch.round(w16 * (127 / rowabsmax))
            off += int((codes != torch.round(w16.double() * 127 / rowabsmax.double())).sum())
            module = q.model.get_submodule(name)
            assert module.state.threshold == 6.0 and torch.equal(module.weight.data.float(), codes), name
            expected[name] = codes * rowabsmax / 127
            assert torch.equal(dequantized_weight(module), expected[name]), name
        assert off <= 1e-3 * q.details.n_weights
        layer = q.model.get_submodule(q.details.modules[0])
        x = torch.randn(3, layer.in_features)
        x[:, 0] = 10.0  # an outlier column above the threshold
        with caplog.at_level(logging.WARNING), torch.no_grad():
            layer(x)
            logits(q.model, q.tokenizer)
        assert not [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
        for name in q.details.modules:  # after a forward CB/SCB live in module.state: still the same weight
            assert torch.equal(dequantized_weight(q.model.get_submodule(name)), expected[name]), name
    assert not logging.getLogger("bitsandbytes.autograd._functions").filters


@pytest.mark.parametrize("qid", ["bnb-fp4", "bnb-nf4"])
def test_forward_keeps_4bit_weights_and_report_right(unlearned: LoadedModel, target: LoadedModel, qid: str) -> None:
    """The AVX512-BF16 repack trap: the backend disables the repack, so after forwards the layers hold
    the same codes, the model computes exactly with the dequantized weights, and a layer repacked
    anyway (forced here) still dequantizes right, up to the bf16 rounding of its absmax. bnb can
    only repack layers with in_features % 64 == 0 and out_features % 32 == 0 (others crash in the
    repack), so the forced part uses such a layer."""
    with quantized(unlearned, qid, target=target) as q:
        report = q.details.to_dict()
        before = {n: dequantized_weight(q.model.get_submodule(n)) for n in q.details.modules}
        q_logits = logits(q.model, q.tokenizer)
        logits(q.model, q.tokenizer)
        for name in q.details.modules:
            module = q.model.get_submodule(name)
            assert not getattr(module.weight.quant_state, "packing_format_for_cpu", False)
            assert module.weight.data.shape == (module.in_features * module.out_features // 2, 1)
            assert torch.equal(dequantized_weight(module), before[name]), name
        assert q.details.to_dict() == report
        fp = load_model(unlearned.path, device="cpu")
        for name, w_hat in before.items():
            fp.model.get_submodule(name).weight.data.copy_(w_hat)
        assert torch.allclose(q_logits, logits(fp.model, fp.tokenizer), atol=1e-5, rtol=0)

        name = next(n for n in q.details.modules if before[n].shape[1] % 64 == 0 and before[n].shape[0] % 32 == 0)
        module = q.model.get_submodule(name)
        module.support_avx512bf16_for_cpu = True
        if bnbF.has_avx512bf16():  # the real trap
            with torch.no_grad():
                module(torch.randn(2, module.in_features))
        else:  # what that forward does
            module.weight.data, module.weight.quant_state = bnbF._convert_weight_packed_for_cpu(
                module.weight.data, module.weight.quant_state
            )
        assert module.weight.quant_state.packing_format_for_cpu
        assert torch.allclose(dequantized_weight(module), before[name], rtol=2**-8, atol=0)


def test_bf16_model_and_skip_modules(tiny_unlearned_dir: Path) -> None:
    loaded = load_model(tiny_unlearned_dir, device="cpu", dtype="bfloat16")
    before = snapshot(loaded)
    with quantized(loaded, "bnb-nf4", skip_modules=("lm_head", "down_proj")) as q:
        assert q.details.modules and not any(n.endswith(("down_proj", "lm_head")) for n in q.details.modules)
        assert type(q.model.get_submodule("model.layers.0.mlp.down_proj")) is nn.Linear
        layer = q.model.get_submodule(q.details.modules[0])
        assert layer.compute_dtype == torch.bfloat16 and dequantized_weight(layer).dtype == torch.bfloat16
        assert q.details.changed_fraction > 0 and q.details.code_agreement is None
    assert_bit_identical(loaded, before)
    with pytest.raises(QuantizerError, match="took no effect"):
        with quantized(loaded, "bnb-fp4", skip_modules=("*",)):
            pytest.fail("the body must not run")


def test_refuses_a_mismatched_target_or_a_model_that_differs_from_its_directory(
    unlearned: LoadedModel, tiny_unlearned_dir: Path
) -> None:
    other = LoadedModel(model=nn.Sequential(nn.Linear(3, 3)), tokenizer=None, path="other", fingerprint="0" * 64)
    with pytest.raises(ModelError, match="other"):
        with quantized(unlearned, "bnb-nf4", target=other):
            pytest.fail("the body must not run")
    edited = load_model(tiny_unlearned_dir, device="cpu")
    with torch.no_grad():
        edited.model.get_submodule("model.layers.1.mlp.up_proj").weight.add_(0.1)
    with pytest.raises(ModelError, match="differs from its directory"):
        with quantized(edited, "bnb-int8"):
            pytest.fail("the body must not run")


def test_without_bitsandbytes_the_backend_is_unavailable(
    unlearned: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m == "bitsandbytes" or m.startswith("bitsandbytes.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]  # None: "import bitsandbytes" fails
    monkeypatch.delitem(sys.modules, "unlearn_assert.quant.bnb", raising=False)
    with pytest.raises(BackendUnavailable) as info:
        with quantized(unlearned, "bnb-fp4"):
            pytest.fail("the body must not run")
    assert info.value.install == "pip install 'unlearn-assert[bnb]'" and "bitsandbytes" in str(info.value)


@pytest.mark.gpu
def test_bnb_on_cuda(tiny_model_dir: Path, tiny_unlearned_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    t = load_model(tiny_model_dir, device="cuda")
    u = load_model(tiny_unlearned_dir, device="cuda")
    fp_logits = logits(u.model, u.tokenizer)
    before = snapshot(u)
    for qid in IDS:
        with quantized(u, qid, target=t) as q:
            layer = q.model.get_submodule(q.details.modules[0])
            assert isinstance(layer, LAYER[qid]) and layer.weight.device.type == "cuda"
            assert q.details.changed_fraction > 0 and 0 < q.details.code_agreement < 1  # type: ignore[operator]
            assert not torch.equal(logits(q.model, q.tokenizer), fp_logits)
        with quantized(t, qid, target=t) as q:
            assert q.details.code_agreement == 1.0
    assert_bit_identical(u, before)
