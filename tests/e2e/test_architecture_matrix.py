"""The architecture matrix (issue #30): every family users ship, through every quantizer family, a relearning
attack and the metrics, plus llama.cpp's own run of each family's GGUF file.

Families (``tests/families.py``): Llama, Mistral, Qwen2, Qwen3, Gemma2, Gemma3 (text), Phi3, OLMo2, tiny and
random, built from transformers' config classes. Each is gated end to end (``ua.gate``: full precision,
rtn, bnb fp4/nf4/int8, hqq, gptq, awq, gguf, ``relearn-forget-2``, the MUSE metrics) in its shipped form
(tied or not), and quantized by every backend in the other form. Each family's GGUF file, converted by
llama.cpp's own converter, is run by llama.cpp and by the torch model rebuilt from it: logits within the
tolerances of ``tests/quant/test_gguf.py`` and the same 16 greedy tokens, for F32 and Q8_0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from families import FAMILIES, build_family, build_tokenizers, unlearned_copy

from unlearn_assert.errors import ConfigError

#: one id of every quantizer family; group sizes that divide the 64/128-wide layers
MATRIX_IDS = ("rtn-w4g32", "bnb-fp4", "bnb-nf4", "bnb-int8", "hqq-w4g64", "gptq-w4g32", "awq-w4g32", "gguf-q4_k_m")
ATTACK = "relearn-forget-2"


def _needs(*modules: str) -> None:
    for module in modules:
        pytest.importorskip(module, reason=f"needs {module}: pip install 'unlearn-assert[dev]'")


def _needs_converter() -> None:
    _needs("llama_cpp", "gguf")
    from unlearn_assert.quant.llama_cpp_source import find_converter

    root, reason = find_converter()
    if root is None:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tokenizers(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> dict[str, Path]:
    pytest.importorskip("sentencepiece", reason="needs sentencepiece: pip install 'unlearn-assert[gguf]'")
    return build_tokenizers(tmp_path_factory.mktemp("family-tokenizers"), tiny_data_dir)


@pytest.fixture(scope="session")
def family_models(tmp_path_factory: pytest.TempPathFactory, tokenizers: dict[str, Path]) -> Any:
    """(family, tied) -> (unlearned dir, target dir), built on first use and shared by the tests."""
    built: dict[tuple[str, bool], tuple[Path, Path]] = {}

    def get(name: str, tied: bool) -> tuple[Path, Path]:
        if (name, tied) not in built:
            root = tmp_path_factory.mktemp(f"family-{name}-{'tied' if tied else 'untied'}")
            target = build_family(root / "target", name, tokenizers, tied=tied)
            built[(name, tied)] = (unlearned_copy(target, root / "unlearned"), target)
        return built[(name, tied)]

    return get


def _finite(values: dict[str, Any]) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values.values() if v is not None)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_is_gated_end_to_end(name: str, family_models: Any, tiny_data_dir: Path) -> None:
    """Full precision, every quantizer family, a relearning attack and the metrics, in one gate: every row ok."""
    _needs("bitsandbytes", "hqq", "llmcompressor")
    _needs_converter()
    import unlearn_assert as ua

    unlearned, target = family_models(name, FAMILIES[name].tied)
    report = ua.gate(unlearned, target, tiny_data_dir, quantizers=",".join((*MATRIX_IDS, ATTACK)), no_cache=True)
    rows = {(r["model"], r["quantizer"]): r for r in report.rows}
    for variant in ("fp", *MATRIX_IDS, ATTACK):
        row = rows[("unlearned", variant)]
        assert row["status"] == "ok", (name, variant, row.get("error"))
        assert row["values"] and _finite(row["values"]), (name, variant, row["values"])
    for qid in MATRIX_IDS:
        quant = rows[("unlearned", qid)]["quant"]
        assert rows[("target", qid)]["status"] == "ok", (name, qid)
        assert 0 < quant["changed_fraction"] <= 1 and 0 < quant["code_agreement"] <= 1, (name, qid, quant)
    gguf = rows[("unlearned", "gguf-q4_k_m")]["quant"]
    assert gguf["converter"].startswith("llama.cpp") and gguf["tensor_types"]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_backend_quantizes_the_other_tie_form(name: str, family_models: Any) -> None:
    """The family with the other embedding tie than it ships with: every backend quantizes it and reports,
    with the output layer tied (or not) as in the model (bnb's check once flagged every tied model)."""
    _needs("bitsandbytes", "hqq", "llmcompressor")
    _needs_converter()
    import unlearn_assert as ua
    from unlearn_assert.quant import quantized
    from unlearn_assert.quant.calibration import calibration_from_data
    from unlearn_assert.quant.support import check_families

    tied = not FAMILIES[name].tied
    unlearned, target = family_models(name, tied)
    qids = MATRIX_IDS
    if name == "gemma2":  # llama.cpp's Gemma 2 converter drops lm_head: an untied Gemma 2 is refused for gguf
        with pytest.raises(
            ConfigError,
            match=r"gguf-q4_k_m cannot convert this Gemma 2 model .*: its output layer is "
            r"untied",
        ):
            check_families(MATRIX_IDS, target)
        qids = tuple(q for q in MATRIX_IDS if not q.startswith("gguf-"))
    check_families(qids, target)  # nothing else is refused at option time
    t, u = ua.load_model(str(target), device="cpu"), ua.load_model(str(unlearned), device="cpu")
    assert (t.model.lm_head.weight is t.model.get_input_embeddings().weight) is tied
    calibration = calibration_from_data(ua.load_data(str(Path(__file__).parents[2] / "fixtures" / "tiny-muse")))
    ids = t.tokenizer("Question: who wrote it?\nAnswer:", return_tensors="pt")["input_ids"]
    for qid in qids:
        with quantized(u, qid, target=t, calibration=calibration) as q:
            with torch.no_grad():
                logits = q.model(input_ids=ids).logits
            assert bool(torch.isfinite(logits).all()), (name, qid)
            assert 0 < q.details.changed_fraction <= 1 and q.details.code_agreement is not None, (name, qid)
            if q.spec.backend == "gguf":  # llama.cpp stores an output tensor only for an untied model
                assert ("lm_head.weight" in q.details.modules) is not tied, (name, q.details.modules)


# ------------------------------------------------------------- what the matrix found (each failed before its fix)


def test_bnb_accepts_tied_embeddings(family_models: Any) -> None:
    """A tied model's bnb copy was reported as "differs from the model in memory at 'lm_head.weight'": the copy is
    walked module by module (lm_head.weight is there), the source's named_parameters() lists the shared tensor once
    (as model.embed_tokens.weight), so lm_head.weight had no counterpart. Every alias is compared now."""
    _needs("bitsandbytes")
    import unlearn_assert as ua
    from unlearn_assert.quant import quantized

    _, target = family_models("llama", True)
    t = ua.load_model(str(target), device="cpu")
    assert "lm_head.weight" not in dict(t.model.named_parameters())  # the source side of the false alarm
    for qid in ("bnb-nf4", "bnb-int8"):
        with quantized(t, qid, target=t) as q:
            assert q.model.lm_head.weight is q.model.get_input_embeddings().weight and q.details.code_agreement == 1.0


def test_hqq_keeps_the_bias_of_biased_layers(family_models: Any) -> None:
    """Qwen2's q/k/v projections have biases; hqq 0.2.8's from_weights assigned a plain tensor to nn.Linear.bias
    (TypeError). The bias is passed as a Parameter and the layer computes dequantized weight and bias."""
    _needs("hqq")
    import unlearn_assert as ua
    from unlearn_assert.quant import quantized

    _, target = family_models("qwen2", True)
    t = ua.load_model(str(target), device="cpu")
    bias = t.model.model.layers[0].self_attn.q_proj.bias.detach().clone()
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    with quantized(t, "hqq-w4g64") as q:
        layer = q.model.model.layers[0].self_attn.q_proj
        with torch.no_grad():
            assert torch.allclose(layer(x), x @ layer.dequantize().T + bias, atol=1e-5)


def test_awq_runs_on_olmo2(family_models: Any, tiny_data_dir: Path) -> None:
    """llm-compressor 0.14 has no AWQ mappings for Olmo2ForCausalLM and fell back to Llama's (input_layernorm ->
    q/k/v), which OLMo2's post-norm blocks lack (ValueError). OLMo3's mappings (v -> o, up -> down) are used."""
    _needs("llmcompressor")
    import unlearn_assert as ua
    from unlearn_assert.quant import quantized
    from unlearn_assert.quant.calibration import calibration_from_data

    _, target = family_models("olmo2", False)
    t = ua.load_model(str(target), device="cpu")
    with quantized(t, "awq-w4g32", target=t, calibration=calibration_from_data(ua.load_data(str(tiny_data_dir)))) as q:
        assert q.details.changed_fraction > 0 and q.details.code_agreement == 1.0


# --------------------------------------------------------------------------- refusals at option time


def test_a_family_a_backend_cannot_gate_is_one_line_at_option_time(
    pytester: pytest.Pytester, tmp_path: Path, tokenizers: dict[str, Path], tiny_data_dir: Path
) -> None:
    """GPT-2 keeps its projections in transformers' Conv1D, which rtn/bnb/hqq/gptq/awq do not quantize: the
    options are refused with one line naming the family and the backend (exit 4), before any model loads."""
    from gate_helpers import gate_args
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(str(tokenizers["bpe"]))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    for d in ("t", "u"):
        model.save_pretrained(str(tmp_path / d))
        tok.save_pretrained(str(tmp_path / d))
    args = gate_args(tmp_path / "u", tmp_path / "t", tiny_data_dir)
    args = [a if not a.startswith("--unlearn-quantizers=") else "--unlearn-quantizers=rtn-w4g32" for a in args]
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = [line for line in result.stderr.lines if "--unlearn-quantizers:" in line]
    assert len(lines) == 1, result.stderr.str()
    assert "rtn-w4g32 cannot quantize the GPT-2 family gpt2 (GPT2LMHeadModel)" in lines[0], lines[0]
    assert "loaded" not in result.stdout.str()


def test_gguf_refuses_an_architecture_llama_cpp_does_not_convert(tmp_path: Path) -> None:
    _needs_converter()
    from unlearn_assert.quant.support import check_families

    (tmp_path / "config.json").write_text('{"model_type": "brand_new", "architectures": ["BrandNewForCausalLM"]}')
    with pytest.raises(ConfigError) as info:
        check_families(["rtn-w8", "gguf-q8_0"], tmp_path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(
        "--unlearn-quantizers: gguf-q8_0 cannot quantize the brand_new (BrandNewForCausalLM) "
        "family: llama.cpp's convert_hf_to_gguf.py (llama.cpp "
    )
    # Gemma 2's converter reads only a SentencePiece tokenizer.model (transformers 5 does not save one)
    (tmp_path / "config.json").write_text('{"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"]}')
    message = (
        r"gguf-q4_k_m cannot convert this Gemma 2 model gemma2 \(Gemma2ForCausalLM\): llama.cpp's converter "
        r"reads its tokenizer only from a SentencePiece tokenizer.model, which '.*' lacks"
    )
    with pytest.raises(ConfigError, match=message):
        check_families(MATRIX_IDS, tmp_path)


def test_no_family_of_the_matrix_is_refused(family_models: Any) -> None:
    _needs_converter()
    from unlearn_assert.quant.support import check_families

    for name, fam in FAMILIES.items():
        check_families(MATRIX_IDS, family_models(name, fam.tied)[1])


# --------------------------------------------------------------------------- llama.cpp runs each family's file

#: see tests/quant/test_gguf.py: F32 differs by float summation order only; Q8_0 also by llama.cpp's 8-bit activations
TOLERANCE = {"f32": (1e-4, 1e-5), "q8_0": (0.0, 0.03)}
#: Gemma's GELU: ggml's CPU kernels round its input to f16 and read an f16 table (GGML_GELU_FP16 in ggml-cpu/vec.h),
#: which torch does not. Measured in F32: Gemma 3 0.00067 (0.007% of the largest logit; 0.00026 with that rounding
#: simulated in torch), Gemma 2 0.0054 (0.06%; not explained by the GELU table nor the sliding window, which this
#: 63-token check starts to cover at position 16 while the difference starts at position 4).
GELU_F32_TOLERANCE = (1e-4, 2e-3)
#: llama.cpp converts Mistral to its ``llama`` architecture, which has no sliding window: beyond ``sliding_window``
#: tokens it attends to everything (measured at window 16 on 61 tokens: logits 3.96 apart; without the window
#: 3e-6). The file is run here as Mistral v0.2 and later ship it (sliding_window null); the gate evaluates
#: transformers' sliding window.
PEAKED_OVERRIDES: dict[str, dict[str, Any]] = {"mistral": {"sliding_window": None}}
GREEDY_TEXT = (
    "Question: who wrote the report?\nAnswer: The report was written by Mara Lind at the harbour office "
    "in the spring of 2019."
)


@pytest.fixture(scope="session")
def peaked_families(tmp_path_factory: pytest.TempPathFactory, tokenizers: dict[str, Path]) -> Any:
    """family -> a model of it trained on GREEDY_TEXT alone (next-token margins of logits, not hundredths)."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from unlearn_assert.models import quiet_transformers

            out = build_family(
                tmp_path_factory.mktemp(f"peaked-{name}") / "m", name, tokenizers, **PEAKED_OVERRIDES.get(name, {})
            )
            tok = AutoTokenizer.from_pretrained(str(out))
            with quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
            ids = torch.tensor([tok(GREEDY_TEXT)["input_ids"]])
            torch.manual_seed(0)
            opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
            model.train()
            for _ in range(80):
                model(input_ids=ids, labels=ids).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            model.eval()
            with quiet_transformers():
                model.save_pretrained(str(out))
            built[name] = out
        return built[name]

    return get


@pytest.mark.parametrize("preset", ["f32", "q8_0"])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_llama_cpp_runs_each_familys_file_as_the_rebuilt_torch_model(
    name: str, preset: str, peaked_families: Any, tmp_path: Path
) -> None:
    """llama.cpp (its own kernels, KV cache and greedy sampler) and the torch model rebuilt from the same file give
    the same 16 greedy tokens, with llama.cpp's logits within TOLERANCE at every step and torch's top-1 margin above
    twice the bound (so the equality follows from the tolerance, not from luck)."""
    _needs_converter()
    import llama_cpp

    import unlearn_assert as ua
    from unlearn_assert.quant.gguf import llama_quantize
    from unlearn_assert.quant.gguf_convert import load_into, read_quantized
    from unlearn_assert.quant.gguf_header import read_header
    from unlearn_assert.quant.llama_cpp import Converter, tensor_map, to_torch

    path = peaked_families(name)
    f32 = tmp_path / "m-f32.gguf"
    Converter.shared().convert(path, f32)
    file = f32
    if preset != "f32":
        file = tmp_path / f"m-{preset}.gguf"
        llama_quantize(f32, file, preset, 1)
    loaded = ua.load_model(str(path), device="cpu", dtype="float32")
    tensors = read_quantized(file)
    plan, processor = tensor_map(loaded.model, read_header(file, "x").architecture, set(tensors))
    load_into(loaded.model, {h: to_torch(processor, g, tensors[g].dequantize()) for g, h in plan.items()})
    prompt = loaded.tokenizer("Question: who wrote the report?\nAnswer:")["input_ids"]
    seq, steps = list(prompt), []
    with torch.no_grad():
        for _ in range(16):
            step = loaded.model(input_ids=torch.tensor([seq])).logits[0, -1].float().numpy()
            steps.append(step)
            seq.append(int(step.argmax()))
    ours = seq[len(prompt) :]
    assert loaded.tokenizer.decode(ours).strip().startswith("The report was written")  # the model learnt its text
    llama = llama_cpp.Llama(
        model_path=str(file), logits_all=True, n_ctx=256, n_threads=1, verbose=True, type_k=0, type_v=0
    )  # F32 K/V cache
    theirs: list[int] = []
    for token in llama.generate(prompt, top_k=1, temp=0.0, repeat_penalty=1.0):
        theirs.append(int(token))
        if len(theirs) == 16:
            break
    their_steps = np.array(llama.scores[len(prompt) - 1 : len(prompt) + 15], dtype=np.float32)
    llama.close()
    a = np.stack(steps)
    atol, rtol = GELU_F32_TOLERANCE if preset == "f32" and name in ("gemma2", "gemma3") else TOLERANCE[preset]
    bound = atol + rtol * float(np.abs(a).max())
    top2 = np.sort(a, axis=-1)[:, -2:]
    assert theirs == ours, (name, preset, loaded.tokenizer.decode(ours), loaded.tokenizer.decode(theirs))
    assert (top2[:, 1] - top2[:, 0] > 2 * bound).all(), (name, preset, top2[:, 1] - top2[:, 0], bound)
    assert float(np.abs(a - their_steps).max()) <= bound, (name, preset, float(np.abs(a - their_steps).max()), bound)
