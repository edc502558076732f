"""Every backend's default ids in one gate run, as issue #5's "done when" states it.

The usual tiny test model is 96/192 wide, which groups of 128 do not divide, so this file builds
its own tiny model, 128/256 wide (about 20 s), and a perturbed copy as the "unlearned" model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gate_helpers import gate_args, outcomes

from conftest import fixture_texts

ALL_IDS = ("bnb-fp4", "bnb-nf4", "bnb-int8", "gptq-w4g128", "gptq-w8g128", "awq-w4g128", "hqq-w4g64")
LIBRARIES = {"bnb": "bitsandbytes", "gptq": "llmcompressor", "awq": "llmcompressor", "hqq": "hqq"}
EXTRAS = {"bnb": "bnb", "gptq": "gptq", "awq": "awq", "hqq": "hqq"}

try:  # imported at collection: pytester drops modules a test imports, and datasets cannot be imported twice
    import llmcompressor  # noqa: F401
except ImportError:
    llmcompressor = None


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> tuple[Path, Path]:
    from unlearn_assert.testing import TinyRecipe, build_tiny_llama, perturb_copy

    target = build_tiny_llama(
        tmp_path_factory.mktemp("wide-target"),
        fixture_texts(tiny_data_dir),
        TinyRecipe(hidden_size=128, intermediate_size=256, steps=200),
    )
    unlearned = perturb_copy(target, tmp_path_factory.mktemp("wide-unlearned"), scale=2e-2)
    return unlearned, target


def _ids_args(args: list[str], ids: str) -> list[str]:
    return [a if not a.startswith("--unlearn-quantizers=") else f"--unlearn-quantizers={ids}" for a in args]


def test_every_backend_quantizes_and_reports(
    pytester: pytest.Pytester, wide_pair: tuple[Path, Path], tiny_data_dir: Path
) -> None:
    for lib in sorted(set(LIBRARIES.values())):
        if lib == "llmcompressor":
            if llmcompressor is None:
                pytest.skip("needs llm-compressor: pip install 'unlearn-assert[gptq]'")
        else:
            pytest.importorskip(lib, reason=f"needs {lib}: pip install 'unlearn-assert[dev]'")
    unlearned, target = wide_pair
    args = gate_args(
        unlearned,
        target,
        tiny_data_dir,
        "--unlearn-json=r.json",
        "--junitxml=j.xml",
        "-k",
        "knowmem_f",
        cache=pytester.path / "c",
    )
    result = pytester.runpytest_subprocess(*_ids_args(args, ",".join(ALL_IDS)))
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "skipped" not in outcomes(pytester.path / "j.xml").values()
    report = json.loads((pytester.path / "r.json").read_text())
    rows = {r["quantizer"]: r for r in report["rows"] if r["model"] == "unlearned"}
    for qid in ALL_IDS:
        quant = rows[qid]["quant"]
        assert rows[qid]["status"] == "ok", qid
        assert quant["changed_fraction"] > 0, qid
        assert quant["code_agreement"] is not None and 0 < quant["code_agreement"] <= 1, qid
        assert len(quant["modules"]) == 14 and "lm_head" not in quant["modules"], qid


def test_without_the_extras_every_backend_skips_with_its_install_command(
    pytester: pytest.Pytester, wide_pair: tuple[Path, Path], tiny_data_dir: Path
) -> None:
    pytester.makeconftest(
        "import sys\n" + "".join(f"sys.modules[{lib!r}] = None\n" for lib in sorted(set(LIBRARIES.values())))
    )
    unlearned, target = wide_pair
    args = gate_args(
        unlearned,
        target,
        tiny_data_dir,
        "--unlearn-json=r.json",
        "--junitxml=j.xml",
        "-rs",
        "-k",
        "knowmem_f",
        "--unlearn-budget=floor=0",
        cache=pytester.path / "c",
    )
    result = pytester.runpytest_subprocess(*_ids_args(args, ",".join(ALL_IDS + ("rtn-w8",))))
    seen = outcomes(pytester.path / "j.xml")
    assert all(seen[f"{qid}-knowmem_f"] == "skipped" for qid in ALL_IDS)
    assert seen["rtn-w8-knowmem_f"] != "skipped" and seen["fp-knowmem_f"] != "skipped"
    failed = "failed" in (seen["rtn-w8-knowmem_f"], seen["fp-knowmem_f"])
    assert result.ret == (
        pytest.ExitCode.TESTS_FAILED if failed else pytest.ExitCode.OK
    )  # the remaining verdicts decide
    for backend, extra in EXTRAS.items():
        result.stdout.fnmatch_lines([f"SKIPPED *{backend}-*pip install 'unlearn-assert?{extra}?'"])
