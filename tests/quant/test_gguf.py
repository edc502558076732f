"""GGUF (issue #14): llama.cpp's own quantizers as ``gguf-*`` ids, the rebuilt torch model checked
against llama.cpp running the same file, and users' ``.gguf`` files checked at option time.

The tiny fixture model is 96 wide, so llama.cpp falls back from k-quants there (q4_K -> q5_0,
q6_K -> q8_0); :func:`wide_pair` is 256 wide, where Q4_K_M stores real q4_K / q6_K super-blocks.
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import fixture_texts
from unlearn_assert.errors import BackendUnavailable, ConfigError, QuantizerError
from unlearn_assert.quant.gguf_header import GGML_TYPES, check_gguf_file, gguf_name, read_header

gguf = pytest.importorskip("gguf", reason="needs gguf: pip install 'unlearn-assert[gguf]'")


def _llama_cpp() -> Any:
    return pytest.importorskip("llama_cpp", reason="needs llama-cpp-python: pip install 'unlearn-assert[gguf]'")


# --------------------------------------------------------------------------- models


def _random_model(out: Path, model_type: str, tokenizer_dir: Path, **overrides: Any) -> Path:
    """A randomly initialised model of ``model_type`` with the fixture tokenizer, saved to ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    settings: dict[str, Any] = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    settings.update(overrides)
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # norms and biases away from their init, so a mix-up shows
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> tuple[Path, Path]:
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama, perturb_copy

    target = build_tiny_llama(
        tmp_path_factory.mktemp("gguf-wide-target"),
        fixture_texts(tiny_data_dir),
        TinyRecipe(hidden_size=256, intermediate_size=512, num_heads=4, steps=60),
    )
    unlearned = perturb_copy(target, tmp_path_factory.mktemp("gguf-wide-unlearned"), scale=2e-3)
    return unlearned, target


def _load(path: Path) -> Any:
    import unlearn_assert as ua

    return ua.load_model(str(path), device="cpu", dtype="float32")


def _converter() -> Any:
    _llama_cpp()
    from unlearn_assert.quant.llama_cpp import Converter
    from unlearn_assert.quant.llama_cpp_source import find_converter

    if find_converter()[0] is None:
        pytest.skip(find_converter()[1])
    return Converter.shared()


def _write_file(path: Path, out: Path, preset: str | None = None) -> Path:
    """``path`` as a GGUF file converted by llama.cpp's own converter: F32, or quantized by llama.cpp with
    ``preset``."""
    f32 = out.with_suffix(".f32.gguf") if preset else out
    _converter().convert(path, f32)
    if preset:
        from unlearn_assert.quant.gguf import llama_quantize

        llama_quantize(f32, out, preset, 1)
        f32.unlink()
    return out


# --------------------------------------------------------------------------- ids, tables


def test_ids_parse_with_their_llama_cpp_presets() -> None:
    from unlearn_assert.variants.quantizers import parse_quantizer_id

    assert [
        parse_quantizer_id(f"gguf-{s}").bits for s in ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "q3_k_m", "q2_k")
    ] == [4, 5, 6, 8, 4, 3, 2]
    assert parse_quantizer_id("gguf-q8_0").group_size == 32 and parse_quantizer_id("gguf-q4_k_m").group_size == 256
    with pytest.raises(QuantizerError, match=r"malformed quantizer 'gguf-q4_k_s', expected gguf-\{q4_k_m"):
        parse_quantizer_id("gguf-q4_k_s")


def test_without_llama_cpp_the_backend_is_unavailable_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn_assert.quant import get_backend

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    monkeypatch.delitem(sys.modules, "unlearn_assert.quant.gguf", raising=False)
    with pytest.raises(BackendUnavailable) as info:
        get_backend("gguf-q4_k_m")
    assert info.value.install == "pip install 'unlearn-assert[gguf]'" and "llama_cpp" in str(info.value)


def test_the_demo_table_has_a_gguf_row_when_the_extra_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn_assert.demo.run import DEMO_ATTACKS, DEMO_QUANTIZERS, demo_quantizers

    _converter()
    assert demo_quantizers() == (*DEMO_QUANTIZERS, "gguf-q4_k_m", *DEMO_ATTACKS)
    import importlib.util

    with monkeypatch.context() as m:  # without llama.cpp's converter set up there is no gguf row either
        m.setenv("UNLEARN_LLAMA_CPP", "/nowhere")
        assert demo_quantizers() == DEMO_QUANTIZERS + DEMO_ATTACKS
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else object())
    assert demo_quantizers() == DEMO_QUANTIZERS + DEMO_ATTACKS


def test_name_table_matches_gguf_tensor_name_map() -> None:
    for arch, n_layers in ((gguf.MODEL_ARCH.LLAMA, 2), (gguf.MODEL_ARCH.QWEN2, 2), (gguf.MODEL_ARCH.QWEN3, 2)):
        names = gguf.TensorNameMap(arch, n_layers)
        hf = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
            f"model.layers.1.{m}.weight"
            for m in (
                "input_layernorm",
                "self_attn.q_proj",
                "self_attn.k_proj",
                "self_attn.v_proj",
                "self_attn.o_proj",
                "post_attention_layernorm",
                "mlp.gate_proj",
                "mlp.up_proj",
                "mlp.down_proj",
            )
        ]
        if arch == gguf.MODEL_ARCH.QWEN3:
            hf += ["model.layers.1.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"]
        if arch == gguf.MODEL_ARCH.QWEN2:
            hf += ["model.layers.0.self_attn.q_proj.bias"]
        for name in hf:
            assert gguf_name(name) == names.get_name(name, try_suffixes=(".weight", ".bias")), name
    assert gguf_name("model.rotary_emb.inv_freq") is None


def test_type_table_matches_gguf() -> None:
    for type_id, (name, block, size) in GGML_TYPES.items():
        qtype = gguf.GGMLQuantizationType(type_id)
        assert qtype.name.lower() == name and gguf.GGML_QUANT_SIZES[qtype] == (block, size)


# --------------------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "model_type,overrides",
    [
        ("llama", {}),  # untied, GQA (2 kv heads of 4): Q and K permuted with their own head counts
        ("llama", {"tie_word_embeddings": True}),  # SmolLM-style tied embeddings: no output.weight
        ("mistral", {}),
        ("qwen2", {}),  # q/k/v biases, NEOX RoPE (no permutation)
        ("qwen3", {"head_dim": 32}),  # q_norm/k_norm, head_dim != hidden / heads
    ],
)
def test_f32_round_trip_is_exact(
    tmp_path: Path, tiny_model_dir: Path, model_type: str, overrides: dict[str, Any]
) -> None:
    """llama.cpp's converter writes F32 tensors that transformers' GGUF tables map back onto the model bit for bit."""
    from unlearn_assert.quant.gguf_convert import read_quantized
    from unlearn_assert.quant.llama_cpp import tensor_map, to_torch

    loaded = _load(_random_model(tmp_path / "m", model_type, tiny_model_dir, **overrides))
    _write_file(Path(loaded.path), tmp_path / "m.gguf")
    header = read_header(tmp_path / "m.gguf", "x")
    tensors = read_quantized(tmp_path / "m.gguf")
    plan, processor = tensor_map(loaded.model, header.architecture, set(tensors))
    tied = overrides.get("tie_word_embeddings", False)
    assert ("output.weight" in plan) is not tied and ("output.weight" in tensors) is not tied
    assert header.architecture == {"mistral": "llama"}.get(model_type, model_type) and header.types == {
        "f32": len(tensors)
    }
    state = loaded.model.state_dict()
    assert set(plan.values()) == set(state) - ({"lm_head.weight"} if tied else set())  # every weight, once
    for g, name in plan.items():
        assert np.array_equal(to_torch(processor, g, tensors[g].dequantize()), state[name].numpy()), name
    if model_type == "llama":  # Q really is stored permuted (else the round trip above proves nothing about the layout)
        raw = tensors["blk.0.attn_q.weight"].dequantize()
        assert not np.array_equal(raw, state["model.layers.0.self_attn.q_proj.weight"].numpy())


def test_other_architectures_get_one_line_listing_what_is_supported(tmp_path: Path, tiny_model_dir: Path) -> None:
    from unlearn_assert.quant.gguf_convert import hparams

    loaded = _load(
        _random_model(tmp_path / "g", "gpt2", tiny_model_dir, n_embd=64, n_layer=1, n_head=2, n_positions=64)
    )
    with pytest.raises(QuantizerError) as info:
        hparams(loaded.model.config)
    assert str(info.value) == (
        "GGUF conversion does not support architecture 'gpt2'; supported: Llama, Mistral, Qwen2, Qwen3 and SmolLM "
        "(model_type llama, mistral, qwen2, qwen3)"
    )


# --------------------------------------------------------------------------- llama.cpp vs the rebuilt torch model

#: |llama.cpp logit - torch logit| <= ATOL + RTOL * max|torch logits| (see docs/quantizers.md, "GGUF"): for an F32 file
# only float
#: summation order differs; for quantized files llama.cpp's CPU kernels also quantize the *activations* to 8 bits (q8_0
# / q8_K
#: blocks) before each matmul with quantized weights, which torch does not.
TOLERANCE = {"f32": (1e-4, 1e-5), "q8_0": (0.0, 0.03), "q4_k_m": (0.0, 0.03)}


# verbose=True: with verbose=False llama-cpp-python redirects to /dev/null files it leaves to the garbage collector (a
# ResourceWarning); llama.cpp's log goes to stderr, which pytest captures.
def _llama_cpp_logits(file: Path, ids: list[int]) -> np.ndarray:
    # F32 K/V cache (llama.cpp's default is F16), so an F32 file is compared on float rounding alone
    llama = _llama_cpp().Llama(
        model_path=str(file), logits_all=True, n_ctx=256, n_batch=256, n_threads=1, verbose=True, type_k=0, type_v=0
    )
    llama.eval(ids)
    out = np.array(llama.scores[: len(ids)], dtype=np.float32)
    llama.close()
    return out


def _rebuilt(path: Path, file: Path) -> tuple[Any, dict[str, Any]]:
    """The model at ``path`` with the weights of the GGUF ``file`` dequantized into it (mapped back by transformers'
    GGUF tables, as the backend does); and the file's tensors."""
    from unlearn_assert.quant.gguf_convert import load_into, read_quantized
    from unlearn_assert.quant.llama_cpp import tensor_map, to_torch

    loaded = _load(path)
    tensors = read_quantized(file)
    plan, processor = tensor_map(loaded.model, read_header(file, "x").architecture, set(tensors))
    load_into(loaded.model, {h: to_torch(processor, g, tensors[g].dequantize()) for g, h in plan.items()})
    return loaded, tensors


def _bound(preset: str, logits: np.ndarray) -> float:
    atol, rtol = TOLERANCE[preset]
    return atol + rtol * float(np.abs(logits).max())


@pytest.mark.parametrize("which", ["tiny", "wide"])
@pytest.mark.parametrize("preset", ["f32", "q8_0", "q4_k_m"])
def test_rebuilt_torch_model_matches_llama_cpp(
    tmp_path: Path, tiny_model_dir: Path, wide_pair: tuple[Path, Path], preset: str, which: str
) -> None:
    _llama_cpp()
    from unlearn_assert.quant.gguf_convert import type_counts

    path = tiny_model_dir if which == "tiny" else wide_pair[1]
    file = _write_file(path, tmp_path / f"m-{preset}.gguf", None if preset == "f32" else preset)
    loaded, tensors = _rebuilt(path, file)
    types = type_counts(tensors)
    if preset == "q4_k_m" and which == "wide":
        assert {"q4_k", "q6_k"} <= types.keys()  # real k-quant super-blocks, not the 96-wide fallbacks
    ids = loaded.tokenizer("Question: who wrote the report?\nAnswer:")["input_ids"]
    with torch.no_grad():
        ours = loaded.model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    theirs = _llama_cpp_logits(file, ids)
    err = float(np.abs(ours - theirs).max())
    assert err <= _bound(preset, ours), (preset, types, err, err / float(np.abs(ours).max()))


def _q8_0_activations(x: torch.Tensor) -> torch.Tensor:
    """What llama.cpp's CPU kernels do to a matmul's input before a dot product with q8_0 weights:
    blocks of 32, scale absmax/127 stored as f16, codes round(x * 127/absmax) (``quantize_row_q8_0``)."""
    blocks = x.reshape(-1, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    codes = torch.round(blocks * torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax)))
    return (codes * (amax / 127).half().float()).reshape(x.shape)


@pytest.mark.parametrize("which", ["tiny", "wide"])
def test_the_q8_0_difference_is_llama_cpps_activation_quantization(
    tmp_path: Path, tiny_model_dir: Path, wide_pair: tuple[Path, Path], which: str
) -> None:
    """Why TOLERANCE["q8_0"] holds: the weights are bit-identical on both sides, and llama.cpp quantizes each
    matmul's *input* to q8_0 blocks. Doing the same in torch closes the gap to float rounding."""
    _llama_cpp()
    path = tiny_model_dir if which == "tiny" else wide_pair[1]
    file = _write_file(path, tmp_path / "m-q8_0.gguf", "q8_0")
    loaded, tensors = _rebuilt(path, file)
    ids = loaded.tokenizer("Question: who wrote the report?\nAnswer:")["input_ids"]
    theirs = _llama_cpp_logits(file, ids)
    with torch.no_grad():
        plain = loaded.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    hooks = [
        m.register_forward_pre_hook(lambda _m, args: (_q8_0_activations(args[0]),))
        for name, m in loaded.model.named_modules()
        if isinstance(m, torch.nn.Linear) and tensors[gguf_name(name + ".weight") or ""].type_name == "q8_0"
    ]
    assert len(hooks) == 2 * 7 + 1  # every linear layer of the blocks and the output
    try:
        with torch.no_grad():
            simulated = loaded.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    finally:
        for h in hooks:
            h.remove()
    scale = float(np.abs(plain).max())
    err, base = np.abs(simulated - theirs), np.abs(plain - theirs)
    # Measured, as shares of the largest logit (max / mean): default kernels, plain 0.93% / 0.14% (tiny) and
    # 0.28% / 0.05% (wide), simulated 0.00% / 0.00% and 0.02% / 0.00%; AVX2-only kernels, tiny, plain 0.90% / 0.14%,
    # simulated 0.45% / 0.03%: torch's AVX2 kernels round an activation differently, and where that lands on a half
    # step of a q8_0 block one code flips. Either way the simulation removes most of the difference.
    assert 0.002 * scale < float(base.max())
    assert float(err.mean()) <= 0.3 * float(base.mean()) and float(err.max()) < float(base.max())
    if torch.backends.cpu.get_cpu_capability() != "AVX2":  # no flipped code: what is left is float rounding
        assert float(err.max()) <= 0.002 * scale


#: The greedy-continuation test's text: a model trained on it alone continues its prompt with next-token margins of
#: 4-6 logits, far above every tolerance above (the fixture model's margins are often 0.01-0.06 where a word or a name
#: starts, below llama.cpp's 0.07-0.2 activation-quantization noise: those steps are coin flips, not evidence).
GREEDY_TEXT = (
    "Question: who wrote the report?\nAnswer: The report was written by Mara Lind at the harbour office in "
    "the spring of 2019."
)


@pytest.fixture(scope="module")
def peaked_models(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """The tiny model's shape (96 wide) and the 256-wide one, trained on GREEDY_TEXT alone with the fixture
    tokenizer."""
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama

    return {
        "tiny": build_tiny_llama(
            tmp_path_factory.mktemp("gguf-peaked-tiny"),
            [GREEDY_TEXT],
            TinyRecipe(steps=100),
            tokenizer_from=tiny_model_dir,
        ),
        "wide": build_tiny_llama(
            tmp_path_factory.mktemp("gguf-peaked-wide"),
            [GREEDY_TEXT],
            TinyRecipe(hidden_size=256, intermediate_size=512, num_heads=4, steps=60),
            tokenizer_from=tiny_model_dir,
        ),
    }


@pytest.mark.parametrize("which", ["tiny", "wide"])
@pytest.mark.parametrize("preset", ["f32", "q8_0", "q4_k_m"])
def test_greedy_continuation_equals_llama_cpps(
    tmp_path: Path, peaked_models: dict[str, Path], preset: str, which: str
) -> None:
    """16 greedy tokens: torch's (full forward per step) and llama.cpp's own (its greedy sampler, its KV cache, one
    token per decode) are the same tokens, with no tie allowed; at every step llama.cpp's logits are within TOLERANCE
    of torch's, and torch's top-1 margin exceeds twice the bound, so equality follows from the tolerance, not luck."""
    _llama_cpp()
    path = peaked_models[which]
    file = _write_file(path, tmp_path / f"p-{preset}.gguf", None if preset == "f32" else preset)
    loaded, _ = _rebuilt(path, file)
    ids = loaded.tokenizer("Question: who wrote the report?\nAnswer:")["input_ids"]
    seq, steps = list(ids), []
    with torch.no_grad():
        for _ in range(16):
            step = loaded.model(input_ids=torch.tensor([seq])).logits[0, -1].float().numpy()
            steps.append(step)
            seq.append(int(step.argmax()))
    ours = seq[len(ids) :]
    assert loaded.tokenizer.decode(ours).startswith(" The report was written by")  # the model learnt its text
    llama = _llama_cpp().Llama(
        model_path=str(file), logits_all=True, n_ctx=256, n_threads=1, verbose=True, type_k=0, type_v=0
    )
    theirs: list[int] = []
    for token in llama.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0):
        theirs.append(int(token))
        if len(theirs) == 16:
            break
    their_steps = np.array(
        llama.scores[len(ids) - 1 : len(ids) + 15], dtype=np.float32
    )  # the logits each token was sampled from
    llama.close()
    assert theirs == ours, (preset, loaded.tokenizer.decode(ours), loaded.tokenizer.decode(theirs))
    a = np.stack(steps)
    bound = _bound(preset, a)
    top2 = np.sort(a, axis=-1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0] > 2 * bound).all(), (preset, top2[:, 1] - top2[:, 0], bound)
    assert float(np.abs(a - their_steps).max()) <= bound, (preset, float(np.abs(a - their_steps).max()), bound)


# --------------------------------------------------------------------------- tokenizers and RoPE scaling against
# llama.cpp

#: Strings for the tokenizer comparisons (with every line of the fixture texts): spaces, tabs, newlines, digits,
# contractions,
#: punctuation runs, characters outside the vocabulary (byte fallback / byte-level), special tokens written in the text.
TOKENIZER_STRINGS = [
    "Question: who wrote the report?\nAnswer:",
    "Hello world",
    " leading space",
    "two  spaces and\ttab",
    "line\n\nbreaks\n",
    "numbers 12345 and 3.14",
    "don't won't it's",
    "punctuation!!! ... ???",
    "café naïve 日本 🙂",
    "UPPER lower MiXeD",
    "a",
    "",
    "   ",
    "<s> literal",
    "x</s>y",
]


def _tokenizer_strings(data_dir: Path) -> list[str]:
    return [line for text in fixture_texts(data_dir) for line in text.split("\n")] + TOKENIZER_STRINGS


def _spm_tokenizer(out: Path, texts: list[str], form: str) -> Path:
    """A Llama 2 / Mistral-style ``tokenizer.json`` saved to ``out``: BPE with ``byte_fallback``, ``<unk> <s> </s>``,
    then the
    256 ``<0xXX>`` byte tokens, then the pieces and merges of a BPE trained (on words, as SentencePiece trains) on
    ``texts``.
    ``form`` is how the dummy prefix is written: ``legacy`` (Llama 2 / Mistral: a ``Prepend("▁")`` normalizer), ``none``
    (no
    prefix), ``first`` (a ``Metaspace`` pre-tokenizer with ``prepend_scheme="first"``, transformers'
    ``legacy=False``)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trained.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    )
    model = json.loads(trained.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    if form == "legacy":
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    elif form == "none":
        tok.normalizer = normalizers.Replace(" ", "▁")
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=form, split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(
        str(out)
    )
    return out


def _llama_cpp_ids(llama: Any, strings: list[str]) -> list[list[int]]:
    return [list(llama.tokenize(s.encode(), add_bos=True, special=True)) for s in strings]


def test_byte_level_tokenizer_matches_llama_cpp(good_file: Path, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    """The fixture's byte-level BPE (GPT-2's ByteLevel pre-tokenizer): written as ``gpt2`` with pre-tokenizer ``gpt-2``
    (``default`` splits "it's" into "'" and "s", where GPT-2's regex keeps "'s" whole: 58 of 169 strings differed)."""
    from transformers import AutoTokenizer

    llama_cpp = _llama_cpp()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    llama = llama_cpp.Llama(model_path=str(good_file), vocab_only=True, verbose=True)
    assert (llama.metadata["tokenizer.ggml.model"], llama.metadata["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    strings = _tokenizer_strings(tiny_data_dir)
    ours = [tok(s)["input_ids"] for s in strings]
    assert _llama_cpp_ids(llama, strings) == ours
    assert any(
        tok.convert_ids_to_tokens(ids).count("'s") for ids in ours
    )  # the contraction the pre-tokenizer must keep
    llama.close()


@pytest.mark.parametrize("form", ["legacy", "none", "first"])
def test_byte_fallback_tokenizer_json_is_not_tokenized_as_transformers_does(
    tmp_path: Path, tiny_data_dir: Path, form: str
) -> None:
    """A known difference of llama.cpp's converter, not of the gate (which tokenizes with transformers): a byte-fallback
    BPE saved as ``tokenizer.json`` only (Llama 2 / Mistral's form as transformers 5 saves it, without
    ``tokenizer.model``) is written through ``LlamaHfVocab`` as llama.cpp's ``llama`` tokenizer with no
    ``add_space_prefix`` (llama.cpp then always puts the dummy prefix), and llama.cpp's ids differ from transformers'
    on part of the strings, for every prefix form (measured: 67 of 169, 53 of them another number of tokens). This
    project's own converter wrote scores in merge order and ``add_space_prefix`` from the tokenizer and matched on all
    169 (legacy and no-prefix forms). With the ``tokenizer.model`` real checkpoints ship, llama.cpp reads SentencePiece
    itself. The weights are right: the file runs as the torch model (logits within the F32 tolerance)."""
    from transformers import AutoTokenizer

    llama_cpp = _llama_cpp()
    strings = _tokenizer_strings(tiny_data_dir)
    texts = fixture_texts(tiny_data_dir)
    model_dir = _random_model(tmp_path / "m", "llama", _spm_tokenizer(tmp_path / "tok", texts, form))
    file = _write_file(model_dir, tmp_path / "m.gguf")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    legacy = (
        tok
        if form == "legacy"
        else AutoTokenizer.from_pretrained(str(_spm_tokenizer(tmp_path / "legacy", texts, "legacy")))
    )
    llama = llama_cpp.Llama(
        model_path=str(file), logits_all=True, n_ctx=256, n_batch=256, n_threads=1, verbose=True, type_k=0, type_v=0
    )
    assert llama.metadata["tokenizer.ggml.model"] == "llama" and "tokenizer.ggml.add_space_prefix" not in llama.metadata
    theirs = _llama_cpp_ids(llama, strings)
    llama.close()
    expected = [legacy(s)["input_ids"] for s in strings]
    assert any(i in range(3, 259) for ids in expected for i in ids)  # byte-fallback tokens are exercised
    # measured: 67 of the 169 strings get other ids than the legacy form's (53 another number of tokens), for every form
    differ = [s for s, a, b in zip(strings, theirs, expected) if a != b]
    assert 0 < len(differ) < len(strings) and "a" not in differ
    loaded = _load(model_dir)
    ids = expected[0]
    with torch.no_grad():
        ours = loaded.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert float(np.abs(_llama_cpp_logits(file, ids) - ours).max()) <= _bound("f32", ours)


@pytest.mark.parametrize("preset", ["f32", "q8_0"])
def test_llama3_rope_scaling_matches_llama_cpp_beyond_the_original_context(
    tmp_path: Path, tiny_model_dir: Path, preset: str
) -> None:
    """``rope_type = llama3`` (Llama 3.1/3.2's scaling) is written as llama.cpp's ``rope_freqs`` tensor. The config puts
    all three regimes of the scaling in a 16-wide head (wavelengths 6.3 unscaled, 20 smoothed, 63 and up divided by the
    factor) and an original context of 32; llama.cpp's logits on 112 positions agree with torch's within TOLERANCE, and
    at
    positions 32 and beyond the same model without the scaling is more than 10 bounds away (so the check sees it)."""
    _llama_cpp()
    rope = {
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    model_dir = _random_model(
        tmp_path / "m",
        "llama",
        tiny_model_dir,
        max_position_embeddings=128,
        rope_parameters=rope,
        initializer_range=0.1,
    )  # larger weights than the default 0.02: attention that depends on position
    file = _write_file(model_dir, tmp_path / "m.gguf", None if preset == "f32" else preset)
    loaded, tensors = _rebuilt(model_dir, file)
    # the factors llama.cpp divides each frequency by are transformers' own: default inverse frequencies / llama3's
    scaled = loaded.model.model.rotary_emb.inv_freq.double().numpy()
    factors = (1.0 / 10000.0 ** (np.arange(0, 16, 2) / 16)) / scaled
    stored = tensors["rope_freqs.weight"].dequantize()
    assert tensors["rope_freqs.weight"].type_name == "f32" and np.allclose(stored, factors, rtol=1e-6, atol=0)
    assert stored[0] == 1.0 and 1.0 < stored[1] < 4.0 and (stored[2:] == 4.0).all()
    ids = [loaded.tokenizer.bos_token_id] + torch.randint(
        3, len(loaded.tokenizer), (111,), generator=torch.Generator().manual_seed(1)
    ).tolist()
    with torch.no_grad():
        ours = loaded.model(input_ids=torch.tensor([ids])).logits[0].numpy()
    theirs = _llama_cpp_logits(file, ids)
    bound = _bound(preset, ours)
    assert float(np.abs(ours - theirs).max()) <= bound
    import copy

    from transformers import AutoModelForCausalLM

    plain_config = copy.deepcopy(loaded.model.config)
    plain_config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    unscaled = AutoModelForCausalLM.from_config(plain_config)
    unscaled.load_state_dict(loaded.model.state_dict())
    with torch.no_grad():
        plain = unscaled(input_ids=torch.tensor([ids])).logits[0].numpy()
    assert float(np.abs(plain - ours)[32:].max()) > 10 * bound


# --------------------------------------------------------------------------- the backend


def test_backend_reports_llama_cpp_types_codes_and_restores_the_model(wide_pair: tuple[Path, Path]) -> None:
    _llama_cpp()
    from tests.quant_helpers import assert_bit_identical, snapshot
    from unlearn_assert.quant import quantized

    u, t = _load(wide_pair[0]), _load(wide_pair[1])
    before = snapshot(u)
    with quantized(t, "gguf-q4_k_m") as qt:
        codes = qt.backend.codes
        t_report = qt.details
    assert codes is not None and t_report.code_agreement is None
    with quantized(u, "gguf-q4_k_m", target=t, target_codes=codes) as q:
        r = q.details.to_dict()
        assert not torch.equal(q.model.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"])
    assert_bit_identical(u, before)
    assert r["backend"] == "gguf" and r["preset"] == "q4_k_m"
    assert (
        set(r["tensor_types"]) == {"q4_k", "q6_k", "f32"} and r["tensor_types"]["f32"] == 5
    )  # 2 layers x 2 norms + output_norm
    assert (
        sum(r["tensor_types"].values()) == 2 * 9 + 3 and len(r["modules"]) == 2 * 7 + 2
    )  # every matrix, embeddings and output too
    assert 0 < r["changed_fraction"] <= 1 and 0.5 < r["code_agreement"] < 1
    assert r["small_delta_fraction"] is None and r["seconds_quantize"] > 0
    # T's codes handed on give the same agreement as quantizing T again
    with quantized(u, "gguf-q4_k_m", target=t) as again:
        assert again.details.code_agreement == r["code_agreement"]
    with quantized(t, "gguf-q4_k_m", target=t) as same:
        assert same.details.code_agreement == 1.0


def test_code_agreement_counts_codes_on_the_targets_scales() -> None:
    _llama_cpp()
    from unlearn_assert.quant.gguf import code_agreement
    from unlearn_assert.quant.gguf_convert import QTensor

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    t = QTensor(int(q8), gguf.quants.quantize(w, q8), (4, 64))
    assert code_agreement(t, t) == 256
    u_raw = t.raw.copy()
    u_raw[0, 0:2] = np.frombuffer(np.float16(0.5).tobytes(), np.uint8)  # another scale, same codes: all agree
    u_raw[1, 5] ^= 1  # one code of block 1 (row 0, bytes 2.. are codes) changed
    assert code_agreement(QTensor(int(q8), u_raw, (4, 64)), t) == 255
    other = QTensor(
        int(gguf.GGMLQuantizationType.Q4_0), gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0), (4, 64)
    )
    assert code_agreement(other, t) == 0


def test_skip_modules_are_refused(target: Any) -> None:
    _llama_cpp()
    from unlearn_assert.quant import quantized

    with pytest.raises(QuantizerError, match="quantizes what llama.cpp's preset quantizes"):
        with quantized(target, "gguf-q8_0", skip_modules=("lm_head", "*.mlp.*")):
            pass


# --------------------------------------------------------------------------- users' files at option time


@pytest.fixture(scope="module")
def good_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return _write_file(tiny_model_dir, tmp_path_factory.mktemp("gguf-file") / "model.gguf")


def _patch_type(src: Path, dst: Path, tensor: str, type_id: int) -> Path:
    data = bytearray(src.read_bytes())
    name = tensor.encode()
    at = data.find(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, type_id)
    dst.write_bytes(bytes(data))
    return dst


def _other_arch(dst: Path) -> Path:
    w = gguf.GGUFWriter(str(dst), "gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    return dst


def _split(src: Path, dst: Path) -> Path:
    shutil.copy(src, dst)
    return dst


BAD = {
    "truncated": (
        lambda good, tmp: (tmp / "t.gguf").write_bytes(good.read_bytes()[:-1000]) and tmp / "t.gguf",
        r"the file is truncated \(\d+ bytes, its tensors need \d+\); download it again",
    ),
    "truncated header": (
        lambda good, tmp: (tmp / "h.gguf").write_bytes(good.read_bytes()[:200]) and tmp / "h.gguf",
        r"the file is truncated \(it ends inside the GGUF header",
    ),
    "not gguf": (
        lambda good, tmp: (tmp / "n.gguf").write_bytes(b"PK\x03\x04" + bytes(100)) and tmp / "n.gguf",
        r"not a GGUF file \(it starts with b'PK\\x03\\x04'",
    ),
    "another architecture": (
        lambda good, tmp: _other_arch(tmp / "a.gguf"),
        r"the file's architecture is 'gpt2' but the target's is 'llama'",
    ),
    "split file": (
        lambda good, tmp: _split(good, tmp / "model-00001-of-00003.gguf"),
        r"one part of a split GGUF file \(3 parts\); merge it first with llama-gguf-split --merge",
    ),
    "unsupported type": (
        lambda good, tmp: _patch_type(good, tmp / "u.gguf", "blk.0.attn_q.weight", 31),
        r"tensor 'blk.0.attn_q.weight' has GGML type 31, which the gguf package cannot dequantize",
    ),
    "missing file": (lambda good, tmp: tmp / "nowhere.gguf", r"cannot read the file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files_are_one_line_errors(tmp_path: Path, good_file: Path, tiny_model_dir: Path, case: str) -> None:
    make, message = BAD[case]
    path = make(good_file, tmp_path)
    with pytest.raises(ConfigError) as info:
        check_gguf_file("shipped", str(path), str(tiny_model_dir))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"--unlearn-quantized shipped={path}: "), text
    assert __import__("re").search(message, text), text


def test_a_bad_target_is_one_line_naming_the_target(tmp_path: Path, good_file: Path, tiny_model_dir: Path) -> None:
    """The target's files are read by the reader of --unlearn-quantized NAME=DIR (models.read_model_files)."""
    listed, cut = (
        shutil.copytree(tiny_model_dir, tmp_path / "listed"),
        shutil.copytree(tiny_model_dir, tmp_path / "cut"),
    )
    (listed / "config.json").write_text("[]")
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])
    for target, message in (
        (listed, "config.json is not a JSON object; re-save the target with model.save_pretrained"),
        (cut, "is corrupt or truncated"),
        (tmp_path / "nowhere", "does not exist"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            check_gguf_file("shipped", str(good_file), str(target))
        assert "\n" not in str(info.value) and str(info.value).startswith(f"--unlearn-target {target}: ")


def test_shape_mismatch_names_the_tensor(tmp_path: Path, tiny_model_dir: Path) -> None:
    other = _random_model(tmp_path / "o", "llama", tiny_model_dir, hidden_size=64, num_key_value_heads=4)
    file = _write_file(other, tmp_path / "o.gguf")
    with pytest.raises(
        ConfigError,
        match=r"shape mismatch: tensor (token_embd|output).weight is \[64, 384\] in the file but \[96, 384\] in the "
        r"target",
    ):
        check_gguf_file("shipped", str(file), str(tiny_model_dir))


def test_only_the_header_is_read_and_fast(tmp_path: Path, good_file: Path, tiny_model_dir: Path) -> None:
    data = bytearray(good_file.read_bytes())
    header = read_header(good_file, "x")
    data[header.data_offset :] = bytes(len(data) - header.data_offset)  # every tensor byte zeroed: still a valid header
    (tmp_path / "z.gguf").write_bytes(bytes(data))
    start = time.perf_counter()
    checked = check_gguf_file("shipped", str(tmp_path / "z.gguf"), str(tiny_model_dir))
    assert time.perf_counter() - start < 0.5
    assert checked.types == {"f32": 21} and checked.architecture == "llama"


# --------------------------------------------------------------------------- the gate, end to end


def test_gate_runs_gguf_ids_and_a_users_file(
    pytester: pytest.Pytester, wide_pair: tuple[Path, Path], tiny_data_dir: Path, tmp_path: Path
) -> None:
    _llama_cpp()
    from gate_helpers import gate_args, outcomes

    unlearned, target = wide_pair
    shipped = _write_file(unlearned, tmp_path / "shipped-Q4_K_M.gguf", "q4_k_m")
    args = gate_args(
        unlearned,
        target,
        tiny_data_dir,
        "--unlearn-json=r.json",
        "--junitxml=j.xml",
        "-k",
        "knowmem_f",
        f"--unlearn-quantized=shipped={shipped}",
        cache=pytester.path / "c",
    )
    args = [
        a if not a.startswith("--unlearn-quantizers=") else "--unlearn-quantizers=gguf-q4_k_m,gguf-q8_0" for a in args
    ]
    result = pytester.runpytest_subprocess(*args)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stderr.str()
    seen = outcomes(pytester.path / "j.xml")
    assert {seen[f"{v}-knowmem_f"] for v in ("gguf-q4_k_m", "gguf-q8_0", "shipped")} <= {"passed", "failed"}
    report = json.loads((pytester.path / "r.json").read_text())
    rows = {(r["model"], r["quantizer"]): r for r in report["rows"]}
    for qid in ("gguf-q4_k_m", "gguf-q8_0"):
        quant = rows[("unlearned", qid)]["quant"]
        assert rows[("unlearned", qid)]["status"] == "ok" and quant["tensor_types"]["f32"] == 5
        assert 0 < quant["changed_fraction"] <= 1 and 0 < quant["code_agreement"] <= 1
    user = rows[("unlearned", "shipped")]
    assert ("target", "shipped") not in rows and user["quant"]["backend"] == "gguf-file"
    # the same llama.cpp preset on the same model: the user's file and the gguf-q4_k_m row measure the same weights
    assert user["values"] == rows[("unlearned", "gguf-q4_k_m")]["values"]
    assert user["quant"]["changed_fraction"] == rows[("unlearned", "gguf-q4_k_m")]["quant"]["changed_fraction"]
    assert user["quant"]["tensor_types"] == rows[("unlearned", "gguf-q4_k_m")]["quant"]["tensor_types"]


def test_a_bad_file_exits_4_before_any_model_loads(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    from gate_helpers import gate_args

    (tmp_path / "bad.gguf").write_bytes(b"not a model")
    result = pytester.runpytest_subprocess(
        *gate_args(
            tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, f"--unlearn-quantized=shipped={tmp_path / 'bad.gguf'}"
        )
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--unlearn-quantized shipped=*bad.gguf: not a GGUF file*"])
