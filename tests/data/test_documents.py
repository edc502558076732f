"""A provider's own documents: MUSE's sets derived from forget/holdout documents the way MUSE built
its News sets (seeded, lengths as settings, recorded), validated with one-line errors, and read by
MUSE's metric code unchanged."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_assert.data.documents import (
    DerivationSettings,
    Document,
    chunk_text,
    derive,
    detect_documents,
    load_documents,
)
from unlearn_assert.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "fixtures" / "tiny-docs"
SMALL = DerivationSettings(chunk_words=80, prompt_words=40, gt_words=20, icl_pairs=2)


def _one_line(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert "\n" not in message and ";" in message, message
    return message


def _words(text: str) -> list[str]:
    return text.split()


def test_the_fixture_derives_every_split() -> None:
    data = load_documents(DOCS, SMALL)
    forget_words = sum(
        len(_words((DOCS / "forget" / f).read_text())) for f in ("article_00.txt", "article_01.txt", "article_02.txt")
    )
    assert forget_words == 705
    # 705 words in chunks of 80: 8 whole chunks and a last one of 65 (kept: at least half a chunk)
    assert data.derivation["chunks"]["forget"] == 9
    assert data.muse.counts() == {
        "verbmem_forget": 9,
        "knowmem_forget_qa": 4,
        "knowmem_retain_qa": 2,
        "knowmem_forget_icl": 2,
        "knowmem_retain_icl": 2,
        "privleak_forget": 9,
        "privleak_holdout": 8,
        "privleak_retain": 3,
    }
    assert data.available_metrics() == ("verbmem_f", "knowmem_f", "knowmem_r", "privleak")
    assert [d.source for d in data.holdout] == ["holdout/news.jsonl:1", "holdout/news.jsonl:2", "holdout/news.jsonl:3"]
    assert data.muse.raw_forget_docs == tuple(
        (DOCS / "forget" / f).read_text() for f in ("article_00.txt", "article_01.txt", "article_02.txt")
    )
    assert data.muse.fingerprint == data.fingerprint and data.muse.form == "documents"
    assert json.loads(json.dumps(data.derivation)) == data.derivation  # a plain JSON record


def test_items_are_cut_from_the_text_as_muse_cut_its_sets() -> None:
    data = load_documents(DOCS, SMALL)
    joined = "\n\n".join(d.text for d in data.forget)
    words = _words(joined)
    for item, rec in zip(data.muse.verbmem_forget, data.derivation["verbmem"]):
        a, p_end = rec["prompt_words"]
        assert a == rec["chunk"] * SMALL.chunk_words  # a prompt starts at a chunk start
        assert _words(item.prompt) == words[a:p_end] and _words(item.gt) == words[p_end : rec["gt_words"][1]]
        # the ground truth follows the prompt directly in the text, as in MUSE-News
        assert re.search(re.escape(item.prompt) + r"\s+" + re.escape(item.gt), joined)
        assert not item.prompt[-1].isspace() and not item.gt[0].isspace()
    for text, rec in zip(data.muse.privleak_forget, data.derivation["privleak_forget"]):
        assert text in joined and _words(text) == words[rec["words"][0] : rec["words"][1]]
    holdout = "\n\n".join(d.text for d in data.holdout)
    assert all(text in holdout for text in data.muse.privleak_holdout)
    # a chunk that spans two documents names both
    assert any(len(rec["sources"]) == 2 for rec in data.derivation["privleak_forget"])


def test_sampling_is_muses_seeded_random_sample() -> None:
    import random

    data = load_documents(DOCS, SMALL)
    chosen = [r["chunk"] for r in data.derivation["privleak_forget"]]
    random.seed(42)
    assert chosen == random.sample(range(9), 9)  # MUSE: random.seed(args.seed); random.sample(ds, k)
    few = load_documents(
        DOCS, DerivationSettings(chunk_words=80, prompt_words=40, gt_words=20, verbmem_items=3, privleak_items=4)
    )
    random.seed(42)
    assert [r["chunk"] for r in few.derivation["verbmem"]] == random.sample(range(9), 3)
    assert few.derivation["shortfalls"] == {"privleak_retain": {"asked": 4, "got": 3}}  # retain/ has 3 chunks
    assert data.derivation["shortfalls"]["verbmem"] == {"asked": 100, "got": 9}


def test_a_rerun_derives_the_same_items_and_settings_change_them(tmp_path: Path) -> None:
    first, again = load_documents(DOCS, SMALL), load_documents(Path(shutil.copytree(DOCS, tmp_path / "copy")), SMALL)
    assert again.muse.verbmem_forget == first.muse.verbmem_forget and again.derivation == first.derivation
    assert again.fingerprint == first.fingerprint
    other_seed = load_documents(DOCS, DerivationSettings(**{**SMALL.as_dict(), "seed": 7}))
    assert other_seed.muse.verbmem_forget != first.muse.verbmem_forget and other_seed.fingerprint != first.fingerprint
    longer = load_documents(DOCS, DerivationSettings(**{**SMALL.as_dict(), "gt_words": 30}))
    assert all(len(_words(i.gt)) == 30 for i in longer.muse.verbmem_forget)
    # a holdout document that changes changes the fingerprint
    jsonl = tmp_path / "copy" / "holdout" / "news.jsonl"
    lines = jsonl.read_text().splitlines()
    record = json.loads(lines[1])
    record["text"] = record["text"].replace("council", "parish")
    jsonl.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    assert load_documents(tmp_path / "copy", SMALL).fingerprint != first.fingerprint


def test_without_qa_pairs_knowmem_is_not_measured(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(DOCS, tmp_path / "copy"))
    (copy / "forget_qa.json").unlink()
    (copy / "retain_qa.json").unlink()
    shutil.rmtree(copy / "retain")
    data = load_documents(copy, SMALL)
    assert data.available_metrics() == ("verbmem_f", "privleak")
    assert data.muse.knowmem_forget_qa == () and data.muse.privleak_retain is None and data.muse.raw_retain is None
    assert data.derivation["knowmem_forget"] is None and data.derivation["privleak_retain"] is None


def test_given_icl_pairs_are_used_and_drawn_ones_are_recorded(tmp_path: Path) -> None:
    drawn = load_documents(DOCS, SMALL)
    qa = json.loads((DOCS / "forget_qa.json").read_text())
    rec = drawn.derivation["knowmem_forget"]
    assert rec["icl_pairs"] == 2 and len(rec["icl_indices"]) == 2
    assert [q.question for q in drawn.muse.knowmem_forget_icl] == [qa[i]["question"] for i in rec["icl_indices"]]
    assert not {q.question for q in drawn.muse.knowmem_forget_icl} & {q.question for q in drawn.muse.knowmem_forget_qa}
    copy = Path(shutil.copytree(DOCS, tmp_path / "copy"))
    (copy / "forget_qa_icl.json").write_text(json.dumps([{"question": "Q?", "answer": "A."}]))
    given_icl = load_documents(copy, SMALL)
    assert (
        len(given_icl.muse.knowmem_forget_qa) == 6
        and given_icl.derivation["knowmem_forget"]["icl"] == "forget_qa_icl.json"
    )


def test_muse_metrics_run_unchanged_on_derived_data(tiny_model_dir: Path) -> None:
    from unlearn_assert.metrics import evaluate
    from unlearn_assert.models import load_model

    data = load_documents(DOCS, SMALL)
    model = load_model(tiny_model_dir, device="cpu")
    ev = evaluate(model, data.muse, metrics=data.available_metrics(), max_samples=4)
    assert set(ev.values) == set(data.available_metrics())
    assert all(math.isfinite(v) for v in ev.values.values())
    assert len(ev.samples["verbmem_f"]) == 4 and ev.extras["n"]["privleak_holdout"] == 4


@pytest.mark.parametrize(
    "change, needles",
    [
        (lambda d: shutil.rmtree(d / "holdout"), ["has no holdout/", "forget/ and holdout/"]),
        (lambda d: (d / "forget" / "notes.md").write_text("x"), ["forget/notes.md", "neither .txt nor .jsonl"]),
        (
            lambda d: (d / "holdout" / "news.jsonl").write_text('{"text": "fine"}\n{"body": "x"}\n'),
            ["holdout/news.jsonl' line 2", 'no "text" field'],
        ),
        (
            lambda d: (d / "holdout" / "news.jsonl").write_text('{"text": "fine"}\nnot json\n'),
            ["news.jsonl' line 2", "is not valid JSON"],
        ),
        (lambda d: (d / "forget" / "article_01.txt").write_text("  \n"), ["forget/article_01.txt", "is empty"]),
        (lambda d: (d / "forget" / "article_01.txt").write_bytes(b"caf\xe9"), ["not valid UTF-8"]),
        (
            lambda d: (d / "retain_qa.json").write_text('[{"question": "q"}]'),
            ["retain_qa.json", "item 0 has no text in 'answer'"],
        ),
        (
            lambda d: (
                (d / "retain_qa.json").unlink(),
                (d / "retain_qa_icl.json").write_text('[{"question": "q", "answer": "a"}]'),
            ),
            ["retain_qa_icl.json but no retain_qa.json"],
        ),
        (lambda d: [p.unlink() for p in (d / "forget").iterdir()], ["forget/", "holds no documents"]),
    ],
)
def test_bad_layouts_are_one_line(tmp_path: Path, change: Any, needles: list[str]) -> None:
    copy = Path(shutil.copytree(DOCS, tmp_path / "copy"))
    change(copy)
    with pytest.raises(DataError) as info:
        load_documents(copy, SMALL)
    message = _one_line(info)
    for needle in needles:
        assert needle in message, (needle, message)


def test_too_little_text_for_the_default_lengths_names_the_settings() -> None:
    with pytest.raises(DataError) as info:
        load_documents(DOCS)
    message = _one_line(info)
    assert "705 words" in message and "prompt_words 674 + gt_words 82" in message and "chunk_words" in message


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"chunk_words": 50, "prompt_words": 40, "gt_words": 20}, "must fit in chunk_words"),
        ({"gt_words": 0}, "gt_words must be an integer >= 1"),
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"verbmem_items": 2.5}, "verbmem_items"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        DerivationSettings(**kwargs)


def test_detection() -> None:
    assert detect_documents(DOCS)
    assert not detect_documents(REPO / "fixtures" / "tiny-muse") and not detect_documents(
        REPO / "fixtures" / "tiny-tofu"
    )


def test_loading_never_writes(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(DOCS, tmp_path / "copy"))
    before = {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(copy.rglob("*")) if p.is_file()}
    load_documents(copy, SMALL)
    assert before == {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(copy.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- chunking by hand and by property


def test_chunking_by_hand() -> None:
    text, spans, chunks = chunk_text(["a b c d e", "f g"], 3)
    assert text == "a b c d e\n\nf g" and len(spans) == 7
    assert chunks == [(0, 3), (3, 6)]  # the last chunk, 1 word of 3, is dropped (less than half)
    assert chunk_text(["a b"], 3)[2] == [(0, 2)]  # the only chunk is kept, short as it is
    assert chunk_text(["a b c d e"], 3)[2] == [(0, 3), (3, 5)]  # 2 of 3 words: kept


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from("ab \n"), min_size=1, max_size=40).filter(lambda s: s.strip()),
        min_size=1,
        max_size=5,
    ),
    st.integers(2, 9),
    st.integers(0, 3),
)
def test_derived_items_are_verbatim_contiguous_and_deterministic(texts: list[str], chunk: int, seed: int) -> None:
    prompt = max(chunk // 2, 1)
    s = DerivationSettings(
        seed=seed, chunk_words=chunk, prompt_words=prompt, gt_words=chunk - prompt, verbmem_items=5, privleak_items=5
    )
    docs = [Document(source=f"d{i}", text=t) for i, t in enumerate(texts)]
    values, record = derive(docs, docs, None, s)
    again = derive(docs, docs, None, s)
    assert (values, record) == again
    joined = "\n\n".join(texts)
    words = joined.split()
    _, _, chunks = chunk_text(texts, chunk)
    assert all(b - a <= chunk for a, b in chunks) and [a for a, _ in chunks] == list(
        range(0, len(chunks) * chunk, chunk)
    )
    for item, rec in zip(values["verbmem_forget"], record["verbmem"]):
        a, p_end = rec["prompt_words"]
        assert item.prompt.split() == words[a:p_end] and item.gt.split() == words[p_end : rec["gt_words"][1]]
        assert item.prompt in joined and item.gt in joined
    assert len(values["privleak_forget"]) == min(5, len(chunks))
    assert all(t in joined for t in values["privleak_forget"])


def test_the_committed_fixtures_are_what_the_generator_writes(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import make_fixtures

    written = make_fixtures.write(tmp_path)
    for path in written:
        rel = path.relative_to(tmp_path)
        assert (REPO / "fixtures" / rel).read_bytes() == path.read_bytes(), rel
    committed = {
        p.relative_to(REPO / "fixtures")
        for d in ("tiny-tofu", "tiny-docs")
        for p in (REPO / "fixtures" / d).rglob("*")
        if p.is_file()
    }
    assert committed == {p.relative_to(tmp_path) for p in written}
