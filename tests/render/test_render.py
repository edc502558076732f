"""Tests for unlearn_assert.render: schema validation, terminal table, HTML safety, atomic writes."""

from __future__ import annotations

import copy
import html as htmllib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.errors import UnlearnAssertError
from unlearn_assert.render import (
    SCHEMA_VERSION,
    ReportError,
    counts_line,
    load_report,
    render_failures,
    render_html,
    render_table,
    summary_line,
    validate_report,
    write_html,
    write_json,
)

INJECTION = "<script>alert(1)</script>"


def _row(
    model: str, quantizer: str, vm: float | None, kf: float | None, kr: float | None, pl: float | None, **extra: Any
) -> dict[str, Any]:
    quantized = quantizer != "fp"
    row: dict[str, Any] = {
        "model": model,
        "quantizer": quantizer,
        "values": {"verbmem_f": vm, "knowmem_f": kf, "knowmem_r": kr, "privleak": pl},
        "ci": {"verbmem_f": [vm - 1, vm + 1]} if vm is not None else {},
        "recovery": None,
        "code_agreement": None,
        "changed_fraction": 0.71 if quantized else None,
        "small_delta_fraction": None,
        "quant": {"bits": 4, "group_size": 128, "modules": ["q_proj"], "n_weights": 4096} if quantized else None,
        "auc": 0.48,
        "attack_aucs": {"loss": 0.5, "zlib": 0.51, "mink++": 0.47},
        "status": "ok",
        "skip_reason": None,
        "cached": False,
        "seconds": 1.5,
    }
    row.update(extra)
    return row


def _verdict(
    quantizer: str, check: str, outcome: str, message: str, value: float | None = None, budget: float | None = None
) -> dict[str, Any]:
    return {
        "item": f"test_budget[{quantizer}-{check}]",
        "quantizer": quantizer,
        "check": check,
        "outcome": outcome,
        "passed": None if outcome == "skipped" else outcome == "passed",
        "message": message,
        "value": value,
        "budget": budget,
    }


def make_report() -> dict[str, Any]:
    """A realistic report: 2 quantizers + a skipped bnb row, target/q(T)/retrain references, mixed verdicts,
    and samples holding markup, a closing script tag and non-ASCII text."""
    quantizers = ["rtn-w4g128", "rtn-w8", "bnb-fp4"]
    rows = [
        # deliberately shuffled: the renderers must order them
        _row("target", "rtn-w4g128", 55.0, 60.1, 50.3, -96.2),
        _row("retrain", "fp", 20.2, 30.0, 49.9, 0.0),
        _row(
            "unlearned",
            "rtn-w8",
            12.4,
            21.0,
            47.7,
            1.2,
            recovery={"verbmem_f": 0.004, "knowmem_f": 0.02},
            code_agreement=0.41,
        ),
        _row("unlearned", "fp", 12.3, 20.5, 48.0, 1.0),
        _row(
            "unlearned",
            "bnb-fp4",
            None,
            None,
            None,
            None,
            status="skipped",
            skip_reason="bitsandbytes is not installed:\n pip install 'unlearn-assert[bnb]'",
            recovery=None,
            changed_fraction=None,
            ci={},
            quant=None,
        ),
        _row(
            "unlearned",
            "rtn-w4g128",
            16.55,
            53.26,
            47.0,
            -60.4,
            recovery={"verbmem_f": 0.1234, "knowmem_f": 0.8312},
            code_agreement=0.9312,
        ),
        _row("target", "fp", 56.0, 60.0, 50.0, -98.5),
    ]
    verdicts = [
        _verdict("fp", "verbmem_f", "passed", "verbmem_f dropped 43.7 points (floor 5)", 43.7, 5.0),
        _verdict("rtn-w4g128", "verbmem_f", "passed", "recovery 12.3% <= 25%", 0.1234, 0.25),
        _verdict(
            "rtn-w4g128",
            "knowmem_f",
            "failed",
            "recovery 83.1% > budget 25%:\n quantization restores knowledge",
            0.8312,
            0.25,
        ),
        _verdict("rtn-w4g128", "utility", "passed", "knowmem_r ratio 0.94 >= 0.9", 0.94, 0.9),
        _verdict("rtn-w4g128", "privleak", "failed", "|privleak| 60.4% > 25%", 60.4, 25.0),
        _verdict("rtn-w8", "verbmem_f", "passed", "recovery 0.4% <= 25%", 0.004, 0.25),
        _verdict("rtn-w8", "knowmem_f", "passed", "recovery 2.0% <= 25%", 0.02, 0.25),
        _verdict("bnb-fp4", "verbmem_f", "skipped", "bitsandbytes is not installed"),
        _verdict("bnb-fp4", "knowmem_f", "skipped", "bitsandbytes is not installed"),
    ]
    samples = {
        "unlearned:rtn-w4g128": {
            "knowmem_f": [
                {
                    "id": 0,
                    "prompt": "Question: Who wrote it?\nAnswer: ",
                    "generation": INJECTION,
                    "reference": "Zoë Ångström 北京 \u2603",
                    "score": 12.5,
                },
                {
                    "id": 1,
                    "prompt": "Question: What closes?\nAnswer: ",
                    "generation": "x</script><b>bold</b>",
                    "reference": "</script>",
                    "score": 0.0,
                },
                *(
                    {"id": i, "prompt": "P" * 500, "generation": "g", "reference": "r", "score": 100.0}
                    for i in range(2, 70)
                ),
            ],
            "verbmem_f": [
                {"id": 0, "prompt": "Once upon", "generation": "a time & more", "reference": "a time", "score": 66.7}
            ],
        },
        "unlearned:fp": {
            "knowmem_f": [{"id": 0, "prompt": "Q", "generation": "\u00e9t\u00e9", "reference": "x", "score": 0.0}]
        },
    }
    return {
        "schema_version": 1,
        "created": "2026-11-28T06:00:00+00:00",
        "provenance": {
            "unlearn_assert": "0.1.0",
            "torch": "2.13.0",
            "transformers": "5.24.0",
            "python": "3.11.7",
            "backends": {"bitsandbytes": None, "hqq": "0.2.8.post1"},
            "machine": {"platform": "Linux-6.8-x86_64", "processor": "x86_64", "cpu_count": 2, "cuda": None},
            "models": {
                "unlearned": {"path": "ckpt/npo_klr<script>alert(1)</script>", "fingerprint": "a1b2c3"},
                "target": {"path": "ckpt/target", "fingerprint": "d4e5f6"},
                "retrain": {"path": "ckpt/retrain", "fingerprint": "0789ab"},
            },
            "data": {
                "path": "fixtures/tiny-muse",
                "fingerprint": "feedbeef",
                "counts": {"verbmem_forget": 10, "knowmem_forget_qa": 70},
            },
            "budgets": {
                "recovery": 0.25,
                "utility": 0.9,
                "privleak": 25.0,
                "floor": 5.0,
                "overrides": [{"key": "recovery", "quantizer": "rtn-w8", "value": 0.1}],
            },
            "settings": {
                "device": "cpu",
                "dtype": "float32",
                "batch_size": None,
                "max_samples": 70,
                "quantizers": quantizers,
            },
        },
        "rows": rows,
        "verdicts": verdicts,
        "samples": samples,
    }


# --------------------------------------------------------------------------- schema


def test_validate_accepts_realistic_report() -> None:
    report = make_report()
    assert validate_report(report) is report
    assert SCHEMA_VERSION == 1
    # what the pipeline writes for a skipped cell: no metric values but privleak; null fingerprints
    report["rows"][4]["values"] = {"privleak": None}
    report["provenance"]["data"]["fingerprint"] = None
    report["provenance"]["privleak_reference"] = {"auc": 0.5, "source": "default"}
    validate_report(report)
    page = render_html(report)
    assert "privleak_reference" in page and "&#34;source&#34;: &#34;default&#34;" in page


def test_validate_accepts_design_minimal_verdicts() -> None:
    """DESIGN.md's required verdict keys only: quantizer/check/outcome are derived from the item id."""
    report = make_report()
    report["verdicts"] = [
        {"item": v["item"], "passed": v["passed"], "message": v["message"]} for v in report["verdicts"]
    ]
    validate_report(report)
    assert summary_line(report) == (
        "unlearn-assert: 2 of 9 budget checks failed (rtn-w4g128: knowmem_f, privleak), 2 skipped"
    )


def _without(path: tuple[Any, ...]) -> dict[str, Any]:
    report = make_report()
    node: Any = report
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return report


@pytest.mark.parametrize(
    "path, needle",
    [
        (("rows",), "missing key 'rows'"),
        (("provenance",), "missing key 'provenance'"),
        (("provenance", "models", "target"), "provenance.models is missing key 'target'"),
        (("rows", 2, "values"), "rows[2] is missing key 'values'"),
        (("rows", 3, "values", "knowmem_r"), "rows[3].values is missing key 'knowmem_r'"),
        (("verdicts", 0, "message"), "verdicts[0] is missing key 'message'"),
    ],
)
def test_validate_rejects_missing_keys(path: tuple[Any, ...], needle: str) -> None:
    with pytest.raises(ReportError) as info:
        validate_report(_without(path))
    msg = str(info.value)
    assert needle in msg and "\n" not in msg
    assert isinstance(info.value, UnlearnAssertError)


def test_validate_rejects_wrong_types_and_versions() -> None:
    bad = make_report()
    bad["rows"][0]["values"]["verbmem_f"] = "12.0"
    with pytest.raises(ReportError, match=r"rows\[0\]\.values\.verbmem_f should be a number or null, got str"):
        validate_report(bad)
    bad = make_report()
    bad["rows"][0]["model"] = "teacher"
    with pytest.raises(ReportError, match="rows\\[0\\].model is 'teacher'"):
        validate_report(bad)
    bad = make_report()
    bad["schema_version"] = 2
    with pytest.raises(ReportError, match="unsupported report schema_version 2.*reads schema_version 1"):
        validate_report(bad)
    with pytest.raises(ReportError, match="missing key 'schema_version'"):
        validate_report({"name": "some other json"})
    with pytest.raises(ReportError, match="expected a JSON object"):
        validate_report([1, 2])
    bad = make_report()
    bad["schema_version"] = True
    with pytest.raises(ReportError, match="should be an integer"):
        validate_report(bad)


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="report file not found"):
        load_report(tmp_path / "nope.json")
    with pytest.raises(ReportError, match="is a directory"):
        load_report(tmp_path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1,', encoding="utf-8")
    with pytest.raises(ReportError, match=r"broken.json is not valid JSON \(line 1"):
        load_report(broken)
    other = tmp_path / "other.json"
    other.write_text('{"schema_version": 7}', encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_report(other)
    assert str(info.value).startswith(str(other)) and "schema_version 7" in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- terminal


def test_table_row_order_and_verdicts() -> None:
    lines = render_table(make_report()).splitlines()
    body = [line.split() for line in lines[2:]]
    assert [(cells[0], cells[1]) for cells in body] == [
        ("unlearned", "fp"),
        ("unlearned", "rtn-w4g128"),
        ("unlearned", "rtn-w8"),
        ("unlearned", "bnb-fp4"),
        ("target", "fp"),
        ("target", "rtn-w4g128"),
        ("retrain", "fp"),
    ]
    # a failing row names its failing checks (short names), so privleak never reads as a recovery failure
    assert [" ".join(cells[-3:]) if "FAIL:" in cells else cells[-1] for cells in body] == [
        "PASS",
        "FAIL: km, privleak",
        "PASS",
        "SKIP",
        "-",
        "-",
        "-",
    ]
    q4 = lines[3]
    assert "16.6" in q4 and "53.3" in q4 and "-60.4" in q4 and "vm 12% / km 83%" in q4 and "93.1%" in q4
    skipped = lines[5]
    assert "skipped: bitsandbytes is not installed: pip in..." in skipped and "\n" not in skipped
    assert "12.3" not in skipped and skipped.split()[2] == "skipped:"


def test_table_color_only_when_asked() -> None:
    report = make_report()
    assert "\x1b[" not in render_table(report)
    colored = render_table(report, color=True)
    assert "\x1b[1;31mFAIL\x1b[0m" in colored and "\x1b[32mPASS\x1b[0m" in colored


def test_render_failures_and_summary() -> None:
    report = make_report()
    assert render_failures(report) == [
        "FAILED test_budget[rtn-w4g128-knowmem_f]: recovery 83.1% > budget 25%: quantization restores knowledge",
        "FAILED test_budget[rtn-w4g128-privleak]: |privleak| 60.4% > 25%",
    ]
    assert summary_line(report) == (
        "unlearn-assert: 2 of 9 budget checks failed (rtn-w4g128: knowmem_f, privleak), 2 skipped"
    )
    for v in report["verdicts"]:
        if v["outcome"] == "failed":
            v.update(outcome="passed", passed=True)
    assert render_failures(report) == []
    assert summary_line(report) == "unlearn-assert: 7 of 9 budget checks passed, 2 skipped"
    report["verdicts"] = []
    assert summary_line(report) == "unlearn-assert: no budget checks ran"


def test_counts_line_states_the_evaluated_items_per_split() -> None:
    report = make_report()
    report["provenance"]["settings"]["max_samples"] = None
    report["provenance"]["data"]["counts"] = {
        "verbmem_forget": 100,
        "knowmem_forget_qa": 100,
        "knowmem_retain_qa": 99,
        "knowmem_forget_icl": 10,
        "knowmem_retain_icl": 10,
        "privleak_forget": 100,
        "privleak_holdout": 98,
        "privleak_retain": 100,
    }
    assert counts_line(report) == (
        "evaluated items: verbmem 100, knowmem_f 100, knowmem_r 99, privleak 100/98 (forget/holdout)"
    )
    report["provenance"]["settings"]["max_samples"] = 70
    assert counts_line(report) == (
        "evaluated items: verbmem 100, knowmem_f 100, knowmem_r 99, "
        "privleak 100/98 (forget/holdout); at most 70 per split (--unlearn-max-samples)"
    )
    # make_report's partial counts: what is there is shown, the rest is left out or '-'
    assert counts_line(make_report()) == (
        "evaluated items: verbmem 10, knowmem_f 70; at most 70 per split (--unlearn-max-samples)"
    )
    report["provenance"]["data"]["counts"] = {"privleak_holdout": 5}
    assert counts_line(report).startswith("evaluated items: privleak -/5 (forget/holdout)")  # type: ignore[union-attr]
    report["provenance"]["data"] = {"path": "d", "fingerprint": None}
    assert counts_line(report) is None


def test_report_command_prints_the_counts_above_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unlearn_assert.cli import main

    path = tmp_path / "run.json"
    write_json(make_report(), path)
    assert main(["report", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == counts_line(make_report()) and lines[1].startswith("model ")


def tiny_report() -> dict[str, Any]:
    report = make_report()
    report["provenance"]["settings"]["quantizers"] = ["rtn-w4g128"]
    report["rows"] = [
        _row("target", "fp", 56.0, 60.0, 50.0, None),
        _row(
            "unlearned",
            "rtn-w4g128",
            16.55,
            53.26,
            47.0,
            -60.4,
            recovery={"verbmem_f": 0.1234, "knowmem_f": None},
            code_agreement=0.9312,
        ),
        _row("unlearned", "fp", 12.3, 20.5, 48.0, 1.0),
    ]
    report["verdicts"] = [v for v in report["verdicts"] if v["quantizer"] in ("fp", "rtn-w4g128")]
    report["samples"] = {}
    return report


def test_terminal_table_golden() -> None:
    expected = (
        "model      quantizer      verbmem_f    knowmem_f    knowmem_r    privleak  recovery         code agr.  "
        "verdict\n"
        "---------  -----------  -----------  -----------  -----------  ----------  -------------  -----------  "
        "------------------\n"
        "unlearned  fp                  12.3         20.5         48.0         1.0  -                        -  PASS\n"
        "unlearned  rtn-w4g128          16.6         53.3         47.0       -60.4  vm 12% / km -        93.1%  FAIL: "
        "km, privleak\n"
        "target     fp                  56.0         60.0         50.0           -  -                        -  -"
    )
    assert render_table(tiny_report()) == expected


# --------------------------------------------------------------------------- HTML


def _report_json(page: str) -> Any:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def test_html_is_self_contained() -> None:
    page = render_html(make_report())
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    # the only script element is the JSON data block
    assert page.count("<script") == 1


def test_html_escapes_untrusted_text() -> None:
    page = render_html(make_report())
    assert INJECTION not in page
    assert "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # exactly one closing tag: the JSON block's own
    assert page.count("</script>") == 1
    assert "Zoë Ångström 北京 \u2603" in page
    assert "a time &amp; more" in page


def test_html_embeds_report_json_roundtrip() -> None:
    report = make_report()
    page = render_html(report)
    assert _report_json(page) == report
    blob = page[page.index('id="report-data">') :]
    assert "\\u003c/script\\u003e" in blob


def test_html_has_charts_tables_and_verdicts() -> None:
    report = make_report()
    page = render_html(report)
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r", "privleak"):
        chart = re.search(rf'<figure id="chart-{metric}">(.*?)</figure>', page, re.S)
        assert chart is not None and "<svg" in chart.group(1)
        assert "target fp" in chart.group(1) and "retrain fp" in chart.group(1)
    assert "ROUGE-L F1 x100" in page and "privleak (%)" in page
    # failed verdicts are listed before passed ones
    verdicts = page[page.index('<ul class="verdicts">') :]
    assert verdicts.index("test_budget[rtn-w4g128-knowmem_f]") < verdicts.index("test_budget[fp-verbmem_f]")
    assert verdicts.index("test_budget[rtn-w4g128-privleak]") < verdicts.index("test_budget[rtn-w8-knowmem_f]")
    # summary table: same verdict column as the terminal one; skipped row spans the metric columns
    summary = page[page.index('<table class="summary">') : page.index("</table>")]
    assert [htmllib.unescape(v) for v in re.findall(r'<td class="(?:PASS|FAIL|SKIP)">([^<]+)</td>', summary)] == [
        "PASS",
        "FAIL: km, privleak",
        "PASS",
        "SKIP",
    ]
    assert 'colspan="6">skipped: bitsandbytes is not installed: pip install' in summary
    # samples: collapsed, capped at 50 per (row, metric)
    assert page.count("<details>") == 3
    assert "(showing the first 50)" in page
    assert page.count('<td class="num">69</td>') == 0 and '<td class="num">49</td>' in page


def test_html_sample_cells_without_text_show_a_dash() -> None:
    """privleak's samples are scored texts with no generation or reference: "-", never "None"."""
    report = tiny_report()
    report["samples"] = {
        "unlearned:fp": {
            "privleak": [
                {
                    "id": 0,
                    "prompt": "Orla Vantreck was elected mayor",
                    "generation": None,
                    "reference": None,
                    "score": 0.31,
                }
            ]
        }
    }
    page = render_html(report)
    assert ">None<" not in page and "<td>-</td><td>-</td>" in page


def test_html_handles_nonfinite_and_missing_references() -> None:
    report = tiny_report()
    report["rows"][1]["values"]["privleak"] = float("nan")
    page = render_html(report)
    assert _report_json(page)["rows"][1]["values"]["privleak"] is None
    assert page.count("<svg") == 4 + 2  # the four metrics, and the recovery of each forget metric


# --------------------------------------------------------------------------- files


def test_write_json_and_html_atomic(tmp_path: Path) -> None:
    report = make_report()
    out = tmp_path / "sub" / "report.json"
    assert write_json(report, out) == out
    assert load_report(out) == report
    page = tmp_path / "sub" / "report.html"
    write_html(report, page)
    assert _report_json(page.read_text(encoding="utf-8")) == report
    write_json(report, out)  # overwrite in place
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["report.html", "report.json"]


def test_write_failure_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text("previous", encoding="utf-8")
    bad = copy.deepcopy(make_report())

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("cannot be written")

    bad["rows"][0]["values"]["verbmem_f"] = Unprintable()  # fails while the JSON is made
    with pytest.raises(RuntimeError, match="cannot be written"):
        write_json(bad, out)
    assert out.read_text(encoding="utf-8") == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_interrupted_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"
    out.write_text("previous", encoding="utf-8")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("unlearn_assert.render.schema.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_html(make_report(), out)
    assert out.read_text(encoding="utf-8") == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


# --------------------------------------------------------------------------- intervals (issue 13)


def interval_report() -> dict[str, Any]:
    """tiny_report with what a gate writes since the paired bootstrap: intervals on the quantized row
    and on the verdicts, the bootstrap's settings, and the resolution of each forget metric."""
    report = tiny_report()
    q = report["rows"][1]
    q["recovery"] = {"verbmem_f": 0.1234, "knowmem_f": 0.61}
    q["recovery_ci"] = {"verbmem_f": [0.02, 0.3], "knowmem_f": [0.22, None]}  # null: unbounded above
    q["recovery_degenerate"] = {"verbmem_f": 0, "knowmem_f": 31}
    q["utility"], q["utility_ci"], q["utility_degenerate"] = 0.979, [0.9, 1.05], 0
    report["provenance"]["bootstrap"] = {"replicates": 1000, "seed": 0, "confidence": 0.95}
    report["resolution"] = {
        "verbmem_f": {
            "recovery": 0.2,
            "drop": 43.7,
            "drop_ci": [35.0, 52.5],
            "n": 100,
            "confidence": 0.95,
            "budget": 0.25,
            "exceeds_budget": False,
        },
        "knowmem_f": {
            "recovery": 0.53,
            "drop": 21.1,
            "drop_ci": [10.1, 32.5],
            "n": 48,
            "confidence": 0.95,
            "budget": 0.25,
            "exceeds_budget": True,
        },
    }
    for v in report["verdicts"]:
        if v["item"] == "test_budget[rtn-w4g128-knowmem_f]":
            v.update(
                value=0.61,
                estimate=0.61,
                ci=[0.22, None],
                budget=0.25,
                decided=False,
                n=48,
                degenerate=31,
                policy="point",
                figure="recovery",
                message="undecided: knowmem_f recovery 61% [22%, inf] under rtn-w4g128 straddles the 25% budget at "
                "n=48 forget questions; add forget items or choose --unlearn-verdict (point: the estimate fails it)",
            )
        elif v["item"] == "test_budget[rtn-w4g128-verbmem_f]":
            v.update(
                estimate=0.1234, ci=[0.02, 0.3], decided=False, n=100, degenerate=0, policy="point", figure="recovery"
            )
    return report


def test_table_shows_recovery_intervals_golden() -> None:
    expected = (
        "model      quantizer      verbmem_f    knowmem_f    knowmem_r    privleak  recovery                           "
        "code agr.  verdict\n"
        "---------  -----------  -----------  -----------  -----------  ----------  -------------------------------  "
        "-----------  ------------------\n"
        "unlearned  fp                  12.3         20.5         48.0         1.0  -                                  "
        "        -  PASS\n"
        "unlearned  rtn-w4g128          16.6         53.3         47.0       -60.4  vm 12% [2,30] / km 61% [22,inf]    "
        "    93.1%  FAIL: km, privleak\n"
        "target     fp                  56.0         60.0         50.0           -  -                                  "
        "        -  -"
    )
    assert render_table(interval_report()) == expected


def test_resolution_lines_state_it_and_warn_once_per_metric_over_budget() -> None:
    from unlearn_assert.render import resolution_lines

    lines = resolution_lines(interval_report())
    assert lines == [
        (
            "unlearn-assert: resolution at 95% (smallest recovery the forget set tells from zero): verbmem_f 20% "
            "(n=100 forget passages), knowmem_f 53% (n=48 forget questions)",
            False,
        ),
        (
            "unlearn-assert: warning: knowmem_f's resolution 53% exceeds its 25% recovery budget: n=48 forget "
            "questions "
            "cannot tell a 25% recovery from none; add forget items",
            True,
        ),
    ]
    assert resolution_lines(tiny_report()) == []  # older reports have none


def test_validate_accepts_interval_fields_and_rejects_malformed_ones() -> None:
    report = interval_report()
    validate_report(json.loads(json.dumps(report)))
    for path, value, needle in [
        (("rows", 1, "recovery_ci", "knowmem_f"), [0.2], r"rows\[1\]\.recovery_ci\.knowmem_f should be \[lo, hi\]"),
        (("rows", 1, "utility_ci"), ["a", 1.0], r"rows\[1\]\.utility_ci should be \[lo, hi\]"),
        (("verdicts", 2, "decided"), "yes", r"verdicts\[2\]\.decided should be true/false or null"),
        (("verdicts", 2, "policy"), "maybe", r"verdicts\[2\]\.policy is 'maybe'"),
        (("provenance", "bootstrap", "replicates"), 1.5, r"provenance\.bootstrap\.replicates should be an integer"),
        (("provenance", "bootstrap", "prior"), "one", r"provenance\.bootstrap\.prior should be a number"),
        (
            ("resolution", "knowmem_f", "exceeds_budget"),
            None,
            r"resolution\.knowmem_f\.exceeds_budget should be true/false",
        ),
    ]:
        bad = copy.deepcopy(report)
        node: Any = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(ReportError, match=needle):
            validate_report(bad)


def test_html_draws_error_bars_and_lists_each_items_interval() -> None:
    page = render_html(interval_report())
    chart = re.search(r'<figure id="chart-recovery-knowmem_f">(.*?)</figure>', page, re.S)
    assert chart is not None and '<g class="err">' in chart.group(1) and "interval [22.0, inf]" in chart.group(1)
    assert "recovery budget (25.0)" in chart.group(1)
    vm = re.search(r'<figure id="chart-recovery-verbmem_f">(.*?)</figure>', page, re.S)
    assert vm is not None and "interval [2.0, 30.0]" in vm.group(1)
    assert page.count('<g class="err">') >= 2 + 1  # both recoveries, and the rows' own metric intervals
    verdicts = page[page.index('<ul class="verdicts">') :]
    assert (
        "estimate 61%, interval [22%, inf], budget 25%, undecided (n=48, 31 degenerate replicates)"
        in htmllib.unescape(verdicts)
    )
    assert "estimate 12%, interval [2%, 30%], budget 25%, undecided (n=100)" in htmllib.unescape(verdicts)
    assert '<p class="resolution warn">unlearn-assert: warning: knowmem_f' in page


# --------------------------------------------------------------------------- readability (issue 26)


def test_privleak_note_explains_minus_100_only_where_it_appears() -> None:
    from unlearn_assert.render.terminal import privleak_note

    report = make_report()
    assert privleak_note(report) is None  # -60.4 is an ordinary value; the target's -98.5 is not an unlearned row
    report["rows"][5]["values"]["privleak"] = -100.0
    report["provenance"]["privleak_reference"] = {"auc": 0.59, "source": "retrain"}
    note = privleak_note(report)
    assert note is not None and "privleak -100%" in note and "the retrain model's AUC (0.59)" in note
    assert "0% is retrain-like" in note and "\n" not in note
    report["rows"][5]["status"] = "skipped"  # a skipped row's stale values say nothing
    assert privleak_note(report) is None
    rows = [*make_report()["rows"][:5], _row("unlearned", "rtn-w4g128", 16.55, 53.26, 47.0, -100.0)]
    page = render_html({**make_report(), "rows": rows})
    assert "privleak -100% means" in htmllib.unescape(page)


def test_recovery_chart_clips_far_values_and_marks_them() -> None:
    """A -267%..86% interval and a 327% bar must not stretch the axis: it stays within -50..150 (the
    25% budget line readable), the bar and the interval's cut end are drawn to the edge and labelled."""
    report = interval_report()
    q = report["rows"][1]
    q["recovery"] = {"verbmem_f": 3.27, "knowmem_f": -0.1}
    q["recovery_ci"] = {"verbmem_f": [1.5, 5.0], "knowmem_f": [-2.67, 0.86]}
    page = render_html(report)
    km = re.search(r'<figure id="chart-recovery-knowmem_f">(.*?)</figure>', page, re.S)
    vm = re.search(r'<figure id="chart-recovery-verbmem_f">(.*?)</figure>', page, re.S)
    assert km is not None and vm is not None
    ticks = [float(t) for t in re.findall(r'<text class="tick"[^>]*>(-?[\d.]+)</text>', km.group(1))]
    assert min(ticks) >= -50 and max(ticks) <= 150 and 25 >= min(ticks)
    assert "\u2193-267" in km.group(1) and "interval [-267.0, 86.0]" in km.group(1) and "beyond the axis" in km.group(1)
    vm_ticks = [float(t) for t in re.findall(r'<text class="tick"[^>]*>(-?[\d.]+)</text>', vm.group(1))]
    assert max(vm_ticks) <= 150 and 'class="bar clipped"' in vm.group(1) and "\u25b2" in vm.group(1)
    assert ">327.0</text>" in vm.group(1)  # the true value is printed
    # nothing beyond the axis: no clip marks at all
    calm = render_html(interval_report())
    chart = re.search(r'<figure id="chart-recovery-verbmem_f">(.*?)</figure>', calm, re.S)
    assert chart is not None and "beyond the axis" not in chart.group(1) and "clipped" not in chart.group(1)
