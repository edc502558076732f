"""``--unlearn-utility-tasks``: the user's lm-eval tasks as more utility checks beside any benchmark
(unlearn_assert.benchmark.utility_tasks), named, budgeted and measured by lm-eval itself.

The tasks are local: a task YAML in an include folder that scores the tiny MUSE fixture's retain answers as
multiple-choice texts (ARC's way), and a WMDP-form file of the same questions; the hub is off.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from gate_helpers import outcomes

from unlearn_assert.config import parse_budget, parse_utility_tasks, run_config, utility_task_metric
from unlearn_assert.errors import ConfigError


@pytest.fixture(autouse=True)
def hub_off(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No hub, and the datasets cache in a temporary dir, here and in pytest subprocesses."""
    cache = tmp_path_factory.getbasetemp() / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    try:
        import datasets.config
    except ImportError:
        return
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)


def lm_eval_installed() -> None:
    pytest.importorskip(
        "lm_eval", reason="lm-evaluation-harness is not installed: pip install 'unlearn-assert[lmeval]'"
    )


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """``tasks/qa_choices.yaml`` (the retain questions, their answers among three others as the choices' texts) and
    ``retain_letters.jsonl`` (the same questions in WMDP's form)."""
    root = tmp_path_factory.mktemp("utility-tasks")
    qa = json.loads((tiny_data_dir / "knowmem" / "retain_qa.json").read_text())
    rng = random.Random(0)
    answers = [x["answer"] for x in qa]
    records = []
    for i, x in enumerate(qa):
        others, at = rng.sample([a for j, a in enumerate(answers) if j != i], 3), rng.randrange(4)
        records.append({"question": x["question"], "choices": others[:at] + [x["answer"]] + others[at:], "answer": at})
    data = root / "retain_letters.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "tasks").mkdir()
    (root / "tasks" / "qa_choices.yaml").write_text(
        "task: qa_choices\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: answer\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


# --------------------------------------------------------------------------- the option and its budget keys


def test_each_task_is_named_by_the_option_and_budgeted_by_that_name() -> None:
    specs = parse_utility_tasks("mmlu, lm-eval:arc_easy,tasks/legal_qa.yaml,data/mmlu_form.jsonl")
    assert specs == ("mmlu", "lm-eval:arc_easy", "tasks/legal_qa.yaml", "data/mmlu_form.jsonl")
    assert [utility_task_metric(s) for s in specs] == ["mmlu", "arc_easy", "legal_qa", "mmlu_form"]
    run = run_config(
        model="u",
        target="t",
        data="d",
        utility_tasks="mmlu,arc_easy",
        budget="utility=0.8 arc_easy=0.95 mmlu@rtn-w4g128=0.85",
    )
    budget = run.budget
    # a task's own key wins over the utility key, per variant too; a bare utility= covers every other task
    assert budget.value_of(("arc_easy", "utility"), None) == 0.95
    assert budget.value_of(("mmlu", "utility"), "rtn-w4g128") == 0.85
    assert budget.value_of(("mmlu", "utility"), "rtn-w8") == 0.8
    assert budget.with_overrides({"mmlu": 0.7}).value_of(("mmlu", "utility"), None) == 0.7  # a marker may name it too
    assert set(budget.to_dict()) == {"recovery", "utility", "privleak", "floor", "overrides"}
    with pytest.raises(ConfigError, match="unknown budget key 'arc_easy'"):  # not a task of this run
        run_config(model="u", target="t", data="d", budget="arc_easy=0.9")
    with pytest.raises(ConfigError, match="unknown budget key 'arc_esay'"):
        parse_budget("arc_esay=0.9", metrics=("arc_easy",))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mmlu,mmlu", "'mmlu' is given twice"),
        ("a/mmlu.yaml,mmlu", "'a/mmlu.yaml' and 'mmlu' are both named 'mmlu'"),
        ("utility", "would be named 'utility', which is a budget key"),
        ("knowmem_r", "would be named 'knowmem_r', which is a metric of the benchmarks"),
        ("forget_acc.yaml", "which is a metric of the benchmarks; rename the file"),
        ("my tasks/a b.yaml", "the file name 'a b' must be letters, digits"),
    ],
)
def test_bad_task_names_are_one_line(raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_utility_tasks(raw)
    assert str(info.value).startswith("--unlearn-utility-tasks: ") and expected in str(info.value)


def test_a_task_whose_data_is_not_local_fails_at_option_time(
    tmp_path: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    lm_eval_installed()
    from unlearn_assert.engine.inputs import precheck

    (tmp_path / "hub_task.yaml").write_text(
        "task: hub_task\ndataset_path: unlearn-assert-tests/never-cached\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: answer\n"
    )
    run = run_config(
        model=tiny_model_dir,
        target=tiny_model_dir,
        data=tiny_data_dir,
        no_cache=True,
        utility_tasks="hub_task",
        lm_eval_include=tmp_path,
    )
    with pytest.raises(ConfigError) as info:
        precheck(run)
    text = str(info.value)
    assert text.startswith(
        "--unlearn-utility-tasks: lm-eval task 'hub_task': its data is not available on this machine"
    )
    assert "Hugging Face hub" in text and "\n" not in text


def test_the_scored_metric_of_a_task(tmp_path: Path, task_dir: Path) -> None:
    """acc where the task has it; else its first averaged, higher-is-better metric; several filters are refused."""
    lm_eval_installed()
    from unlearn_assert.benchmark.mc import built_tasks, scored_metric

    (tmp_path / "q.jsonl").write_text(json.dumps({"question": "q?", "answer": "a"}) + "\n")
    head = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'q.jsonl'}\ntest_split: test\n"
        "output_type: generate_until\ndoc_to_text: '{{question}}'\ndoc_to_target: answer\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (tmp_path / "gen.yaml").write_text("task: gen\n" + head)
    (tmp_path / "two.yaml").write_text(
        "task: two\n" + head + "filter_list:\n  - name: a\n    filter:\n      - function: take_first\n"
        "  - name: b\n    filter:\n      - function: take_first\n"
    )
    loaded = built_tasks([str(task_dir / "tasks" / "qa_choices.yaml"), str(tmp_path / "gen.yaml")], None)
    assert [scored_metric(e) for e in loaded.entries] == ["acc", "exact_match"]
    with pytest.raises(ConfigError, match="has several filters"):
        scored_metric(built_tasks([str(tmp_path / "two.yaml")], None).entries[0])


def test_a_task_alone_is_measured_without_the_base_benchmark(task_dir: Path, target: Any, tiny_data_dir: Path) -> None:
    """Asking for a task's metric runs lm-eval only (the muse fixture may ask for one metric); its value is lm-eval's
    acc x100 on the same model, item for item."""
    lm_eval_installed()
    from unlearn_assert.benchmark.muse import MuseBenchmark
    from unlearn_assert.benchmark.utility_tasks import WithUtilityTasks
    from unlearn_assert.lmeval.evaluate import evaluate

    bench = WithUtilityTasks(MuseBenchmark(), ["qa_choices"], include=str(task_dir / "tasks"))
    assert [m.name for m in bench.metrics][-1] == "qa_choices" and bench.metrics[-1].role == "utility"
    ev = bench.measure(target, bench.load(str(tiny_data_dir)), metrics=["qa_choices"])
    assert set(ev.values) == {"qa_choices"}
    [plain] = evaluate(target, [task_dir / "tasks" / "qa_choices.yaml"], batch_size=8)
    assert ev.values["qa_choices"] == plain.value("acc") * 100
    assert [r["score"] for r in ev.samples["qa_choices"]] == [s * 100 for s in plain.scores("acc")]
    assert bench.name == "muse+lm-eval" and bench.settings["utility_tasks"]["tasks"]["qa_choices"]["metric"] == "acc"


# --------------------------------------------------------------------------- beside MUSE, end to end


def test_utility_tasks_beside_muse(
    pytester: pytest.Pytester, task_dir: Path, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """MUSE data and two lm-eval tasks: each task is an item per variant, judged by its own budget key, with its
    values in the rows and its metric in the report's benchmark; MUSE's items are unchanged."""
    lm_eval_installed()
    from unlearn_assert.lmeval.evaluate import evaluate
    from unlearn_assert.models import load_model
    from unlearn_assert.render import validate_report

    args = [
        f"--unlearn-model={tiny_in_cell_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-quantizers=rtn-w4g128",
        f"--unlearn-utility-tasks=qa_choices,{task_dir / 'retain_letters.jsonl'}",
        f"--unlearn-lm-eval-include={task_dir / 'tasks'}",
        "--unlearn-no-cache",
        "-p",
        "no:randomly",
        "--unlearn-budget=qa_choices=0.5 qa_choices@rtn-w4g128=0.6 retain_letters=0.05",
    ]
    result = pytester.runpytest_subprocess(*args, "--unlearn-json=report.json", "--junitxml=junit.xml")
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-3000:]
    assert list(outcomes(pytester.path / "junit.xml")) == [
        f"{q}-{c}"
        for q in ("fp", "rtn-w4g128")
        for c in ("verbmem_f", "knowmem_f", "utility", "qa_choices", "retain_letters")
    ]
    report = validate_report(json.loads((pytester.path / "report.json").read_text()))
    bench = report["provenance"]["benchmark"]
    assert bench["name"] == "muse+lm-eval"
    assert [(m["name"], m["role"], m["check"]) for m in bench["metrics"]][-2:] == [
        ("qa_choices", "utility", "qa_choices"),
        ("retain_letters", "utility", "retain_letters"),
    ]
    assert bench["utility_tasks"]["retain_letters"]["name"] == "wmdp_form_retain_letters"
    assert bench["settings"]["utility_tasks"]["batch_size"] == 8
    verdicts = {v["item"]: v for v in report["verdicts"]}
    assert verdicts["test_budget[fp-qa_choices]"]["budget"] == 0.5
    assert verdicts["test_budget[rtn-w4g128-qa_choices]"]["budget"] == 0.6
    assert verdicts["test_budget[rtn-w4g128-retain_letters]"]["budget"] == 0.05
    rows = {(r["model"], r["quantizer"]): r for r in report["rows"]}
    target = load_model(tiny_model_dir, device="cpu")
    [plain] = evaluate(target, [task_dir / "tasks" / "qa_choices.yaml"], batch_size=8)
    assert rows[("target", "fp")]["values"]["qa_choices"] == plain.value("acc") * 100  # lm-eval's own number, x100
    u_fp = rows[("unlearned", "fp")]
    assert (
        u_fp["utilities"]["qa_choices"] == u_fp["values"]["qa_choices"] / rows[("target", "fp")]["values"]["qa_choices"]
    )
    assert u_fp["values"]["verbmem_f"] is not None  # the base benchmark's metrics are measured as always
    v = verdicts["test_budget[fp-qa_choices]"]
    assert v["message"].startswith("qa_choices in full precision is ") or v["message"].startswith(
        "undecided: qa_choices"
    )
