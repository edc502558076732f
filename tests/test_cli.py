"""The ``unlearn-assert`` command: tiny, quantize, report; one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_assert.cli import main


def test_quantize_prints_what_changed(
    tiny_model_dir: Path, tiny_unlearned_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.json"
    assert (
        main(
            [
                "quantize",
                str(tiny_unlearned_dir),
                "-q",
                "rtn-w4g128",
                "-q",
                "rtn-w8",
                "--target",
                str(tiny_model_dir),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "rtn-w4g128:" in text and "code agreement with target" in text
    report = json.loads(out.read_text())
    assert [q["quantizer"] for q in report["quantizers"]] == ["rtn-w4g128", "rtn-w8"]
    assert all(0 < q["changed_fraction"] <= 1 for q in report["quantizers"])


def test_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(tmp_path / "nope"), "-q", "rtn-w8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unlearn-assert: error: ") and "\n" not in err and "does not exist" in err
    (tmp_path / "bad.json").write_text("{}")
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "schema_version" in capsys.readouterr().err


def test_tiny_refuses_foreign_dirs_and_rebuilds_its_own(tmp_path: Path, tiny_data_dir: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    assert main(["tiny", "--data", str(tiny_data_dir), "--out", str(foreign), "--steps", "1"]) == 2
    assert (foreign / "precious.txt").read_text() == "keep"
    own = tmp_path / "own"
    assert main(["tiny", "--data", str(tiny_data_dir), "--out", str(own), "--steps", "1"]) == 0
    assert main(["tiny", "--data", str(tiny_data_dir), "--out", str(own), "--steps", "1"]) == 0
    assert (own / "model.safetensors").is_file()


def test_quantize_with_gptq_needs_calibration_text(
    tiny_model_dir: Path, tiny_unlearned_dir: Path, tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quantize", str(tiny_unlearned_dir), "-q", "gptq-w4g32"]) == 2
    assert "calibrate on text; pass --calibration FILE" in capsys.readouterr().err
    pytest.importorskip(
        "llmcompressor", reason="the gptq backend needs llm-compressor: pip install 'unlearn-assert[gptq]'"
    )
    assert (
        main(
            [
                "quantize",
                str(tiny_unlearned_dir),
                "-q",
                "gptq-w4g32",
                "--target",
                str(tiny_model_dir),
                "--calibration",
                str(tiny_data_dir / "raw" / "retain.txt"),
            ]
        )
        == 0
    )
    assert "gptq-w4g32: 14 modules" in capsys.readouterr().out
