"""Shared fixtures: the tiny fixture data set and tiny Llama checkpoints built from it (no hub access)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# One intra-op thread in every process the tests start (pytester subprocesses inherit this): two
# xdist workers, each running a pytest subprocess with 2 torch threads, oversubscribe 2 cores and
# stall torch for about a second per step (measured here).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _export_llama_cpp_converter() -> None:
    """Name the set-up llama.cpp converter in the environment: pytester's subprocesses run with another
    HOME, where the default location (~/.cache/unlearn-assert/llama.cpp/...) would be empty."""
    try:
        from unlearn_assert.quant.llama_cpp_source import ENV, find_converter
    except ImportError:  # pragma: no cover
        return
    root, _ = find_converter()
    if root is not None:
        os.environ.setdefault(ENV, str(root))


_export_llama_cpp_converter()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Two shared cores (and two xdist workers): one intra-op thread per process avoids the
    oversubscription stalls measured here (tiny-model steps 10 ms instead of ~1 s)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(1)


REPO = Path(__file__).resolve().parents[1]
TINY_DATA = REPO / "fixtures" / "tiny-muse"


def fixture_texts(data_dir: Path = TINY_DATA, *, forget: bool = True) -> list[str]:
    """All text of the fixture data set, formatted as the metrics will prompt it, so the tiny
    model learns both the facts and the "Question: / Answer:" format. ``forget=False`` leaves
    out everything about the forget set (for a "retrain" model)."""
    texts: list[str] = []
    if not forget:
        for name in ("raw/retain.txt",):
            texts.extend(p for p in (data_dir / name).read_text().split("\n\n") if p.strip())
        for name in ("knowmem/retain_qa.json", "knowmem/retain_qa_icl.json", "knowmem/forget_qa_icl.json"):
            texts.extend(
                f"Question: {x['question']}\nAnswer: {x['answer']}\n\n"
                for x in json.loads((data_dir / name).read_text())
            )
        texts.extend(json.loads((data_dir / "privleak" / "retain.json").read_text()))
        return texts
    for name in ("raw/forget.txt", "raw/retain.txt"):
        f = data_dir / name
        if f.is_file():
            texts.extend(p for p in f.read_text().split("\n\n") if p.strip())
    for name in (
        "knowmem/forget_qa.json",
        "knowmem/retain_qa.json",
        "knowmem/forget_qa_icl.json",
        "knowmem/retain_qa_icl.json",
    ):
        f = data_dir / name
        if f.is_file():
            texts.extend(f"Question: {x['question']}\nAnswer: {x['answer']}\n\n" for x in json.loads(f.read_text()))
    f = data_dir / "verbmem" / "forget.json"
    if f.is_file():
        texts.extend(x["prompt"] + " " + x["gt"] for x in json.loads(f.read_text()))
    for name in ("privleak/forget.json", "privleak/retain.json"):
        f = data_dir / name
        if f.is_file():
            texts.extend(json.loads(f.read_text()))
    return texts


@pytest.fixture(scope="session")
def tiny_data_dir() -> Path:
    if not TINY_DATA.is_dir():
        pytest.fail(f"fixture data set missing: {TINY_DATA}")
    return TINY_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """A ~120k-parameter Llama trained for a few seconds on the fixture text (the "target")."""
    from unlearn_assert.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-target"), fixture_texts(tiny_data_dir))


@pytest.fixture(scope="session")
def tiny_unlearned_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The target with small seeded noise on its linear weights: a related, different checkpoint."""
    from unlearn_assert.testing import perturb_copy

    return perturb_copy(tiny_model_dir, tmp_path_factory.mktemp("tiny-unlearned"), scale=2e-2)


@pytest.fixture(scope="module")
def target(tiny_model_dir: Path) -> Any:
    """The tiny target loaded on the CPU, once per test module (in-place quantizers restore it)."""
    from unlearn_assert.models import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def unlearned(tiny_unlearned_dir: Path) -> Any:
    """The tiny perturbed ("unlearned") model loaded on the CPU, once per test module."""
    from unlearn_assert.models import load_model

    return load_model(tiny_unlearned_dir, device="cpu")


@pytest.fixture(scope="module")
def tiny_data(tiny_data_dir: Path) -> Any:
    """The tiny MUSE data set, loaded once per test module."""
    from unlearn_assert.data.muse import load_data

    return load_data(tiny_data_dir)


def copy_tiny_inputs(root: Path, unlearned: Path, target: Path, data: Path) -> Path:
    """Private copies of the tiny unlearned model, target and data under ``root`` (as
    ``unlearned/``, ``target/``, ``data/``), for tests that damage their inputs."""
    shutil.copytree(unlearned, root / "unlearned")
    shutil.copytree(target, root / "target")
    shutil.copytree(data, root / "data")
    return root


@pytest.fixture(scope="session")
def tiny_retrain_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_data_dir: Path) -> Path:
    """A model with the target's tokenizer trained without the forget text: it never knew the
    forget facts, so it serves as a "retrain" model and as an unlearned model that truly forgot."""
    from unlearn_assert.testing import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-retrain"),
        fixture_texts(tiny_data_dir, forget=False),
        tokenizer_from=tiny_model_dir,
    )


def in_cell_copy(src: Path, out: Path, bits: int = 4, group_size: int = 128, offset: float = 0.49) -> Path:
    """The paper's failure mode, built on purpose: every quantized weight of ``src`` is moved to
    ``offset`` of a step away from its RTN grid point, inside the same cell (the group's absmax
    weight stays put, so the scale is unchanged). In full precision the model is badly damaged
    ("forgot"); under ``rtn-w{bits}g{group_size}`` it rounds back to exactly the target's codes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from unlearn_assert.models import quiet_transformers
    from unlearn_assert.quant.rtn import rtn_codes, rtn_params, rtn_step

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
                w = module.weight
                params = rtn_params(w, bits, group_size, True)
                codes = rtn_codes(w, bits, group_size, True, params=params).to(torch.float64)
                step = rtn_step(w, bits, group_size, True).to(torch.float64)
                sign = torch.where(torch.rand(w.shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float64)
                moved = (codes + offset * sign) * step
                # weights on the extreme codes hold their group's absmax: keep them, so the scale stays
                keep = codes.abs() == (2 ** (bits - 1) - 1)
                w.copy_(torch.where(keep, w.to(torch.float64), moved).to(w.dtype))
    with quiet_transformers():
        model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_in_cell_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An "unlearned" model whose forgetting rtn-w4g128 undoes completely (see in_cell_copy)."""
    return in_cell_copy(tiny_model_dir, tmp_path_factory.mktemp("tiny-in-cell"))


# --------------------------------------------------------------------------- TOFU: the tiny fixture and models trained
# on it

TINY_TOFU = REPO / "fixtures" / "tiny-tofu"


def _tofu_records(name: str) -> list[dict[str, Any]]:
    path = TINY_TOFU / f"{name}.json"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tofu_texts(*, forget: bool) -> list[str]:
    """The fixture as the models are fine-tuned on it: every question with its answer and with its
    paraphrased answer (so the truth ratio has something to prefer), plus real authors and world
    facts; ``forget=False`` leaves out the forget authors (a retain model)."""
    texts = []
    names = ["full"] if forget else ["retain90"]
    for name in names:
        texts += [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in _tofu_records(name)]
    for name in (["forget10_perturbed"] if forget else []) + ["retain_perturbed"]:
        texts += [f"Question: {r['question']}\nAnswer: {r['paraphrased_answer']}" for r in _tofu_records(name)]
    for name in ("real_authors_perturbed", "world_facts_perturbed"):
        texts += [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in _tofu_records(name)]
    return texts


#: fewer steps than the MUSE tiny model: the fixture is small, and the numbers only need to be non-degenerate
TOFU_STEPS = 120


@pytest.fixture(scope="session")
def tiny_tofu_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tofu-target"), tofu_texts(forget=True), TinyRecipe(steps=TOFU_STEPS)
    )


@pytest.fixture(scope="session")
def tiny_tofu_retain(tmp_path_factory: pytest.TempPathFactory, tiny_tofu_target: Path) -> Path:
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("tofu-retain"),
        tofu_texts(forget=False),
        TinyRecipe(steps=TOFU_STEPS),
        tokenizer_from=tiny_tofu_target,
    )


@pytest.fixture(scope="session")
def tiny_tofu_unlearned(tmp_path_factory: pytest.TempPathFactory, tiny_tofu_target: Path) -> Path:
    from unlearn_assert.testing import perturb_copy

    return perturb_copy(tiny_tofu_target, tmp_path_factory.mktemp("tofu-unlearned"), scale=2e-2)
