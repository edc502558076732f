"""The Benchmark contract (issue 27): every benchmark gated end to end, a toy one registered without touching the
engine, detection, budgets by metric name, and TOFU's relearning split by author."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.benchmark import benchmark_for, detect_benchmark, judged_metrics
from unlearn_assert.benchmark.base import Context, MetricSpec
from unlearn_assert.benchmark.registry import BENCHMARKS, METRIC_NAMES
from unlearn_assert.config import ConfigError, run_config
from unlearn_assert.errors import DataError

REPO = Path(__file__).resolve().parents[2]
TOFU = REPO / "fixtures" / "tiny-tofu"
DOCS = REPO / "fixtures" / "tiny-docs"
MUSE = REPO / "fixtures" / "tiny-muse"


def test_the_registry_names_each_benchmarks_metrics() -> None:
    """Budget keys are checked against :data:`METRIC_NAMES` while options are parsed (no benchmark code is
    imported then); it must say what each benchmark's own specs say."""
    from unlearn_assert.benchmark import benchmark_class

    for name in BENCHMARKS:
        specs = benchmark_class(name)().metrics
        assert {m.name for m in specs} <= set(METRIC_NAMES[name]) | {m.name for m in specs if m.role == "reported"}
        assert {m.name for m in specs if m.role != "reported"} <= set(METRIC_NAMES[name])


def test_auto_detects_each_layout_and_refuses_others(tmp_path: Path) -> None:
    assert [detect_benchmark(str(p)) for p in (TOFU, DOCS, MUSE)] == ["tofu", "documents", "muse"]
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="in no layout unlearn-assert reads.*--unlearn-benchmark"):
        detect_benchmark(str(tmp_path))
    with pytest.raises(ConfigError, match="--unlearn-benchmark: 'tofoo' is not a benchmark; use auto or one of"):
        run_config(model="m", benchmark="tofoo")


def test_items_follow_the_metric_names_and_privacy_needs_its_reference() -> None:
    def items(data: Path, **settings: Any) -> list[str | None]:
        return [m.item for m in judged_metrics(benchmark_for(run_config(model="m", target="t", data=data, **settings)))]

    assert items(MUSE) == ["verbmem_f", "knowmem_f", "utility"]
    assert items(MUSE, retrain_auc=0.5) == ["verbmem_f", "knowmem_f", "utility", "privleak"]
    assert items(TOFU) == ["forget_prob", "forget_rouge", "forget_truth_ratio", "model_utility"]
    assert items(TOFU, retrain="r")[-1] == "forget_quality"
    assert items(DOCS, retrain="r") == ["verbmem_f", "knowmem_f", "utility", "privleak"]


def test_budget_keys_name_metrics_with_the_usual_precedence() -> None:
    run = run_config(
        model="m", budget="recovery=0.3 forget_truth_ratio=0.2 forget_truth_ratio@rtn-w8=0.1 model_utility=0.8"
    )
    assert run.budget.recovery_for("forget_truth_ratio", "rtn-w8") == 0.1
    assert run.budget.recovery_for("forget_truth_ratio", "bnb-nf4") == 0.2
    assert run.budget.recovery_for("forget_prob", "bnb-nf4") == 0.3
    assert run.budget.value_of(("model_utility", "utility"), "bnb-nf4") == 0.8
    with pytest.raises(ConfigError, match="unknown budget key 'forget_truth'"):
        run_config(model="m", budget="forget_truth=0.1")


def test_a_metric_the_runs_benchmark_does_not_judge_is_a_usage_error(
    tiny_model_dir: Path, tiny_unlearned_dir: Path
) -> None:
    from unlearn_assert.engine import precheck

    run = run_config(model=tiny_unlearned_dir, target=tiny_model_dir, data=MUSE, budget="forget_prob=0.1")
    with pytest.raises(
        ConfigError, match="'forget_prob' names a metric the muse benchmark does not judge; its metrics: "
    ):
        precheck(run)


def test_tofu_relearning_holds_out_whole_authors() -> None:
    from unlearn_assert.benchmark.tofu import TofuBenchmark
    from unlearn_assert.data.tofu import load_tofu

    data = load_tofu(TOFU, questions_per_author=4)  # the fixture has 4 questions per author (TOFU: 20)
    split, documents = TofuBenchmark().relearn_split(data)
    assert len(documents) == 2 and split.trained_documents == (0,)
    assert split.evaluated["forget_prob"] == (4, 5, 6, 7) == split.evaluated["forget_quality"]
    assert all(
        data.forget[i].question in documents[1] and data.forget[i].question not in documents[0] for i in (4, 5, 6, 7)
    )
    cut = TofuBenchmark().restricted(data, split)
    assert [i.question for i in cut.forget] == [data.forget[i].question for i in (4, 5, 6, 7)]
    assert cut.fingerprint != data.fingerprint
    with pytest.raises(DataError, match="has 1 forget author"):
        TofuBenchmark().relearn_split(load_tofu(TOFU))  # 20 per author: the fixture's 8 questions are one author


# --------------------------------------------------------------------------- a toy benchmark, registered in a test


class _Lengths:
    """A benchmark of one forget metric, the share of forget words the model ranks first, and one utility
    metric, the same on retain words: small, real scores of a real model, and nothing of MUSE's."""

    name = "toy"

    def __init__(self) -> None:
        self.metrics = (
            MetricSpec("forget_top1", "forget", items="forget words", unit="% of tokens", short="f1"),
            MetricSpec("retain_top1", "utility", items="retain words", unit="% of tokens", short="r1"),
        )

    @classmethod
    def from_run(cls, run: Any) -> _Lengths:
        return cls()

    settings: Mapping[str, Any] = {"benchmark": "toy"}

    @classmethod
    def detect(cls, path: str) -> bool:
        return (Path(path) / "toy.json").is_file()

    def load(self, path: str) -> Any:
        from types import SimpleNamespace

        texts = json.loads((Path(path) / "toy.json").read_text())
        return SimpleNamespace(
            path=str(path),
            fingerprint="toy:" + json.dumps(texts),
            texts=texts,
            limited=lambda n: self.load(path),
            counts=lambda: {k: len(v) for k, v in texts.items()},
            raw_retain_docs=tuple(texts["retain"]),
        )

    def measure(
        self,
        model: Any,
        data: Any,
        *,
        metrics: Sequence[str] | None = None,
        batch_size: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Any:
        import torch

        from unlearn_assert.metrics import Evaluation

        values, samples = {}, {}
        for metric, split in (("forget_top1", "forget"), ("retain_top1", "retain")):
            scores = []
            for text in data.texts[split]:
                ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
                with torch.no_grad():
                    logits = model.model(ids).logits[0, :-1]
                scores.append(float((logits.argmax(-1) == ids[0, 1:]).float().mean()) * 100)
            samples[metric] = [{"id": i, "score": s} for i, s in enumerate(scores)]
            values[metric] = sum(scores) / len(scores)
        return Evaluation(values=values, ci={}, samples=samples, extras={})

    def contexts(self, data: Any, tokenizer: Any) -> list[Context]:
        """Each text scored whole: its tokens, nothing generated (its start kept when cut)."""
        return [
            Context(split, i, len(ids), 0, "start")
            for split in ("forget", "retain")
            for i, ids in enumerate(tokenizer(list(data.texts[split]))["input_ids"])
        ]

    def privacy(self, metric: str) -> Any:
        raise KeyError(metric)

    def interval(self, *args: Any) -> None:
        return None

    def record(self, data: Any) -> dict[str, Any]:
        return {}


def test_a_toy_benchmark_is_gated_without_touching_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, tiny_in_cell_dir: Path
) -> None:
    import sys

    import unlearn_assert as ua
    from unlearn_assert.benchmark import registry

    module = type(sys)("toy_benchmark")
    module._Lengths = _Lengths  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "toy_benchmark", module)
    monkeypatch.setitem(registry.BENCHMARKS, "toy", "toy_benchmark:_Lengths")
    forget = [p for p in (MUSE / "raw" / "forget.txt").read_text().split("\n\n") if p.strip()][:6]
    retain = [p for p in (MUSE / "raw" / "retain.txt").read_text().split("\n\n") if p.strip()][:6]
    data = tmp_path / "toy"
    data.mkdir()
    (data / "toy.json").write_text(json.dumps({"forget": forget, "retain": retain}))
    report = ua.gate(tiny_in_cell_dir, tiny_model_dir, data, quantizers="rtn-w4g128", no_cache=True, device="cpu")
    items = [v.item for v in report.verdicts]
    assert items == [
        "test_budget[fp-forget_top1]",
        "test_budget[fp-retain_top1]",
        "test_budget[rtn-w4g128-forget_top1]",
        "test_budget[rtn-w4g128-retain_top1]",
    ]
    d = report.to_dict()
    assert d["provenance"]["benchmark"]["name"] == "toy"
    row = next(r for r in d["rows"] if r["model"] == "unlearned" and r["quantizer"] == "rtn-w4g128")
    assert set(row["values"]) == {"forget_top1", "retain_top1"} and set(row["recovery"]) == {"forget_top1"}
    # the in-cell copy rounds back to the target's codes under rtn-w4g128: it measures what the quantized target does
    qt = next(r for r in d["rows"] if r["model"] == "target" and r["quantizer"] == "rtn-w4g128")
    assert row["values"] == qt["values"] and row["recovery"]["forget_top1"] > 0.25
    verdict = report.verdict("rtn-w4g128", "forget_top1")
    assert verdict is not None and verdict.outcome == "failed" and verdict.ci is not None


# --------------------------------------------------------------------------- end to end through pytest


def _gate(pytester: pytest.Pytester, tmp_path: Path, unlearned: Path, target: Path, data: Path, *extra: str) -> Any:
    out = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={unlearned}",
        f"--unlearn-target={target}",
        f"--unlearn-data={data}",
        f"--unlearn-json={out}",
        f"--unlearn-html={tmp_path / 'report.html'}",
        "--unlearn-device=cpu",
        "--unlearn-no-cache",
        *extra,
    )
    return result, json.loads(out.read_text())


def test_a_tofu_directory_is_gated_end_to_end(
    pytester: pytest.Pytester, tmp_path: Path, tiny_tofu_target: Path, tiny_tofu_unlearned: Path, tiny_tofu_retain: Path
) -> None:
    result, report = _gate(
        pytester,
        tmp_path,
        tiny_tofu_unlearned,
        tiny_tofu_target,
        TOFU,
        f"--unlearn-retrain={tiny_tofu_retain}",
        "--unlearn-quantizers=rtn-w4g128",
        "--unlearn-budget=forget_quality=0.01",
    )
    result.stdout.fnmatch_lines(
        [
            "*benchmark=tofu (detected from the data's layout)*",
            "*test_budget?rtn-w4g128-forget_truth_ratio?*",
            "*forget_prob*forget_rouge*forget_truth_ratio*",
        ]
    )
    assert result.ret == 1  # the perturbed "unlearned" model forgot nothing: its fp forget items fail
    assert report["provenance"]["benchmark"]["name"] == "tofu"
    assert report["provenance"]["benchmark"]["forget_split"] == "forget10"
    items = {v["item"] for v in report["verdicts"]}
    assert {
        f"test_budget[{q}-{m}]"
        for q in ("fp", "rtn-w4g128")
        for m in ("forget_prob", "forget_rouge", "forget_truth_ratio", "model_utility", "forget_quality")
    } == items
    u = next(r for r in report["rows"] if r["model"] == "unlearned" and r["quantizer"] == "rtn-w4g128")
    assert set(u["recovery"]) == {"forget_prob", "forget_rouge", "forget_truth_ratio"}
    assert u["utility"] is not None and u["utility_ci"] is not None
    assert 0.0 <= u["values"]["forget_quality"] <= 1.0 and u["ci"]["forget_quality"][0] <= u["values"]["forget_quality"]
    assert report["provenance"]["forget_quality_reference"]["source"] == "retrain"
    assert (tmp_path / "report.html").read_text().count("forget_truth_ratio") > 1


def test_a_documents_directory_is_gated_end_to_end(
    pytester: pytest.Pytester, tmp_path: Path, tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_retrain_dir: Path
) -> None:
    import shutil

    docs = shutil.copytree(DOCS, tmp_path / "docs")
    (docs / "retain_qa.json").unlink()  # knowmem only where QA pairs are given: forget QA, and no utility item
    settings = "--unlearn-documents=seed=3 chunk_words=60 prompt_words=30 gt_words=20 verbmem_items=4 privleak_items=4"
    result, report = _gate(
        pytester,
        tmp_path,
        tiny_unlearned_dir,
        tiny_model_dir,
        docs,
        f"--unlearn-retrain={tiny_retrain_dir}",
        "--unlearn-quantizers=rtn-w8",
        settings,
    )
    result.stdout.fnmatch_lines(["*benchmark=documents*", "*test_budget?rtn-w8-verbmem_f?*"])
    assert report["provenance"]["benchmark"]["name"] == "documents"
    derivation = report["provenance"]["benchmark"]["derivation"]
    assert derivation and json.dumps(derivation)  # what was derived is in the report: a rerun derives the same items
    assert report["provenance"]["benchmark"]["settings"]["derivation"]["prompt_words"] == 30
    items = {v["item"] for v in report["verdicts"]}
    assert "test_budget[rtn-w8-privleak]" in items and not any(
        "utility" in i for i in items
    )  # no retain QA: no utility
    row = next(r for r in report["rows"] if r["model"] == "unlearned" and r["quantizer"] == "fp")
    assert math.isfinite(row["values"]["verbmem_f"]) and row["ci"]["privleak"]


def test_a_layout_nobody_reads_is_one_line_at_option_time(
    pytester: pytest.Pytester, tmp_path: Path, tiny_model_dir: Path, tiny_unlearned_dir: Path
) -> None:
    data = tmp_path / "empty"
    data.mkdir()
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}", f"--unlearn-target={tiny_model_dir}", f"--unlearn-data={data}"
    )
    assert result.ret == 4
    result.stderr.fnmatch_lines(
        ["*--unlearn-data: data dir '*empty' is in no layout unlearn-assert reads (tofu, documents, mc, muse)*"]
    )
