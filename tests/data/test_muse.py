"""Tests for unlearn_assert.data.muse: the tiny-muse fixture, fingerprints, limited(), and validation messages."""

from __future__ import annotations

import ast
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from unlearn_assert.data.muse import (
    OPTIONAL_FILES,
    REQUIRED_FILES,
    MuseData,
    QAItem,
    VerbItem,
    data_fingerprint,
    load_data,
)
from unlearn_assert.errors import ConfigError, DataError

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tiny-muse"


@pytest.fixture(scope="module")
def data() -> MuseData:
    return load_data(FIXTURE)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A private copy of the fixture, free to corrupt."""
    dst = tmp_path / "muse"
    shutil.copytree(FIXTURE, dst)
    return dst


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- the fixture


def test_fixture_counts(data: MuseData) -> None:
    assert data.counts() == {
        "verbmem_forget": 8,
        "knowmem_forget_qa": 10,
        "knowmem_retain_qa": 10,
        "knowmem_forget_icl": 3,
        "knowmem_retain_icl": 3,
        "privleak_forget": 10,
        "privleak_holdout": 10,
        "privleak_retain": 10,
    }
    assert isinstance(data.verbmem_forget[0], VerbItem)
    assert isinstance(data.knowmem_forget_qa[0], QAItem)
    assert data.raw_forget and data.raw_retain
    assert data.path == str(FIXTURE)
    assert data.name == "tiny-muse"
    assert len(data.fingerprint) == 64


def test_fixture_is_small() -> None:
    assert sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file()) < 30_000


def test_fixture_is_self_consistent(data: MuseData) -> None:
    """Forget facts live in raw/forget.txt, retain facts in raw/retain.txt, holdout in neither."""
    assert data.raw_forget is not None and data.raw_retain is not None
    forget, retain = data.raw_forget.lower(), data.raw_retain.lower()
    for item in data.verbmem_forget:
        assert f"{item.prompt} {item.gt}" in data.raw_forget
    for item in data.knowmem_forget_qa + data.knowmem_forget_icl:
        assert item.answer.lower() in forget, item
    for item in data.knowmem_retain_qa + data.knowmem_retain_icl:
        assert item.answer.lower() in retain, item
    for text in data.privleak_forget:
        assert text in data.raw_forget
    for text in data.privleak_retain or ():
        assert text in data.raw_retain
    for text in data.privleak_holdout:
        assert text not in data.raw_forget and text not in data.raw_retain
    assert not {i.question for i in data.knowmem_forget_qa} & {i.question for i in data.knowmem_forget_icl}


def test_data_module_stays_cheap_to_import() -> None:
    import unlearn_assert.data.muse as mod

    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not imported & {"torch", "transformers", "numpy"}


def test_extra_keys_ignored_and_optional_files_absent(copy: Path) -> None:
    items = json.loads((copy / "knowmem/forget_qa.json").read_text(encoding="utf-8"))
    items[0]["source"] = "extra key, as in real MUSE files"
    (copy / "knowmem/forget_qa.json").write_text(json.dumps(items), encoding="utf-8")
    for rel in OPTIONAL_FILES:
        (copy / rel).unlink(missing_ok=True)
    loaded = load_data(copy)
    assert loaded.knowmem_forget_qa[0] == QAItem(items[0]["question"], items[0]["answer"])
    assert loaded.privleak_retain is None and loaded.raw_forget is None and loaded.raw_retain is None
    assert "privleak_retain" not in loaded.counts()


def test_loaded_data_is_immutable(data: MuseData) -> None:
    with pytest.raises(AttributeError):
        data.fingerprint = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        data.verbmem_forget[0].gt = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_location_independent(data: MuseData, tmp_path: Path) -> None:
    assert load_data(FIXTURE).fingerprint == data.fingerprint
    assert data_fingerprint(FIXTURE) == data.fingerprint
    elsewhere = tmp_path / "deeper" / "other-name"
    shutil.copytree(FIXTURE, elsewhere)
    assert load_data(elsewhere).fingerprint == data.fingerprint


def test_fingerprint_changes_with_one_byte(copy: Path, data: MuseData) -> None:
    raw = copy / "raw" / "retain.txt"
    content = bytearray(raw.read_bytes())
    content[10] = ord("X") if content[10] != ord("X") else ord("Y")
    raw.write_bytes(bytes(content))
    assert load_data(copy).fingerprint != data.fingerprint


def test_fingerprint_changes_with_any_text_of_any_split(copy: Path, data: MuseData) -> None:
    seen = {data.fingerprint}
    for rel, key in [
        ("verbmem/forget.json", "gt"),
        ("knowmem/forget_qa_icl.json", "answer"),
        ("privleak/retain.json", None),
    ]:
        items = json.loads((copy / rel).read_text(encoding="utf-8"))
        items[-1] = items[-1] + "!" if key is None else {**items[-1], key: items[-1][key] + "!"}
        (copy / rel).write_text(json.dumps(items), encoding="utf-8")
        fingerprint = load_data(copy).fingerprint
        assert fingerprint not in seen, rel
        seen.add(fingerprint)


def test_fingerprint_is_content_not_bytes(copy: Path, data: MuseData) -> None:
    """Re-formatted JSON and extra keys leave the content, so the fingerprint (a cache key), alone."""
    rel = "knowmem/forget_qa.json"
    items = json.loads((copy / rel).read_text(encoding="utf-8"))
    (copy / rel).write_text(json.dumps([{**i, "id": n} for n, i in enumerate(items)], indent=4), encoding="utf-8")
    assert load_data(copy).fingerprint == data.fingerprint
    # moving text between two splits keeps the bytes overall but not the content per split
    forget, holdout = (
        json.loads((copy / f"privleak/{n}.json").read_text(encoding="utf-8")) for n in ("forget", "holdout")
    )
    (copy / "privleak/forget.json").write_text(json.dumps(forget[:-1]), encoding="utf-8")
    (copy / "privleak/holdout.json").write_text(json.dumps([forget[-1], *holdout]), encoding="utf-8")
    assert load_data(copy).fingerprint != data.fingerprint


def test_fingerprint_ignores_unread_files_but_not_optional_ones(copy: Path, data: MuseData) -> None:
    (copy / "README.md").write_text("notes", encoding="utf-8")
    (copy / "knowmem" / "notes.json").write_text("[]", encoding="utf-8")
    (copy / "raw" / "holdout.txt").write_text("MUSE's raw holdout text: recognised, never read", encoding="utf-8")
    assert data_fingerprint(copy) == data.fingerprint
    (copy / "privleak" / "retain.json").unlink()
    assert data_fingerprint(copy) != data.fingerprint


# --------------------------------------------------------------------------- limited()


def test_limited_cuts_evaluated_splits_only(data: MuseData) -> None:
    small = data.limited(3)
    assert small.counts() == {
        "verbmem_forget": 3,
        "knowmem_forget_qa": 3,
        "knowmem_retain_qa": 3,
        "knowmem_forget_icl": 3,
        "knowmem_retain_icl": 3,
        "privleak_forget": 3,
        "privleak_holdout": 3,
        "privleak_retain": 3,
    }
    assert small.verbmem_forget == data.verbmem_forget[:3]
    assert small.privleak_holdout == data.privleak_holdout[:3]
    assert small.knowmem_forget_icl == data.knowmem_forget_icl
    assert small.raw_forget == data.raw_forget and small.raw_retain == data.raw_retain
    assert small.path == data.path
    assert small.fingerprint != data.fingerprint
    assert small.fingerprint == data.limited(3).fingerprint
    assert data.limited(2).fingerprint not in {small.fingerprint, data.fingerprint}
    assert data.counts()["verbmem_forget"] == 8  # the original is untouched


def test_limited_without_a_cut_keeps_the_fingerprint(data: MuseData) -> None:
    assert data.limited(None) is data
    assert data.limited(10) is data  # no split is longer than 10: same content, same cache key
    assert data.limited(9).fingerprint != data.fingerprint


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"], ids=["zero", "negative", "bool", "float", "str"])
def test_limited_rejects_nonsense(data: MuseData, bad: object) -> None:
    with pytest.raises(ConfigError):
        data.limited(bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- malformed inputs


def _write_json(rel: str, value: object) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        (d / rel).write_text(json.dumps(value, indent=2), encoding="utf-8")

    return apply


def _patch_item(rel: str, index: int, change: Callable[[object], object]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        items = json.loads((d / rel).read_text(encoding="utf-8"))
        items[index] = change(items[index])
        (d / rel).write_text(json.dumps(items, indent=2), encoding="utf-8")

    return apply


def _without(key: str) -> Callable[[object], object]:
    return lambda item: {k: v for k, v in item.items() if k != key}  # type: ignore[attr-defined]


def _with(key: str, value: object) -> Callable[[object], object]:
    return lambda item: {**item, key: value}  # type: ignore[dict-item]


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda d: (d / rel).unlink()


def _write_bytes(rel: str, content: bytes) -> Callable[[Path], None]:
    return lambda d: (d / rel).write_bytes(content)


def _replace_with_dir(rel: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        (d / rel).unlink()
        (d / rel).mkdir()

    return apply


def _truncate(rel: str) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        content = (d / rel).read_bytes()
        (d / rel).write_bytes(content[: len(content) // 2])

    return apply


# (mutation of a fixture copy, the file the message must name, item index or None, extra substrings)
MALFORMED: list = [
    pytest.param(
        _remove("verbmem/forget.json"), "verbmem/forget.json", None, ["missing", "knowmem/"], id="missing-verbmem"
    ),
    pytest.param(
        _remove("knowmem/retain_qa_icl.json"), "knowmem/retain_qa_icl.json", None, ["missing"], id="missing-icl"
    ),
    pytest.param(_remove("privleak/holdout.json"), "privleak/holdout.json", None, ["missing"], id="missing-holdout"),
    pytest.param(
        _replace_with_dir("knowmem/forget_qa.json"),
        "knowmem/forget_qa.json",
        None,
        ["not a regular file"],
        id="file-is-dir",
    ),
    pytest.param(
        _truncate("knowmem/forget_qa.json"),
        "knowmem/forget_qa.json",
        None,
        ["not valid JSON", "line", "column"],
        id="truncated-json",
    ),
    pytest.param(
        _write_bytes("verbmem/forget.json", b'[{"prompt": "a", "gt": "b",}]'),
        "verbmem/forget.json",
        None,
        ["line 1 column"],
        id="trailing-comma",
    ),
    pytest.param(
        _write_json("verbmem/forget.json", {"prompt": "a", "gt": "b"}),
        "verbmem/forget.json",
        None,
        ["JSON list", "object"],
        id="top-level-object",
    ),
    pytest.param(
        _write_json("privleak/holdout.json", []), "privleak/holdout.json", None, ["empty list"], id="empty-split"
    ),
    pytest.param(
        _write_json("knowmem/forget_qa_icl.json", []),
        "knowmem/forget_qa_icl.json",
        None,
        ["empty list", "'question'"],
        id="empty-icl",
    ),
    pytest.param(
        _patch_item("knowmem/retain_qa.json", 2, lambda _: "just a string"),
        "knowmem/retain_qa.json",
        2,
        ["expected an object"],
        id="item-not-object",
    ),
    pytest.param(
        _patch_item("knowmem/forget_qa.json", 4, _without("answer")),
        "knowmem/forget_qa.json",
        4,
        ["missing key 'answer'", "'question'"],
        id="missing-answer",
    ),
    pytest.param(
        _patch_item("verbmem/forget.json", 6, _without("gt")),
        "verbmem/forget.json",
        6,
        ["missing key 'gt'", "'prompt'"],
        id="missing-gt",
    ),
    pytest.param(
        _patch_item("knowmem/forget_qa.json", 3, _with("answer", 1874)),
        "knowmem/forget_qa.json",
        3,
        ["'answer'", "number", "string"],
        id="answer-is-number",
    ),
    pytest.param(
        _patch_item("verbmem/forget.json", 5, _with("gt", None)),
        "verbmem/forget.json",
        5,
        ["'gt'", "null"],
        id="gt-is-null",
    ),
    pytest.param(
        _patch_item("knowmem/retain_qa_icl.json", 0, _with("question", "  ")),
        "knowmem/retain_qa_icl.json",
        0,
        ["empty 'question'"],
        id="blank-question",
    ),
    pytest.param(
        _patch_item("privleak/forget.json", 7, lambda _: 42),
        "privleak/forget.json",
        7,
        ["expected a string"],
        id="privleak-number",
    ),
    pytest.param(
        _patch_item("privleak/forget.json", 1, lambda _: ""),
        "privleak/forget.json",
        1,
        ["empty string"],
        id="privleak-empty-text",
    ),
    pytest.param(
        _patch_item("privleak/retain.json", 9, lambda _: {"text": "x"}),
        "privleak/retain.json",
        9,
        ["expected a string"],
        id="optional-retain-malformed",
    ),
    pytest.param(
        _write_bytes("knowmem/forget_qa.json", b'[{"question": "Caf\xe9?", "answer": "yes"}]'),
        "knowmem/forget_qa.json",
        None,
        ["UTF-8"],
        id="json-not-utf8",
    ),
    pytest.param(
        _write_bytes("raw/forget.txt", b"Quillhaven \xff\xfe mayor"),
        "raw/forget.txt",
        None,
        ["UTF-8"],
        id="raw-not-utf8",
    ),
    pytest.param(_write_bytes("raw/retain.txt", b""), "raw/retain.txt", None, ["is empty"], id="raw-empty"),
    pytest.param(
        _write_bytes("raw/forget.txt", b" \n\n\t\n"), "raw/forget.txt", None, ["is empty"], id="raw-whitespace"
    ),
]


@pytest.mark.parametrize(("corrupt", "rel", "index", "needles"), MALFORMED)
def test_malformed_input_is_one_actionable_line(
    copy: Path, corrupt: Callable[[Path], None], rel: str, index: int | None, needles: list[str]
) -> None:
    corrupt(copy)
    with pytest.raises(DataError) as info:
        load_data(copy)
    message = str(info.value)
    assert "\n" not in message
    assert rel in message
    assert str(copy) in message
    if index is not None:
        assert f"item {index}" in message
    for needle in needles:
        assert needle in message
    assert ";" in message  # every message goes on to say how to fix it


@pytest.mark.parametrize("kind", ["missing", "file", "newline-in-name"])
def test_bad_data_path(tmp_path: Path, kind: str) -> None:
    if kind == "missing":
        target = tmp_path / "nope"
    elif kind == "file":
        target = tmp_path / "data.json"
        target.write_text("[]", encoding="utf-8")
    else:  # a directory whose name holds a newline: the message must still be one line
        target = tmp_path / "bad\nname"
        target.mkdir()
    with pytest.raises(DataError) as info:
        load_data(target)
    message = str(info.value)
    assert "\n" not in message
    assert target.name.split("\n")[0] in message
    assert "verbmem/forget.json" in message
    with pytest.raises(DataError):
        data_fingerprint(target)


def test_missing_files_are_all_listed(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_data(tmp_path)
    for rel in REQUIRED_FILES:
        assert rel in str(info.value)


def test_loading_never_writes(copy: Path) -> None:
    before = _snapshot(copy)
    load_data(copy)
    data_fingerprint(copy)
    assert _snapshot(copy) == before
    _patch_item("knowmem/forget_qa.json", 3, _with("answer", 3))(copy)
    before = _snapshot(copy)
    with pytest.raises(DataError):
        load_data(copy)
    assert _snapshot(copy) == before
