"""Tiny random models of the families users ship, built from transformers' own config classes (no hub).

Each family gets the tokenizer form its llama.cpp converter reads, as its real checkpoints ship it:
a byte-level BPE ``tokenizer.json`` (the fixture's, trained here) for Llama, Mistral, Qwen2, Qwen3,
OLMo2 and Phi3 (marked ``GPT2Tokenizer`` as Phi-4 is: llama.cpp's Phi3 converter reads a
SentencePiece model otherwise), and a SentencePiece ``tokenizer.model`` trained here with Gemma's id
layout (pad 0, eos 1, bos 2, unk 3, byte fallback) for Gemma2 and Gemma3, whose converters read only that.

Sizes: 64 wide, 128 in the MLP, 2 layers, 4 heads of 16 (2 KV heads); every group size the matrix uses
(32, 64) divides every input width. Norms and biases are moved off their init (so a mix-up of a norm, a
``1 + w`` shift or a bias shows), Gemma and Mistral use a sliding window of 16 tokens, shorter than the
prompts, and Gemma3 has 6 layers, its real pattern of 5 sliding-window layers then one full-attention layer
(llama.cpp runs Gemma 3 with that fixed pattern: a model with other ``layer_types`` is not what it would run).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from conftest import fixture_texts


@dataclass(frozen=True)
class Family:
    model_type: str
    tied: bool  # the shipped form (Gemma and Qwen2's small models tie; Llama 3.1, Mistral, Phi3, OLMo2 do not)
    tokenizer: str = "bpe"  # or "spm"
    config: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", False),
    "mistral": Family("mistral", False, config={"sliding_window": 16}),
    "qwen2": Family("qwen2", True),
    "qwen3": Family("qwen3", False, config={"head_dim": 16}),
    "gemma2": Family("gemma2", True, "spm", {"head_dim": 16, "sliding_window": 16, "query_pre_attn_scalar": 16}),
    # Gemma 3's own layer pattern (5 sliding, then 1 full): llama.cpp runs Gemma 3 with that fixed pattern
    "gemma3": Family(
        "gemma3_text",
        True,
        "spm",
        {"head_dim": 16, "sliding_window": 16, "query_pre_attn_scalar": 16, "num_hidden_layers": 6},
    ),
    "phi3": Family("phi3", False),
    "olmo2": Family("olmo2", False),
}


def train_spm_tokenizer(out: Path, texts: list[str], vocab_size: int = 512) -> Path:
    """A SentencePiece BPE ``tokenizer.model`` with Gemma's special-token layout, and transformers'
    ``GemmaTokenizer`` of it, saved to ``out``."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        character_coverage=1.0,
        split_digits=True,
        num_threads=1,
        minloglevel=2,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(buf.getvalue())
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GemmaTokenizer", **special}))
    AutoTokenizer.from_pretrained(str(out)).save_pretrained(str(out))
    return out


def build_tokenizers(root: Path, data_dir: Path) -> dict[str, Path]:
    """{"bpe": dir, "spm": dir}: the two tokenizers the families use, trained on the fixture text."""
    from unlearn_assert.testing import train_tokenizer

    texts = fixture_texts(data_dir)
    bpe = root / "bpe"
    train_tokenizer(texts, 384).save_pretrained(str(bpe))
    return {"bpe": bpe, "spm": train_spm_tokenizer(root / "spm", texts)}


def build_family(
    out: Path, name: str, tokenizers: dict[str, Path], *, tied: bool | None = None, seed: int = 0, **overrides: Any
) -> Path:
    """A random model of family ``name`` (tied as shipped unless ``tied``), saved with its tokenizer to ``out``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from unlearn_assert.models import quiet_transformers

    fam = FAMILIES[name]
    tok = AutoTokenizer.from_pretrained(str(tokenizers[fam.tokenizer]))
    settings: dict[str, Any] = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=fam.tied if tied is None else tied,
    )
    settings.update(fam.config)
    settings.update(overrides)
    config = AutoConfig.for_model(fam.model_type, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    with quiet_transformers():
        model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    spm_model = tokenizers[fam.tokenizer] / "tokenizer.model"
    if spm_model.is_file():  # transformers 5 saves tokenizer.json only; llama.cpp's Gemma converters read this
        (out / "tokenizer.model").write_bytes(spm_model.read_bytes())
    if name == "phi3":  # Phi-4's form: llama.cpp's Phi3 converter then reads the BPE tokenizer.json
        cfg_file = out / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg_file.write_text(json.dumps({**cfg, "tokenizer_class": "GPT2Tokenizer"}, indent=2))
    return out


def unlearned_copy(src: Path, out: Path) -> Path:
    """``src`` with seeded noise on its matrices (the matrix's "unlearned" model), tokenizer files copied as is."""
    import shutil

    from transformers import AutoModelForCausalLM

    from unlearn_assert.models import quiet_transformers

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name and "lm_head" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * 2e-2 * p.abs().mean())
    with quiet_transformers():
        model.save_pretrained(str(out))
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
            shutil.copy(f, out / f.name)
    return out
