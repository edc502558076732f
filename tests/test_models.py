"""Safe model loading: every broken directory gives one actionable line; nothing is ever written."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from unlearn_assert.errors import ModelError
from unlearn_assert.models import check_compatible, check_model_dir, fingerprint, load_model


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def test_load_tiny_model(tiny_model_dir: Path) -> None:
    before = _tree_digest(tiny_model_dir)
    loaded = load_model(tiny_model_dir, device="cpu")
    assert loaded.info["architecture"] == "LlamaForCausalLM"
    assert loaded.dtype == "float32"
    assert loaded.tokenizer.pad_token is not None
    assert len(loaded.fingerprint) == 64
    assert _tree_digest(tiny_model_dir) == before, "loading must never write into the model directory"


def test_dtype_choice(tiny_model_dir: Path) -> None:
    import torch

    loaded = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert loaded.dtype == "bfloat16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}


def test_fingerprint_is_content_based(model_copy: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    assert fingerprint(model_copy) == fingerprint(tiny_model_dir), "a copy elsewhere has the same fingerprint"
    (model_copy / "unrelated.txt").write_text("notes")
    assert fingerprint(model_copy) == fingerprint(tiny_model_dir), "files that do not define the model are ignored"
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps") != 1e-5 else 1e-6
    (model_copy / "config.json").write_text(json.dumps(cfg))
    assert fingerprint(model_copy) != fingerprint(tiny_model_dir)
    weights = model_copy / "model.safetensors"
    data = bytearray((tiny_model_dir / "model.safetensors").read_bytes())
    data[-1] ^= 1
    second = tmp_path / "second"
    shutil.copytree(tiny_model_dir, second)
    (second / "model.safetensors").write_bytes(bytes(data))
    assert fingerprint(second) != fingerprint(tiny_model_dir), "one flipped weight bit changes the fingerprint"
    assert weights.exists()


def _truncate(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])


def _garbage_header(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16)


def _huge_header(d: Path) -> None:
    w = d / "model.safetensors"
    w.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")


def _pickle_only(d: Path) -> None:
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"pickle")


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _bad_config(d: Path) -> None:
    (d / "config.json").write_text("{ not json")


def _no_tokenizer(d: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (d / name).exists():
            (d / name).unlink()


def _nan_weights(d: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    w = d / "model.safetensors"
    tensors = load_file(str(w))
    name = next(n for n in tensors if "q_proj" in n)
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(w), metadata={"format": "pt"})
    assert torch.isnan(load_file(str(w))[name]).any()


BROKEN: list[tuple[str, Callable[[Path], None], str]] = [
    ("truncated", _truncate, "truncated"),
    ("garbage-header", _garbage_header, "corrupt"),
    ("huge-header", _huge_header, "corrupt"),
    ("pickle-only", _pickle_only, "--unlearn-allow-pickle"),
    ("no-weights", _no_weights, "no weight files"),
    ("no-config", _no_config, "no config.json"),
    ("bad-config", _bad_config, "config.json"),
    ("no-tokenizer", _no_tokenizer, "tokenizer"),
    ("nan-weights", _nan_weights, "NaN or Inf"),
]


@pytest.mark.parametrize(("breaker", "needle"), [(b, n) for _, b, n in BROKEN], ids=[i for i, _, _ in BROKEN])
def test_broken_model_dirs(model_copy: Path, breaker: Callable[[Path], None], needle: str) -> None:
    breaker(model_copy)
    before = _tree_digest(model_copy)
    with pytest.raises(ModelError) as info:
        load_model(model_copy, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    assert needle in message
    assert _tree_digest(model_copy) == before, "a failed load must not touch the directory"


def test_missing_and_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ModelError, match="not a directory"):
        check_model_dir(f)


def test_mismatch_checks(tiny_model_dir: Path, tiny_unlearned_dir: Path, tmp_path: Path) -> None:
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama

    target = load_model(tiny_model_dir)
    check_compatible(target, load_model(tiny_unlearned_dir))  # same shapes and tokenizer: fine
    wider = build_tiny_llama(
        tmp_path / "wider", ["some text for a tokenizer. " * 20], TinyRecipe(hidden_size=32, steps=0)
    )
    with pytest.raises(ModelError, match="does not match the target's parameters"):
        check_compatible(target, load_model(wider))
    other_tok = build_tiny_llama(
        tmp_path / "othertok", ["completely different words here! " * 20], TinyRecipe(steps=0, vocab_size=300)
    )
    other = load_model(other_tok)
    # same architecture and (padded to) the same shapes is not enough: the vocabularies differ
    other.model.resize_token_embeddings(len(target.tokenizer))
    with pytest.raises(ModelError, match="tokenizer vocabulary"):
        check_compatible(target, other)
