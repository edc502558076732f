"""TOFU: the data in every form TOFU ships in (one content, one fingerprint; one-line errors for
anything else), and the metrics against an independent one-item-at-a-time implementation of
open-unlearning's definitions (benchmarks/naive_tofu.py) on tiny models trained on the fixture."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unlearn_assert.data.tofu import FORGET_SPLITS, detect_tofu, load_tofu
from unlearn_assert.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
TOFU = REPO / "fixtures" / "tiny-tofu"
sys.path.insert(0, str(REPO / "benchmarks"))

import naive_tofu  # noqa: E402

PER_AUTHOR = 4  # the fixture's questions per author (TOFU: 20)
CONFIGS = sorted(p.stem for p in TOFU.glob("*.json"))


def _records(name: str) -> list[dict[str, Any]]:
    return naive_tofu.read_split(TOFU, name)


def _one_line(info: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(info.value)
    assert "\n" not in message and ";" in message, message
    return message


# --------------------------------------------------------------------------- data


def test_the_fixture_loads_with_every_split() -> None:
    data = load_tofu(TOFU, questions_per_author=PER_AUTHOR)
    assert data.counts() == {
        "forget": 8,
        "retain": 8,
        "real_authors": 6,
        "world_facts": 6,
        "forget_train": 8,
        "retain_train": 32,
        "holdout": 8,
    }
    assert data.forget_split == "forget10" and data.form == "files"
    first = _records("forget10_perturbed")[0]
    item = data.forget[0]
    assert (item.question, item.answer, item.paraphrased_answer) == (
        first["question"],
        first["answer"],
        first["paraphrased_answer"],
    )
    assert item.perturbed_answers == tuple(first["perturbed_answer"]) and len(item.perturbed_answers) == 5
    assert len(data.real_authors[0].perturbed_answers) == 3 and data.real_authors[0].paraphrased_answer is None
    assert data.authors() == [0, 0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("split, n", [("forget01", 2), ("forget05", 4), ("forget10", 8)])
def test_the_forget_split_is_a_setting(split: str, n: int) -> None:
    data = load_tofu(TOFU, split)
    assert len(data.forget) == n and data.forget_split == split
    assert data.forget[-1].question == _records(f"{split}_perturbed")[-1]["question"]
    assert len({load_tofu(TOFU, s).fingerprint for s in FORGET_SPLITS}) == 3


def test_unknown_forget_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="forget01, forget05, forget10"):
        load_tofu(TOFU, "forget20")


def _write_arrays(root: Path) -> Path:
    """The same data as JSON arrays, and forget10_perturbed as .jsonl."""
    root.mkdir()
    for name in CONFIGS:
        records = _records(name)
        if name == "forget10_perturbed":
            (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            (root / f"{name}.json").write_text(json.dumps(records, indent=2))
    return root


def _write_parquet(root: Path, layout: str) -> Path:
    """Parquet, as the hub's conversion (<config>/train/0000.parquet) or <config>/train-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in CONFIGS:
        table = pa.Table.from_pylist(_records(name))
        path = (
            root / name / "train" / "0000.parquet"
            if layout == "convert"
            else root / name / "train-00000-of-00001.parquet"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    return root


def _write_saved(root: Path, as_dict: bool) -> Path:
    import datasets

    datasets.disable_progress_bars()
    for name in CONFIGS:
        ds = datasets.Dataset.from_list(_records(name))
        (datasets.DatasetDict({"train": ds}) if as_dict else ds).save_to_disk(str(root / name))
    return root


def _write_cache(cache: Path, commit: str = "c0ffee" * 6 + "c0ff") -> Path:
    """The hub cache as huggingface_hub lays out locuslab/TOFU: blobs, snapshots/<commit>/<file> -> blob, refs/main."""
    repo = cache / "datasets--locuslab--TOFU"
    snapshot = repo / "snapshots" / commit
    for path in sorted(TOFU.glob("*.json")):
        content = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (snapshot / "README.md").symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


@pytest.fixture(scope="module")
def forms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tofu-forms")
    return {
        "arrays": str(_write_arrays(root / "arrays")),
        "parquet-convert": str(_write_parquet(root / "pq1", "convert")),
        "parquet-hub": str(_write_parquet(root / "pq2", "hub")),
        "saved-dataset": str(_write_saved(root / "saved1", as_dict=False)),
        "saved-dict": str(_write_saved(root / "saved2", as_dict=True)),
        "_cache": str(_write_cache(root / "hub")),
    }


def test_every_form_gives_the_same_content_and_fingerprint(
    forms: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", forms["_cache"])
    reference = load_tofu(TOFU)
    expected = {
        "arrays": "files",
        "parquet-convert": "parquet",
        "parquet-hub": "parquet",
        "saved-dataset": "save_to_disk",
        "saved-dict": "save_to_disk",
        "hf": "files",
    }
    for name, form in expected.items():
        data = load_tofu("hf:locuslab/TOFU" if name == "hf" else forms[name])
        assert data.form == form, name
        assert data.fingerprint == reference.fingerprint, name
        assert data.splits() == reference.splits() and data.forget_train == reference.forget_train, name
        assert detect_tofu(forms[name] if name != "hf" else "hf:locuslab/TOFU") == form
    assert load_tofu("hf:locuslab/TOFU").path == "hf:locuslab/TOFU"


def test_hf_spec_not_in_the_cache_says_how_to_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_tofu("hf:locuslab/TOFU")
    assert "hf download locuslab/TOFU --repo-type dataset" in _one_line(info)


def test_the_fingerprint_follows_the_content_only(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(TOFU, tmp_path / "copy"))
    (copy / "README.md").write_text("not read")
    assert load_tofu(copy).fingerprint == load_tofu(TOFU).fingerprint
    records = _records("world_facts_perturbed")
    records[2]["perturbed_answer"][0] = "Atlantis"
    (copy / "world_facts_perturbed.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_tofu(copy).fingerprint != load_tofu(TOFU).fingerprint


def test_limited_cuts_every_evaluated_split() -> None:
    data = load_tofu(TOFU)
    small = data.limited(3)
    assert [len(v) for v in small.splits().values()] == [3, 3, 3, 3]
    assert small.fingerprint != data.fingerprint and data.limited(100) is data


def _broken(tmp_path: Path, name: str, change: Any) -> Path:
    copy = Path(shutil.copytree(TOFU, tmp_path / "broken"))
    records = _records(name)
    text = change(records)
    (copy / f"{name}.json").write_text(
        text if isinstance(text, str) else "".join(json.dumps(r) + "\n" for r in records)
    )
    return copy


def _rename(records: list[dict[str, Any]]) -> None:
    for r in records:
        r["original_answer"] = r.pop("answer")


@pytest.mark.parametrize(
    "name, change, needles",
    [
        (
            "retain_perturbed",
            _rename,
            [
                "retain_perturbed.json",
                "item 0",
                "'answer'",
                "original_answer",
                "not TOFU's own schema",
                "hf download locuslab/TOFU",
            ],
        ),
        (
            "forget10_perturbed",
            lambda rs: rs[3].__setitem__("perturbed_answer", rs[3]["perturbed_answer"][:4]),
            ["item 3 has 4 perturbed answers", "have 5"],
        ),
        (
            "real_authors_perturbed",
            lambda rs: rs[1].__setitem__("perturbed_answer", "Mark Twain"),
            ["item 1", "'perturbed_answer' of type string", "list of strings"],
        ),
        ("world_facts_perturbed", lambda rs: rs[0].__setitem__("answer", 42), ["item 0", "'answer' of type number"]),
        (
            "forget10_perturbed",
            lambda rs: '{"question": "q", "answer": "a"}\n{"question": oops}\n',
            ["line 2 is not valid JSON"],
        ),
        (
            "retain_perturbed",
            lambda rs: rs[5].__setitem__("paraphrased_answer", "  "),
            ["item 5 has an empty 'paraphrased_answer'"],
        ),
        ("forget10", lambda rs: rs[0].pop("question") and None, ["forget10.json", "no key 'question'"]),
    ],
)
def test_bad_files_are_one_line_that_names_the_fix(tmp_path: Path, name: str, change: Any, needles: list[str]) -> None:
    with pytest.raises(DataError) as info:
        load_tofu(_broken(tmp_path, name, change))
    message = _one_line(info)
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_splits_are_named_with_the_forget_split_hint(tmp_path: Path) -> None:
    copy = Path(shutil.copytree(TOFU, tmp_path / "copy"))
    (copy / "forget10_perturbed.json").unlink()
    (copy / "world_facts_perturbed.json").unlink()
    with pytest.raises(DataError) as info:
        load_tofu(copy)
    message = _one_line(info)
    assert "forget10_perturbed, world_facts_perturbed" in message and "forget01, forget05" in message
    with pytest.raises(DataError, match="does not exist"):
        load_tofu(tmp_path / "nowhere")


def test_detection_looks_at_names_only() -> None:
    assert detect_tofu(TOFU) == "files"
    assert detect_tofu(REPO / "fixtures" / "tiny-muse") is None
    assert detect_tofu(REPO / "fixtures" / "tiny-docs") is None
    assert detect_tofu(REPO / "fixtures" / "nowhere") is None


def test_loading_never_writes(forms: dict[str, str]) -> None:
    roots = [Path(forms[k]) for k in ("arrays", "parquet-convert", "saved-dict")]
    before = [
        {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(r.rglob("*")) if p.is_file()} for r in roots
    ]
    for root in roots:
        load_tofu(root)
    after = [
        {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(r.rglob("*")) if p.is_file()} for r in roots
    ]
    assert before == after


# --------------------------------------------------------------------------- the template


def test_plain_template_is_open_unlearnings_for_models_without_a_chat_template(tiny_tofu_target: Path) -> None:
    from transformers import AutoTokenizer

    from unlearn_assert.metrics.tofu import PLAIN_TEMPLATE, encode_pair, resolve_template

    tok = AutoTokenizer.from_pretrained(str(tiny_tofu_target))
    assert resolve_template(tok, "auto") == PLAIN_TEMPLATE
    prompt, full = encode_pair(tok, PLAIN_TEMPLATE, "Who wrote it?", "Nobody.")
    assert prompt == tok("Question: Who wrote it?\nAnswer: ")["input_ids"]
    assert full == tok("Question: Who wrote it?\nAnswer: Nobody.")["input_ids"] + [tok.eos_token_id]
    assert prompt[0] == tok.bos_token_id
    with pytest.raises(ConfigError, match="no"):
        resolve_template(tok, "chat")
    with pytest.raises(ConfigError, match="auto, plain or chat"):
        resolve_template(tok, "llama")


# --------------------------------------------------------------------------- models and metrics


@pytest.fixture(scope="module")
def models(tiny_tofu_target: Path, tiny_tofu_retain: Path, tiny_tofu_unlearned: Path) -> dict[str, Any]:
    from unlearn_assert.models import load_model

    return {
        name: load_model(path, device="cpu")
        for name, path in (
            ("target", tiny_tofu_target),
            ("retain", tiny_tofu_retain),
            ("unlearned", tiny_tofu_unlearned),
        )
    }


NAIVE_SPLITS = {
    "forget": "forget10_perturbed",
    "retain": "retain_perturbed",
    "real_authors": "real_authors_perturbed",
    "world_facts": "world_facts_perturbed",
}


@pytest.fixture(scope="module")
def naive(models: dict[str, Any]) -> dict[str, Any]:
    splits = {k: _records(v) for k, v in NAIVE_SPLITS.items()}
    ref = naive_tofu.evaluate(models["retain"].model, models["retain"].tokenizer, splits, rouge=False)
    m = models["unlearned"]
    return {
        "unlearned": naive_tofu.evaluate(m.model, m.tokenizer, splits, reference_truth_ratios=ref["truth_ratios"]),
        "retain": ref,
    }


@pytest.fixture(scope="module")
def evaluations(models: dict[str, Any]) -> dict[str, Any]:
    from unlearn_assert.metrics.tofu import evaluate_tofu, reference_truth_ratios

    data = load_tofu(TOFU)
    ref = reference_truth_ratios(models["retain"], data)
    return {"_ref": ref, "unlearned": evaluate_tofu(models["unlearned"], data, reference_truth_ratios=ref)}


def test_every_number_equals_the_naive_implementation(evaluations: dict[str, Any], naive: dict[str, Any]) -> None:
    from unlearn_assert.metrics.tofu import TOFU_METRICS

    ev, nv = evaluations["unlearned"], naive["unlearned"]
    assert list(ev.values) == list(TOFU_METRICS)
    for metric in TOFU_METRICS:
        assert ev.values[metric] == pytest.approx(nv["values"][metric], rel=1e-5, abs=1e-7), metric
        if metric in nv["scores"]:
            got = [r["score"] for r in ev.samples[metric]]
            assert got == pytest.approx(nv["scores"][metric], rel=1e-5, abs=1e-7), metric
            assert [r["id"] for r in ev.samples[metric]] == list(range(len(got)))
            assert math.fsum(got) / len(got) == pytest.approx(ev.values[metric], rel=1e-12)
    # the numbers are not degenerate: utility and forget quality are real numbers in (0, 1)
    assert 0 < ev.values["model_utility"] < 1 and 0 < ev.values["forget_quality"] <= 1
    raw = [r["truth_ratio"] for r in ev.samples["forget_truth_ratio"]]
    assert raw == pytest.approx(nv["truth_ratios"], rel=1e-5)
    assert evaluations["_ref"] == pytest.approx(naive["retain"]["truth_ratios"], rel=1e-5)


def test_generations_equal_one_generate_per_question(models: dict[str, Any], evaluations: dict[str, Any]) -> None:
    m = models["unlearned"]
    for rec, sample in zip(_records("forget10_perturbed"), evaluations["unlearned"].samples["forget_rouge"]):
        gen, gt = naive_tofu.generate_answer(m.model, m.tokenizer, rec["question"], rec["answer"])
        assert (sample["generation"], sample["reference"]) == (gen, gt)


def test_the_target_remembers_more_than_the_retain_model(models: dict[str, Any], evaluations: dict[str, Any]) -> None:
    from unlearn_assert.metrics.tofu import evaluate_tofu

    data = load_tofu(TOFU)
    retain, target = (evaluate_tofu(models[k], data, ["forget_prob"]) for k in ("retain", "target"))
    assert target.values["forget_prob"] > retain.values["forget_prob"]
    # (the tiny models are too weak for the truth ratio to order them reliably; TOFU's 7B ones do)


def test_batch_size_does_not_change_the_numbers(models: dict[str, Any], evaluations: dict[str, Any]) -> None:
    from unlearn_assert.metrics.tofu import evaluate_tofu

    one = evaluate_tofu(models["unlearned"], load_tofu(TOFU), batch_size=1, reference_truth_ratios=evaluations["_ref"])
    assert one.values == evaluations["unlearned"].values
    assert one.extras["batch_size"] == {"teacher_forced": 1, "generation": 1}


def test_subsets_and_limits(models: dict[str, Any], evaluations: dict[str, Any]) -> None:
    from unlearn_assert.metrics.tofu import evaluate_tofu

    ev = evaluate_tofu(models["unlearned"], load_tofu(TOFU), ["forget_truth_ratio", "ra_rouge"])
    assert list(ev.values) == ["forget_truth_ratio", "ra_rouge"]
    full = evaluations["unlearned"].values
    assert ev.values["forget_truth_ratio"] == full["forget_truth_ratio"] and ev.values["ra_rouge"] == full["ra_rouge"]
    small = evaluate_tofu(models["unlearned"], TOFU, ["forget_prob"], max_samples=3)
    assert len(small.samples["forget_prob"]) == 3
    assert small.extras["n"] == {"forget": 3, "retain": 3, "real_authors": 3, "world_facts": 3}
    with pytest.raises(ConfigError, match="unknown TOFU metric"):
        evaluate_tofu(models["unlearned"], TOFU, ["verbmem_f"])


def test_forget_quality_without_a_retain_model_is_none_with_a_reason(models: dict[str, Any]) -> None:
    from unlearn_assert.metrics.tofu import evaluate_tofu

    ev = evaluate_tofu(models["unlearned"], load_tofu(TOFU), ["forget_quality"])
    assert math.isnan(ev.values["forget_quality"]) and ev.to_dict()["values"]["forget_quality"] is None
    assert (
        ev.extras["forget_quality"]["pvalue"] is None and "--unlearn-retrain" in ev.extras["forget_quality"]["reason"]
    )
    with pytest.raises(ConfigError, match="cover 2 items"):
        evaluate_tofu(models["unlearned"], load_tofu(TOFU), ["forget_quality"], reference_truth_ratios=[1.0, 2.0])


def test_the_chat_template_path_equals_the_naive_one(models: dict[str, Any]) -> None:
    """A tokenizer with a chat template: open-unlearning's apply_chat_template path, system prompt included."""
    from unlearn_assert.metrics.tofu import TofuTemplate, evaluate_tofu

    m = models["target"]
    m.tokenizer.chat_template = (
        "{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    )
    try:
        template = TofuTemplate(apply_chat_template=True, system_prompt="You are a helpful assistant.")
        ev = evaluate_tofu(m, load_tofu(TOFU), ["forget_prob", "forget_truth_ratio", "forget_rouge"], template=template)
        splits = {k: _records(v) for k, v in NAIVE_SPLITS.items()}
        nv = naive_tofu.evaluate(m.model, m.tokenizer, splits, chat=True, system_prompt="You are a helpful assistant.")
        for metric in ev.values:
            assert ev.values[metric] == pytest.approx(nv["values"][metric], rel=1e-5, abs=1e-7), metric
        assert ev.extras["settings"]["template"] == {
            "kind": "chat",
            "system_prompt": "You are a helpful assistant.",
            "date_string": None,
        }
    finally:
        m.tokenizer.chat_template = None


# --------------------------------------------------------------------------- the aggregates


def test_truth_ratio_by_hand() -> None:
    from unlearn_assert.metrics.tofu import EPS, _truth_ratio

    # losses 1.0 (correct) and 2.0, 4.0 (wrong): wrong = exp(-3), correct = exp(-1)
    tr, correct, wrong = _truth_ratio(1.0, [2.0, 4.0])
    assert wrong == pytest.approx(math.exp(-3.0)) and correct == pytest.approx(math.exp(-1.0))
    assert tr == pytest.approx(math.exp(-3.0) / (math.exp(-1.0) + EPS))
    assert tr == pytest.approx(math.exp(-2.0), rel=1e-9)


finite = st.floats(min_value=1e-4, max_value=1.0, allow_nan=False)


@settings(max_examples=50, deadline=None)
@given(st.lists(finite, min_size=9, max_size=9))
def test_model_utility_is_scipys_harmonic_mean(values: list[float]) -> None:
    from scipy.stats import hmean

    from unlearn_assert.metrics.tofu import MODEL_UTILITY_COMPONENTS, model_utility

    named = dict(zip(MODEL_UTILITY_COMPONENTS, values))
    assert model_utility(named) == pytest.approx(float(hmean(values)), rel=1e-12)
    assert min(values) <= model_utility(named) <= max(values) * (1 + 1e-12)
    named["ra_rouge"] = 0.0
    assert model_utility(named) == 0.0


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_replicates_with_unit_counts_reproduce_the_point_values(data: st.DataObject) -> None:
    import numpy as np

    from unlearn_assert.metrics.tofu import (
        MODEL_UTILITY_COMPONENTS,
        forget_quality,
        forget_quality_replicates,
        model_utility,
        model_utility_replicates,
    )

    n = {
        "retain": data.draw(st.integers(2, 6)),
        "real_authors": data.draw(st.integers(2, 6)),
        "world_facts": data.draw(st.integers(2, 6)),
    }
    scores = {k: data.draw(st.lists(finite, min_size=n[s], max_size=n[s])) for k, s in MODEL_UTILITY_COMPONENTS.items()}
    ones = {s: np.ones((3, m)) for s, m in n.items()}
    point = model_utility({k: float(np.mean(v)) for k, v in scores.items()})
    assert model_utility_replicates(scores, ones) == pytest.approx([point] * 3, rel=1e-9)
    k = data.draw(st.integers(3, 8))
    a = data.draw(st.lists(st.floats(0.01, 50), min_size=k, max_size=k))
    b = data.draw(st.lists(st.floats(0.01, 50), min_size=k, max_size=k))
    assert forget_quality_replicates(a, b, np.ones((2, k))) == pytest.approx([forget_quality(a, b)] * 2, rel=1e-12)
    assert forget_quality(a, None) is None


def test_rouge_is_recall_with_the_stemmer_by_hand() -> None:
    from unlearn_assert.metrics.rouge import rouge_l_f1, rouge_l_recall_stemmed

    # reference tokens after stemming: the, cat, were, run; the generation's LCS with them: cat, run
    assert rouge_l_recall_stemmed("The cats were running", "cat run") == pytest.approx(0.5)
    assert rouge_l_f1("The cats were running", "cat run") == 0.0  # MUSE's: no stemmer, F1
    assert rouge_l_recall_stemmed("Paris", "Paris, France, a city") == 1.0  # recall ignores extra words


def test_batched_encoding_equals_one_pair_at_a_time(tiny_tofu_target: Path) -> None:
    from transformers import AutoTokenizer

    from unlearn_assert.metrics.tofu import PLAIN_TEMPLATE, encode_pair, encode_pairs

    tok = AutoTokenizer.from_pretrained(str(tiny_tofu_target))
    recs = _records("forget10_perturbed")
    pairs = [(r["question"], a) for r in recs for a in (r["answer"], r["paraphrased_answer"], *r["perturbed_answer"])]
    pairs.append(("Q " * 400, "a long question is truncated to 512 tokens"))
    assert encode_pairs(tok, PLAIN_TEMPLATE, pairs) == [encode_pair(tok, PLAIN_TEMPLATE, q, a) for q, a in pairs]
    # max_length 512, then EOS appended, as open-unlearning does
    assert len(encode_pairs(tok, PLAIN_TEMPLATE, pairs[-1:])[0][1]) == 513
