"""tests/README.md maps every module of the package to the test file a newcomer finds it in (issue 25): each module
is in the table, and each file the table names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| `([\w.]+)` \| (.+) \|$")


def _table() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for line in (REPO / "tests" / "README.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            table[match.group(1)] = re.findall(r"`([^`]+)`", match.group(2))
    return table


def _modules() -> set[str]:
    names = set()
    for path in (REPO / "unlearn_assert").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names | {"unlearn_assert.suites.test_budget"}


def test_every_module_is_in_the_table_and_every_file_exists() -> None:
    table = _table()
    assert sorted(_modules() - set(table)) == [], "add these modules to tests/README.md"
    assert sorted(set(table) - _modules()) == [], "remove these modules from tests/README.md: they are gone"
    missing = sorted(f for files in table.values() for f in files if not (REPO / f).is_file())
    assert missing == [] and all(table.values())
