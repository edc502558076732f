"""The hqq backend on the tiny checkpoints: real HQQLinear modules swapped in and restored bit for bit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from quant_helpers import assert_bit_identical, logits, snapshot

torch = pytest.importorskip("torch")
pytest.importorskip("hqq", reason="the hqq backend needs hqq: pip install 'unlearn-assert[hqq]'")

from hqq.core.quantize import HQQLinear  # noqa: E402
from torch import nn  # noqa: E402

from unlearn_assert.errors import BackendUnavailable, ModelError, QuantizerError  # noqa: E402
from unlearn_assert.models import LoadedModel, load_model  # noqa: E402
from unlearn_assert.quant import get_backend, quantized  # noqa: E402
from unlearn_assert.quant.hqq import hqq_codes  # noqa: E402

IDS = ["hqq-w4g64", "hqq-w8g64", "hqq-w3g32"]


def _snapshot(loaded: LoadedModel) -> tuple[dict[str, torch.Tensor], dict[str, nn.Module]]:
    return snapshot(loaded), dict(loaded.model.named_modules())


def _assert_restored(loaded: LoadedModel, before: tuple[dict[str, torch.Tensor], dict[str, nn.Module]]) -> None:
    values, modules = before
    assert_bit_identical(loaded, values)
    now = dict(loaded.model.named_modules())
    assert now.keys() == modules.keys() and all(now[n] is modules[n] for n in modules)  # the very same module objects


@pytest.mark.parametrize("qid", IDS)
def test_each_id_takes_effect_and_restores(unlearned: LoadedModel, target: LoadedModel, qid: str) -> None:
    before = _snapshot(unlearned)
    fp_logits = logits(unlearned.model, unlearned.tokenizer)
    linears = [n for n, m in unlearned.model.named_modules() if isinstance(m, nn.Linear)]
    with quantized(unlearned, qid, target=target) as q:
        report = q.details
        assert report.modules == [n for n in linears if n != "lm_head"]
        assert all(isinstance(q.model.get_submodule(n), HQQLinear) for n in report.modules)
        assert type(q.model.get_submodule("lm_head")) is nn.Linear
        assert not torch.equal(logits(q.model, q.tokenizer), fp_logits)
        assert q.details.to_dict() == report.to_dict()  # computed before the forward, unchanged by it
    _assert_restored(unlearned, before)
    assert torch.equal(logits(unlearned.model, unlearned.tokenizer), fp_logits)
    bits, group = int(qid[5]), int(qid.split("g")[1])
    assert (report.bits, report.group_size, report.symmetric) == (bits, group, False)
    assert report.changed_fraction > 0 and report.n_weights == sum(before[1][n].weight.numel() for n in report.modules)
    assert 0 < report.code_agreement < 1  # type: ignore[operator]
    for value in (report.small_delta_fraction, report.same_cell_fraction):
        assert value is not None and 0 < value <= 1


@pytest.mark.parametrize("qid", ["hqq-w4g64", "hqq-w8g64"])
def test_code_agreement_with_itself_is_one(tiny_model_dir: Path, target: LoadedModel, qid: str) -> None:
    twin = load_model(tiny_model_dir, device="cpu")
    for other in (twin, target):  # a second copy, and the very same (swapped) model
        with quantized(target, qid, target=other) as q:
            assert q.details.code_agreement == 1.0
            assert q.details.small_delta_fraction == 1.0 and q.details.same_cell_fraction == 1.0


def test_dequant_is_the_affine_grid_of_the_codes(unlearned: LoadedModel) -> None:
    """W_hat = (code - zero) * scale per group of 64 consecutive weights, with codes in [0, 15] that
    are round(w / scale + zero) clamped (hqq rounds in float32 with the reciprocal of the scale)."""
    with quantized(unlearned, "hqq-w4g64") as q:
        for name in q.details.modules:
            layer = q.model.get_submodule(name)
            w = q.backend.swapped[name].weight.detach()  # the original module, kept aside during the block
            codes = hqq_codes(layer).reshape(-1, 64)
            scale, zero = layer.meta["scale"].reshape(-1, 1), layer.meta["zero"].reshape(-1, 1)
            assert codes.min() >= 0 and codes.max() <= 15 and torch.equal(codes, codes.round())
            assert torch.equal(layer.dequantize(), ((codes - zero) * scale).reshape(w.shape)), name
            assert torch.equal(codes, torch.round(w.reshape(-1, 64) * (1.0 / scale) + zero).clamp(0, 15)), name


def test_restored_when_the_body_raises_and_bf16(tiny_unlearned_dir: Path) -> None:
    loaded = load_model(tiny_unlearned_dir, device="cpu", dtype="bfloat16")
    before = _snapshot(loaded)
    with pytest.raises(RuntimeError, match="boom"):
        with quantized(loaded, "hqq-w4g64", skip_modules=("lm_head", "down_proj")) as q:
            assert not any(n.endswith("down_proj") for n in q.details.modules)
            assert q.model.get_submodule(q.details.modules[0]).dequantize().dtype == torch.bfloat16
            raise RuntimeError("boom")
    _assert_restored(loaded, before)


@pytest.mark.parametrize(
    "qid, match", [("hqq-w4g64-sym", "zero point"), ("hqq-w7g64", "supports"), ("hqq-w4g12", "multiple of 8")]
)
def test_unsupported_ids_are_refused(qid: str, match: str) -> None:
    with pytest.raises(QuantizerError, match=match):
        get_backend(qid)


def test_unpackable_shapes_and_mismatched_targets_are_refused_untouched(unlearned: LoadedModel) -> None:
    before = _snapshot(unlearned)
    with pytest.raises(QuantizerError, match="cannot pack"):
        with quantized(unlearned, "hqq-w4g8192"):  # 64 x 64 weights hold 4096 values: not one group
            pytest.fail("the body must not run")
    other = LoadedModel(model=nn.Sequential(nn.Linear(3, 3)), tokenizer=None, path="other", fingerprint="0" * 64)
    with pytest.raises(ModelError, match="other"):
        with quantized(unlearned, "hqq-w4g64", target=other):
            pytest.fail("the body must not run")
    _assert_restored(unlearned, before)


def test_without_hqq_the_backend_is_unavailable(unlearned: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "hqq" or m.startswith("hqq.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "unlearn_assert.quant.hqq", raising=False)
    with pytest.raises(BackendUnavailable) as info:
        with quantized(unlearned, "hqq-w4g64"):
            pytest.fail("the body must not run")
    assert info.value.install == "pip install 'unlearn-assert[hqq]'"


@pytest.mark.gpu
def test_hqq_on_cuda(tiny_model_dir: Path, tiny_unlearned_dir: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    t = load_model(tiny_model_dir, device="cuda")
    u = load_model(tiny_unlearned_dir, device="cuda")
    before = _snapshot(u)
    with quantized(u, "hqq-w4g64", target=t) as q:
        layer = q.model.get_submodule(q.details.modules[0])
        assert isinstance(layer, HQQLinear) and layer.W_q.device.type == "cuda"
        assert q.details.changed_fraction > 0 and 0 < q.details.code_agreement < 1  # type: ignore[operator]
    _assert_restored(u, before)
