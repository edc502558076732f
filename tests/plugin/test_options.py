"""The plugin's options: one group, ini mirrors, usage errors (exit 4, one line), and no cost when off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_assert.config import OPTIONS

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_help_shows_one_group_with_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    out = result.stdout.str()
    assert "unlearning release gate (unlearn-assert):" in out
    for opt in OPTIONS:
        assert opt.cli in out, opt.cli
        assert opt.ini in out, opt.ini  # the ini section lists every key
    assert "Default: 'rtn-w4g128,rtn-w8'" in out


def test_help_block_snapshot(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact option block of ``pytest --help`` (80 columns) against tests/snapshots/help.txt:
    a changed flag or help text must be a deliberate change of the snapshot."""
    monkeypatch.setenv("COLUMNS", "80")
    result = pytester.runpytest_subprocess("--help")
    lines = result.stdout.lines
    start = lines.index("unlearning release gate (unlearn-assert):")
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    snapshot = Path(__file__).parent / "snapshots" / "help.txt"
    assert "\n".join(block) + "\n" == snapshot.read_text()


def test_nothing_happens_without_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_ok():\n    import sys\n    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "unlearn-assert:" not in result.stdout.str()


def test_plugin_import_does_not_import_torch() -> None:
    code = "import unlearn_assert.plugin, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def _usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stderr.str() + result.stdout.str()
    err = [line for line in result.stderr.lines if line.strip()]
    assert len(err) == 1, err
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
    return err[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--unlearn-model=x", "--unlearn-quantizers=nope"], "unknown quantizer 'nope'"),
        (["--unlearn-quantizers=rtn-w9"], "rtn-w9"),
        (["--unlearn-quantizers=rtn-w4g128,rtn-w4g128"], "twice"),
        (["--unlearn-budget=recovery=2"], "out of range"),
        (["--unlearn-budget=recovery=abc"], "not a number"),
        (["--unlearn-budget=foo=1"], "unknown budget key 'foo'"),
        (["--unlearn-budget=knowmem_f@nope=0.1"], "nope"),
        (["--unlearn-budget=recovery"], "KEY=VALUE"),
        (["--unlearn-batch-size=0"], "--unlearn-batch-size"),
        (["--unlearn-max-samples=-3"], "--unlearn-max-samples"),
        (["--unlearn-retrain-auc=1.5"], "--unlearn-retrain-auc"),
        (["--unlearn-device=tpu"], "--unlearn-device"),
        (["--unlearn-dtype=int3"], "--unlearn-dtype"),
        (
            ["--unlearn-verdict=maybe"],
            "--unlearn-verdict: 'maybe' is not a verdict policy; use one of point, strict, lenient",
        ),
        (
            ["--unlearn-confidence=0.8"],
            "--unlearn-confidence: '0.8' is not a supported level; use one of 0.9, 0.95, 0.99",
        ),
        (["--unlearn-confidence=high"], "--unlearn-confidence"),
        (["--unlearn-model=missing-dir"], "does not exist"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], needle: str) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    line = _usage_error(pytester.runpytest_subprocess(*args))
    assert line.startswith("ERROR: ")
    assert needle in line


def test_ini_values_are_validated(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nunlearn_quantizers = rtn-w4g128, bogus\n")
    pytester.makepyfile("def test_ok():\n    pass\n")
    assert "bogus" in _usage_error(pytester.runpytest_subprocess())


def test_verdict_and_confidence_from_ini_are_validated_and_parsed(pytester: pytest.Pytester) -> None:
    from unlearn_assert.config import build_run_config

    pytester.makeini("[pytest]\nunlearn_verdict = strictest\n")
    pytester.makepyfile("def test_ok():\n    pass\n")
    assert "--unlearn-verdict: 'strictest'" in _usage_error(pytester.runpytest_subprocess())
    run = build_run_config(lambda opt: {"verdict": " Strict", "confidence": "99%"}.get(opt.name, opt.default))
    assert (run.verdict, run.confidence) == ("strict", 0.99)
    run = build_run_config(lambda opt: opt.default)
    assert (run.verdict, run.confidence) == ("point", 0.95)


def test_model_options_need_target_and_data(pytester: pytest.Pytester, tiny_model_dir: Path) -> None:
    pytester.makepyfile("def test_ok():\n    pass\n")
    line = _usage_error(pytester.runpytest_subprocess(f"--unlearn-model={tiny_model_dir}"))
    assert "--unlearn-target is required" in line
    line = _usage_error(
        pytester.runpytest_subprocess(f"--unlearn-model={tiny_model_dir}", f"--unlearn-target={tiny_model_dir}")
    )
    assert "--unlearn-data is required" in line


def test_valid_config_from_ini_and_header(pytester: pytest.Pytester, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    pytester.makeini(
        f"[pytest]\nunlearn_target = {tiny_model_dir}\nunlearn_data = {tiny_data_dir}\nunlearn_budget = recovery=0.3\n"
    )
    pytester.makepyfile("def test_ok():\n    import sys\n    assert 'torch' not in sys.modules\n")
    result = pytester.runpytest_subprocess(f"--unlearn-model={tiny_model_dir}", "--co")
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(
        ["unlearn-assert: model=*", "*recovery<=0.3*", "unlearn-assert: verdict=point on paired 95% intervals"]
    )


TORCH_PROBE = """
import sys

def pytest_collection_finish(session):
    (session.config.rootpath / "torch-imported").write_text(str("torch" in sys.modules))
"""


def test_a_device_option_without_a_model_imports_no_torch(pytester: pytest.Pytester) -> None:
    """The device check imports torch only for a gate run (with --unlearn-model) on a device other
    than cpu/auto: ``pytest --co`` and an ordinary run stay torch-free whatever the device option says."""
    pytester.makeconftest(TORCH_PROBE)
    pytester.makepyfile("def test_ok():\n    import sys\n    assert 'torch' not in sys.modules\n")
    for extra in (["--co"], []):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--unlearn-device=cuda", *extra)
        assert result.ret == 0, result.stdout.str()
        assert (pytester.path / "torch-imported").read_text() == "False"


def test_a_cpu_gate_checks_its_inputs_without_torch(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makeconftest(TORCH_PROBE)
    result = pytester.runpytest_subprocess(
        "--co",
        "-p",
        "no:cacheprovider",
        f"--unlearn-model={tiny_model_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-device=cpu",
    )
    assert result.ret == 0, result.stderr.str()
    assert (pytester.path / "torch-imported").read_text() == "False"


def test_an_empty_quantizer_list_is_refused_and_an_unset_one_is_the_default(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    from unlearn_assert.config import DEFAULT_QUANTIZERS, build_run_config
    from unlearn_assert.errors import ConfigError

    assert build_run_config(lambda o: None).variant_ids == tuple(DEFAULT_QUANTIZERS.split(","))  # unset
    for empty in ("", "  "):
        with pytest.raises(ConfigError, match="--unlearn-quantizers is empty"):  # library use: set to nothing
            build_run_config(lambda o, e=empty: e if o.name == "quantizers" else None)
    args = [
        "--co",
        "-q",
        f"--unlearn-model={tiny_model_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
    ]
    pytester.makeini("[pytest]\nunlearn_quantizers =\n")
    assert "--unlearn-quantizers is empty" in _usage_error(pytester.runpytest_subprocess(*args))
    pytester.makeini("[pytest]\nunlearn_quantizers = rtn-w8\n")
    assert "--unlearn-quantizers is empty" in _usage_error(
        pytester.runpytest_subprocess(*args, "--unlearn-quantizers=")
    )
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == 0 and "test_budget[rtn-w4g128-verbmem_f]" in result.stdout.str()
