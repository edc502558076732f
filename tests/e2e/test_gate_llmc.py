"""GPTQ and AWQ in the gate: rows in the JSON report, calibration options, and the skip without the extra."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gate_helpers import gate_args, outcomes

IDS = "gptq-w4g32,awq-w4g32,gptq-w8g32"

try:  # imported here, not in the tests: pytester drops modules a test imported, and datasets
    import llmcompressor  # noqa: F401  # (under llm-compressor) cannot be imported twice in one process
except ImportError:
    llmcompressor = None
needs_llmc = pytest.mark.skipif(
    llmcompressor is None, reason="the gptq/awq backends need llm-compressor: pip install 'unlearn-assert[gptq]'"
)


def _args(model: Path, target: Path, data: Path, pytester: pytest.Pytester, *extra: str) -> list[str]:
    args = gate_args(
        model, target, data, "--unlearn-json=r.json", "--junitxml=j.xml", *extra, cache=pytester.path / "c"
    )
    return [a if not a.startswith("--unlearn-quantizers=") else f"--unlearn-quantizers={IDS}" for a in args]


@needs_llmc
def test_gptq_and_awq_rows_in_the_report(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    result = pytester.runpytest_subprocess(
        *_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, pytester), "-k", "knowmem_f"
    )
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    seen = outcomes(pytester.path / "j.xml")
    assert set(seen) == {"fp-knowmem_f", "gptq-w4g32-knowmem_f", "awq-w4g32-knowmem_f", "gptq-w8g32-knowmem_f"}
    assert "skipped" not in seen.values()
    report = json.loads((pytester.path / "r.json").read_text())
    rows = {r["quantizer"]: r for r in report["rows"] if r["model"] == "unlearned"}
    for qid in IDS.split(","):
        quant = rows[qid]["quant"]
        assert rows[qid]["status"] == "ok"
        assert quant["changed_fraction"] > 0 and 0 < quant["code_agreement"] <= 1
        assert quant["bits"] in (4, 8) and quant["group_size"] == 32 and len(quant["modules"]) == 14
    assert (
        rows["gptq-w8g32"]["quant"]["code_agreement"] < rows["gptq-w4g32"]["quant"]["code_agreement"]
    )  # finer grid, fewer shared codes
    calibration = report["provenance"]["settings"]["calibration"]
    assert calibration["source"].startswith("raw/retain.txt of ") and calibration["n_samples"] == 128
    assert report["provenance"]["backends"]["llmcompressor"]


@needs_llmc
def test_calibration_file_changes_the_cache_key(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    cal = pytester.path / "cal.jsonl"
    cal.write_text(
        '{"text": "The harbour opened at dawn and the ferries left for the islands."}\n' * 30, encoding="utf-8"
    )
    base = _args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, pytester, "-k", "gptq-w4g32-knowmem_f")
    pytester.runpytest_subprocess(*base)
    first = json.loads((pytester.path / "r.json").read_text())
    pytester.runpytest_subprocess(*base, f"--unlearn-calibration={cal}")
    second = json.loads((pytester.path / "r.json").read_text())

    def gptq_row(report: dict) -> dict:
        return next(r for r in report["rows"] if r["quantizer"] == "gptq-w4g32" and r["model"] == "unlearned")

    assert gptq_row(first)["cached"] is False and gptq_row(second)["cached"] is False  # new text: computed again
    assert gptq_row(first)["quant"]["code_agreement"] != gptq_row(second)["quant"]["code_agreement"]
    assert second["provenance"]["settings"]["calibration"]["source"] == str(cal)
    fp_rows = [r for r in second["rows"] if r["quantizer"] == "fp"]
    assert all(r["cached"] for r in fp_rows)  # calibration is no part of the fp rows' key


def test_without_retain_text_a_calibrated_quantizer_is_a_usage_error(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    (data / "raw" / "retain.txt").unlink()
    (data / "privleak" / "retain.json").unlink()
    result = pytester.runpytest_subprocess(*_args(tiny_unlearned_dir, tiny_model_dir, data, pytester))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*gptq-w4g32, awq-w4g32, gptq-w8g32 calibrate on text*pass --unlearn-calibration=FILE*"]
    )
    bad = pytester.runpytest_subprocess(
        *_args(
            tiny_unlearned_dir,
            tiny_model_dir,
            tiny_data_dir,
            pytester,
            f"--unlearn-calibration={tmp_path / 'nope.txt'}",
        )
    )
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--unlearn-calibration: *nope.txt' is not a file*"])


def test_without_llmcompressor_the_items_skip_with_the_install_command(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makeconftest("import sys\nsys.modules['llmcompressor'] = None\n")
    args = _args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, pytester, "-rA", "-k", "knowmem_f")
    args = [a if not a.startswith("--unlearn-quantizers=") else "--unlearn-quantizers=gptq-w4g32,rtn-w8" for a in args]
    result = pytester.runpytest_subprocess(*args)
    seen = outcomes(pytester.path / "j.xml")
    assert seen["gptq-w4g32-knowmem_f"] == "skipped" and seen["rtn-w8-knowmem_f"] != "skipped"
    result.stdout.fnmatch_lines(["SKIPPED *pip install 'unlearn-assert?gptq?'"])
