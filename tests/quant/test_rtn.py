"""RTN by hand, quantizer ids and the registry, and ``quantized()`` on the tiny checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from quant_helpers import assert_bit_identical, logits, snapshot

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import unlearn_assert.quant as quant  # noqa: E402
from unlearn_assert.errors import BackendUnavailable, ModelError, QuantizerError  # noqa: E402
from unlearn_assert.models import LoadedModel, load_model  # noqa: E402
from unlearn_assert.plain import digest  # noqa: E402
from unlearn_assert.quant import QuantDetails, QuantSpec, get_backend, parse_quantizer_id, quantized  # noqa: E402
from unlearn_assert.quant.rtn import RTNBackend, code_range, rtn_codes, rtn_params, rtn_quantize, rtn_step  # noqa: E402
from unlearn_assert.variants.quantizers import BACKENDS, BNB_4BIT_BLOCKSIZE, BackendEntry, known_ids  # noqa: E402

F32 = torch.float32


# --------------------------------------------------------------------------- hand-computed cases


def test_torch_round_is_half_to_even() -> None:
    """The whole module relies on torch.round rounding ties to even (banker's rounding)."""
    assert torch.round(torch.tensor([-3.5, -2.5, 0.5, 1.5, 2.5], dtype=torch.float64)).tolist() == [-4, -2, 0, 2, 2]


def test_symmetric_4bit_per_channel_by_hand() -> None:
    """w = [0.1, -0.35, 0.7, 0.02] (fp32), 4-bit sym: qmax = 2^3 - 1 = 7, s = max|w| / 7 = 0.7/7 ~ 0.1.
    w/s = [1.00000003, -3.5, 7, 0.2]: -0.35f / (0.7f/7) is exactly -3.5 in float64, a tie that
    round-half-to-even sends to -4 (round-half-away would give -4 too; see the next test for 2.5).
    codes = [1, -4, 7, 0], Q(w) = codes * s."""
    w = torch.tensor([[0.1, -0.35, 0.7, 0.02]], dtype=F32)
    s = float(w[0, 2]) / 7
    assert rtn_codes(w, 4).tolist() == [[1, -4, 7, 0]]
    assert torch.equal(rtn_quantize(w, 4), torch.tensor([[s, -4 * s, 7 * s, 0.0]], dtype=torch.float64).to(F32))
    scale, zero = rtn_params(w, 4)
    assert scale.tolist() == [[s]] and zero.tolist() == [[0.0]]


def test_symmetric_ties_by_hand() -> None:
    """Exact binary fractions make the ties exact: w = [0.125, -0.4375, 0.875, 0.3125, 0.03125],
    s = 0.875 / 7 = 0.125, w/s = [1, -3.5, 7, 2.5, 0.25] -> codes [1, -4, 7, 2, 0]
    (2.5 -> 2: half to even, not half away from zero), Q = [0.125, -0.5, 0.875, 0.25, 0]."""
    w = torch.tensor([[0.125, -0.4375, 0.875, 0.3125, 0.03125]])
    assert rtn_codes(w, 4).tolist() == [[1, -4, 7, 2, 0]]
    assert rtn_quantize(w, 4).tolist() == [[0.125, -0.5, 0.875, 0.25, 0.0]]


def test_asymmetric_by_hand() -> None:
    """w = [-1, 0, 0.5, 2]: zero = min = -1, range 3.
    2-bit: s = 3 / (2^2 - 1) = 1, (w - zero)/s = [0, 1, 1.5, 3] -> codes [0, 1, 2, 3], Q = [-1, 0, 1, 2].
    4-bit: s = 3 / 15 = 0.2, (w - zero)/s = [0, 5, 7.5, 15] -> codes [0, 5, 8, 15], Q = [-1, 0, 0.6, 2]."""
    w = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    assert rtn_codes(w, 2, symmetric=False).tolist() == [[0, 1, 2, 3]]
    assert rtn_quantize(w, 2, symmetric=False).tolist() == [[-1.0, 0.0, 1.0, 2.0]]
    assert rtn_codes(w, 4, symmetric=False).tolist() == [[0, 5, 8, 15]]
    assert torch.equal(rtn_quantize(w, 4, symmetric=False), torch.tensor([[-1.0, 0.0, 0.6, 2.0]]))
    assert code_range(4, False) == (0, 15) and code_range(4, True) == (-7, 7)


def test_short_last_group_by_hand() -> None:
    """in_features 5, group 2, 3-bit sym (qmax 3): groups [1, -2], [4, 0.5] and the short [3].
    s = [2/3, 4/3, 1]; w/s = [1.5, -3 | 3, 0.375 | 3] -> codes [2, -3, 3, 0, 3]
    (1.5 -> 2 half to even), Q = [4/3, -2, 4, 0, 3]: the last weight gets its own scale."""
    w = torch.tensor([[1.0, -2.0, 4.0, 0.5, 3.0]])
    assert rtn_codes(w, 3, 2).tolist() == [[2, -3, 3, 0, 3]]
    expected = torch.tensor([[2 * (2 / 3), -2.0, 4.0, 0.0, 3.0]], dtype=torch.float64).to(F32)
    assert torch.equal(rtn_quantize(w, 3, 2), expected)
    assert rtn_params(w, 3, 2)[0].tolist() == [[2 / 3, 4 / 3, 1.0]]
    assert rtn_step(w, 3, 2).tolist() == [[2 / 3, 2 / 3, 4 / 3, 4 / 3, 1.0]]


def test_all_zero_group_gives_zero_not_nan() -> None:
    """[0, 0 | 1, -1] in groups of 2: the zero group's scale is set to 1, codes 0, Q 0."""
    w = torch.tensor([[0.0, 0.0, 1.0, -1.0]])
    high = code_range(4, True)[1]
    assert rtn_codes(w, 4, 2).tolist() == [[0, 0, high, -high]]
    assert rtn_quantize(w, 4, 2).tolist() == w.tolist()
    assert rtn_params(w, 4, 2)[0].tolist() == [[1.0, 1.0 / high]]


def test_more_bits_can_increase_the_actual_error() -> None:
    """Why the property test bounds the error by the coarser half step instead: w = [0.875, 0.125]
    is on the 4-bit grid (s = 0.125, codes [7, 1]) but not on the 5-bit one (s = 0.875/15,
    0.125/s = 2.14 -> 2, Q = 0.1167), because multiples of 1/7 and 1/15 are not nested."""
    w = torch.tensor([[0.875, 0.125]])
    assert torch.equal(rtn_quantize(w, 4), w)
    assert float((rtn_quantize(w, 5) - w).abs().max()) > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(bits=1),
        dict(bits=9),
        dict(bits=4, group_size=0),
        dict(bits=4, w=torch.tensor([[1, 2]])),
        dict(bits=4, w=torch.zeros(2, 0)),
    ],
)
def test_invalid_math_arguments(kwargs: dict[str, Any]) -> None:
    w = kwargs.pop("w", torch.ones(2, 4))
    with pytest.raises(QuantizerError):
        rtn_quantize(w, **kwargs)


def test_params_of_the_wrong_shape_are_refused() -> None:
    w = torch.ones(2, 4)
    with pytest.raises(QuantizerError, match="group shape"):
        rtn_codes(w, 4, 2, params=rtn_params(w, 4, None))


# --------------------------------------------------------------------------- ids and the registry


@pytest.mark.parametrize(
    "qid, expected",
    [
        ("rtn-w4g128", ("rtn", 4, 128, True, None)),
        ("rtn-w8", ("rtn", 8, None, True, None)),
        ("rtn-w4g64-asym", ("rtn", 4, 64, False, None)),
        ("rtn-w3g64", ("rtn", 3, 64, True, None)),
        ("rtn-w2g2-sym", ("rtn", 2, 2, True, None)),
        (" rtn-w8 ", ("rtn", 8, None, True, None)),
    ],
)
def test_good_ids_parse(qid: str, expected: tuple[Any, ...]) -> None:
    spec = parse_quantizer_id(qid)
    assert (spec.backend, spec.bits, spec.group_size, spec.symmetric, spec.scheme) == expected
    assert spec.id == qid.strip()


def test_canonical_ids() -> None:
    assert parse_quantizer_id("rtn-w8-sym").canonical_id == "rtn-w8"
    assert parse_quantizer_id("rtn-w4g64-asym").canonical_id == "rtn-w4g64-asym"
    for qid in known_ids():
        assert parse_quantizer_id(qid).canonical_id == qid


@pytest.mark.parametrize(
    "qid",
    [
        "nope",
        "",
        "rtn",
        "rtn-w",
        "rtn-w1",
        "rtn-w9g128",
        "rtn-w4g1",
        "rtn-w4g0",
        "rtn-w04g128",
        "rtn-w4g128-foo",
        "RTN-w4",
        "rtn-w4 g128",
        "rtn_w4",
        "rtn-w4g128asym",
        "gptq-w4",
        "awq-w4g128-int",
        "bnb-fp8",
        "hqq-w4",
    ],
)
def test_bad_ids_are_rejected_listing_known_ids(qid: str) -> None:
    with pytest.raises(QuantizerError) as info:
        parse_quantizer_id(qid)
    message = str(info.value)
    assert "\n" not in message
    assert all(known in message for known in known_ids()), message
    assert "rtn-w<bits>[g<group>][-asym]" in message


def test_non_string_id_is_rejected() -> None:
    with pytest.raises(QuantizerError, match="must be a string"):
        parse_quantizer_id(4)  # type: ignore[arg-type]


def test_registering_a_backend_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """The grammar of the future backends is already known; registering one makes its ids parse."""
    monkeypatch.delitem(BACKENDS, "gptq", raising=False)
    with pytest.raises(QuantizerError):
        parse_quantizer_id("gptq-w4g128")
    for name in ("gptq", "awq"):
        monkeypatch.setitem(BACKENDS, name, BackendEntry(f"unlearn_assert.quant.{name}:Backend"))
    assert parse_quantizer_id("bnb-fp4") == QuantSpec("bnb-fp4", "bnb", 4, BNB_4BIT_BLOCKSIZE, True, "fp4")
    assert parse_quantizer_id("bnb-nf4").scheme == "nf4"
    assert parse_quantizer_id("bnb-int8") == QuantSpec("bnb-int8", "bnb", 8, None, True, "int8")
    assert parse_quantizer_id("gptq-w4g128") == QuantSpec("gptq-w4g128", "gptq", 4, 128, True, None)
    assert parse_quantizer_id("awq-w4g128").symmetric is False
    assert parse_quantizer_id("hqq-w4g64") == QuantSpec("hqq-w4g64", "hqq", 4, 64, False, None)
    assert {"bnb-fp4", "gptq-w4g128", "hqq-w4g64"} <= set(known_ids())
    for bad in ("bnb-fp8", "gptq-w4", "awq-w9g128"):
        with pytest.raises(QuantizerError, match="bnb-fp4"):
            parse_quantizer_id(bad)


def test_validate_variant_list() -> None:
    from unlearn_assert.variants import validate_variant_list

    assert validate_variant_list("rtn-w4g128, rtn-w8") == ("rtn-w4g128", "rtn-w8")
    assert validate_variant_list(" rtn-w4g128\n rtn-w3g64,rtn-w8 ") == ("rtn-w4g128", "rtn-w3g64", "rtn-w8")
    for text, match in [
        ("", "no quantizers"),
        ("  ", "no quantizers"),
        ("rtn-w8,,rtn-w4g128", "empty entry"),
        ("rtn-w8,", "empty entry"),
        ("rtn-w8 rtn-w8", "twice"),
        ("rtn-w8, rtn-w8-sym", "twice"),
        ("rtn-w8, nope", "unknown quantizer 'nope'"),
    ]:
        with pytest.raises(QuantizerError, match=match):
            validate_variant_list(text)


def test_get_backend() -> None:
    assert isinstance(get_backend("rtn-w4g128"), RTNBackend)
    assert get_backend(parse_quantizer_id("rtn-w8")).spec.bits == 8


def test_missing_library_becomes_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    hint = "pip install 'unlearn-assert[bnb]'"
    monkeypatch.setitem(BACKENDS, "bnb", BackendEntry("unlearn_assert_no_such_library_xyz:Backend", install=hint))
    with pytest.raises(BackendUnavailable) as info:
        get_backend("bnb-nf4")
    assert info.value.install == hint and hint in str(info.value) and "\n" not in str(info.value)


def test_import_error_inside_the_package_is_a_bug_not_a_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS, "bnb", BackendEntry("unlearn_assert.quant.no_such_module:Backend"))
    with pytest.raises(ModuleNotFoundError):
        get_backend("bnb-nf4")


def test_spec_and_package_do_not_import_torch() -> None:
    code = (
        "import sys, unlearn_assert.quant, unlearn_assert.variants.quantizers; assert 'torch' not in sys.modules, "
        "'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- quantized() on the tiny checkpoints


def _linear_names(loaded: LoadedModel) -> list[str]:
    return [n for n, m in loaded.model.named_modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("qid", ["rtn-w4g128", "rtn-w8", "rtn-w3g64", "rtn-w4g64-asym"])
def test_quantized_restores_bit_exactly(unlearned: LoadedModel, target: LoadedModel, qid: str) -> None:
    before = snapshot(unlearned)
    fp_logits = logits(unlearned.model, unlearned.tokenizer)
    with quantized(unlearned, qid, target=target) as q:
        assert not torch.equal(logits(q.model, q.tokenizer), fp_logits)
        report = q.details
    assert_bit_identical(unlearned, before)
    assert torch.equal(logits(unlearned.model, unlearned.tokenizer), fp_logits)
    assert report.changed_fraction > 0
    assert "lm_head" not in report.modules and report.modules == [n for n in _linear_names(unlearned) if n != "lm_head"]
    assert report.n_weights == sum(unlearned.model.get_submodule(n).weight.numel() for n in report.modules)
    assert 0 < report.code_agreement < 1  # type: ignore[operator]
    for value in (report.small_delta_fraction, report.same_cell_fraction):
        assert value is not None and 0 <= value <= 1
    assert report.seconds >= 0


def test_restored_when_the_body_raises(unlearned: LoadedModel) -> None:
    before = snapshot(unlearned)
    with pytest.raises(RuntimeError, match="boom"):
        with quantized(unlearned, "rtn-w4g128"):
            raise RuntimeError("boom")
    assert_bit_identical(unlearned, before)


def test_code_agreement_with_itself_is_one(tiny_model_dir: Path, target: LoadedModel) -> None:
    twin = load_model(tiny_model_dir, device="cpu")
    for other in (twin, target):  # a second copy, and the very same object
        with quantized(target, "rtn-w4g128", target=other) as q:
            assert q.details.code_agreement == 1.0
            assert q.details.small_delta_fraction == 1.0 and q.details.same_cell_fraction == 1.0


def test_report_without_target_and_view_attributes(unlearned: LoadedModel) -> None:
    with quantized(unlearned, "rtn-w8-sym") as q:
        assert q.tokenizer is unlearned.tokenizer and q.path == unlearned.path and q.source is unlearned
        assert q.device == unlearned.device and q.dtype == unlearned.dtype and q.info["quantizer"] == "rtn-w8-sym"
        assert q.details.code_agreement is None and q.details.small_delta_fraction is None
        data = json.loads(json.dumps(q.details.to_dict()))
        assert QuantDetails.from_dict(data) == q.details
        assert data["quantizer"] == "rtn-w8-sym" and data["bits"] == 8 and data["group_size"] is None
        expected = digest({"model": unlearned.fingerprint, "quantizer": "rtn-w8"})
        assert q.fingerprint == expected  # the canonical id: rtn-w8-sym and rtn-w8 are one model
    with quantized(unlearned, "rtn-w4g128") as q4:
        assert q4.fingerprint != expected


def test_bf16_model_round_trip(tiny_unlearned_dir: Path) -> None:
    loaded = load_model(tiny_unlearned_dir, device="cpu", dtype="bfloat16")
    before = snapshot(loaded)
    with quantized(loaded, "rtn-w4g64") as q:
        weight = q.model.get_submodule(q.details.modules[0]).weight
        assert weight.dtype == torch.bfloat16 and q.details.changed_fraction > 0
    assert_bit_identical(loaded, before)


def test_backend_keeps_one_copy_on_cpu(unlearned: LoadedModel) -> None:
    """The only extra weight memory is the saved originals: exactly the quantized weights' bytes, on the CPU."""
    with quantized(unlearned, "rtn-w4g128") as q:
        backend = q.backend
        weights = [unlearned.model.get_submodule(n).weight for n in q.details.modules]
        assert backend.saved_bytes == sum(w.numel() * w.element_size() for w in weights)
        assert set(backend.saved) == set(q.details.modules)
        assert all(t.device.type == "cpu" for t in backend.saved.values())
    assert backend.saved_bytes == 0


class _NoOpBackend:
    """A backend that claims to quantize but changes nothing: must never read as a pass."""

    name = "noop"
    takes_target_codes = False
    codes = None

    def __init__(self, spec: QuantSpec) -> None:
        self.spec = spec

    @contextmanager
    def apply(self, loaded: LoadedModel, **_: Any) -> Iterator[tuple[Any, QuantDetails]]:
        yield (
            loaded.model,
            QuantDetails(
                self.spec.id,
                "noop",
                self.spec.bits,
                self.spec.group_size,
                self.spec.symmetric,
                modules=["x"],
                n_weights=10,
                changed_fraction=0.0,
            ),
        )


def test_backend_that_changes_nothing_is_an_error(unlearned: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant, "get_backend", _NoOpBackend)
    with pytest.raises(QuantizerError, match="took no effect"):
        with quantized(unlearned, "rtn-w4g128"):
            pytest.fail("the body must not run")


def test_skipping_everything_is_an_error_and_restores(unlearned: LoadedModel) -> None:
    before = snapshot(unlearned)
    with pytest.raises(QuantizerError, match="took no effect"):
        with quantized(unlearned, "rtn-w4g128", skip_modules=("*",)):
            pytest.fail("the body must not run")
    assert_bit_identical(unlearned, before)


def test_skip_modules_by_suffix(unlearned: LoadedModel) -> None:
    with quantized(unlearned, "rtn-w4g128", skip_modules=("lm_head", "down_proj")) as q:
        assert q.details.modules and not any(n.endswith(("down_proj", "lm_head")) for n in q.details.modules)
        default = digest({"model": unlearned.fingerprint, "quantizer": "rtn-w4g128"})
        assert q.fingerprint != default  # different weights, different cache key


def test_mismatched_target_is_refused_and_restores(unlearned: LoadedModel) -> None:
    before = snapshot(unlearned)
    other = LoadedModel(model=nn.Sequential(nn.Linear(3, 3)), tokenizer=None, path="other", fingerprint="0" * 64)
    with pytest.raises(ModelError, match="other"):
        with quantized(unlearned, "rtn-w4g128", target=other):
            pytest.fail("the body must not run")
    assert_bit_identical(unlearned, before)
