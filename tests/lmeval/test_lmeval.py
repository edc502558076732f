"""lm-eval as the scorer (unlearn_assert.lmeval): WMDP-form tasks are WMDP's own lm-eval task, evaluate() equals
lm-eval's simple_evaluate to the digit, and the ``unlearn-assert`` backend runs through lm-eval's CLI and Python API.

Everything is local: WMDP-form files generated from the tiny fixture's QA, task YAMLs written here, the tiny
model; the hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, and the datasets cache in a temporary dir).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-evaluation-harness is not installed: pip install 'unlearn-assert[lmeval]'"
)

from unlearn_assert.errors import ConfigError, DataError  # noqa: E402
from unlearn_assert.lmeval.wmdp import WmdpForm  # noqa: E402

LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
BIOLOGY = "The following are multiple choice questions (with answers) about biology.\n\n"


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hf-datasets")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, hf_cache: Path) -> None:
    """No hub, and the datasets cache of the generated files in a temporary dir (datasets and huggingface_hub
    read these at import: their module constants are set too)."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hf_cache)


def wmdp_records(
    qa: list[dict[str, str]], seed: int, n_choices: int = 4, subject: str | None = None
) -> list[dict[str, Any]]:
    """WMDP-form records from QA pairs: the answer among other questions' answers, at a seeded position."""
    rng = random.Random(seed)
    answers = [x["answer"] for x in qa]
    out = []
    for i, x in enumerate(qa):
        others = rng.sample([a for j, a in enumerate(answers) if j != i], n_choices - 1)
        at = rng.randrange(n_choices)
        record: dict[str, Any] = {
            "question": x["question"],
            "choices": others[:at] + [x["answer"]] + others[at:],
            "answer": at,
        }
        if subject is not None:
            record["subject"] = subject
        out.append(record)
    return out


@pytest.fixture(scope="module")
def wmdp_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """forget.{jsonl,json,parquet} (the same records) from the fixture's forget QA, and utility.jsonl (MMLU's form,
    with a subject) from its retain QA."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path_factory.mktemp("wmdp")
    forget = wmdp_records(json.loads((tiny_data_dir / "knowmem" / "forget_qa.json").read_text()), seed=0)
    utility = wmdp_records(
        json.loads((tiny_data_dir / "knowmem" / "retain_qa.json").read_text()), seed=1, subject="abstract_algebra"
    )
    (out / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget))
    (out / "utility.jsonl").write_text("".join(json.dumps(r) + "\n" for r in utility))
    forms = out / "forms"
    forms.mkdir()
    (forms / "forget.json").write_text(json.dumps(forget))
    pq.write_table(pa.Table.from_pylist(forget), forms / "forget.parquet")
    return out


@pytest.fixture(scope="module")
def wmdp_yaml_dir(tmp_path_factory: pytest.TempPathFactory, wmdp_dir: Path) -> Path:
    """lm-eval's own WMDP task on the local file: a YAML that includes lm-eval's wmdp template and only points
    it at the file (``dataset_path: json`` + ``dataset_kwargs.data_files``), as a user of lm-eval writes it."""
    out = tmp_path_factory.mktemp("wmdp-yaml")
    (out / "wmdp_local.yaml").write_text(
        f"include: {LM_EVAL_TASKS / 'wmdp' / '_default_template_yaml'}\n"
        "task: wmdp_local\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {wmdp_dir / 'forget.jsonl'}\n"
        f"description: {json.dumps(BIOLOGY)}\n"
    )
    return out


def _plain(model: Any, tasks: list[Any], manager: Any, batch_size: int = 4) -> dict[str, Any]:
    """lm-eval by itself: its HFLM around the model, simple_evaluate with per-sample logging."""
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=batch_size)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, log_samples=True)


def _by_doc(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(samples, key=lambda s: s["doc_id"])


def _lls(samples: list[dict[str, Any]]) -> list[tuple[float, ...]]:
    return [tuple(float(r[0]) for r in s["filtered_resps"]) for s in _by_doc(samples)]


# --------------------------------------------------------------------------- WMDP-form data and its task


def test_the_config_is_wmdps_own_task() -> None:
    """Against the harness's installed files: lm_eval/tasks/wmdp/_default_template_yaml and wmdp_bio.yaml."""
    import yaml

    from unlearn_assert.lmeval.wmdp import DESCRIPTION, WMDP_CHOICES, WMDP_DOC_TO_TEXT

    template = yaml.safe_load((LM_EVAL_TASKS / "wmdp" / "_default_template_yaml").read_text())
    bio = yaml.safe_load((LM_EVAL_TASKS / "wmdp" / "wmdp_bio.yaml").read_text())
    assert (WMDP_DOC_TO_TEXT, WMDP_CHOICES) == (template["doc_to_text"], template["doc_to_choice"])
    assert DESCRIPTION.format(subject="biology") == bio["description"]


def test_a_file_becomes_wmdps_task_on_that_file(wmdp_dir: Path) -> None:
    import yaml

    from unlearn_assert.lmeval.wmdp import file_sha256, wmdp_task_config

    template = yaml.safe_load((LM_EVAL_TASKS / "wmdp" / "_default_template_yaml").read_text())
    config = wmdp_task_config(WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology"))
    for key in (
        "test_split",
        "training_split",
        "validation_split",
        "num_fewshot",
        "output_type",
        "doc_to_text",
        "doc_to_choice",
        "doc_to_target",
    ):
        assert config[key] == template[key], key
    assert config["description"] == BIOLOGY and config["task"] == "wmdp_form_forget"
    assert config["dataset_path"] == "json" and config["dataset_kwargs"] == {
        "data_files": {"test": str(wmdp_dir / "forget.jsonl")}
    }
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    assert config["metadata"]["wmdp_form"] == {"sha256": file_sha256(wmdp_dir / "forget.jsonl"), "records": 10}
    assert wmdp_task_config(wmdp_dir / "forms" / "forget.parquet")["dataset_path"] == "parquet"


def test_mmlu_form_says_the_subject_as_lm_evals_mmlu_tasks_do(wmdp_dir: Path) -> None:
    import yaml

    from unlearn_assert.lmeval.tasks import load_tasks

    mmlu = yaml.safe_load((LM_EVAL_TASKS / "mmlu" / "default" / "mmlu_abstract_algebra.yaml").read_text())
    task = load_tasks([wmdp_dir / "utility.jsonl"]).entries[0].leaf_tasks()["wmdp_form_utility"]
    doc = task.eval_docs[0]
    assert task.fewshot_context(doc, 0).startswith(mmlu["description"] + doc["question"].strip() + "\nA. ")


def test_any_number_of_choices_is_the_same_format(tmp_path: Path) -> None:
    from lm_eval.utils import apply_template

    from unlearn_assert.lmeval.tasks import load_tasks
    from unlearn_assert.lmeval.wmdp import _ANY_DOC_TO_TEXT, WMDP_DOC_TO_TEXT

    four = {"question": " What? ", "choices": ["w", "x", "y", "z"], "answer": 1}
    assert (
        apply_template(_ANY_DOC_TO_TEXT, four)
        == apply_template(WMDP_DOC_TO_TEXT, four)
        == "What?\nA. w\nB. x\nC. y\nD. z\nAnswer:"
    )
    data = tmp_path / "three.jsonl"
    data.write_text(
        json.dumps({"question": "Which?", "choices": ["a", "b", "c"], "answer": 2})
        + "\n"
        + json.dumps({"question": "Pick", "choices": ["p", "q"], "answer": 0})
        + "\n"
    )
    task = load_tasks([WmdpForm(str(data), subject="tests")]).entries[0].leaf_tasks()["wmdp_form_three"]
    docs = list(task.eval_docs)
    assert (
        task.fewshot_context(docs[0], 0)
        == "The following are multiple choice questions (with answers) about tests.\n\n"
        "Which?\nA. a\nB. b\nC. c\nAnswer:"
    )
    assert [task.doc_to_choice(d) for d in docs] == [["A", "B", "C"], ["A", "B"]]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.jsonl", "", "has no records"),
        ("line.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": 0}\n{oops\n', "line 2 is not JSON"),
        ("dict.json", '{"question": "q"}', "holds a JSON dict"),
        ("missing.jsonl", '{"question": "q", "choices": ["a", "b"]}\n', "record 0 has no answer"),
        ("letter.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": "B"}\n', "answer must be the index"),
        ("bool.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": true}\n', "answer must be the index"),
        ("range.jsonl", '{"question": "q", "choices": ["a", "b"], "answer": 2}\n', "0 to 1 (got 2)"),
        (
            "one.jsonl",
            '{"question": "q", "choices": ["a"], "answer": 0}\n',
            "choices must be a list of 2 to 26 strings",
        ),
        ("blank.jsonl", '{"question": " ", "choices": ["a", "b"], "answer": 0}\n', "question must be non-empty text"),
        ("table.csv", "question,choices,answer\n", "not a .jsonl, .json or .parquet file"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_record(tmp_path: Path, name: str, content: str, expected: str) -> None:
    from unlearn_assert.lmeval.wmdp import read_records

    (tmp_path / name).write_text(content)
    with pytest.raises(DataError) as info:
        read_records(tmp_path / name)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_layout_of_a_data_dir(tmp_path: Path, wmdp_dir: Path) -> None:
    from unlearn_assert.lmeval.wmdp import detect_layout

    assert detect_layout(wmdp_dir).forget == wmdp_dir / "forget.jsonl"  # type: ignore[union-attr]
    assert detect_layout(wmdp_dir).utility == wmdp_dir / "utility.jsonl"  # type: ignore[union-attr]
    assert detect_layout(tmp_path) is None
    with pytest.raises(DataError, match="forget.json and forget.parquet: keep one forget file"):
        detect_layout(wmdp_dir / "forms")


def test_write_task_yaml_never_replaces_a_file(tmp_path: Path, wmdp_dir: Path) -> None:
    from unlearn_assert.lmeval.tasks import load_tasks
    from unlearn_assert.lmeval.wmdp import wmdp_task_config, write_task_yaml

    out = write_task_yaml(WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology"), tmp_path / "tasks")
    built = load_tasks([out]).entries[0].leaf_tasks()["wmdp_form_forget"].dump_config()
    config = wmdp_task_config(WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology"))
    assert {k: built[k] for k in ("doc_to_text", "doc_to_choice", "description", "dataset_kwargs")} == {
        k: config[k] for k in ("doc_to_text", "doc_to_choice", "description", "dataset_kwargs")
    }
    with pytest.raises(DataError, match="exists"):
        write_task_yaml(wmdp_dir / "forget.jsonl", tmp_path / "tasks")


# --------------------------------------------------------------------------- tasks built before any model


def test_data_that_is_not_local_is_one_line_before_any_model(tmp_path: Path) -> None:
    from unlearn_assert.lmeval.tasks import load_tasks

    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: unlearn-assert-tests/never-cached\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: answer\n"
    )
    with pytest.raises(DataError) as info:
        load_tasks([tmp_path / "hub_task.yaml"])
    text = str(info.value)
    assert (
        f"lm-eval task '{tmp_path / 'hub_task.yaml'}'" in text
        and "not available on this machine" in text
        and "\n" not in text
    )


def test_a_missing_yaml_or_include_dir_is_one_line(tmp_path: Path) -> None:
    from unlearn_assert.lmeval.tasks import load_tasks

    with pytest.raises(ConfigError, match="does not exist"):
        load_tasks([tmp_path / "nope.yaml"])
    with pytest.raises(ConfigError, match="is not a directory"):
        load_tasks([tmp_path / "x.jsonl"], include_path=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="no lm-eval task given"):
        load_tasks([])


# --------------------------------------------------------------------------- evaluate(): lm-eval's numbers


@pytest.mark.parametrize("form", ["forget.jsonl", "forms/forget.json", "forms/forget.parquet"])
def test_equal_to_simple_evaluate_on_wmdps_task_to_the_digit(
    target: Any, wmdp_dir: Path, wmdp_yaml_dir: Path, form: str
) -> None:
    """The same items through lm-eval's own WMDP template (a YAML that includes it) and plain HFLM: every
    log-likelihood, acc and prompt equal, and the aggregate."""
    from lm_eval.tasks import TaskManager

    from unlearn_assert.lmeval.evaluate import evaluate

    manager = TaskManager(include_path=str(wmdp_yaml_dir), include_defaults=False)
    plain = _plain(target, ["wmdp_local"], manager)
    samples = plain["samples"]["wmdp_local"]
    [ours] = evaluate(target, [WmdpForm(str(wmdp_dir / form), subject="biology")], batch_size=4)
    assert [i.loglikelihoods for i in ours.items] == _lls(samples)
    assert ours.scores("acc") == [s["acc"] for s in _by_doc(samples)]
    assert [i.prompt_hash for i in ours.items] == [s["prompt_hash"] for s in _by_doc(samples)]
    assert ours.value("acc") == plain["results"]["wmdp_local"]["acc,none"]
    assert ours.aggregate["acc_stderr,none"] == plain["results"]["wmdp_local"]["acc_stderr,none"]


def test_per_item_records_and_aggregate(target: Any, wmdp_dir: Path) -> None:
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.tasks import load_tasks

    tasks = load_tasks(
        [WmdpForm(str(wmdp_dir / "forget.jsonl"), name="forget", subject="biology"), wmdp_dir / "utility.jsonl"]
    )
    forget, utility = evaluate(target, tasks, batch_size=4)
    assert (forget.spec, forget.name, utility.name) == (str(wmdp_dir / "forget.jsonl"), "forget", "wmdp_form_utility")
    assert [i.doc_id for i in forget.items] == list(range(10)) and forget.item_ids()[:2] == ["forget/0", "forget/1"]
    records = [json.loads(line) for line in (wmdp_dir / "forget.jsonl").read_text().splitlines()]
    assert [i.target for i in forget.items] == [r["answer"] for r in records]
    for item in forget.items:  # acc as lm-eval defines it: the gold choice has the highest log-likelihood
        assert item.n_choices == 4 and item.filter == "none"
        assert item.score("acc") == float(max(range(4), key=lambda j: item.loglikelihoods[j]) == item.target)
        assert item.score("acc_norm") == item.score("acc")  # " A" ... " D" are equally long
    assert forget.chance() == 0.25
    assert forget.value("acc") == sum(forget.scores("acc")) / 10 and forget.value("acc_norm") == forget.value("acc")
    assert len(forget.fingerprint) == 64 and forget.fingerprint != utility.fingerprint
    assert forget.settings["lm_eval"] == lm_eval.__version__ and forget.settings["batch_size"] == 4
    again = evaluate(target, tasks, batch_size=4)  # the same built tasks serve every model of a run
    assert [i.loglikelihoods for i in again[0].items] == [i.loglikelihoods for i in forget.items]
    with pytest.raises(ConfigError, match="has no aggregate 'bleu,none'"):
        forget.value("bleu")
    with pytest.raises(ConfigError, match="sets device, log_samples itself"):
        evaluate(target, tasks, device="cpu", log_samples=False)


def test_a_group_of_your_tasks_by_name_in_your_folder(tmp_path: Path, target: Any, wmdp_dir: Path) -> None:
    """A group (as mmlu is one): named from the include folder without lm-eval's built-in index; its items are its
    members' items, its aggregate lm-eval's size-weighted mean, all equal to simple_evaluate on the same folder."""
    import yaml
    from lm_eval.tasks import TaskManager

    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.tasks import _manager, load_tasks
    from unlearn_assert.lmeval.wmdp import wmdp_task_config

    folder = tmp_path / "my_tasks"
    folder.mkdir()
    for name, file in (("part_forget", "forget.jsonl"), ("part_utility", "utility.jsonl")):
        config = wmdp_task_config(WmdpForm(str(wmdp_dir / file), name=name, subject="biology"))
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(config))
    (folder / "both.yaml").write_text(
        yaml.safe_dump(
            {
                "group": "both",
                "task": ["part_forget", "part_utility"],
                "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
            }
        )
    )
    _manager.cache_clear()
    [ours] = evaluate(target, load_tasks(["both"], include_path=folder), batch_size=4)
    assert _manager.cache_info().currsize == 1  # only the folder's index was built
    plain = _plain(target, ["both"], TaskManager(include_path=str(folder), include_defaults=False))
    assert (ours.name, sorted(ours.subtasks)) == ("both", ["part_forget", "part_utility"])
    assert [i.task for i in ours.items] == ["part_forget"] * 10 + ["part_utility"] * 10
    expected = _lls(plain["samples"]["part_forget"]) + _lls(plain["samples"]["part_utility"])
    assert [i.loglikelihoods for i in ours.items] == expected
    assert ours.value("acc") == plain["results"]["both"]["acc,none"]
    assert ours.value("acc") == pytest.approx(sum(ours.scores("acc")) / 20, abs=1e-12)


def test_the_fingerprint_follows_the_content_not_the_path(tmp_path: Path, wmdp_dir: Path) -> None:
    from unlearn_assert.lmeval.tasks import load_tasks

    copy = tmp_path / "elsewhere" / "forget.jsonl"
    copy.parent.mkdir()
    copy.write_bytes((wmdp_dir / "forget.jsonl").read_bytes())
    first = load_tasks([wmdp_dir / "forget.jsonl"]).entries[0].fingerprint()
    assert load_tasks([copy]).entries[0].fingerprint() == first
    records = [json.loads(line) for line in copy.read_text().splitlines()]
    records[3]["answer"] = (records[3]["answer"] + 1) % 4
    copy.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert load_tasks([copy]).entries[0].fingerprint() != first


def test_the_callers_model_is_scored_as_loaded(tiny_model_dir: Path, wmdp_dir: Path) -> None:
    """HFLM calls tie_weights(); on a model whose config says "tied" but whose weights are not (a quantized or
    edited view can be that), plain HFLM re-ties them and so changes the caller's model. hflm() does not."""
    from lm_eval.models.huggingface import HFLM

    from unlearn_assert.lmeval.evaluate import hflm
    from unlearn_assert.models import load_model

    loaded = load_model(tiny_model_dir)
    loaded.model.config.tie_word_embeddings = True
    head = loaded.model.lm_head.weight
    hflm(loaded)
    assert loaded.model.lm_head.weight is head
    HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # what the guard prevents


def test_lm_eval_computes_one_sequence_per_shared_prefix(target: Any, wmdp_dir: Path) -> None:
    """lm-eval's logits cache groups a question's requests by context + continuation[:-1]: choices that are one
    token given the prompt (WMDP's " A" ... " D" with a tokenizer that has them as tokens) share one sequence, the
    question computed once; choices of several tokens take a sequence each."""
    from unlearn_assert.lmeval.evaluate import evaluate, hflm
    from unlearn_assert.lmeval.tasks import load_tasks
    from unlearn_assert.lmeval.wmdp import wmdp_task_config

    texts = wmdp_task_config(WmdpForm(str(wmdp_dir / "forget.jsonl"), name="texts"))
    texts.update({"doc_to_text": "Question: {{question}}\nAnswer:", "doc_to_choice": "choices"})
    lm = hflm(target)
    counts: dict[str, int] = {}
    for label, spec in (("letters", WmdpForm(str(wmdp_dir / "forget.jsonl"), name="letters")), ("texts", texts)):
        tasks = load_tasks([spec])
        task = next(iter(tasks.entries[0].leaf_tasks().values()))
        groups = 0
        for doc in task.eval_docs:
            context = task.fewshot_context(doc, 0)
            pairs = [lm._encode_pair(context, " " + choice) for choice in task.doc_to_choice(doc)]
            groups += len({tuple(ctx + cont[:-1]) for ctx, cont in pairs})
        rows: list[int] = []

        def count(module: Any, args: Any, kwargs: Any, rows: list[int] = rows) -> None:
            rows.append(int(kwargs.get("input_ids", args[0] if args else None).shape[0]))

        handle = target.model.register_forward_pre_hook(count, with_kwargs=True)
        try:
            evaluate(target, tasks, batch_size=4)
        finally:
            handle.remove()
        assert sum(rows) == groups
        counts[label] = groups
    assert 10 <= counts["letters"] < counts["texts"] == 40  # the fixture's answers: distinct names of 2+ tokens


# --------------------------------------------------------------------------- the unlearn-assert backend


def _task_dir(tmp_path: Path, wmdp_dir: Path) -> Path:
    from unlearn_assert.lmeval.wmdp import write_task_yaml

    write_task_yaml(WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology"), tmp_path / "tasks")
    return tmp_path / "tasks"


def test_backend_rtn_through_lm_evals_python_api(tiny_model_dir: Path, target: Any, wmdp_dir: Path) -> None:
    from lm_eval.tasks import TaskManager

    from unlearn_assert.lmeval import register
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.wmdp import wmdp_task_config
    from unlearn_assert.quant import quantized

    register()
    config = wmdp_task_config(WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology"))
    results = lm_eval.simple_evaluate(
        model="unlearn-assert",
        model_args={"pretrained": str(tiny_model_dir), "variant": "rtn-w4g128", "no_cache": True},
        tasks=[config],
        task_manager=TaskManager(include_defaults=False),
        batch_size=4,
        device="cpu",
        log_samples=True,
    )
    with quantized(target, "rtn-w4g128") as q:
        [expected] = evaluate(q, [config], batch_size=4)
    assert _lls(results["samples"]["wmdp_form_forget"]) == [i.loglikelihoods for i in expected.items]
    assert results["results"]["wmdp_form_forget"]["acc,none"] == expected.value("acc")
    info = results["config"]["unlearn_assert"]
    assert (info["variant"], info["role"], info["pretrained"]) == ("rtn-w4g128", "target", str(tiny_model_dir))
    assert info["details"]["changed_fraction"] > 0
    [plain_fp] = evaluate(target, [config], batch_size=4)
    assert [i.loglikelihoods for i in plain_fp.items] != [i.loglikelihoods for i in expected.items]  # it did quantize


def test_backend_fp_equals_lm_evals_own_hf_backend_on_the_path(tiny_model_dir: Path, wmdp_dir: Path) -> None:
    """Nothing of ours changes a number: the model as loaded by us, through the backend, scores exactly as
    lm-eval's hf backend loading the same directory itself."""
    from lm_eval.models.huggingface import HFLM

    from unlearn_assert.lmeval.backend import UnlearnAssertLM
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.tasks import load_tasks

    tasks = load_tasks([WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology")])
    with UnlearnAssertLM(
        pretrained=str(tiny_model_dir), dtype="float32", device="cpu", no_cache=True, batch_size=4
    ) as lm:
        [ours] = evaluate(lm, tasks)
        assert lm.unlearn_info["variant"] == "fp" and lm.unlearn_info["details"] == {}
    theirs_lm = HFLM(pretrained=str(tiny_model_dir), device="cpu", dtype="float32", batch_size=4)
    [theirs] = evaluate(theirs_lm, tasks)
    assert [i.loglikelihoods for i in ours.items] == [i.loglikelihoods for i in theirs.items]


def test_backend_relearn_is_the_engines_relearn_source(
    tiny_model_dir: Path, tiny_data_dir: Path, target: Any, wmdp_dir: Path
) -> None:
    from unlearn_assert.lmeval.backend import UnlearnAssertLM
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.tasks import load_tasks

    tasks = load_tasks([WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology")])
    with UnlearnAssertLM(
        pretrained=str(tiny_model_dir),
        variant="relearn-forget-2",
        data=str(tiny_data_dir),
        device="cpu",
        no_cache=True,
        batch_size=4,
    ) as lm:
        [relearned] = evaluate(lm, tasks)
        details = lm.unlearn_info["details"]
        assert (details["attack"], details["id"]) == ("relearn", "relearn-forget-2")
    [fp] = evaluate(target, tasks, batch_size=4)
    assert [i.loglikelihoods for i in relearned.items] != [i.loglikelihoods for i in fp.items]


def test_backend_your_gguf_file_is_the_gguf_quantizers_model(
    tmp_path: Path, tiny_model_dir: Path, wmdp_dir: Path
) -> None:
    """The artifact source through the backend: the user's llama.cpp q8_0 file of the model (quantized=NAME=FILE)
    scores exactly as the quantizer id gguf-q8_0, which runs llama.cpp's own quantizer on the same weights."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: pip install 'unlearn-assert[gguf]'")
    from unlearn_assert.lmeval.backend import UnlearnAssertLM
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.lmeval.tasks import load_tasks
    from unlearn_assert.quant.gguf import llama_quantize
    from unlearn_assert.quant.llama_cpp import Converter

    Converter.shared().convert(str(tiny_model_dir), tmp_path / "f32.gguf")  # as a user makes the file
    llama_quantize(tmp_path / "f32.gguf", tmp_path / "mine.gguf", "q8_0", 1)
    tasks = load_tasks([WmdpForm(str(wmdp_dir / "forget.jsonl"), subject="biology")])
    results = []
    for args in ({"quantized": f"mine={tmp_path / 'mine.gguf'}"}, {"variant": "gguf-q8_0"}):
        with UnlearnAssertLM(pretrained=str(tiny_model_dir), device="cpu", no_cache=True, batch_size=4, **args) as lm:
            [result] = evaluate(lm, tasks)
            results.append((lm.unlearn_info["variant"], [i.loglikelihoods for i in result.items]))
    assert [v for v, _ in results] == ["mine", "gguf-q8_0"] and results[0][1] == results[1][1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"varaint": "rtn-w8"}, "unknown model_args varaint"),
        ({"peft": "adapter"}, "model_args peft: lm-eval's hf backend options"),
        ({"variant": "rtn-w3g7x"}, "model_args variant:"),
        ({"variant": "relearn-forget-2"}, "pass it in model_args as data=DIR"),
        ({"variant": "gptq-w4g128"}, "pass calibration=FILE"),
        ({"variant": "mine", "quantized": "other=/nowhere"}, "the artifact's variant is its NAME, other"),
        ({"dtype": "half"}, "model_args dtype: 'half' is not supported"),
    ],
)
def test_backend_bad_model_args_are_one_line_before_loading(
    tiny_model_dir: Path, args: dict[str, Any], expected: str
) -> None:
    from unlearn_assert.lmeval.backend import UnlearnAssertLM

    with pytest.raises(ConfigError) as info:
        UnlearnAssertLM(pretrained=str(tiny_model_dir), no_cache=True, **args)
    assert expected in str(info.value) and "--unlearn-" not in str(info.value) and "\n" not in str(info.value)


def test_backend_is_registered_lazily_and_keeps_lm_evals_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from lm_eval.api.registry import get_model, model_registry
    from lm_eval.models.huggingface import HFLM

    from unlearn_assert.lmeval import BACKEND_TARGET, MODEL_NAME, register

    register()
    register()  # idempotent
    assert model_registry.get(MODEL_NAME).__name__ == "UnlearnAssertLM" and get_model("hf") is HFLM
    assert BACKEND_TARGET == f"{model_registry.get(MODEL_NAME).__module__}:UnlearnAssertLM"


def test_the_entry_point_is_what_plugin_discovery_loads() -> None:
    """The ``lm_eval.models`` entry point (EleutherAI/lm-evaluation-harness PR #4013's discovery) resolves, through
    lm-eval's own Registry with an EntryPoint placeholder, to the registered class."""
    import importlib.metadata as md

    from lm_eval.api.registry import Registry

    from unlearn_assert.lmeval.backend import UnlearnAssertLM

    found = [ep for ep in md.entry_points(group="lm_eval.models") if ep.name == "unlearn-assert"]
    if not found:
        pytest.skip(
            "unlearn-assert is not installed as a distribution here (pip install -e .): no entry points to read"
        )
    registry: Registry[Any] = Registry("model")
    registry.register("unlearn-assert", target=found[0])
    assert registry.get("unlearn-assert") is UnlearnAssertLM


def test_unlearn_assert_lm_eval_passes_its_arguments_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    from unlearn_assert.cli import main

    assert main(["lm-eval", "run", "--no-such-option"]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


def test_backend_rtn_through_lm_evals_cli(
    tmp_path: Path, tiny_model_dir: Path, target: Any, wmdp_dir: Path, hf_cache: Path
) -> None:
    """``unlearn-assert lm-eval run --model unlearn-assert ...`` in a fresh process, a local task YAML (lm-eval's
    --include_path), the rtn-w4g128 variant: lm-eval's own output files hold the numbers of the quantized model."""
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.quant import quantized

    tasks = _task_dir(tmp_path, wmdp_dir)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(hf_cache),
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "unlearn_assert.cli",
        "lm-eval",
        "run",
        "--model",
        "unlearn-assert",
        "--model_args",
        f"pretrained={tiny_model_dir},variant=rtn-w4g128,no_cache=true",
        "--tasks",
        "wmdp_form_forget",
        "--include_path",
        str(tasks),
        "--batch_size",
        "4",
        "--device",
        "cpu",
        "--output_path",
        str(tmp_path / "out"),
        "--log_samples",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wmdp_form_forget" in done.stdout and "acc" in done.stdout
    [results_file] = (tmp_path / "out").rglob("results_*.json")
    [samples_file] = (tmp_path / "out").rglob("samples_wmdp_form_forget_*.jsonl")
    results = json.loads(results_file.read_text())
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    with quantized(target, "rtn-w4g128") as q:
        [expected] = evaluate(q, [tasks / "wmdp_form_forget.yaml"], batch_size=4)
    assert _lls(samples) == [i.loglikelihoods for i in expected.items]
    assert results["results"]["wmdp_form_forget"]["acc,none"] == expected.value("acc")
    assert results["config"]["unlearn_assert"]["variant"] == "rtn-w4g128"


@pytest.mark.slow
def test_builtin_task_names_need_lm_evals_index() -> None:
    """lm-eval's built-in tasks by name: an unknown one gets suggestions; WMDP's own, whose data (cais/wmdp) is not in
    this machine's cache, is one line naming it (building lm-eval's index of its tasks takes tens of seconds here)."""
    from unlearn_assert.lmeval.tasks import load_tasks

    with pytest.raises(ConfigError, match="did you mean .*wmdp_bio"):
        load_tasks(["wmdp_bioo"])
    with pytest.raises(DataError) as info:
        load_tasks(["wmdp_bio"])
    assert "lm-eval task 'wmdp_bio'" in str(info.value) and "not available on this machine" in str(info.value)
