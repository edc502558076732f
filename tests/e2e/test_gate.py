"""The release gate end to end, through pytester: items, exit codes, reports, cache, xdist, fixtures.

The "unlearned" model here is built to show the paper's mechanism exactly (``in_cell_copy``): its
weights sit in the target's rtn-w4g128 cells, so 4-bit RTN rounds it back to the target's codes
(code agreement 1.0) while 8-bit RTN does not. The gate must fail the 4-bit recovery item and
pass the 8-bit one.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from gate_helpers import gate_args, outcomes

from unlearn_assert.render import validate_report


def test_collect_only_lists_items_and_loads_nothing(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makeconftest(
        "import sys\n"
        "def pytest_collection_finish(session):\n"
        "    print('HEAVY_IMPORTS', 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    result = pytester.runpytest_subprocess(*gate_args(tiny_model_dir, tiny_model_dir, tiny_data_dir), "--co", "-q")
    assert result.ret == 0, result.stderr.str()
    names = [line for line in result.stdout.lines if "test_budget[" in line]
    assert [n.split("test_budget")[1] for n in names] == [
        "[fp-verbmem_f]",
        "[fp-knowmem_f]",
        "[fp-utility]",
        "[rtn-w4g128-verbmem_f]",
        "[rtn-w4g128-knowmem_f]",
        "[rtn-w4g128-utility]",
        "[rtn-w8-verbmem_f]",
        "[rtn-w8-knowmem_f]",
        "[rtn-w8-utility]",
    ]
    result.stdout.fnmatch_lines(["HEAVY_IMPORTS False False"])
    # a reference AUC adds privleak items
    result = pytester.runpytest_subprocess(
        *gate_args(tiny_model_dir, tiny_model_dir, tiny_data_dir), "--co", "-q", "--unlearn-retrain-auc=0.5"
    )
    assert sum("privleak]" in line for line in result.stdout.lines) == 3


@pytest.fixture
def gate_run(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> pytest.RunResult:
    cache = pytester.path / "cache"
    return pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=cache),
        "-rA",
        "--unlearn-json=report.json",
        "--unlearn-html=report.html",
        "--junitxml=junit.xml",
    )


def test_gate_catches_recovery_under_4bit(gate_run: pytest.RunResult, pytester: pytest.Pytester) -> None:
    result = gate_run
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-3000:]
    seen = outcomes(pytester.path / "junit.xml")
    assert seen["fp-verbmem_f"] == "passed"  # unlearning visibly worked in full precision
    assert seen["rtn-w4g128-verbmem_f"] == "failed"  # ... and 4-bit RTN brought it back
    assert seen["rtn-w8-verbmem_f"] == "passed"  # ... while 8-bit did not
    # the failure message carries the numbers with their interval (on 8 passages it may straddle the budget: then it
    # says so), and the summary states the resolution before the table
    ci = r"\[-?\d+%, (?:-?\d+%|inf)\]"
    result.stdout.re_match_lines(
        [
            rf".*verbmem_f (?:RECOVERED \d+% {ci} of the forgetting under rtn-w4g128 \(budget 25%\)|recovery \d+% {ci} "
            r"under "
            r"rtn-w4g128 straddles the 25% budget at n=8 forget passages; add forget items or choose --unlearn-verdict "
            r"\(point: the estimate fails it\)): quantized .*, unlearned .*, target .*"
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*unlearning budget summary*",
            "unlearn-assert: resolution at 95% *verbmem_f *% (n=8 forget passages)*",
            "*model*quantizer*verbmem_f*knowmem_f*verdict*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "script_method" not in result.stdout.str()  # torch's own deprecation noise is not the user's to see

    report = json.loads((pytester.path / "report.json").read_text())
    assert report["schema_version"] == 1
    rows = {(r["model"], r["quantizer"]): r for r in report["rows"]}
    assert set(rows) >= {
        ("unlearned", "fp"),
        ("unlearned", "rtn-w4g128"),
        ("unlearned", "rtn-w8"),
        ("target", "fp"),
        ("target", "rtn-w4g128"),
        ("target", "rtn-w8"),
    }
    w4 = rows[("unlearned", "rtn-w4g128")]
    assert w4["code_agreement"] == 1.0 and w4["changed_fraction"] > 0
    assert w4["values"] == {**rows[("target", "rtn-w4g128")]["values"]}  # same codes, same model, same numbers
    assert w4["recovery"]["verbmem_f"] > 0.25 >= rows[("unlearned", "rtn-w8")]["recovery"]["verbmem_f"]
    # every quantized row has its paired recovery intervals, every judged verdict its estimate, interval and budget
    for q in ("rtn-w4g128", "rtn-w8"):
        rec_ci = rows[("unlearned", q)]["recovery_ci"]["verbmem_f"]
        assert rec_ci[0] <= rows[("unlearned", q)]["recovery"]["verbmem_f"] <= rec_ci[1]
        assert len(rows[("unlearned", q)]["utility_ci"]) == 2
    assert report["provenance"]["bootstrap"] == {"replicates": 1000, "seed": 0, "confidence": 0.95, "prior": 1.0}
    assert all(
        v["ci"] is not None and isinstance(v["decided"], bool) and v["estimate"] == v["value"] and "budget" in v
        for v in report["verdicts"]
        if v["outcome"] != "skipped" and v["estimate"] is not None
    )
    assert report["resolution"]["verbmem_f"]["n"] == 8
    assert rows[("unlearned", "rtn-w8")]["code_agreement"] < 0.5
    verdicts = {v["item"]: v for v in report["verdicts"]}
    assert verdicts["test_budget[rtn-w4g128-verbmem_f]"]["passed"] is False
    assert len(verdicts) == 9
    # q(T) was computed for the recovery items, so the utility item shows it as context
    assert "(the quantized target: " in verdicts["test_budget[rtn-w4g128-utility]"]["message"]
    prov = report["provenance"]
    assert prov["models"]["unlearned"]["fingerprint"] and prov["data"]["fingerprint"]
    assert report["samples"]["unlearned:rtn-w4g128"]["knowmem_f"][0]["generation"] is not None

    html = (pytester.path / "report.html").read_text()
    assert "<svg" in html and "rtn-w4g128" in html and "http://" not in html and "https://" not in html

    suite = ET.parse(pytester.path / "junit.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["test_budget[rtn-w4g128-verbmem_f]"].find("failure") is not None
    assert cases["test_budget[rtn-w8-verbmem_f]"].find("failure") is None


def test_rerun_uses_the_cache_and_gives_identical_numbers(
    gate_run: pytest.RunResult,
    pytester: pytest.Pytester,
    tiny_in_cell_dir: Path,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
) -> None:
    first = json.loads((pytester.path / "report.json").read_text())
    again = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "cache"),
        "-rA",
        "--unlearn-json=again.json",
    )
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    out = again.stdout.str()
    assert "unlearn-assert: loaded " not in out and "unlearn-assert: quantize " not in out, (
        "a warm re-run must not load or quantize a model"
    )
    assert "cached result" in out
    second = json.loads((pytester.path / "again.json").read_text())
    assert [r["values"] for r in second["rows"]] == [r["values"] for r in first["rows"]]
    assert all(r["cached"] for r in second["rows"])
    # --unlearn-no-cache recomputes, with the same numbers
    fresh = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "cache"),
        "--unlearn-no-cache",
        "--unlearn-json=fresh.json",
        "-k",
        "rtn-w4g128-verbmem_f",
    )
    assert "loaded unlearned model" in fresh.stdout.str()
    third = {(r["model"], r["quantizer"]): r for r in json.loads((pytester.path / "fresh.json").read_text())["rows"]}
    firsts = {(r["model"], r["quantizer"]): r for r in first["rows"]}
    for key, row in third.items():
        assert row["values"] == firsts[key]["values"] and not row["cached"]


def test_a_retrain_model_that_saw_the_forget_set_fails_privleak_with_the_fix(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """AUC_R = 0 (the "retrain" model tells every forget text from every holdout text) leaves
    privleak = (AUC - AUC_R) / AUC_R undefined: its items fail with one line naming the fix, the
    other items run, and the report writes privleak as null (it used to raise ZeroDivisionError)."""
    import random
    import shutil

    data = pytester.path / "data"
    shutil.copytree(tiny_data_dir, data)
    rng = random.Random(0)
    forget = json.loads((data / "privleak" / "forget.json").read_text())
    # holdout texts no model has seen or could predict, so the target (passed as "retrain") scores
    # every forget text below every holdout text: AUC 0, as a model trained on the forget set would
    noise = ["".join(rng.choice("qxzjvkw ") for _ in range(len(t))) for t in forget]
    (data / "privleak" / "holdout.json").write_text(json.dumps(noise))
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_in_cell_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={data}",
        f"--unlearn-retrain={tiny_model_dir}",
        "--unlearn-quantizers=rtn-w8",
        f"--unlearn-cache-dir={pytester.path / 'cache'}",
        "-p",
        "no:randomly",
        "-rA",
        "--unlearn-json=report.json",
        "--unlearn-html=report.html",
        "--junitxml=junit.xml",
    )
    out = result.stdout.str()
    assert "Traceback" not in out and "ZeroDivisionError" not in out, out[-3000:]
    seen = outcomes(pytester.path / "junit.xml")
    assert seen["fp-privleak"] == seen["rtn-w8-privleak"] == "failed"
    assert seen["fp-verbmem_f"] == "passed"  # the other items are unaffected
    result.stdout.fnmatch_lines(
        [
            "*the retrain model's forget-vs-holdout AUC is 0.00*"
            "check that --unlearn-retrain names a model trained without the forget data*"
        ]
    )
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["provenance"]["privleak_reference"]["auc"] == 0.0
    assert all(r["values"]["privleak"] is None and "privleak" not in r["ci"] for r in report["rows"])
    validate_report(report)  # no interval of an undefined figure
    # retrain is the target's directory: its row comes from the target's cached result, under its own role
    roles = [(r["model"], r["quantizer"]) for r in report["rows"]]
    assert roles.count(("retrain", "fp")) == 1 and roles.count(("target", "fp")) == 1
    assert "<svg" in (pytester.path / "report.html").read_text()  # an undefined privleak renders, too


def test_quiet_run_prints_no_progress(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    result = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "c"),
        "-q",
        "-k",
        "fp-verbmem_f",
    )
    assert result.ret == 0
    assert "unlearn-assert: evaluate" not in result.stdout.str()
    loud = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "d"), "-k", "fp-verbmem_f"
    )
    loud.stdout.fnmatch_lines(["unlearn-assert: loaded target model *", "unlearn-assert: evaluate unlearned fp"])


def test_xdist_gives_the_same_verdicts_and_numbers(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    serial = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "c1"),
        "--unlearn-json=serial.json",
    )
    dist = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "c2"),
        "-n",
        "2",
        "--unlearn-json=dist.json",
    )
    assert serial.ret == dist.ret == pytest.ExitCode.TESTS_FAILED
    a = json.loads((pytester.path / "serial.json").read_text())
    b = json.loads((pytester.path / "dist.json").read_text())
    rows_a = {(r["model"], r["quantizer"]): r["values"] for r in a["rows"]}
    rows_b = {(r["model"], r["quantizer"]): r["values"] for r in b["rows"]}
    assert rows_a == rows_b
    assert {v["item"]: v["outcome"] for v in a["verdicts"]} == {v["item"]: v["outcome"] for v in b["verdicts"]}
    # the bootstrap is seeded: the same intervals on the workers as in the serial run
    assert [(v["item"], v["ci"], v["decided"], v["estimate"]) for v in a["verdicts"]] == [
        (v["item"], v["ci"], v["decided"], v["estimate"]) for v in b["verdicts"]
    ]
    assert [r.get("recovery_ci") for r in a["rows"]] == [r.get("recovery_ci") for r in b["rows"]]
    assert a["resolution"] == b["resolution"]
    assert [v["item"] for v in a["verdicts"]] == [v["item"] for v in b["verdicts"]]
    dist.stdout.fnmatch_lines(["*unlearning budget summary*"])


def test_user_tests_use_the_fixtures(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        def test_models(unlearned_model, target_model, unlearn_data):
            assert unlearned_model.fingerprint != target_model.fingerprint
            assert len(unlearn_data.knowmem_forget_qa) > 0

        def test_quantized_factory(quantized, unlearned_model):
            import torch
            from unlearn_assert.quant.rtn import rtn_quantize

            linears = {n: m for n, m in unlearned_model.model.named_modules()
                       if isinstance(m, torch.nn.Linear) and n != "lm_head"}
            before = {n: m.weight.detach().clone() for n, m in linears.items()}
            q4 = quantized("rtn-w4g128")
            assert q4 is quantized("rtn-w4g128")  # cached for the session
            assert q4.details.code_agreement == 1.0
            q8 = quantized("rtn-w8")  # restores the 4-bit variant first: 8-bit RTN of the original weights
            assert q8.details.quantizer == "rtn-w8"
            for n, w in before.items():
                assert torch.equal(linears[n].weight, rtn_quantize(w, 8)), n

        def test_muse(muse, target_model):
            ev = muse(target_model)
            assert ev is muse(target_model)
            assert 0 <= ev.values["verbmem_f"] <= 100

        @pytest.mark.unlearn_budget(recovery=0.9)
        def test_marker_budget(unlearn_budget, unlearn_session):
            assert unlearn_budget.recovery == 0.9
            verdict = unlearn_session.check("rtn-w8", "verbmem_f", unlearn_budget)
            assert verdict.passed, verdict.message

        def test_retrain_skips(retrain_model):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        *gate_args(tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, cache=pytester.path / "c"),
        "-k",
        "not test_budget",
        "-rs",
    )
    result.assert_outcomes(passed=4, skipped=1, deselected=9)
    result.stdout.fnmatch_lines(["*needs --unlearn-retrain*"])


def test_unknown_marker_key_is_a_usage_error(
    pytester: pytest.Pytester, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.unlearn_budget(recovry=0.1)\ndef test_x():\n    pass\n")
    result = pytester.runpytest_subprocess(*gate_args(tiny_model_dir, tiny_model_dir, tiny_data_dir))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown budget key 'recovry'" in result.stderr.str()


def test_fixtures_skip_without_the_gate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(unlearned_model):\n    pass\n")
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs --unlearn-model*"])


def test_missing_backend_skips_its_items_with_the_install_command(
    pytester: pytest.Pytester, tiny_in_cell_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    # make bitsandbytes unimportable in the run, as on a machine without the [bnb] extra
    pytester.makeconftest("import sys\nsys.modules['bitsandbytes'] = None\n")
    args = gate_args(
        tiny_in_cell_dir, tiny_model_dir, tiny_data_dir, "-rA", "--unlearn-json=r.json", cache=pytester.path / "c"
    )
    args = [a if not a.startswith("--unlearn-quantizers=") else "--unlearn-quantizers=bnb-fp4,rtn-w8" for a in args]
    result = pytester.runpytest_subprocess(*args, "-k", "verbmem_f", "--junitxml=j.xml")
    seen = outcomes(pytester.path / "j.xml")
    assert seen == {"fp-verbmem_f": "passed", "bnb-fp4-verbmem_f": "skipped", "rtn-w8-verbmem_f": "passed"}
    assert result.ret == pytest.ExitCode.OK  # the exit code follows the remaining verdicts
    result.stdout.fnmatch_lines(["SKIPPED *pip install 'unlearn-assert?bnb?'"])  # ? : fnmatch reads [bnb] as a class
    report = json.loads((pytester.path / "r.json").read_text())
    row = next(r for r in report["rows"] if r["quantizer"] == "bnb-fp4")
    assert row["status"] == "skipped" and "unlearn-assert[bnb]" in row["skip_reason"]
