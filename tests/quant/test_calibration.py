"""Calibration text for GPTQ/AWQ: sources, windows, hashing and the one-line errors (no llm-compressor needed)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from unlearn_assert.errors import ConfigError
from unlearn_assert.quant.calibration import (
    Calibration,
    calibration_from_data,
    load_calibration_file,
    needs_calibration,
    resolve_calibration,
)


class CharTokenizer:
    """One token per character; EOS = 0."""

    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        assert add_special_tokens is False
        return {"input_ids": [ord(c) for c in text]}


def test_windows_are_consecutive_in_order_with_eos_between_documents() -> None:
    cal = Calibration(texts=("abcdef", "ghij"), source="t", n_samples=10, seq_len=4)
    ids = [ord(c) for c in "abcdef"] + [0] + [ord(c) for c in "ghij"] + [0]
    assert cal.windows(CharTokenizer()) == [ids[0:4], ids[4:8], ids[8:12]]


def test_windows_respect_n_samples_the_context_and_drop_a_tiny_tail() -> None:
    cal = Calibration(texts=("x" * 100,), source="t", n_samples=3, seq_len=16)
    assert [len(w) for w in cal.windows(CharTokenizer())] == [16, 16, 16]
    assert [len(w) for w in cal.windows(CharTokenizer(), max_positions=8)] == [8, 8, 8]
    short = Calibration(texts=("x" * 20,), source="t", n_samples=8, seq_len=16)  # 21 tokens: tail of 5 >= 16 / 4
    assert [len(w) for w in short.windows(CharTokenizer())] == [16, 5]
    tail = Calibration(texts=("x" * 17,), source="t", n_samples=8, seq_len=16)  # tail of 2 < 4: dropped
    assert [len(w) for w in tail.windows(CharTokenizer())] == [16]
    tiny = Calibration(texts=("xy",), source="t", n_samples=8, seq_len=16)  # a single short window is kept
    assert tiny.windows(CharTokenizer()) == [[120, 121, 0]]


def test_fingerprint_covers_text_and_settings() -> None:
    a = Calibration(texts=("one", "two"), source="a")
    assert a.fingerprint == Calibration(texts=("one", "two"), source="elsewhere").fingerprint  # content, not location
    assert a.fingerprint != Calibration(texts=("onetwo",), source="a").fingerprint
    assert a.fingerprint != Calibration(texts=("one", "two"), source="a", n_samples=7).fingerprint
    assert a.fingerprint != Calibration(texts=("one", "two"), source="a", seq_len=64).fingerprint


def test_file_formats(tmp_path: Path) -> None:
    txt = tmp_path / "c.txt"
    txt.write_text("Some retain text.\n\nMore of it.\n", encoding="utf-8")
    assert load_calibration_file(txt).texts == ("Some retain text.\n\nMore of it.\n",)
    js = tmp_path / "c.json"
    js.write_text(json.dumps(["a doc", {"text": "b doc"}, "  "]), encoding="utf-8")
    assert load_calibration_file(js).texts == ("a doc", "b doc")
    jl = tmp_path / "c.jsonl"
    jl.write_text('"a doc"\n\n{"text": "b doc"}\n', encoding="utf-8")
    assert load_calibration_file(jl).texts == ("a doc", "b doc")
    assert load_calibration_file(jl).source == str(jl)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "is not a file"),
        ("empty.txt", "  \n", "has no text"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), "is not UTF-8"),
        ("bad.json", "[1, 2", "is not valid JSON"),
        ("obj.json", '{"text": "x"}', "expected a JSON list"),
        ("nums.json", "[1, 2]", "item 0 is not a string"),
        ("bad.jsonl", '"ok"\n{oops}\n', "line 2 is not valid JSON"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_calibration_file(path)
    assert "\n" not in str(info.value) and "--unlearn-calibration" in str(info.value)


def test_default_source_is_the_retain_text() -> None:
    both = SimpleNamespace(path="/d", raw_retain="retain text", privleak_retain=("p1", "p2"))
    assert calibration_from_data(both).texts == ("retain text",)
    assert calibration_from_data(both).source == "raw/retain.txt of /d"
    privleak = SimpleNamespace(path="/d", raw_retain=None, privleak_retain=("p1", " ", "p2"))
    assert calibration_from_data(privleak).texts == ("p1", "p2")
    assert calibration_from_data(SimpleNamespace(path="/d", raw_retain=" ", privleak_retain=None)) is None


def test_resolve_prefers_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.txt"
    f.write_text("file text", encoding="utf-8")
    data = SimpleNamespace(path="/d", raw_retain="retain text", privleak_retain=None)
    assert resolve_calibration(str(f), data).texts == ("file text",)
    assert resolve_calibration(None, data).texts == ("retain text",)


def test_which_quantizers_calibrate() -> None:
    assert needs_calibration(("rtn-w4g128", "gptq-w4g128", "bnb-fp4", "awq-w4g128")) == ["gptq-w4g128", "awq-w4g128"]


def test_public_names() -> None:
    import unlearn_assert as ua

    assert ua.Calibration is Calibration and ua.load_calibration is load_calibration_file
    assert ua.calibration_from_data is calibration_from_data
