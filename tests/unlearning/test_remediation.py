"""The gate points at the fix (issue 29): failing 4-bit recovery items end the summary with one
``unlearn-assert unlearn --sure --quant-aware ...`` command that the real CLI accepts."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.unlearning.remediation import remediation_line


def _verdict(quantizer: str, check: str, outcome: str) -> dict[str, Any]:
    return {
        "item": f"test_budget[{quantizer}-{check}]",
        "passed": {"passed": True, "failed": False}.get(outcome),
        "message": "",
        "quantizer": quantizer,
        "check": check,
        "outcome": outcome,
    }


def _report(verdicts: list[dict[str, Any]], quantizers: list[str], model: str = "/m/unlearned") -> dict[str, Any]:
    return {
        "provenance": {
            "models": {"unlearned": {"path": model}, "target": {"path": "/m/target dir"}},
            "data": {"path": "/d/news"},
            "settings": {"quantizers": quantizers},
        },
        "rows": [],
        "verdicts": verdicts,
        "samples": {},
    }


def _parse(line: str) -> argparse.Namespace:
    """The command part of the line, parsed by the real ``unlearn-assert unlearn`` parser."""
    from unlearn_assert.unlearning.cli import add_unlearn_parser

    command = line.split("): ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["unlearn-assert", "unlearn"]
    parser = argparse.ArgumentParser(prog="unlearn-assert")
    add_unlearn_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv[1:])


def test_failing_4bit_recovery_items_name_the_command_with_those_quantizers() -> None:
    quantizers = ["bnb-fp4", "rtn-w4g64", "bnb-nf4", "rtn-w8", "bnb-int8", "relearn-forget-50"]
    verdicts = [
        _verdict("fp", "knowmem_f", "passed"),
        _verdict("bnb-nf4", "verbmem_f", "failed"),
        _verdict("rtn-w4g64", "knowmem_f", "failed"),
        _verdict("rtn-w4g64", "verbmem_f", "failed"),
        _verdict("bnb-fp4", "knowmem_f", "passed"),
        _verdict("bnb-fp4", "utility", "failed"),  # a utility item is not a recovery item
        _verdict("rtn-w8", "knowmem_f", "failed"),
        _verdict("bnb-int8", "knowmem_f", "failed"),  # 8 bits: not named
        _verdict("relearn-forget-50", "knowmem_f", "failed"),
    ]  # an attack, not a quantizer
    line = remediation_line(_report(verdicts, quantizers))  # type: ignore[arg-type]
    assert line is not None and "\n" not in line
    assert line.startswith(
        "unlearn-assert: to make forgetting hold under rtn-w4g64, bnb-nf4, unlearn again with SURE and "
        "quantization-aware training (the recipe measured in docs/quant-aware.md): unlearn-assert unlearn "
        "--method npo_klr --quant-aware rtn-w4g64,bnb-nf4 "
    )
    args = _parse(line)
    assert args.quant_aware == ("rtn-w4g64", "bnb-nf4") and args.method == "npo_klr"
    assert args.target == "/m/target dir" and args.data == "/d/news" and args.out == "/m/unlearned-sure-qa"
    # SURE as measured on the demo family: the 5% most salient modules, lr 1e-4, 200 steps of 33 per epoch
    assert args.sure and args.sure_top == 0.05 and args.epochs == 6 and args.steps is None
    assert args.lr == 1e-4 and args.dtype == "bfloat16"


def test_no_line_when_no_low_bit_recovery_item_failed() -> None:
    verdicts = [
        _verdict("rtn-w4g64", "utility", "failed"),
        _verdict("rtn-w8", "verbmem_f", "failed"),
        _verdict("rtn-w4", "knowmem_f", "skipped"),
    ]
    assert remediation_line(_report(verdicts, ["rtn-w4g64", "rtn-w8", "rtn-w4"])) is None  # type: ignore[arg-type]


def test_the_models_own_recipe_is_kept_and_calibrated_quantizers_map_to_their_rtn_grid(tmp_path: Path) -> None:
    model = tmp_path / "my model"
    model.mkdir()
    settings = {
        "method": "ga_gdr",
        "lr": 5e-5,
        "steps": 120,
        "epochs": None,
        "batch_size": 8,
        "retain_batch_size": 2,
        "max_length": 128,
        "alpha": 1.0,
        "beta": 0.1,
        "seed": 3,
        "dtype": "float32",
        "weight_decay": 0.0,
        "sure": True,
        "sure_top": 0.2,
        "sure_threshold": None,
        "sure_batches": 4,
        "sure_lm_head": False,
        "quant_aware": ["bnb-fp4"],
        "quant_aware_weight": 0.5,
    }
    (model / "unlearn_run.json").write_text(json.dumps({"settings": settings}))
    verdicts = [
        _verdict("gptq-w4g128", "knowmem_f", "failed"),
        _verdict("gguf-q4_k_m", "verbmem_f", "failed"),
        _verdict("awq-w4g128", "knowmem_f", "failed"),
    ]
    line = remediation_line(_report(verdicts, ["gptq-w4g128", "gguf-q4_k_m", "awq-w4g128"], model="x"), str(model))  # type: ignore[arg-type]
    assert line is not None and "(the model's own recipe; gptq-w4g128, awq-w4g128 cannot be simulated exactly" in line
    assert "lr raised" not in line  # float32 weights keep small updates
    args = _parse(line)
    assert args.quant_aware == (
        "rtn-w4g128",
        "gguf-q4_k_m",
        "rtn-w4g128-asym",
        "bnb-fp4",
    )  # the earlier run's ids are kept
    assert (args.method, args.steps, args.epochs, args.lr, args.batch_size, args.seed) == (
        "ga_gdr",
        120,
        None,
        5e-5,
        8,
        3,
    )
    assert args.sure and args.sure_top == 0.2 and args.quant_aware_weight == 0.5 and args.dtype == "float32"
    assert args.retain_batch_size == 2
    assert args.out == f"{model}-sure-qa"


def test_an_own_recipe_without_sure_gets_sures_measured_settings(tmp_path: Path) -> None:
    """The demo's plain model (bf16 weights, lr 3e-5, 1200 steps): the line keeps its method, batch and dtype, and
    names SURE's measured learning rate and length instead of its own, and says so."""
    (tmp_path / "unlearn_run.json").write_text(
        json.dumps({"settings": {"method": "npo_gdr", "lr": 3e-5, "steps": 1200, "batch_size": 8, "dtype": "bfloat16"}})
    )
    line = remediation_line(_report([_verdict("bnb-fp4", "verbmem_f", "failed")], ["bnb-fp4"]), str(tmp_path))  # type: ignore[arg-type]
    assert line is not None
    assert "(the model's own recipe; SURE added as measured: the 5% most salient modules, lr 0.0001, 6 epochs)" in line
    args = _parse(line)
    assert (args.method, args.batch_size, args.dtype, args.quant_aware) == ("npo_gdr", 8, "bfloat16", ("bnb-fp4",))
    assert args.sure and args.sure_top == 0.05 and (args.lr, args.epochs, args.steps) == (1e-4, 6, None)


def test_a_larger_own_learning_rate_is_kept_when_sure_is_added(tmp_path: Path) -> None:
    (tmp_path / "unlearn_run.json").write_text(json.dumps({"settings": {"method": "ga", "lr": 3e-4, "steps": 50}}))
    args = _parse(
        str(remediation_line(_report([_verdict("rtn-w4", "knowmem_f", "failed")], ["rtn-w4"]), str(tmp_path)))
    )  # type: ignore[arg-type]
    assert args.sure and args.lr == 3e-4 and args.epochs == 6


def test_a_sure_recipe_in_bf16_with_a_small_learning_rate_gets_the_measured_floor(tmp_path: Path) -> None:
    """An own SURE recipe is kept as it is, but at lr 2e-5 bf16 storage rounds the updates away, so the line
    names lr 5e-5 and says why."""
    (tmp_path / "unlearn_run.json").write_text(
        json.dumps({"settings": {"method": "npo_klr", "lr": 2e-5, "steps": 400, "dtype": "bfloat16", "sure": True}})
    )
    line = remediation_line(_report([_verdict("rtn-w4g64", "knowmem_f", "failed")], ["rtn-w4g64"]), str(tmp_path))  # type: ignore[arg-type]
    assert line is not None and "lr raised from 2e-05 to 5e-05: bf16 weights round smaller updates away" in line
    assert "SURE added" not in line
    args = _parse(line)
    assert (args.lr, args.steps, args.dtype, args.quant_aware, args.sure) == (
        5e-5,
        400,
        "bfloat16",
        ("rtn-w4g64",),
        True,
    )


def test_pytest_summary_ends_with_the_command(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """The paper's failure built on purpose (rtn-w4g128 rounds the model back to the target): the
    summary's last line names SURE with quantization-aware unlearning against rtn-w4g128, not rtn-w8."""
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_in_cell_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-quantizers=rtn-w4g128,rtn-w8",
        "-p",
        "no:randomly",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lines = result.stdout.lines
    summary = next(i for i, line in enumerate(lines) if "unlearning budget summary" in line)
    ours = [line for line in lines[summary:] if line.startswith("unlearn-assert:")]
    assert ours[-1].startswith("unlearn-assert: to make forgetting hold under rtn-w4g128, unlearn again with SURE")
    args = _parse(ours[-1])
    assert (
        args.quant_aware == ("rtn-w4g128",) and args.target == str(tiny_model_dir) and args.data == str(tiny_data_dir)
    )
    assert args.sure
    assert lines.index(ours[-1]) == lines.index(ours[-2]) + 1 and "budget checks failed" in ours[-2]
