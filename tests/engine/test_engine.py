"""The engine's parts on the tiny models: the entry point ``ua.gate``, the two kinds of variant
source (and that a third needs no engine change), rows and their cache keys, the derived figures,
and the report built from ``Report.to_dict()`` (the same as the plugin's JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from unlearn_assert.benchmark.muse import MuseBenchmark
from unlearn_assert.cache import ResultCache, cache_key
from unlearn_assert.config import Artifact, RunConfig, run_config
from unlearn_assert.engine import Gate, Row, gate
from unlearn_assert.engine.derive import figures
from unlearn_assert.engine.rows import row_key
from unlearn_assert.engine.sources import SOURCE_KINDS, Applied, ArtifactSource, QuantizerSource, source_for
from unlearn_assert.errors import ConfigError
from unlearn_assert.metrics import METRIC_SETTINGS
from unlearn_assert.names import FP
from unlearn_assert.render import render_html, render_table, validate_report
from unlearn_assert.render.schema import dumps_report

CHECKS = ("verbmem_f", "knowmem_f", "utility", "privleak")  # MUSE's items, in item order
VOLATILE = {"created", "seconds", "argv", "cached"}


def _strip(obj: Any) -> Any:
    """A report without what differs between two runs of the same gate: timestamps and timings."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _run(tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, **extra: Any) -> RunConfig:
    settings: dict[str, Any] = {"quantizers": ("rtn-w8",), "device": "cpu", "max_samples": 2, **extra}
    return run_config(model=tiny_unlearned_dir, target=tiny_model_dir, data=tiny_data_dir, **settings)


def test_gate_runs_every_item_and_its_report_is_the_plugins_json(
    pytester: pytest.Pytester, tmp_path: Path, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """``ua.gate`` and ``pytest --unlearn-model`` are one engine: same items, same verdicts, and the
    same JSON report in every field but timestamps and timings."""
    import unlearn_assert as ua

    cache = tmp_path / "cache"
    report = ua.gate(
        tiny_unlearned_dir,
        tiny_model_dir,
        tiny_data_dir,
        quantizers="rtn-w8",
        max_samples=2,
        device="cpu",
        retrain_auc=0.5,
        cache_dir=str(cache),
    )
    assert isinstance(report, ua.Report)
    items = [v.item for v in report.verdicts]
    # in the report: by variant, then by item name
    assert items == [name for q in ("fp", "rtn-w8") for name in sorted(f"test_budget[{q}-{c}]" for c in CHECKS)]
    assert report.passed == (not report.failed) and all(v.outcome in ("passed", "failed") for v in report.verdicts)
    data = report.to_dict()
    validate_report(json.loads(json.dumps(data)))
    assert [(r["model"], r["quantizer"]) for r in data["rows"]] == [
        ("unlearned", FP),
        ("unlearned", "rtn-w8"),
        ("target", FP),
        ("target", "rtn-w8"),
    ]
    assert report.row("unlearned", "rtn-w8")["recovery"].keys() == {"verbmem_f", "knowmem_f"}  # type: ignore[index]
    assert "rtn-w8" in render_table(data) and "<html" in render_html(data)

    out = tmp_path / "plugin.json"
    result = pytester.runpytest_subprocess(
        f"--unlearn-model={tiny_unlearned_dir}",
        f"--unlearn-target={tiny_model_dir}",
        f"--unlearn-data={tiny_data_dir}",
        "--unlearn-quantizers=rtn-w8",
        "--unlearn-max-samples=2",
        "--unlearn-device=cpu",
        "--unlearn-retrain-auc=0.5",
        f"--unlearn-cache-dir={cache}",
        f"--unlearn-json={out}",
        "-p",
        "no:randomly",
    )
    assert result.ret == (pytest.ExitCode.OK if report.passed else pytest.ExitCode.TESTS_FAILED), result.stdout.str()
    plugin = json.loads(out.read_text())
    ours = json.loads(dumps_report(data))  # as the file is written: an unbounded interval end is null there
    for execution in plugin["provenance"]["execution"]:  # where pytest placed the rows: a pytest run's alone
        assert execution.pop("placement")["mode"] == "serial"
    assert _strip(plugin) == _strip(ours)


def test_gate_settings_are_validated_like_options(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    with pytest.raises(ConfigError, match="--unlearn-quantizers: malformed quantizer 'rtn-x'"):
        gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, quantizers="rtn-x")
    with pytest.raises(ConfigError, match="--unlearn-verdict: 'maybe' is not a verdict policy"):
        gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, verdict="maybe")
    with pytest.raises(ConfigError, match="--unlearn-confidence: '0.5' is not a supported level"):
        gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, confidence=0.5)

    assert (run_config(verdict="lenient", confidence=0.9).verdict, run_config(confidence=0.9).confidence) == (
        "lenient",
        0.9,
    )
    with pytest.raises(ConfigError, match="unknown gate setting.*quantiser"):
        gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, quantiser="rtn-w8")
    with pytest.raises(
        ConfigError, match="--unlearn-data: data path .* does not exist"
    ):  # checked before any model loads
        gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir / "missing")
    with pytest.raises(ConfigError, match="either a run config"):
        gate(tiny_unlearned_dir, run=run_config(model="x"))


def test_quantizer_source_key_parts_and_handoff(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    run = _run(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, quantizers=("rtn-w8-sym",))
    with Gate(run, ResultCache(None, enabled=False)) as g:
        source = g.source("rtn-w8-sym")
        assert isinstance(source, QuantizerSource) and source.roles == ("unlearned", "target")
        target_fp = g.inputs.fingerprint("target")
        assert source.key_parts("target", g.inputs) == {"variant": "rtn-w8"}  # canonical: the same cache entry
        assert source.key_parts("unlearned", g.inputs) == {"variant": "rtn-w8", "target": target_fp}
        with source.apply("unlearned", g.inputs) as applied:
            assert applied.handoff is None and applied.details["code_agreement"] is not None
            assert applied.view.details.changed_fraction == applied.details["changed_fraction"] > 0  # type: ignore[union-attr]
        with source.apply("target", g.inputs) as applied:
            assert applied.handoff is None  # RTN re-quantizes T on the fly: nothing to hand on
            assert applied.details["code_agreement"] is None  # no target of the target


def test_artifact_source_exists_for_u_only(tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    run = _run(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, quantized=[f"mine={tiny_unlearned_dir}"])
    artifact = run.artifact("mine")
    assert artifact == Artifact("mine", str(tiny_unlearned_dir))
    source = source_for("mine", run)
    assert isinstance(source, ArtifactSource) and source.roles == ("unlearned",)
    assert isinstance(source_for("rtn-w8", run), QuantizerSource)
    with Gate(run, ResultCache(None, enabled=False)) as g:
        parts = source.key_parts("unlearned", g.inputs)
        assert parts == {"variant": "artifact:" + g.inputs.artifact_fingerprint("mine", str(tiny_unlearned_dir))}
        with pytest.raises(ValueError, match="has no target version"):
            g.row("target", "mine")
        with pytest.raises(ValueError, match="no target version of it"):
            with source.apply("target", g.inputs):
                pass


class _Identity:
    """A third kind of source, registered in a test: the unlearned model as it is, claimed by name."""

    roles = ("unlearned",)
    applied: list[str] = []

    @classmethod
    def accepts(cls, variant: str, run: RunConfig) -> bool:
        return variant == "identity"

    def __init__(self, variant: str, run: RunConfig) -> None:
        self.variant = variant

    def key_parts(self, role: str, inputs: Any) -> dict[str, Any]:
        return {"variant": "identity"}

    @contextmanager
    def apply(self, role: str, inputs: Any, handoff: Any = None) -> Iterator[Applied]:
        self.applied.append(role)
        yield Applied(view=inputs.model(role), details={"changed_fraction": 0.0})


def test_a_new_kind_of_source_needs_only_a_registry_entry(
    monkeypatch: pytest.MonkeyPatch, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    """The engine has no branch on the kind of a variant: a registered kind gets rows and items."""
    import unlearn_assert.engine.sources as sources

    monkeypatch.setattr(sources, "SOURCE_KINDS", (_Identity, *SOURCE_KINDS))
    # the run names the variant as an artifact would (a validated run holds only names its grammar knows);
    # the registered kind comes first in SOURCE_KINDS, so it is the one that makes the rows
    run = _run(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, quantized=[f"identity={tiny_unlearned_dir}"])
    with Gate(run, ResultCache(None, enabled=False)) as g:
        verdict = g.check("identity", "knowmem_f")
        assert _Identity.applied == ["unlearned"]  # no q(T) row: the kind exists for U only
        assert ("target", "identity") not in g.rows
        u, q = g.rows[("unlearned", FP)], g.rows[("unlearned", "identity")]
        assert q.values == u.values  # the identity variant measures the model as loaded
        assert verdict.outcome in ("passed", "failed") and q.changed_fraction == 0.0


def test_rows_round_trip_and_their_key_is_made_of_the_documented_parts(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    run = _run(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir)
    with Gate(run, ResultCache(None, enabled=False)) as g:
        row = g.row("unlearned", "rtn-w8")
        assert Row.from_dict(json.loads(json.dumps(row.to_dict()))) == row
        inputs = g.inputs
        expected = cache_key(
            {
                "kind": "row",
                "model": inputs.fingerprint("unlearned"),
                "variant": "rtn-w8",
                "data": inputs.data.fingerprint,
                "metrics": METRIC_SETTINGS,
                "device": "cpu",
                "dtype": "auto",
                "compute_dtype": "float32",
                "batch_size": None,
                "target": inputs.fingerprint("target"),
            }
        )
        assert row_key("unlearned", g.source("rtn-w8"), inputs) == expected
        assert row_key("unlearned", None, inputs) != row_key(
            "target", None, inputs
        )  # the model's content is in the key


def test_recovery_items_do_not_load_the_retrain_model(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, tiny_retrain_dir: Path
) -> None:
    """The retrain model is the privleak reference: only the privleak items compute its row."""
    run = _run(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, retrain=str(tiny_retrain_dir))
    with Gate(run, ResultCache(None, enabled=False)) as g:
        g.check(FP, "knowmem_f")
        g.check("rtn-w8", "utility")
        assert ("retrain", FP) not in g.rows
        privleak = g.check("rtn-w8", "privleak")
        retrain = g.rows[("retrain", FP)]
        figs = figures(g.rows.values(), MuseBenchmark())
        assert figs.reference["privleak"] == (retrain.auc, "retrain")
        auc = g.rows[("unlearned", "rtn-w8")].auc
        assert auc is not None and retrain.auc
        assert privleak.value == pytest.approx((auc - retrain.auc) / retrain.auc * 100)
        assert f"{privleak.value:+.1f}%" in privleak.message
