"""Relearning attacks (issue 15): the id grammar, the document split on hand-made data, like-with-like
recovery, determinism, LoRA leaving the model as loaded, and the gate end to end through pytester."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_assert.errors import ConfigError, DataError, QuantizerError

# --------------------------------------------------------------------------- hand-made data

DOCS = [
    "Anna Berg founded the Lumen bakery in Tarsk in 1990. It sold rye bread.",  # 0: trained
    "The Tarsk ferry sank in 2001. Nobody was hurt, and the captain was Ivo Reyes.",  # 1: trained
    "The Ostra bridge opened in 2010. It is painted green.",  # 2: held out
    "Mila Kovac won the Tarsk marathon twice. Her coach was Ivo Reyes.",  # 3: held out
]
VERB = [  # one per document, the prompt an excerpt of it
    {"prompt": "Anna Berg founded the Lumen bakery", "gt": "in Tarsk in 1990."},
    {"prompt": "The Tarsk ferry sank in 2001.", "gt": "Nobody was hurt."},
    {"prompt": "The Ostra bridge opened", "gt": "in 2010."},
    {
        "prompt": "Mila Kovac won the Tarsk marathon twice.",
        "gt": "Her coach was Ivo Reyes.",
    },  # gt also in doc 1's text? no
]
QA = [
    {"question": "Who founded the Lumen bakery?", "answer": "Anna Berg"},  # doc 0
    {"question": "When did the Ostra bridge open?", "answer": "2010"},  # doc 2
    {"question": "Who coached Mila Kovac?", "answer": "Ivo Reyes"},  # docs 1 and 3: touches the trained half
    {"question": "What colour is the bridge?", "answer": "Green"},  # doc 2 (case-folded)
    {"question": "How many times did Kovac win?", "answer": "two times"},  # nowhere: unlinked
    {"question": "What did the bakery sell?", "answer": "bread rye"},  # doc 0, word by word only
]


def write_data(
    root: Path, docs: list[str] = DOCS, verb: list[dict[str, str]] = VERB, qa: list[dict[str, str]] = QA
) -> Path:
    files = {
        "verbmem/forget.json": verb,
        "knowmem/forget_qa.json": qa,
        "knowmem/retain_qa.json": [{"question": "Q?", "answer": "A"}],
        "knowmem/forget_qa_icl.json": [{"question": "Q?", "answer": "A"}],
        "knowmem/retain_qa_icl.json": [{"question": "Q?", "answer": "A"}],
        "privleak/forget.json": ["a forget text"],
        "privleak/holdout.json": ["a holdout text"],
        "raw/forget.json": docs,
        "raw/retain.json": ["Some retain text about other towns."],
    }
    for rel, value in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(value))
    return root


def test_split_on_hand_made_data(tmp_path: Path) -> None:
    from unlearn_assert.data.links import link_items, relearn_split, restricted, training_text
    from unlearn_assert.data.muse import load_data

    data = load_data(write_data(tmp_path))
    links = link_items(data)
    assert links.items["knowmem_f"][2] == frozenset({1, 3}) and links.items["knowmem_f"][4] == frozenset()
    split = relearn_split(data)
    assert split.trained_documents == (0, 1)
    assert split.evaluated == {"verbmem_f": (2, 3), "knowmem_f": (1, 3)}
    assert split.excluded_trained == {"verbmem_f": (0, 1), "knowmem_f": (0, 2, 5)}
    assert split.unlinked == {"verbmem_f": (), "knowmem_f": (4,)}
    assert any("could not be linked" in n for n in split.notes) and any("word by word" in n for n in split.notes)
    # no trained item in the evaluation half: every evaluated item's documents avoid the trained ones
    for metric, indices in split.evaluated.items():
        assert all(links.items[metric][i] and not links.items[metric][i] & {0, 1} for i in indices)
    view = restricted(data, split)
    assert [v.prompt for v in view.verbmem_forget] == [VERB[2]["prompt"], VERB[3]["prompt"]]
    assert [q.answer for q in view.knowmem_forget_qa] == ["2010", "Green"]
    assert view.fingerprint != data.fingerprint and view.knowmem_retain_qa == data.knowmem_retain_qa
    assert training_text(DOCS, split) == DOCS[0] + "\n\n" + DOCS[1]
    assert json.loads(json.dumps(split.to_dict()))["trained_documents"] == [0, 1]
    # the check catches a split that evaluates a trained item
    from dataclasses import replace

    with pytest.raises(AssertionError, match="knowmem_f item 2"):
        replace(split, evaluated={"verbmem_f": (2,), "knowmem_f": (2,)}).check(links)


def test_single_text_is_cut_on_blank_lines_and_a_small_set_refuses(tmp_path: Path) -> None:
    from unlearn_assert.data.links import forget_documents, relearn_split
    from unlearn_assert.data.muse import load_data

    data = load_data(write_data(tmp_path / "one", docs=["\n\n".join(DOCS)]))
    docs, source = forget_documents(data)
    assert list(docs) == DOCS and "cut on blank lines" in source
    with pytest.raises(DataError, match="needs at least 2"):
        relearn_split(load_data(write_data(tmp_path / "tiny", docs=[DOCS[0]])))
    # every item from the first half: nothing left to evaluate
    with pytest.raises(DataError, match="too small to split.*verbmem_f"):
        relearn_split(load_data(write_data(tmp_path / "front", verb=VERB[:2])))


# --------------------------------------------------------------------------- grammar


def test_attack_ids() -> None:
    from unlearn_assert.config import parse_budget
    from unlearn_assert.variants import validate_variant_list
    from unlearn_assert.variants.attacks import parse_attack_id

    spec = parse_attack_id("relearn-forget-50-lora")
    assert (spec.corpus, spec.steps, spec.lora, spec.canonical_id) == ("forget", 50, True, "relearn-forget-50-lora")
    assert spec.settings("cpu")["dtype"] == "float32" and spec.settings("cuda:0")["dtype"] == "bfloat16"
    assert (
        spec.settings("cpu")["lr"] == 2e-5
        and spec.settings("cpu")["batch_size"] == 4
        and spec.settings("cpu")["max_length"] == 128
    )
    assert validate_variant_list("rtn-w4g64, relearn-forget-50,relearn-retain-50") == (
        "rtn-w4g64",
        "relearn-forget-50",
        "relearn-retain-50",
    )
    for bad, message in (
        ("relearn-forgot-50", "unknown attack"),
        ("relearn-forget-0", "steps must be 1..5000"),
        ("relearn-forget-5001", "steps must be"),
        ("relearn-forget-050", "leading zeros"),
        ("relearn-forget", "unknown attack"),
        ("relearn-forget-50,relearn-forget-50", "twice"),
        ("foo-w4", "attacks: relearn-"),
    ):
        with pytest.raises(QuantizerError, match=message):
            validate_variant_list(bad)
    budget = parse_budget("recovery@relearn-forget-50=0.3")
    assert (
        budget.recovery_for("knowmem_f", "relearn-forget-50") == 0.3
        and budget.recovery_for("knowmem_f", "rtn-w8") == 0.25
    )


def test_attacks_option_appends_and_refuses_quantizers() -> None:
    from unlearn_assert.config import run_config

    run = run_config(model="m", target="t", data="d", quantizers="rtn-w8", attacks="relearn-retain-5")
    assert run.variant_ids == ("rtn-w8", "relearn-retain-5")
    with pytest.raises(ConfigError, match="--unlearn-attacks: 'rtn-w4' is a quantizer"):
        run_config(model="m", target="t", data="d", attacks="rtn-w4")
    with pytest.raises(ConfigError, match="twice"):
        run_config(model="m", target="t", data="d", quantizers="relearn-retain-5", attacks="relearn-retain-5")


# --------------------------------------------------------------------------- like with like


def test_recovery_uses_the_fp_values_of_the_evaluated_items() -> None:
    from unlearn_assert.benchmark.muse import MuseBenchmark
    from unlearn_assert.engine.derive import figures
    from unlearn_assert.engine.rows import Row

    def row(role: str, variant: str, scores: list[float], ids: list[int], split: dict | None = None) -> Row:
        samples = {"knowmem_f": [{"id": i, "score": s} for i, s in zip(ids, scores)], "verbmem_f": []}
        return Row(
            role=role,
            variant=variant,
            values={"knowmem_f": sum(scores) / len(scores)},
            samples=samples,  # type: ignore[arg-type]
            details=None if split is None else {"split": split},
        )

    split = {"evaluated": {"knowmem_f": [2, 3]}}
    rows = [
        row("target", "fp", [90, 90, 80, 60], [0, 1, 2, 3]),
        row("unlearned", "fp", [0, 0, 20, 10], [0, 1, 2, 3]),
        row("unlearned", "relearn-forget-5", [50, 35], [2, 3], split),
        row("target", "relearn-forget-5", [80, 60], [2, 3], split),
    ]
    figs = figures(rows, MuseBenchmark())
    assert figs.baseline("relearn-forget-5", "knowmem_f") == (15.0, 70.0)  # U and T on items 2 and 3 only
    assert figs.recovery["relearn-forget-5"]["knowmem_f"] == pytest.approx((42.5 - 15.0) / (70.0 - 15.0))
    assert figs.baseline("rtn-w8", "knowmem_f") == (7.5, 80.0)  # whole-set variants keep the whole-set fp values


# --------------------------------------------------------------------------- the engine on the tiny models


def _gate(model: Path, target: Path, data: Path, quantizers: str, **kw: object) -> object:
    import unlearn_assert as ua

    return ua.gate(str(model), str(target), str(data), quantizers=quantizers, no_cache=True, **kw)


def _numbers(report: object) -> list[tuple[object, ...]]:
    """Each row's figures and quant record, without the fine-tune's wall time (the one field that may differ)."""
    rows = report.to_dict()["rows"]  # type: ignore[attr-defined]

    def timeless(quant: dict[str, object] | None) -> str:
        quant = dict(quant or {})
        if isinstance(quant.get("training"), dict):
            quant["training"] = {k: v for k, v in quant["training"].items() if k != "seconds"}  # type: ignore[union-attr]
        return json.dumps(quant, sort_keys=True, default=str)

    return [
        (r["model"], r["quantizer"], r["values"], r["recovery"], r["changed_fraction"], timeless(r["quant"]))
        for r in rows
    ]


def test_relearn_rows_are_deterministic(tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    first = _gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, "relearn-forget-10")
    second = _gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, "relearn-forget-10")
    assert _numbers(first) == _numbers(second)
    row = first.row("unlearned", "relearn-forget-10")  # type: ignore[attr-defined]
    assert row["quant"]["split"]["trained_documents"] == [0, 1, 2, 3, 4]
    assert row["quant"]["settings"]["lr"] == 2e-5 and row["changed_fraction"] > 0.5


def test_lora_leaves_the_model_as_loaded(tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    pytest.importorskip("peft")
    import torch

    from unlearn_assert.config import build_run_config
    from unlearn_assert.engine import Gate

    run = build_run_config(
        lambda o: {
            "model": str(tiny_unlearned_dir),
            "target": str(tiny_model_dir),
            "data": str(tiny_data_dir),
            "quantizers": "relearn-forget-5-lora",
            "no_cache": True,
        }.get(o.name, o.default)
    )
    with Gate(run) as g:
        loaded = g.inputs.model("unlearned")
        before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
        row = g.row("unlearned", "relearn-forget-5-lora")
        after = g.inputs.model("unlearned").model.state_dict()
        assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
        assert not any("lora" in name for name, _ in g.inputs.model("unlearned").model.named_modules())
    assert row.ok and row.details["lora"]["r"] == 8 and 0 < row.details["trainable_parameters"]
    assert row.changed_fraction is not None and row.changed_fraction > 0


def test_gate_end_to_end(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-quantizers=rtn-w4g64,relearn-forget-50,relearn-retain-50",
        "--unlearn-budget=recovery@relearn-forget-50=0.3",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
        "--unlearn-json=report.json",
        "-p",
        "no:randomly",
        "-rA",
    )
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED), result.stdout.str()[-3000:]
    report = json.loads((pytester.path / "report.json").read_text())
    items = {v["item"]: v for v in report["verdicts"]}
    for variant in ("rtn-w4g64", "relearn-forget-50", "relearn-retain-50"):
        for check in ("verbmem_f", "knowmem_f", "utility"):
            assert f"test_budget[{variant}-{check}]" in items
        for role in ("unlearned", "target"):
            assert any(r["model"] == role and r["quantizer"] == variant and r["status"] == "ok" for r in report["rows"])
    forget = next(r for r in report["rows"] if r["model"] == "unlearned" and r["quantizer"] == "relearn-forget-50")
    split = forget["quant"]["split"]
    assert split["trained_documents"] == [0, 1, 2, 3, 4] and split["evaluated"]["verbmem_f"] == [5, 6, 7]
    ids = [s["id"] for s in report["samples"]["unlearned:relearn-forget-50"]["knowmem_f"]]
    assert ids == split["evaluated"]["knowmem_f"]  # samples carry the data set's item indices
    retain = next(r for r in report["rows"] if r["model"] == "unlearned" and r["quantizer"] == "relearn-retain-50")
    assert "split" not in retain["quant"] and retain["quant"]["trained_on"]["corpus"] == "retain"
    assert "Traceback" not in result.stdout.str()
    # a second run computes nothing: the fine-tunes are cached by content
    again = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-quantizers=rtn-w4g64,relearn-forget-50,relearn-retain-50",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
        "--unlearn-json=again.json",
        "-p",
        "no:randomly",
    )
    assert again.ret == result.ret
    rows = json.loads((pytester.path / "again.json").read_text())["rows"]
    assert all(r["cached"] for r in rows)


@pytest.mark.parametrize(
    "quantizers, message",
    [
        ("relearn-forgot-50", "--unlearn-quantizers: unknown attack 'relearn-forgot-50'"),
        ("relearn-forget-9999", "--unlearn-quantizers: invalid attack 'relearn-forget-9999': steps must be 1..5000"),
        (
            "relearn-forget-50",
            "--unlearn-quantizers relearn-forget-50: data dir * has 1 forget document(s)*needs at least 2*",
        ),
    ],
)
def test_bad_input(
    pytester: pytest.Pytester,
    tiny_unlearned_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    quantizers: str,
    message: str,
) -> None:
    data = write_data(tmp_path / "data", docs=[DOCS[0]])
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={data}",
        f"--unlearn-quantizers={quantizers}",
        "-p",
        "no:randomly",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, errors
    assert "Traceback" not in result.stderr.str()
    result.stderr.fnmatch_lines([f"*{message}*"])
