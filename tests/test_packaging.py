"""Packaging: every subpackage is listed in pyproject (they are listed explicitly because the
built-in suite is mapped from suites/), and the suite is found where the plugin looks."""

from __future__ import annotations

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "unlearn_assert").rglob("__init__.py")}
    found.add("unlearn_assert.suites")
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_suite_is_found() -> None:
    from unlearn_assert.plugin import suite_path

    assert suite_path().is_file()
    assert suite_path().read_text() == (REPO / "suites" / "test_budget.py").read_text()
