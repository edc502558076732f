"""config.py: one rule per setting, written once (issue 25's retrain-AUC bug and its kin)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from unlearn_assert.benchmark.muse import reference_problem
from unlearn_assert.config import REFERENCE_AUC_RANGE, ConfigError, parse_retrain_auc, reference_auc_ok


def test_the_reference_auc_range_is_one_rule_for_the_option_the_library_and_the_report(
    target: Any, tiny_data: Any
) -> None:
    """The option accepted (0, 1), ``evaluate`` (0, 1], and the privleak item told users to pass a value
    "in (0, 1]" that the option then refused. Now an AUC of 1 is accepted everywhere, 0 nowhere."""
    from unlearn_assert.metrics import evaluate

    assert REFERENCE_AUC_RANGE == "(0, 1]"
    assert parse_retrain_auc("1") == (1.0, None)
    assert reference_problem(1.0, "option") is None
    ev = evaluate(target, tiny_data, metrics="privleak", retrain_auc=1.0, max_samples=2)
    assert ev.extras["auc_reference"] == 1.0 and math.isfinite(ev.values["privleak"])

    message = reference_problem(0.0, "option")
    assert message is not None and REFERENCE_AUC_RANGE in message  # the advice names the range the option takes
    fake = SimpleNamespace(model=object(), tokenizer=object())  # refused before any model is used
    for bad in (0.0, -0.1, 1.5, float("nan")):
        assert not reference_auc_ok(bad)
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            parse_retrain_auc(str(bad))
        with pytest.raises(ConfigError, match=r"\(0, 1\]"):
            evaluate(fake, tiny_data, metrics="privleak", retrain_auc=bad)


def test_every_path_option_is_marked_once() -> None:
    """Path handling (``~``, relative to the ini file) is decided by one flag on the option table."""
    from unlearn_assert.config import OPTIONS

    paths = {o.name for o in OPTIONS if o.path}
    assert paths == {
        "model",
        "target",
        "retrain",
        "data",
        "json",
        "html",
        "cache_dir",
        "calibration",
        "lm_eval_include",
    }


def test_a_run_config_exists_only_validated() -> None:
    """Every value of a RunConfig was validated (``build_run_config`` / ``run_config``): building one directly,
    or changing one with ``dataclasses.replace``, would skip that, so both are refused."""
    import dataclasses

    from unlearn_assert.config import RunConfig, run_config

    with pytest.raises(TypeError, match="run_config"):
        RunConfig(model="m", verdict="sometimes")
    run = run_config(model="m", target="t", data="d", quantizers="rtn-w8, bnb-nf4", verdict="STRICT")
    assert run.variant_ids == ("rtn-w8", "bnb-nf4") and run.verdict == "strict"
    with pytest.raises(TypeError, match="run_config"):
        dataclasses.replace(run, verdict="sometimes")
    with pytest.raises(ConfigError, match="unknown gate setting"):
        run_config(model="m", verdicts="strict")
    with pytest.raises(ConfigError, match="--unlearn-verdict"):
        run_config(model="m", verdict="sometimes")
