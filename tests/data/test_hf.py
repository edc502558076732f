"""MUSE data as users hold it: MUSE's full file layout (raw/retain1 + raw/retain2, .json twins), its
Hugging Face forms (parquet snapshot, save_to_disk, hf: from the local hub cache), and the
published reference AUCs.

Every form is written here from the tiny fixture by the real writers (MUSE's own json.dump / "\\n\\n"
join for the files, ``datasets`` and ``pyarrow`` for the rest), so the tests show that the forms
give the same content, the same fingerprint and the same metric values, and that each bad input is
one actionable line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.config import PUBLISHED_RETRAIN_AUCS, ConfigError, build_run_config, parse_retrain_auc
from unlearn_assert.data.muse import CONTENT_FIELDS, MuseData, load_data
from unlearn_assert.errors import DataError
from unlearn_assert.quant.calibration import calibration_from_data

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tiny-muse"
REPO_ID = "muse-bench/MUSE-News"
COMMIT = "0123456789abcdef0123456789abcdef01234567"

Splits = dict[str, dict[str, list[dict[str, str]]]]


def muse_splits() -> Splits:
    """The fixture as MUSE's hub configs and splits (rows as dicts). The raw text is cut into
    documents at blank lines; the retain documents become retain1 (first half) and retain2."""

    def read(rel: str) -> Any:
        return json.loads((FIXTURE / rel).read_text(encoding="utf-8"))

    def docs(rel: str) -> list[str]:
        return [d for d in (FIXTURE / rel).read_text(encoding="utf-8").split("\n\n") if d.strip()]

    retain = docs("raw/retain.txt")
    half = len(retain) // 2
    text = lambda items: [{"text": t} for t in items]  # noqa: E731
    return {
        "knowmem": {
            split: read(f"knowmem/{split}.json")
            for split in ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl")
        },
        "verbmem": {"forget": read("verbmem/forget.json")},
        "privleak": {split: text(read(f"privleak/{split}.json")) for split in ("forget", "retain", "holdout")},
        "raw": {
            "forget": text(docs("raw/forget.txt")),
            "holdout": text(read("privleak/holdout.json")),
            "retain1": text(retain[:half]),
            "retain2": text(retain[half:]),
        },
        # MUSE's scalability / sustainability folds: accepted and ignored
        "scal": {"forget_1": text(docs("raw/forget.txt"))},
    }


def write_muse_files(splits: Splits, root: Path) -> Path:
    """Exactly what MUSE's load_data.py writes: json.dump of every split, and for raw a .txt twin
    ("\\n\\n".join of the documents); no raw/retain.txt."""

    def dump(value: Any, rel: str) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(root / rel, "w") as f:
            json.dump(value, f)

    for split, rows in splits["knowmem"].items():
        dump([{"question": r["question"], "answer": r["answer"]} for r in rows], f"knowmem/{split}.json")
    dump([{"prompt": r["prompt"], "gt": r["gt"]} for r in splits["verbmem"]["forget"]], "verbmem/forget.json")
    for split, rows in splits["privleak"].items():
        dump([r["text"] for r in rows], f"privleak/{split}.json")
    for split, rows in splits["raw"].items():
        dump([r["text"] for r in rows], f"raw/{split}.json")
        (root / f"raw/{split}.txt").write_text("\n\n".join(r["text"] for r in rows))
    return root


def write_parquet(splits: Splits, root: Path) -> Path:
    """The hub snapshot layout, <config>/<split>-00000-of-00001.parquet, written by datasets' own to_parquet;
    verbmem in two shards (pyarrow), as a larger split is on the hub."""
    import datasets  # type: ignore[import-untyped]
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    for config, by_split in splits.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        for split, rows in by_split.items():
            if config == "verbmem":
                half = len(rows) // 2
                for i, part in enumerate((rows[:half], rows[half:])):
                    pq.write_table(pa.Table.from_pylist(part), root / config / f"{split}-{i:05d}-of-00002.parquet")
            else:
                datasets.Dataset.from_list(rows).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text("---\nconfigs: []\n---\n")
    return root


def write_save_to_disk(splits: Splits, root: Path) -> Path:
    """load_dataset(repo, config).save_to_disk(root / config) for every config."""
    import datasets  # type: ignore[import-untyped]

    datasets.disable_progress_bars()

    for config, by_split in splits.items():
        datasets.DatasetDict(
            {split: datasets.Dataset.from_list(rows) for split, rows in by_split.items()}
        ).save_to_disk(str(root / config))
    return root


def write_hf_cache(splits: Splits, cache: Path) -> Path:
    """The hub cache as huggingface_hub lays it out: blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main."""
    staging = write_parquet(splits, cache.parent / "staging")
    repo = cache / ("datasets--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    for file in sorted(p for p in staging.rglob("*") if p.is_file()):
        content = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / file.relative_to(staging)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.rmtree(staging)
    return cache


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """name -> what --unlearn-data gets, for every form of the same data (the hf cache under HF_HUB_CACHE)."""
    root = tmp_path_factory.mktemp("forms")
    splits = muse_splits()
    cache = write_hf_cache(splits, root / "hub")
    return {
        "files": str(write_muse_files(splits, root / "files")),
        "parquet": str(write_parquet(splits, root / "parquet")),
        "save_to_disk": str(write_save_to_disk(splits, root / "saved")),
        "hf-cache": f"hf:{REPO_ID}",
        "_cache": str(cache),
    }


@pytest.fixture
def hub(forms: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", forms["_cache"])
    return Path(forms["_cache"])


def _content(data: MuseData) -> dict[str, Any]:
    return {name: getattr(data, name) for name in CONTENT_FIELDS}


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _one_line(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert "\n" not in message and ";" in message, message
    return message


# --------------------------------------------------------------------------- MUSE's file layout


def test_muse_layout_reads_retain1_then_retain2_json_documents(forms: dict[str, str]) -> None:
    splits = muse_splits()
    data = load_data(forms["files"])
    retain_docs = tuple(r["text"] for r in splits["raw"]["retain1"] + splits["raw"]["retain2"])
    assert data.raw_retain_docs == retain_docs and len(retain_docs) >= 2
    assert data.raw_retain == "\n\n".join(retain_docs) == (FIXTURE / "raw/retain.txt").read_text()
    assert data.raw_forget_docs == tuple(r["text"] for r in splits["raw"]["forget"])
    assert data.sources["raw_retain_docs"] == "raw/retain1.json + raw/retain2.json"
    assert data.sources["raw_forget_docs"] == "raw/forget.json"
    assert data.form == "files" and "raw/holdout.json" not in data.sources.values()


def test_txt_twins_are_read_when_the_json_lists_are_absent(forms: dict[str, str], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(forms["files"], tmp_path / "muse"))
    for name in ("forget", "retain1", "retain2"):
        (copy / f"raw/{name}.json").unlink()
    json_form, txt_form = load_data(forms["files"]), load_data(copy)
    assert txt_form.sources["raw_retain_docs"] == "raw/retain1.txt + raw/retain2.txt"
    assert (
        txt_form.raw_retain == json_form.raw_retain and txt_form.raw_forget == json_form.raw_forget
    )  # the same training text
    # ... but a .txt file is one document: calibration (EOS between documents) differs, and so does the cache key
    assert txt_form.raw_retain_docs is not None and len(txt_form.raw_retain_docs) == 2
    assert txt_form.fingerprint != json_form.fingerprint


def test_only_the_raw_files_used_are_read_and_hashed(forms: dict[str, str], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(forms["files"], tmp_path / "muse"))
    before = load_data(copy)
    # an old single-file retain text, undecodable even, beside MUSE's retain1/retain2: never read
    (copy / "raw/retain.txt").write_bytes(b"\xff\xfe not read")
    (copy / "raw/holdout.json").write_text("not even JSON")
    (copy / "raw/retain2.txt").write_text("a .txt twin whose .json is preferred")
    assert load_data(copy).fingerprint == before.fingerprint
    (copy / "raw/retain2.json").unlink()  # now the retain text is retain1.json + retain2.txt
    after = load_data(copy)
    assert after.sources["raw_retain_docs"] == "raw/retain1.json + raw/retain2.txt"
    assert after.raw_retain_docs[-1] == "a .txt twin whose .json is preferred"  # type: ignore[index]
    assert after.fingerprint != before.fingerprint


def test_the_earlier_single_retain_file_still_works() -> None:
    data = load_data(FIXTURE)
    assert (
        data.sources["raw_retain_docs"] == "raw/retain.txt"
        and data.raw_retain == (FIXTURE / "raw/retain.txt").read_text()
    )
    assert calibration_from_data(data).source == f"raw/retain.txt of {FIXTURE}"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("rel", "content", "needles"),
    [
        ("raw/retain1.json", json.dumps(["fine", 7]), ["item 1", "expected a string"]),
        ("raw/retain2.json", json.dumps(["", "  "]), ["has no text"]),
        ("raw/forget.json", json.dumps({"text": "x"}), ["JSON list", "object"]),
        ("raw/retain1.json", '["truncated', ["not valid JSON"]),
    ],
    ids=["number-document", "blank-documents", "not-a-list", "truncated"],
)
def test_malformed_raw_json_is_one_line(
    forms: dict[str, str], tmp_path: Path, rel: str, content: str, needles: list[str]
) -> None:
    copy = Path(shutil.copytree(forms["files"], tmp_path / "muse"))
    (copy / rel).write_text(content)
    with pytest.raises(DataError) as info:
        load_data(copy)
    message = _one_line(info)
    assert rel in message and str(copy) in message
    for needle in needles:
        assert needle in message


def test_calibration_uses_retain1_and_retain2_documents(forms: dict[str, str]) -> None:
    data = load_data(forms["files"])
    cal = calibration_from_data(data)
    assert cal is not None and cal.texts == data.raw_retain_docs
    assert cal.source == f"raw/retain1.json + raw/retain2.json of {forms['files']}"
    assert cal.texts != tuple(data.privleak_retain or ())  # the raw retain text, not the privleak fallback


def test_option_time_check_finds_retain_text_for_gptq(
    forms: dict[str, str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The option-time precheck: a calibrated quantizer on MUSE's layout (no raw/retain.txt) is not a
    usage error; without any retain text it is, and the message names the files that would do."""
    from unlearn_assert.engine.inputs import precheck

    def config(data: str) -> Any:
        values = {"model": str(tiny_model_dir), "target": str(tiny_model_dir), "data": data, "quantizers": "gptq-w4g32"}
        run = build_run_config(lambda o: values.get(o.name, o.default))
        precheck(run)
        return run

    assert config(forms["files"]).data == forms["files"]
    bare = Path(shutil.copytree(forms["files"], tmp_path / "bare"))
    shutil.rmtree(bare / "raw")
    (bare / "privleak/retain.json").unlink()
    with pytest.raises(ConfigError) as info:
        config(str(bare))
    assert "raw/retain1.json + raw/retain2.json" in _one_line(info) and "--unlearn-calibration" in str(info.value)


# --------------------------------------------------------------------------- the Hugging Face forms


def test_every_form_gives_the_same_content_and_fingerprint(forms: dict[str, str], hub: Path) -> None:
    loaded = {name: load_data(spec) for name, spec in forms.items() if not name.startswith("_")}
    reference = loaded["files"]
    assert reference.counts()["verbmem_forget"] == 8 and reference.raw_retain_docs
    for name, data in loaded.items():
        assert _content(data) == _content(reference), name
        assert data.fingerprint == reference.fingerprint, name
        assert data.raw_retain == reference.raw_retain and data.raw_forget == reference.raw_forget
    assert {name: d.form for name, d in loaded.items()} == {
        "files": "files",
        "parquet": "parquet",
        "save_to_disk": "save_to_disk",
        "hf-cache": "parquet",
    }
    assert (
        loaded["parquet"].sources["verbmem_forget"]
        == "verbmem/forget-00000-of-00002.parquet + verbmem/forget-00001-of-00002.parquet"
    )
    assert (
        loaded["parquet"].sources["raw_retain_docs"]
        == "raw/retain1-00000-of-00001.parquet + raw/retain2-00000-of-00001.parquet"
    )
    assert loaded["save_to_disk"].sources["raw_retain_docs"] == "raw/retain1/ + raw/retain2/"
    cached = loaded["hf-cache"]
    assert cached.path == f"hf:{REPO_ID}" and cached.name == "MUSE-News"
    assert cached.location == str(hub / "datasets--muse-bench--MUSE-News" / "snapshots" / COMMIT)
    # the cached calibration text is the same documents, named by the split files they came from
    assert calibration_from_data(cached).fingerprint == calibration_from_data(reference).fingerprint  # type: ignore[union-attr]


def test_every_form_gives_the_same_metric_values(forms: dict[str, str], hub: Path, tiny_model_dir: Path) -> None:
    from unlearn_assert import evaluate, load_model

    model = load_model(tiny_model_dir)
    results = {
        name: evaluate(model, load_data(spec), retrain_auc=PUBLISHED_RETRAIN_AUCS["muse-news"][0])
        for name, spec in forms.items()
        if not name.startswith("_")
    }
    reference = results["files"].values
    assert set(reference) == {"verbmem_f", "knowmem_f", "knowmem_r", "privleak"}
    assert all(isinstance(v, float) for v in reference.values())
    for name, ev in results.items():
        assert ev.values == reference, name
    print("\nmetric values, every form:", {k: round(v, 3) for k, v in reference.items()})


def test_loading_the_hf_forms_never_writes(forms: dict[str, str], hub: Path) -> None:
    roots = [Path(forms["parquet"]), Path(forms["save_to_disk"]), hub]
    before = [_tree(r) for r in roots]
    for spec in (forms["parquet"], forms["save_to_disk"], f"hf:{REPO_ID}"):
        load_data(spec)
    assert [_tree(r) for r in roots] == before


def test_a_revision_can_be_named(forms: dict[str, str], hub: Path) -> None:
    assert load_data(f"hf:{REPO_ID}@{COMMIT}").fingerprint == load_data(forms["files"]).fingerprint
    with pytest.raises(DataError) as info:
        load_data(f"hf:{REPO_ID}@v2")
    assert "no snapshot of revision 'v2'" in _one_line(info) and "--revision v2" in str(info.value)


def test_hf_spec_not_in_the_cache_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(DataError) as info:
        load_data("hf:muse-bench/MUSE-Books")
    message = _one_line(info)
    assert "hf download muse-bench/MUSE-Books --repo-type dataset" in message
    assert (
        str(tmp_path / "empty-cache" / "datasets--muse-bench--MUSE-Books") in message and "never downloads" in message
    )
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match=str(tmp_path / "home" / "hub" / "datasets--muse-bench--MUSE-Books")):
        load_data("hf:muse-bench/MUSE-Books")
    with pytest.raises(DataError) as info:
        load_data("hf:MUSE-News")
    assert "hf:OWNER/NAME" in _one_line(info)


def test_hf_cache_with_only_the_readme_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "datasets--muse-bench--MUSE-News"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "snapshots" / COMMIT / "README.md").write_text("card")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT + "\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_data(f"hf:{REPO_ID}")
    assert "holds no MUSE parquet files" in _one_line(info) and "hf download" in str(info.value)


def test_a_partial_download_says_how_to_complete_it(
    forms: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_dataset(repo, "knowmem") alone caches only knowmem's files in the snapshot."""
    cache = Path(shutil.copytree(forms["_cache"], tmp_path / "hub", symlinks=True))
    snapshot = cache / "datasets--muse-bench--MUSE-News" / "snapshots" / COMMIT
    for config in ("verbmem", "privleak"):
        shutil.rmtree(snapshot / config)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(DataError) as info:
        load_data(f"hf:{REPO_ID}")
    message = _one_line(info)
    assert "missing required split(s) verbmem/forget, privleak/forget, privleak/holdout" in message
    assert f"from hf:{REPO_ID}" in message and "hf download muse-bench/MUSE-News --repo-type dataset" in message


def _parquet_copy(forms: dict[str, str], tmp_path: Path) -> Path:
    return Path(shutil.copytree(forms["parquet"], tmp_path / "pq"))


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(pa.Table.from_pylist(rows), path)


def _empty(path: Path) -> None:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    pq.write_table(pq.read_table(path).slice(0, 0), path)  # the columns, no rows


def _rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


QA = "knowmem/forget_qa-00000-of-00001.parquet"
PRIV = "privleak/holdout-00000-of-00001.parquet"


def _drop(rel: str) -> Any:
    return lambda root: (root / rel).unlink()


def _edit(rel: str, change: Any) -> Any:
    return lambda root: _rewrite(root / rel, change(_rows(root / rel)))


def _set(index: int, key: str, value: Any) -> Any:
    return lambda rows: [({**r, key: value} if i == index else r) for i, r in enumerate(rows)]


PARQUET_BAD: list[Any] = [
    pytest.param(
        _drop(QA), ["missing required split(s) knowmem/forget_qa", "<config>/<split>-*.parquet"], id="missing-split"
    ),
    pytest.param(
        _edit(QA, lambda rows: [{"question": r["question"], "ans": r["answer"]} for r in rows]),
        [QA, "no column 'answer'", "question, ans"],
        id="missing-column",
    ),
    pytest.param(_edit(QA, _set(3, "answer", None)), [QA, "item 3", "'answer'", "null"], id="null-answer"),
    pytest.param(
        _edit(QA, lambda rows: [{**r, "answer": i} for i, r in enumerate(rows)]),
        [QA, "item 0", "number"],
        id="int-column",
    ),
    pytest.param(_edit(QA, _set(2, "question", "  ")), [QA, "item 2", "empty 'question'"], id="blank-question"),
    pytest.param(_edit(PRIV, _set(5, "text", "")), [PRIV, "item 5", "empty string"], id="empty-text"),
    pytest.param(lambda root: _empty(root / PRIV), [PRIV, "no rows"], id="empty-split"),
    pytest.param(
        lambda root: (root / QA).write_bytes((root / QA).read_bytes()[:50]),
        [QA, "cannot read", "re-download"],
        id="truncated-file",
    ),
    pytest.param(
        _edit("raw/retain1-00000-of-00001.parquet", lambda rows: [{"text": i} for i, _ in enumerate(rows)]),
        ["raw/retain1-00000-of-00001.parquet", "item 0", "expected a string"],
        id="raw-numbers",
    ),
]


@pytest.mark.parametrize(("corrupt", "needles"), PARQUET_BAD)
def test_malformed_parquet_is_one_actionable_line(
    forms: dict[str, str], tmp_path: Path, corrupt: Any, needles: list[str]
) -> None:
    root = _parquet_copy(forms, tmp_path)
    corrupt(root)
    with pytest.raises(DataError) as info:
        load_data(root)
    message = _one_line(info)
    assert str(root) in message and "parquet form" in message
    for needle in needles:
        assert needle in message


def test_optional_splits_may_be_absent_from_the_hf_form(forms: dict[str, str], tmp_path: Path) -> None:
    root = _parquet_copy(forms, tmp_path)
    shutil.rmtree(root / "raw")
    (root / "privleak/retain-00000-of-00001.parquet").unlink()
    data = load_data(root)
    assert data.raw_retain is None and data.raw_forget is None and data.privleak_retain is None
    assert calibration_from_data(data) is None
    assert data.counts()["knowmem_forget_qa"] == 10


def test_malformed_save_to_disk_is_one_actionable_line(forms: dict[str, str], tmp_path: Path) -> None:
    root = Path(shutil.copytree(forms["save_to_disk"], tmp_path / "saved"))
    (root / "verbmem/forget/state.json").unlink()
    with pytest.raises(DataError) as info:
        load_data(root)
    assert (
        "verbmem/forget/" in _one_line(info)
        and "state.json" in str(info.value)
        and "save_to_disk form" in str(info.value)
    )
    shutil.rmtree(root / "verbmem")
    with pytest.raises(DataError) as info:
        load_data(root)
    assert "missing required split(s) verbmem/forget" in _one_line(info)


def test_without_the_hf_extra_the_message_names_the_pip_command(
    forms: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("pyarrow", "pyarrow.parquet", "datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import` sees when the package is not installed
    for spec, library in ((forms["parquet"], "pyarrow"), (forms["save_to_disk"], "datasets")):
        with pytest.raises(DataError) as info:
            load_data(spec)
        assert library in _one_line(info) and "pip install 'unlearn-assert[hf]'" in str(info.value)
    assert load_data(forms["files"]).raw_retain  # MUSE's files need neither


def test_the_json_layout_imports_neither_pyarrow_nor_datasets(forms: dict[str, str]) -> None:
    code = (
        "import sys; from unlearn_assert.data.muse import load_data; load_data(sys.argv[1]); "
        "assert not {'pyarrow', 'datasets', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code, forms["files"]], check=True)


# --------------------------------------------------------------------------- unlearning on MUSE's layouts


def _unlearn_cli(argv: list[str]) -> int:
    """``unlearn-assert unlearn ...`` as the CLI runs it, but raising its errors (main() prints them)."""
    import argparse

    from unlearn_assert.unlearning.cli import add_unlearn_parser

    parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_unlearn_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["unlearn", *argv])
    return int(args.func(args))


@pytest.mark.parametrize("form", ["files", "hf-cache"])
def test_unlearn_command_regularizes_on_retain1_and_retain2(
    forms: dict[str, str], hub: Path, tiny_model_dir: Path, tmp_path: Path, form: str
) -> None:
    out = tmp_path / "unlearned"
    assert (
        _unlearn_cli(
            [
                "--method",
                "ga_gdr",
                "--target",
                str(tiny_model_dir),
                "--data",
                forms[form],
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--max-length",
                "32",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    run = json.loads((out / "unlearn_run.json").read_text())
    expected = (
        "raw/retain1.json + raw/retain2.json"
        if form == "files"
        else "raw/retain1-00000-of-00001.parquet + raw/retain2-00000-of-00001.parquet"
    )
    assert run["data"]["raw"]["retain"] == expected and run["chunks"]["retain"] > 0
    assert run["data"]["fingerprint"] == load_data(forms["files"]).fingerprint
    assert all(c["retain_loss"] is not None for c in run["curve"])


def test_unlearn_command_without_retain_text_names_the_files(
    forms: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(forms["files"], tmp_path / "muse"))
    for rel in ("raw/retain1.json", "raw/retain1.txt", "raw/retain2.json", "raw/retain2.txt"):
        (copy / rel).unlink()
    with pytest.raises(DataError) as info:
        _unlearn_cli(
            [
                "--method",
                "npo_klr",
                "--target",
                str(tiny_model_dir),
                "--data",
                str(copy),
                "--steps",
                "1",
                "--out",
                str(tmp_path / "o"),
            ]
        )
    assert "raw/retain1.json + raw/retain2.json" in _one_line(info) and "raw/retain.txt" in str(info.value)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- published reference AUCs


def test_published_retrain_aucs_are_muse_constants() -> None:
    """MUSE's AUC_RETRAIN[corpus]['forget_holdout_Min-40%'] (constants.py): 0.47719999999999996 and
    0.5392999999999999."""
    assert parse_retrain_auc("muse-news") == (
        0.4772,
        "MUSE AUC_RETRAIN[news][forget_holdout_Min-40%] (muse_bench constants.py)",
    )
    assert parse_retrain_auc(" MUSE-Books ")[0] == 0.5393
    assert parse_retrain_auc("0.48") == (0.48, None)
    for bad in ("muse", "0", "1.5", "-0.2", "nan", "news"):
        with pytest.raises(ConfigError) as info:
            parse_retrain_auc(bad)
        assert "muse-news, muse-books" in _one_line(info)


def test_run_config_records_the_reference_source() -> None:
    def config(auc: str) -> Any:
        return build_run_config(lambda o: {"retrain_auc": auc}.get(o.name, o.default))

    news = config("muse-news")
    assert news.retrain_auc == 0.4772
    assert news.retrain_auc_source is not None and news.retrain_auc_source.startswith("MUSE AUC_RETRAIN[news]")
    plain = config("0.41")
    assert plain.retrain_auc == 0.41 and plain.retrain_auc_source is None
    assert build_run_config(lambda o: o.default).retrain_auc_source is None


def test_gate_on_the_hf_cache_with_the_news_reference(
    pytester: pytest.Pytester, forms: dict[str, str], hub: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path
) -> None:
    """End to end: hf: from the ini file (not taken for a path), --unlearn-retrain-auc=muse-news; the report
    normalises privleak against 0.4772 and the summary states the evaluated counts."""
    pytester.makeini(f"[pytest]\nunlearn_data = hf:{REPO_ID}\nunlearn_quantizers = rtn-w8\n")
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        "--unlearn-retrain-auc=muse-news",
        "--unlearn-json=report.json",
        "-p",
        "no:randomly",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
    )
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), (
        result.stdout.str()[-3000:] + result.stderr.str()
    )
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["provenance"]["privleak_reference"]["auc"] == 0.4772
    assert report["provenance"]["privleak_reference"]["published"].startswith("MUSE AUC_RETRAIN[news]")
    assert report["provenance"]["data"]["fingerprint"] == load_data(forms["files"]).fingerprint
    counts = report["provenance"]["data"]["counts"]
    assert (counts["verbmem_forget"], counts["knowmem_forget_qa"], counts["privleak_holdout"]) == (8, 10, 10)
    assert any("privleak]" in line for line in result.stdout.lines)
    from unlearn_assert.render.terminal import counts_line

    assert (
        counts_line(report) == "evaluated items: verbmem 8, knowmem_f 10, knowmem_r 10, privleak 10/10 (forget/holdout)"
    )
    result.stdout.fnmatch_lines(
        ["*unlearning budget summary*", "evaluated items: verbmem 8, knowmem_f 10, *"]
    )  # the summary's header
