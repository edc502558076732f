"""Quantization-aware unlearning (issue 29): the simulated quantizers equal the real ones bit for bit,
gradients pass straight through, and the trainer and CLI carry the quantized objectives.

What "exact" is checked against, per id (every comparison is on the bits, ``view`` as integers, so
signed zeros and NaN payloads would count):

* ``rtn-*``: the rtn backend's weights inside ``quantized()`` on random stacks of linear layers;
* ``bnb-fp4`` / ``bnb-nf4``: ``bitsandbytes.functional.quantize_4bit`` (blocksize 64, uint8 storage,
  as the backend's ``BitsAndBytesConfig``), dequantized as the backend evaluates it: bnb's
  ``dequantize_4bit`` for layers whose rows are whole blocks, the flat reference formula for the
  others on CPU (bnb's own CPU kernel is wrong there, see quant/bnb.py); and the real backend's
  ``Linear4bit`` layers on the tiny model;
* ``gguf-*``: the gguf backend's weights (llama.cpp's ``llama_model_quantize`` of a whole file) for
  every preset on a 96-wide and a 256-wide model, and on random shapes the ``gguf`` package's own
  quantizers where it has one (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0).
"""

from __future__ import annotations

import argparse
import gc
import json
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

pytest.importorskip("hypothesis")
from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from unlearn_assert.errors import ConfigError, QuantizerError  # noqa: E402
from unlearn_assert.models import LoadedModel  # noqa: E402
from unlearn_assert.unlearning.quant_aware_ids import SUPPORTED_TEXT, check_quant_aware_ids, is_quant_aware_id  # noqa: E402

F32 = torch.float32
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INT_VIEW = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bits (``torch.equal`` would call -0.0 and 0.0 equal)."""
    return (
        a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(INT_VIEW[a.dtype]), b.view(INT_VIEW[b.dtype]))
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- the ids


def test_supported_ids_and_one_line_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_quant_aware_ids("rtn-w4g64, bnb-nf4,gguf-q4_k_m") == ("rtn-w4g64", "bnb-nf4", "gguf-q4_k_m")
    assert check_quant_aware_ids(["rtn-w3-asym", "bnb-fp4", "gguf-q4_0"]) == ("rtn-w3-asym", "bnb-fp4", "gguf-q4_0")
    assert check_quant_aware_ids("") == ()
    for bad in ("gptq-w4g128", "awq-w4g128", "hqq-w4g64", "bnb-int8"):
        assert not is_quant_aware_id(bad)
        with pytest.raises(ConfigError, match=rf"cannot simulate '{bad}' exactly; supported: rtn-w<bits>") as info:
            check_quant_aware_ids(bad)
        assert "\n" not in str(info.value) and SUPPORTED_TEXT in str(info.value)
    with pytest.raises(ConfigError, match="unknown quantizer 'rtn-w4g1'; supported"):
        check_quant_aware_ids("rtn-w4g1")
    with pytest.raises(ConfigError, match="names 'rtn-w4' and 'rtn-w4-sym' twice"):
        check_quant_aware_ids("rtn-w4,rtn-w4-sym")
    import unlearn_assert.unlearning.quant_aware_ids as ids

    monkeypatch.setattr(ids, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match=r"bnb-nf4 needs bitsandbytes; install it with pip install 'unlearn-assert\[bnb\]'"
    ):
        check_quant_aware_ids("bnb-nf4")
    with pytest.raises(
        ConfigError, match=r"gguf-q4_0 needs gguf, llama_cpp; install it with pip install 'unlearn-assert\[gguf\]'"
    ):
        check_quant_aware_ids("gguf-q4_0")
    assert check_quant_aware_ids("rtn-w4") == ("rtn-w4",)  # rtn needs no extra


def test_settings_validate_quant_aware() -> None:
    from unlearn_assert.unlearning.settings import UnlearnSettings

    s = UnlearnSettings(steps=1, quant_aware=["rtn-w4g64"], quant_aware_weight=0.5).validated()  # type: ignore[arg-type]
    assert s.quant_aware == ("rtn-w4g64",) and s.quant_aware_weight == 0.5
    with pytest.raises(ConfigError, match="cannot simulate 'gptq-w4g128'"):
        UnlearnSettings(steps=1, quant_aware=("gptq-w4g128",)).validated()
    with pytest.raises(ConfigError, match="quant_aware_weight must be a positive number"):
        UnlearnSettings(steps=1, quant_aware=("rtn-w4",), quant_aware_weight=0.0).validated()


def test_new_settings_do_not_change_the_demo_recipe_key() -> None:
    """Every cached demo family stays valid: the key hashes quant_aware only when it is used."""
    from dataclasses import replace

    from unlearn_assert.demo.family import DEFAULT_RECIPE, UnlearnRecipe

    assert all("quant_aware" not in u["settings"] for u in DEFAULT_RECIPE.to_dict()["unlearned"])
    plain = DEFAULT_RECIPE.unlearned[0]
    qa = replace(plain, name="qa", settings=replace(plain.settings, quant_aware=("rtn-w4g64",)))
    with_qa = replace(DEFAULT_RECIPE, unlearned=(*DEFAULT_RECIPE.unlearned, qa))
    assert with_qa.to_dict()["unlearned"][-1]["settings"]["quant_aware"] == ("rtn-w4g64",)
    assert (
        with_qa.key()
        != replace(DEFAULT_RECIPE, unlearned=(*DEFAULT_RECIPE.unlearned, replace(qa, settings=plain.settings))).key()
    )
    again = UnlearnRecipe.from_dict(json.loads(json.dumps(with_qa.to_dict()["unlearned"][-1])))
    assert again.run_settings().quant_aware == ("rtn-w4g64",)


# --------------------------------------------------------------------------- straight-through


@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 2**16))
def test_straight_through_forward_is_q_and_gradient_is_identity(rows: int, cols: int, seed: int) -> None:
    from unlearn_assert.unlearning.quant_aware import straight_through

    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen).requires_grad_(True)
    q = torch.round(w.detach() * 3) / 3  # any value: the estimator does not look at it
    out = straight_through(w, q)
    assert bits_equal(out.detach(), q)  # exactly q, unlike w + (q - w).detach()
    upstream = torch.randn(rows, cols, generator=gen)
    (out * upstream).sum().backward()
    assert w.grad is not None and bits_equal(w.grad, upstream)


# --------------------------------------------------------------------------- rtn: the backend itself


class _Block(nn.Module):
    def __init__(self, width: int, wide: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(width, wide, bias=False)
        self.v_proj = nn.Linear(wide, width, bias=True)


class _Stack(nn.Module):
    """Embedding -> linear blocks -> lm_head, named like a Llama; random widths."""

    def __init__(self, width: int, wide: int, depth: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(7, width)
        self.layers = nn.ModuleList(_Block(width, wide) for _ in range(depth))
        self.lm_head = nn.Linear(width, 7, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        for block in self.layers:
            h = h + block.v_proj(torch.tanh(block.q_proj(h)))
        return self.lm_head(h)


def _stack(seed: int, width: int, wide: int, depth: int, dtype: torch.dtype, values: str = "normal") -> LoadedModel:
    gen = torch.Generator().manual_seed(seed)
    model = _Stack(width, wide, depth)
    with torch.no_grad():
        for p in model.parameters():
            x = torch.randn(p.shape, generator=gen)
            if values == "dyadic":  # many exact rounding ties and grid points
                x = torch.round(x * 8) / 8
            p.copy_(x * 0.05)
    return LoadedModel(
        model=model.to(dtype), tokenizer=None, path=f"stack-{seed}", fingerprint=f"{seed:064x}", dtype=str(dtype)
    )


rtn_ids = st.builds(
    lambda b, g, sym: f"rtn-w{b}" + (f"g{g}" if g else "") + ("" if sym else "-asym"),
    st.integers(2, 8),
    st.one_of(st.none(), st.integers(3, 40)),
    st.booleans(),
)


@given(
    rtn_ids,
    st.integers(0, 2**16),
    st.integers(1, 48),
    st.integers(1, 48),
    st.integers(1, 2),
    st.sampled_from(DTYPES),
    st.sampled_from(["normal", "dyadic"]),
)
@example("rtn-w4g64", 0, 64, 40, 1, torch.float32, "dyadic")
def test_rtn_simulation_is_the_rtn_backend(
    qid: str, seed: int, width: int, wide: int, depth: int, dtype: torch.dtype, values: str
) -> None:
    """Bit for bit the weights RTNBackend writes, signed zeros included (a -0.0 weight becomes
    0 * s + zero = +0.0 in both; rtn's change counter calls the two equal)."""
    from unlearn_assert.quant.rtn import RTNBackend
    from unlearn_assert.unlearning.quant_aware import build_simulation
    from unlearn_assert.variants.quantizers import parse_quantizer_id

    loaded = _stack(seed, width, wide, depth, dtype, values)
    sim = build_simulation(qid, loaded.model)
    params = dict(loaded.model.named_parameters())
    mine = {name: sim.quantized(name, params[name]) for name in sim.targets}
    assert sorted(mine) == sorted(f"layers.{i}.{p}.weight" for i in range(depth) for p in ("q_proj", "v_proj"))
    with RTNBackend(parse_quantizer_id(qid)).apply(loaded) as (
        model,
        _,
    ):  # the backend itself, without quantized()'s took-effect check
        for name, value in model.state_dict().items():
            expected = mine.get(name, params.get(name))
            assert expected is None or bits_equal(value, expected.detach()), name


# --------------------------------------------------------------------------- bitsandbytes FP4 / NF4


def _bnbF() -> Any:
    return pytest.importorskip(
        "bitsandbytes.functional", reason="bnb-* simulation needs bitsandbytes: pip install 'unlearn-assert[bnb]'"
    )


# Normal weights, exact ties of the code book's midpoints (dyadic), zeros, and float32 subnormals.
weight_values = st.one_of(
    st.floats(-0.25, 0.25, width=32),
    st.integers(-64, 64).map(lambda k: k / 64),
    st.just(0.0),
    st.floats(2.0**-149, 2.0**-127, width=32).flatmap(lambda x: st.sampled_from([x, -x])),
)


@st.composite
def bnb_weights(draw: st.DrawFn) -> torch.Tensor:
    rows = draw(st.integers(1, 5))
    cols = draw(st.sampled_from([1, 3, 32, 63, 64, 65, 96, 128, 130]))
    data = draw(st.lists(weight_values, min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(data, dtype=F32).reshape(rows, cols).to(draw(st.sampled_from(DTYPES)))


def _bnb_backend_value(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """What the bnb backend evaluates for a layer with weight ``w`` on CPU: bnb's quantize_4bit as
    BitsAndBytesConfig runs it, then dequantize_4bit (rows of whole blocks) or the flat formula."""
    bnbF = _bnbF()
    from unlearn_assert.quant.bnb import dequantize_4bit_flat

    packed, state = bnbF.quantize_4bit(w, blocksize=64, quant_type=scheme, quant_storage=torch.uint8)
    return dequantize_4bit_flat(packed, state) if w.shape[-1] % 64 else bnbF.dequantize_4bit(packed, state)


@given(bnb_weights(), st.sampled_from(["fp4", "nf4"]))
@example(torch.tensor([[0.5, 0.25, -1.0, 0.0]]), "nf4")  # 0.25 * 2 ... exact midpoints of the code book
@example(torch.tensor([[1e-40, -1e-40, 0.0]]), "fp4")  # a subnormal absmax (below bnb's 1e-38 clamp)
def test_bnb_simulation_equals_bitsandbytes_bit_for_bit(w: torch.Tensor, scheme: str) -> None:
    """Ties on a midpoint take the lower level (bucketize, right=False) in both; a block's absmax below
    1e-38 (subnormal) is clamped to 1e-38 in both; a short last block divides by its absmax in both."""
    from unlearn_assert.unlearning.quant_aware import bnb4_dequantized

    assert bits_equal(bnb4_dequantized(w, scheme), _bnb_backend_value(w, scheme))


def test_bnb_simulation_is_the_backends_linear4bit_layers(unlearned: LoadedModel) -> None:
    """The real backend (a fresh transformers + bnb copy of the tiny model, 96-wide rows: the flat
    formula) holds exactly the simulated weights."""
    _bnbF()
    from unlearn_assert.quant import quantized
    from unlearn_assert.quant.bnb import dequantized_weight
    from unlearn_assert.unlearning.quant_aware import build_simulation

    for qid in ("bnb-fp4", "bnb-nf4"):
        sim = build_simulation(qid, unlearned.model)
        params = dict(unlearned.model.named_parameters())
        with quantized(unlearned, qid) as q:
            layers = {f"{n}.weight": m for n, m in q.model.named_modules() if type(m).__name__ == "Linear4bit"}
            assert sorted(layers) == sorted(sim.targets)
            for name, module in layers.items():
                assert bits_equal(dequantized_weight(module), sim.quantized(name, params[name])), name


# --------------------------------------------------------------------------- llama.cpp (ggml)

SIMPLE_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
K_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]


def _ggml_type(name: str) -> int:
    """The GGML type id, skipping without the [gguf] extra."""
    gguf = pytest.importorskip("gguf", reason="gguf-* simulation needs gguf: pip install 'unlearn-assert[gguf]'")
    pytest.importorskip(
        "llama_cpp", reason="gguf-* simulation needs llama-cpp-python: pip install 'unlearn-assert[gguf]'"
    )
    return int(gguf.GGMLQuantizationType[name])


@st.composite
def ggml_weights(draw: st.DrawFn, block: int, max_blocks: int) -> torch.Tensor:
    rows = draw(st.integers(1, 4))
    cols = block * draw(st.integers(1, max_blocks))
    scale = 2.0 ** draw(st.integers(-20, 4))
    kind = draw(st.sampled_from(["normal", "dyadic", "sparse"]))
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    if kind == "dyadic":
        x = torch.round(x * 8) / 8
    elif kind == "sparse":
        x = x * (torch.rand(rows, cols, generator=torch.Generator().manual_seed(rows * cols)) < 0.3)
    return x * scale


@given(ggml_weights(32, 4), st.sampled_from(SIMPLE_TYPES))
def test_ggml_simulation_equals_the_gguf_packages_quantizer(w: torch.Tensor, qtype: str) -> None:
    """llama.cpp's ggml_quantize_chunk (what the gguf backend's llama_model_quantize calls) and the
    gguf package's numpy quantizer agree bit for bit on these types, ties and zeros included."""
    import gguf
    import numpy as np

    from unlearn_assert.unlearning.quant_aware import ggml_dequantized

    t = gguf.GGMLQuantizationType(_ggml_type(qtype))
    x = w.numpy()
    reference = np.asarray(gguf.quants.dequantize(gguf.quants.quantize(x, t), t), dtype=np.float32).reshape(x.shape)
    assert bits_equal(ggml_dequantized(w, int(t)), torch.from_numpy(reference))


@given(ggml_weights(256, 2), st.sampled_from(SIMPLE_TYPES + K_TYPES), st.integers(0, 2**16))
def test_ggml_rows_are_quantized_independently(w: torch.Tensor, qtype: str, seed: int) -> None:
    """Why the simulation need not permute Q/K rows as the GGUF file does: permuting rows commutes
    with llama.cpp's quantization (every block lies inside one row)."""
    from unlearn_assert.unlearning.quant_aware import ggml_dequantized

    t = _ggml_type(qtype)
    perm = torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(seed))
    assert bits_equal(ggml_dequantized(w[perm], t), ggml_dequantized(w, t)[perm])


def test_ggml_refuses_rows_that_are_not_whole_blocks() -> None:
    from unlearn_assert.unlearning.quant_aware import ggml_dequantized

    with pytest.raises(QuantizerError, match="rows of 100 weights cannot be stored as Q4_K"):
        ggml_dequantized(torch.zeros(2, 100), _ggml_type("Q4_K"))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> LoadedModel:
    """256 wide, so llama.cpp stores real k-quant super-blocks (the tiny model falls back to q5_0 / q8_0)."""
    from conftest import fixture_texts
    from unlearn_assert.models import load_model
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama, perturb_copy

    target = build_tiny_llama(
        tmp_path_factory.mktemp("qa-wide-target"),
        fixture_texts(tiny_data_dir),
        TinyRecipe(hidden_size=256, intermediate_size=512, num_heads=4, steps=10),
    )
    return load_model(
        perturb_copy(target, tmp_path_factory.mktemp("qa-wide"), scale=2e-3), device="cpu", dtype="float32"
    )


PRESETS = ["q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "q3_k_m", "q2_k"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_gguf_simulation_is_the_gguf_backend(
    preset: str, which: str, unlearned: LoadedModel, wide: LoadedModel
) -> None:
    """Every tensor the gguf backend changes (llama.cpp's type mix, embeddings and output included)
    is simulated, bit for bit; every other tensor is left alone by both."""
    _ggml_type("F32")
    from unlearn_assert.quant import quantized
    from unlearn_assert.unlearning.quant_aware import build_simulation

    loaded = unlearned if which == "tiny" else wide
    qid = f"gguf-{preset}"
    sim = build_simulation(qid, loaded.model, loaded.path)
    params = dict(loaded.model.named_parameters())
    mine = {name: sim.quantized(name, params[name]) for name in sim.targets}
    with quantized(loaded, qid) as q:
        for name, value in q.model.state_dict().items():
            expected = mine.get(name, params.get(name))
            assert expected is not None and bits_equal(value, expected.detach()), name
    if which == "wide" and preset == "q4_k_m":
        assert {"q4_k", "q6_k"} <= set(sim.kinds.values())
        assert "model.embed_tokens.weight" in sim.kinds and "lm_head.weight" in sim.kinds


@pytest.fixture()
def extras() -> None:
    """The tests below mix rtn, bnb and gguf ids: they need both extras."""
    _bnbF()
    _ggml_type("F32")


# --------------------------------------------------------------------------- through the model


def test_model_gradient_is_the_gradient_at_the_quantized_weights(unlearned: LoadedModel, extras: None) -> None:
    """Straight-through on a whole model: the gradient each weight receives equals the gradient of
    the same loss on a copy whose weights hold Q(w); the loss is that copy's loss, exactly."""
    import copy

    from unlearn_assert.unlearning.losses import nll_loss, shift_for_lm
    from unlearn_assert.unlearning.quant_aware import QuantAware, build_simulation

    ids = unlearned.tokenizer("Question: who wrote it?\nAnswer: the board", return_tensors="pt")["input_ids"]
    mask = torch.ones_like(ids)
    for qid in ("rtn-w4g64", "bnb-nf4", "gguf-q4_k_m"):
        model = copy.deepcopy(unlearned.model).float()
        qa = QuantAware([build_simulation(qid, model, unlearned.path)], weight=1.0)
        weights = qa.fake_quantized(model, qa.simulations[0])
        inputs = qa.forward(model, weights, (ids, mask), None)
        loss = nll_loss(inputs.logits, inputs.targets, inputs.mask)
        loss.backward()
        held = copy.deepcopy(unlearned.model).float()
        with torch.no_grad():
            for name, value in weights.items():
                held.get_parameter(name).copy_(value)
        out = held(input_ids=ids, attention_mask=mask, use_cache=False).logits
        ref_loss = nll_loss(*shift_for_lm(out, ids, mask))
        ref_loss.backward()
        assert loss.item() == ref_loss.item()
        for name, p in model.named_parameters():
            other = held.get_parameter(name).grad
            assert p.grad is not None and other is not None and torch.allclose(p.grad, other, rtol=0, atol=1e-7), (
                qid,
                name,
            )


# --------------------------------------------------------------------------- the trainer


def _settings(**kw: Any) -> Any:
    from unlearn_assert.unlearning.settings import UnlearnSettings

    base: dict[str, Any] = dict(method="npo_klr", steps=3, batch_size=2, max_length=32, lr=1e-3, seed=0)
    base.update(kw)
    return UnlearnSettings(**base)


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> LoadedModel:
    from unlearn_assert.models import load_model

    return load_model(tiny_model_dir)


@pytest.mark.parametrize("method", ["ga", "ga_gdr", "ga_klr", "npo", "npo_gdr", "npo_klr"])
def test_every_method_records_full_precision_and_quantized_losses(
    method: str, target: LoadedModel, tiny_data: Any, extras: None
) -> None:
    from unlearn_assert.unlearning import unlearn

    lines: list[str] = []
    result = unlearn(
        target,
        tiny_data,
        _settings(method=method, quant_aware=("rtn-w4g32", "bnb-nf4"), log_every=3),
        progress=lines.append,
    )
    for record in result.curve:
        assert set(record["quantized"]) == {"rtn-w4g32", "bnb-nf4"}
        for q in record["quantized"].values():
            assert (q["retain_loss"] is None) == (method in ("ga", "npo"))
            expected = q["forget_loss"] + (0.0 if q["retain_loss"] is None else q["retain_loss"])
            assert q["total"] == pytest.approx(expected, rel=1e-6)
        mean_q = sum(q["total"] for q in record["quantized"].values()) / 2
        assert record["objective"] == pytest.approx(record["total"] + mean_q, rel=1e-6)
    assert any("quantization-aware" in line for line in lines) and any("[rtn-w4g32: forget" in line for line in lines)
    run = result.to_json()
    assert run["settings"]["quant_aware"] == ("rtn-w4g32", "bnb-nf4") and run["settings"]["quant_aware_weight"] == 1.0
    assert run["quant_aware"]["rtn-w4g32"]["tensors"] == 14 and run["quant_aware"]["bnb-nf4"]["kinds"] == {"nf4": 14}


def test_the_quantized_loss_is_the_real_quantized_models_loss(
    target: LoadedModel, tiny_data: Any, extras: None
) -> None:
    """Step 1's recorded loss under Q (weights still the target's) equals the method's loss computed
    from the real backend's quantized target on the same first batches."""
    from unlearn_assert.quant import quantized
    from unlearn_assert.unlearning import unlearn
    from unlearn_assert.unlearning.losses import ga_loss, gdr_loss, shift_for_lm
    from unlearn_assert.unlearning.trainer import BatchCycler, chunk_text

    s = _settings(method="ga_gdr", steps=1, quant_aware=("rtn-w4g32", "bnb-nf4", "gguf-q4_0"))
    first = unlearn(target, tiny_data, s).curve[0]["quantized"]
    forget = chunk_text(target.tokenizer, tiny_data.raw_forget, s.max_length)
    retain = chunk_text(target.tokenizer, tiny_data.raw_retain, s.max_length)
    f_ids, f_mask = forget.batch(BatchCycler(len(forget), s.batch_size, s.seed).next(), "cpu")
    r_ids, r_mask = retain.batch(BatchCycler(len(retain), s.batch_size, s.seed + 1).next(), "cpu")
    for qid in s.quant_aware:
        with quantized(target, qid) as q, torch.no_grad():
            f = ga_loss(*shift_for_lm(q.model(input_ids=f_ids, attention_mask=f_mask).logits, f_ids, f_mask)).item()
            r = gdr_loss(*shift_for_lm(q.model(input_ids=r_ids, attention_mask=r_mask).logits, r_ids, r_mask)).item()
        tol = 0.0 if qid != "bnb-nf4" else 1e-5  # bnb's Linear4bit multiplies in its own order
        assert first[qid]["forget_loss"] == pytest.approx(f, rel=tol, abs=0) and first[qid][
            "retain_loss"
        ] == pytest.approx(r, rel=tol, abs=0), qid


def test_quant_aware_changes_training_and_is_deterministic(target: LoadedModel, tiny_data: Any) -> None:
    from unlearn_assert.unlearning import unlearn

    plain = unlearn(target, tiny_data, _settings(dtype="bfloat16"))
    a = unlearn(target, tiny_data, _settings(dtype="bfloat16", quant_aware=("rtn-w4g32",)))
    b = unlearn(target, tiny_data, _settings(dtype="bfloat16", quant_aware=("rtn-w4g32",)))
    pb, pp = dict(b.model.named_parameters()), dict(plain.model.named_parameters())
    assert all(torch.equal(p, pb[n]) for n, p in a.model.named_parameters())
    assert not all(torch.equal(p, pp[n]) for n, p in a.model.named_parameters())
    assert {p.dtype for p in a.model.parameters()} == {torch.bfloat16}
    assert [c["forget_loss"] for c in a.curve][0] == plain.curve[0]["forget_loss"]  # the fp half of step 1 is unchanged


def test_sure_mask_holds_under_quant_aware(
    target: LoadedModel, tiny_data: Any, tiny_model_dir: Path, extras: None
) -> None:
    from unlearn_assert.models import load_model
    from unlearn_assert.unlearning import unlearn

    result = unlearn(
        target,
        tiny_data,
        _settings(sure=True, sure_top=0.1, sure_batches=1, lr=5e-2, dtype="bfloat16", quant_aware=("gguf-q4_k_m",)),
    )
    assert result.sure is not None and result.curve[-1]["quantized"]["gguf-q4_k_m"]["total"] > 0
    start = load_model(tiny_model_dir, dtype="bfloat16").model.state_dict()
    selected = tuple(f"{m}." for m in result.sure.selected)
    changed = []
    for name, p in result.model.named_parameters():
        if name.startswith(selected):
            changed.append(not torch.equal(p, start[name]))
        else:
            assert torch.equal(p, start[name]), f"{name} was not selected but changed"
    assert any(changed)


def test_at_most_one_extra_copy_of_the_weights_is_alive(
    target: LoadedModel, tiny_data: Any, monkeypatch: pytest.MonkeyPatch, extras: None
) -> None:
    """Each quantizer's fake-quantized weights are freed before the next quantizer's are made."""
    from unlearn_assert.unlearning.quant_aware import QuantAware

    made: list[weakref.ref[torch.Tensor]] = []
    alive_at_creation: list[int] = []
    original = QuantAware.fake_quantized

    def spy(self: QuantAware, model: Any, sim: Any) -> dict[str, torch.Tensor]:
        gc.collect()
        alive_at_creation.append(sum(r() is not None for r in made))
        out = original(self, model, sim)
        made.extend(weakref.ref(t) for t in out.values())
        return out

    monkeypatch.setattr(QuantAware, "fake_quantized", spy)
    from unlearn_assert.unlearning import unlearn

    unlearn(target, tiny_data, _settings(steps=2, quant_aware=("rtn-w4g32", "bnb-fp4", "gguf-q4_0")))
    assert len(alive_at_creation) == 6 and alive_at_creation == [0] * 6


# --------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from unlearn_assert.unlearning.cli import add_unlearn_parser

    parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_unlearn_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["unlearn", *argv])
    return int(args.func(args))


def test_cli_writes_settings_and_both_curves(
    tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path, extras: None
) -> None:
    out = tmp_path / "qa"
    assert (
        _cli(
            [
                "--target",
                str(tiny_model_dir),
                "--data",
                str(tiny_data_dir),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--max-length",
                "32",
                "--out",
                str(out),
                "--quant-aware",
                "rtn-w4g32,gguf-q4_k_m",
                "--quant-aware-weight",
                "2",
                "--sure",
            ]
        )
        == 0
    )
    run = json.loads((out / "unlearn_run.json").read_text())
    assert (
        run["settings"]["quant_aware"] == ["rtn-w4g32", "gguf-q4_k_m"] and run["settings"]["quant_aware_weight"] == 2.0
    )
    assert run["settings"]["sure"] is True and set(run["quant_aware"]) == {"rtn-w4g32", "gguf-q4_k_m"}
    for record in run["curve"]:
        assert (
            set(record["quantized"]) == {"rtn-w4g32", "gguf-q4_k_m"}
            and "forget_loss" in record
            and "objective" in record
        )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gptq-w4g128", "argument --quant-aware: cannot simulate 'gptq-w4g128' exactly; supported: rtn-w<bits>"),
        ("nope", "argument --quant-aware: unknown quantizer 'nope'; supported: rtn-w<bits>"),
        ("", "argument --quant-aware: give one or more quantizer ids"),
        (",", "argument --quant-aware: no quantizers given"),
    ],
)
def test_cli_refuses_unsupported_ids_at_option_time(
    value: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _cli(
            [
                "--target",
                str(tmp_path / "missing"),
                "--data",
                str(tmp_path),
                "--steps",
                "1",
                "--out",
                str(tmp_path / "o"),
                "--quant-aware",
                value,
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert message in err and (value in ("", ",") or "bnb-fp4, bnb-nf4, gguf-q4_k_m" in err)
    assert not (tmp_path / "o").exists()
