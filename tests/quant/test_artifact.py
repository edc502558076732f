"""``--unlearn-quantized NAME=DIR``: the user's own quantized artifacts as rows of the gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from gate_helpers import gate_args, outcomes

from unlearn_assert.config import parse_artifacts
from unlearn_assert.errors import ConfigError
from unlearn_assert.quant.artifact import read_artifact

try:  # imported at collection: pytester drops modules a test imports, and datasets cannot be imported twice
    import llmcompressor  # noqa: F401
except ImportError:
    llmcompressor = None


@pytest.fixture(scope="module")
def compressed_dir(tmp_path_factory: pytest.TempPathFactory, tiny_unlearned_dir: Path) -> Path:
    """The unlearned model quantized by llm-compressor (RTN W4 g32) and saved compressed, as a provider would ship
    it."""
    if llmcompressor is None:
        pytest.skip("needs llm-compressor: pip install 'unlearn-assert[gptq]'")
    import torch
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM

    from unlearn_assert.quant.llmc import _quiet

    out = tmp_path_factory.mktemp("ckpt-ct")
    model = AutoModelForCausalLM.from_pretrained(tiny_unlearned_dir, dtype=torch.float32)
    weights = QuantizationArgs(num_bits=4, type="int", symmetric=True, strategy="group", group_size=32)
    with _quiet():
        oneshot(
            model=model,
            recipe=QuantizationModifier(
                config_groups={"g": QuantizationScheme(targets=["Linear"], weights=weights)}, ignore=["lm_head"]
            ),
        )
        model.save_pretrained(out, save_compressed=True)
    return out


@pytest.fixture(scope="module")
def nf4_dir(tmp_path_factory: pytest.TempPathFactory, tiny_unlearned_dir: Path) -> Path:
    """The unlearned model saved as a bitsandbytes NF4 checkpoint."""
    pytest.importorskip("bitsandbytes", reason="needs bitsandbytes: pip install 'unlearn-assert[bnb]'")
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    import unlearn_assert.quant.bnb  # noqa: F401  (bitsandbytes' import noise filtered)

    out = tmp_path_factory.mktemp("ckpt-nf4")
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model = AutoModelForCausalLM.from_pretrained(
        tiny_unlearned_dir, quantization_config=cfg, device_map="cpu", dtype=torch.float32
    )
    model.save_pretrained(out)  # before any forward: see docs/quantizers.md on the CPU repack
    return out


def test_user_checkpoints_are_rows_and_items(
    pytester: pytest.Pytester,
    tiny_unlearned_dir: Path,
    tiny_model_dir: Path,
    tiny_data_dir: Path,
    compressed_dir: Path,
    nf4_dir: Path,
) -> None:
    args = gate_args(
        tiny_unlearned_dir,
        tiny_model_dir,
        tiny_data_dir,
        "--unlearn-json=r.json",
        "--junitxml=j.xml",
        f"--unlearn-quantized=shipped_w4={compressed_dir}",
        f"--unlearn-quantized=shipped_nf4={nf4_dir}",
        "-k",
        "knowmem_f or utility",
        cache=pytester.path / "c",
    )
    result = pytester.runpytest_subprocess(*args)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    seen = outcomes(pytester.path / "j.xml")
    for name in ("shipped_w4", "shipped_nf4"):
        assert seen[f"{name}-knowmem_f"] in ("passed", "failed") and seen[f"{name}-utility"] in ("passed", "failed")
    report = json.loads((pytester.path / "r.json").read_text())
    rows = {(r["model"], r["quantizer"]): r for r in report["rows"]}
    assert ("target", "shipped_w4") not in rows  # there is no quantized target for a user's artifact
    w4, nf4 = rows[("unlearned", "shipped_w4")], rows[("unlearned", "shipped_nf4")]
    assert w4["quant"]["backend"] == "checkpoint:compressed-tensors" and (
        w4["quant"]["bits"],
        w4["quant"]["group_size"],
    ) == (4, 32)
    assert nf4["quant"]["backend"] == "checkpoint:bitsandbytes" and nf4["quant"]["bits"] == 4
    from unlearn_assert.engine.derive import recovery

    t, u = rows[("target", "fp")]["values"]["knowmem_f"], rows[("unlearned", "fp")]["values"]["knowmem_f"]
    drop_ci = next(v["ci"] for v in report["verdicts"] if v["item"] == "test_budget[fp-knowmem_f]")
    for name, row in (("shipped_w4", w4), ("shipped_nf4", nf4)):
        assert row["status"] == "ok" and row["quant"]["changed_fraction"] > 0.5 and len(row["quant"]["modules"]) == 14
        rec = recovery(row["values"]["knowmem_f"], u, t)
        assert row["recovery"]["knowmem_f"] == rec
        # the item's outcome follows the default budget (point verdict): fails when unlearning did not work in fp
        # (drop < 5, or the drop's interval includes 0) or rec > 25%
        expected = "passed" if t - u >= 5 and drop_ci[0] > 0 and rec is not None and rec <= 0.25 else "failed"
        assert seen[f"{name}-knowmem_f"] == expected
    settings = report["provenance"]["settings"]
    assert settings["quantizers"][-2:] == ["shipped_w4", "shipped_nf4"]
    assert settings["quantized_checkpoints"]["shipped_w4"]["method"] == "compressed-tensors"


def test_ini_entries_resolve_against_the_ini_file(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, compressed_dir: Path
) -> None:
    shutil.copytree(compressed_dir, pytester.path / "artifacts" / "w4")
    pytester.makeini("[pytest]\nunlearn_quantized = shipped=artifacts/w4\n")
    sub = pytester.mkdir("sub")
    args = gate_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, "--co", "-q")
    result = pytester.runpytest_subprocess(
        *args, f"--rootdir={pytester.path}", f"-c={pytester.path / 'tox.ini'}", str(sub)
    )
    result.stdout.fnmatch_lines(["*test_budget?shipped-knowmem_f?*"])


def _copy_with_config(src: Path, dst: Path, **changes: object) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _read_entries(entries: list[str], target: Path) -> list[object]:
    """What option time does with --unlearn-quantized entries: the syntax, then each directory."""
    return [read_artifact(a.name, a.path, str(target)) for a in parse_artifacts(entries)]


def test_bad_entries_are_one_line_usage_errors(tmp_path: Path, tiny_model_dir: Path) -> None:
    gptq = _copy_with_config(tiny_model_dir, tmp_path / "gptq", quantization_config={"quant_method": "gptq", "bits": 3})
    quanto = _copy_with_config(tiny_model_dir, tmp_path / "quanto", quantization_config={"quant_method": "quanto"})
    bnb_cfg = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    wide = _copy_with_config(tiny_model_dir, tmp_path / "wide", hidden_size=128, quantization_config=bnb_cfg)
    ok = _copy_with_config(tiny_model_dir, tmp_path / "ok", quantization_config=bnb_cfg)
    assert _read_entries([f"x={ok}"], tiny_model_dir)[0].scheme == "nf4"  # type: ignore[attr-defined]
    cut = _copy_with_config(tiny_model_dir, tmp_path / "cut", quantization_config=bnb_cfg)
    weights = next(cut.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-100])  # a truncated upload
    listed = _copy_with_config(tiny_model_dir, tmp_path / "listed")
    (listed / "config.json").write_text("[]")
    cases = [
        ("noequals", "is not NAME=DIR"),
        (f"x={listed}", "config.json is not a JSON object; re-save the checkpoint"),
        (f"my-ckpt={gptq}", "NAME must be letters"),
        (f"fp={gptq}", "NAME must be letters"),
        (f"x={tmp_path / 'missing'}", "does not exist"),
        (f"x={tiny_model_dir}", "has no quantization_config"),
        (f"x={gptq}", "GPTQ 3-bit packing is not supported .* re-export it with llm-compressor"),
        (f"x={quanto}", "'quanto' is not supported; use a compressed-tensors, bitsandbytes, GPTQ or AWQ"),
        (f"x={wide}", "its hidden_size is 128 but the target's is 96"),
        ([f"x={ok}", f"x={ok}"], "given twice"),
        (f"x={cut}", "is corrupt or truncated .* re-download or re-save the checkpoint"),
    ]
    for entry, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            _read_entries(entry if isinstance(entry, list) else [entry], tiny_model_dir)
        assert "\n" not in str(info.value) and str(info.value).startswith("--unlearn-quantized")


def test_bad_entry_exits_4(
    pytester: pytest.Pytester, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    result = pytester.runpytest_subprocess(
        *gate_args(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, f"--unlearn-quantized=plain={tiny_model_dir}")
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--unlearn-quantized plain=*has no quantization_config*--unlearn-quantizers*"])


def _config(**options: object):
    from unlearn_assert.config import build_run_config

    return build_run_config(lambda opt: options.get(opt.name, opt.default))


def test_budgets_may_name_checkpoints_and_nothing_is_checked_without_a_model(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    ok = _copy_with_config(
        tiny_model_dir,
        tmp_path / "with space" / "ok",
        quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True},
    )
    cfg = _config(model=str(tiny_model_dir), quantized=[f"mine={ok}"], budget="recovery@mine=0.1 recovery@rtn-w8=0.2")
    assert cfg.artifact("mine").path == str(ok) and cfg.budget.recovery_for("knowmem_f", "mine") == 0.1
    assert cfg.variants == (*cfg.variant_ids, "mine")
    with pytest.raises(
        ConfigError, match="'recovery@other' names no quantizer id and no --unlearn-quantized checkpoint"
    ):
        _config(model=str(tiny_model_dir), quantized=[f"mine={ok}"], budget="recovery@other=0.1")
    # the plugin is off without --unlearn-model: a stale ini entry must not break every pytest run
    assert (
        _config(quantized=[f"mine={tmp_path / 'missing'}"], calibration=str(tmp_path / "missing.txt")).artifacts == ()
    )


def test_a_checkpoint_is_hashed_once_per_engine_even_without_the_cache(
    monkeypatch: pytest.MonkeyPatch, tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path, nf4_dir: Path
) -> None:
    """--unlearn-no-cache turns off the on-disk fingerprint cache: the row key and the view of a
    (possibly multi-GB) checkpoint still share one hash."""
    import unlearn_assert.models as models
    from unlearn_assert.config import run_config
    from unlearn_assert.engine import Gate

    hashed: list[str] = []
    real = models.fingerprint
    monkeypatch.setattr(models, "fingerprint", lambda path: hashed.append(str(Path(path).resolve())) or real(path))
    run = run_config(
        model=tiny_unlearned_dir,
        target=tiny_model_dir,
        data=tiny_data_dir,
        quantizers="rtn-w8",
        quantized=[f"shipped={nf4_dir}"],
        no_cache=True,
        device="cpu",
        max_samples=2,
    )
    with Gate(run) as g:
        assert g.check("shipped", "knowmem_f").outcome in ("passed", "failed")
        assert g.check("shipped", "utility").outcome in ("passed", "failed")
    assert hashed.count(str(nf4_dir.resolve())) == 1
