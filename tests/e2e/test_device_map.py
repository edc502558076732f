"""Models larger than one device: accelerate's device map, exercised on the CPU by a ``max_memory``
that pushes part of the tiny model off its first device (to disk), and the gate with
``--unlearn-device-map``: the same numbers as an undispatched load, and quantizers that cannot run
on a dispatched model refusing with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_assert.config import build_run_config
from unlearn_assert.errors import ConfigError, QuantizerError
from unlearn_assert.models import input_device, is_dispatched, load_model


def test_a_partly_offloaded_model_gives_the_undispatched_numbers(tiny_model_dir: Path, tiny_data_dir: Path) -> None:
    import unlearn_assert as ua

    whole = load_model(tiny_model_dir, device="cpu")
    weights = sum(p.numel() * p.element_size() for p in whole.model.parameters())
    split = load_model(tiny_model_dir, device="cpu", device_map="auto", max_memory={"cpu": weights // 2})
    placed = set(split.info["device_map"].values())
    assert is_dispatched(split.model) and "disk" in placed, split.info["device_map"]
    assert any(p.device.type == "meta" for p in split.model.parameters())  # really not in memory
    assert str(input_device(split.model)) == "cpu" and not is_dispatched(whole.model)
    a = ua.evaluate(whole, tiny_data_dir, max_samples=3)
    b = ua.evaluate(split, tiny_data_dir, max_samples=3)
    assert a.values == b.values and a.extras["auc"] == b.extras["auc"]
    with pytest.raises(QuantizerError, match="offloaded part of .* to disk"):
        with ua.quantized(split, "rtn-w8"):
            pass
    with pytest.raises(
        QuantizerError, match=r"'bnb-fp4' cannot run on a model dispatched across devices .* use rtn-\*"
    ):
        with ua.quantized(split, "bnb-fp4"):
            pass
    assert tiny_model_dir.is_dir() and not any(
        p.name.endswith(".dat") for p in tiny_model_dir.iterdir()
    )  # offload never there


def test_the_gate_with_a_device_map_equals_the_gate_without(
    tiny_unlearned_dir: Path, tiny_model_dir: Path, tiny_data_dir: Path
) -> None:
    import unlearn_assert as ua

    settings = {"quantizers": "rtn-w8", "max_samples": 2, "device": "cpu", "no_cache": True}
    plain = ua.gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, **settings)
    mapped = ua.gate(tiny_unlearned_dir, tiny_model_dir, tiny_data_dir, device_map="auto", **settings)
    assert [(r["model"], r["quantizer"], r["values"]) for r in mapped.rows] == [
        (r["model"], r["quantizer"], r["values"]) for r in plain.rows
    ]
    assert [v.message for v in mapped.verdicts] == [v.message for v in plain.verdicts]


def test_device_map_option_is_validated() -> None:
    run = build_run_config(lambda opt: {"device_map": "auto"}.get(opt.name, opt.default))
    assert run.device_map == "auto"
    with pytest.raises(ConfigError, match="--unlearn-device-map: 'everywhere' is not one of accelerate's device maps"):
        build_run_config(lambda opt: {"device_map": "everywhere"}.get(opt.name, opt.default))
