"""Fixtures for the benchmarks: the tiny fixture model, and a MUSE-sized-shaped larger data set.

tests/conftest.py is not importable as a module (tests/ is not a package), so its text helper is
loaded by path and the model is built the same way, from the same text, with the same recipe.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = REPO / "fixtures" / "tiny-muse"


def _tests_conftest() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unlearn_tests_conftest", REPO / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def bench_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny target model (same text, same recipe)."""
    from unlearn_assert.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("bench-target"), _tests_conftest().fixture_texts(TINY_DATA))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def build_bench_data(out: Path, scale: int = 6) -> Path:
    """A larger MUSE-layout data set made from the fixture, shaped like MUSE's evaluation:

    * verbmem: the fixture items plus every raw forget/retain sentence as a prompt with the next
      three sentences as ``gt`` (varied prompts, most rows generate all 128 tokens);
    * knowmem: 10-shot ICL like MUSE (the split's 3 ICL pairs + 7 QA pairs of the other split) and
      each question asked in ``scale`` phrasings;
    * privleak: the fixture texts plus sentence windows of the raw text (forget) and pairs of
      holdout texts (holdout).
    """
    src = TINY_DATA

    def read(rel: str) -> list:
        return json.loads((src / rel).read_text())

    raw = {name: _sentences((src / "raw" / f"{name}.txt").read_text()) for name in ("forget", "retain")}
    verb = read("verbmem/forget.json")
    for sents in raw.values():
        verb += [{"prompt": sents[i], "gt": " ".join(sents[i + 1 : i + 4])} for i in range(len(sents) - 3)]
    phrasings = [
        "{q}",
        "Tell me: {q}",
        "Quick question. {q}",
        "Answer briefly: {q}",
        "Please recall: {q}",
        "One more: {q}",
    ]
    qa = {split: read(f"knowmem/{split}_qa.json") for split in ("forget", "retain")}
    icl = {split: read(f"knowmem/{split}_qa_icl.json") for split in ("forget", "retain")}
    other = {"forget": "retain", "retain": "forget"}
    files: dict[str, list] = {"verbmem/forget.json": verb}
    for split in ("forget", "retain"):
        files[f"knowmem/{split}_qa_icl.json"] = icl[split] + qa[other[split]][:7]
        files[f"knowmem/{split}_qa.json"] = [
            {"question": p.format(q=d["question"]), "answer": d["answer"]} for p in phrasings[:scale] for d in qa[split]
        ]
    forget, holdout = read("privleak/forget.json"), read("privleak/holdout.json")
    sents = raw["forget"]
    files["privleak/forget.json"] = forget + [" ".join(sents[i : i + 2]) for i in range(0, len(sents) - 1)]
    files["privleak/holdout.json"] = holdout + [f"{a} {b}" for a, b in zip(holdout, holdout[1:] + holdout[:1])] * 2
    files["privleak/retain.json"] = read("privleak/retain.json")
    for rel, items in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(items, indent=1))
    return out


@pytest.fixture(scope="session")
def bench_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bench_data(tmp_path_factory.mktemp("bench-muse"))
