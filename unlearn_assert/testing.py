"""Build tiny Llama checkpoints locally: a BPE tokenizer trained on given text, a model made from a
config and trained for a few seconds, saved as a normal Hugging Face directory (safetensors).

Why: nothing can be downloaded here, yet every test, benchmark and the demo need a real
``transformers`` causal LM with a real tokenizer, so the same code paths run as for a 7B model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .models import quiet_transformers

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines a tiny checkpoint; equal recipes give bit-identical weights."""

    vocab_size: int = 384
    hidden_size: int = 96
    intermediate_size: int = 192
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 512
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 96
    lr: float = 3e-3
    seed: int = 0


def train_tokenizer(texts: Sequence[str], vocab_size: int, *, trailing_whitespace: bool = False) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` and wrapped for transformers.

    ``trailing_whitespace`` splits after every whitespace character, so pre-tokens carry their
    trailing space instead of GPT-2's leading one (the demo family needs it; see
    :func:`unlearn_assert.demo.family.train_demo_tokenizer`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if trailing_whitespace:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(r"\s"), behavior="merged_with_previous"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def llama_config(
    tokenizer: Any, hidden_size: int, intermediate_size: int, num_layers: int, num_heads: int, max_positions: int
) -> Any:
    """The Llama config of the locally trained models (tests' tiny model, the demo family)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def _batches(ids: list[int], recipe: TinyRecipe, rng: random.Random) -> Any:
    import torch

    span = recipe.seq_len + 1
    if len(ids) <= span:
        ids = ids * (span // max(len(ids), 1) + 2)
    starts = [rng.randrange(0, len(ids) - span) for _ in range(recipe.batch_size)]
    return torch.tensor([ids[s : s + span] for s in starts], dtype=torch.long)


def build_tiny_llama(
    out_dir: str | Path,
    texts: Sequence[str],
    recipe: TinyRecipe = TinyRecipe(),
    *,
    tokenizer_from: str | Path | None = None,
) -> Path:
    """Train a tokenizer (or reuse the one in ``tokenizer_from``) and a tiny Llama on ``texts``;
    save both to ``out_dir``. Reusing a tokenizer gives a model comparable with another one (e.g.
    a "retrain" model trained without the forget text). Deterministic for a recipe and text.
    """
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_from is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_from), local_files_only=True)
    else:
        tokenizer = train_tokenizer(texts, recipe.vocab_size)
    torch.manual_seed(recipe.seed)
    config = llama_config(
        tokenizer,
        recipe.hidden_size,
        recipe.intermediate_size,
        recipe.num_layers,
        recipe.num_heads,
        recipe.max_positions,
    )
    model = LlamaForCausalLM(config)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])
    rng = random.Random(recipe.seed)
    if recipe.steps > 0:
        opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
        model.train()
        for _ in range(recipe.steps):
            batch = _batches(ids, recipe, rng)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with quiet_transformers():
        model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    (out / "tiny_recipe.json").write_text(__import__("json").dumps(asdict(recipe), indent=2))
    return out


def perturb_copy(src: str | Path, out_dir: str | Path, scale: float = 1e-3, seed: int = 1) -> Path:
    """Copy a checkpoint with small seeded noise on every linear weight: a stand-in for an
    "unlearned" model in tests that only need two related, not identical, checkpoints."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(src))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and "embed" not in name and "lm_head" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())
    out = Path(out_dir)
    with quiet_transformers():
        model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out
