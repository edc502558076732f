"""benchmarks/demo_seeds.py's ``--recipe`` overrides: the shipped recipe's key when nothing changes, and each field
typed as declared (an optional field such as ``retain_batch_size`` or ``sure_threshold`` is None by default)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_seeds.py"


@pytest.fixture(scope="module")
def demo_seeds() -> Any:
    spec = importlib.util.spec_from_file_location("demo_seeds", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overrides_take_each_fields_declared_type(demo_seeds: Any) -> None:
    from unlearn_assert.demo.family import DEFAULT_RECIPE

    assert demo_seeds.parse_recipe("").key() == DEFAULT_RECIPE.key()
    recipe = demo_seeds.parse_recipe(
        "npo_klr.retain_batch_size=2,npo_klr_sure.sure_top=0.1,npo_klr.lr=4e-5,lm.epochs=18,corpus.forget_topics=court"
    )
    plain, sure = recipe.unlearn_recipe("npo_klr").settings, recipe.unlearn_recipe("npo_klr_sure").settings
    assert plain.retain_batch_size == 2 and isinstance(plain.retain_batch_size, int)
    assert plain.lr == 4e-5 and sure.sure_top == 0.1 and recipe.lm.epochs == 18
    assert recipe.corpus.forget_topics == "court"
    threshold = demo_seeds.parse_recipe("npo_klr_sure.sure_threshold=0.5")
    assert threshold.unlearn_recipe("npo_klr_sure").settings.sure_threshold == 0.5  # a float, not int(0.5)
    with pytest.raises(SystemExit, match="no field 'nonsense'"):
        demo_seeds.parse_recipe("lm.nonsense=1")
