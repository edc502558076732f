"""Every name a docstring or comment of the package points at exists: dotted names, Sphinx roles, file paths.

Why: readers believe the prose. A docstring that names a moved module (``gate/sources/...``), a function
that was renamed, or a class that no longer exists sends them looking for something that is not there.
Static and cheap: the package is parsed, not imported, so heavy backends never load.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "unlearn_assert"
ROOT = "unlearn_assert"

ROLE = re.compile(r":(?:mod|func|class|meth|data|attr|exc|obj):`~?([^`<>]+?)`")
DOTTED = re.compile(r"(?<![\w.])(unlearn_assert(?:\.\w+)+)")
#: where a path in prose lives in this checkout when it is not where the installed package has it
INSTALLED = {"unlearn_assert/suites": "suites"}
PATH = re.compile(r"(?<![\w./-])((?:unlearn_assert|tests|benchmarks|docs|suites|examples|fixtures)/[\w./-]*\w)")


@dataclass
class Module:
    name: str
    is_package: bool
    names: set[str] = field(default_factory=set)  # top level: defs, classes, assignments, imports
    members: dict[str, set[str]] = field(default_factory=dict)  # class -> its attributes and methods


def _collect(path: Path) -> Module:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    mod = Module(".".join([ROOT, *parts]), path.name == "__init__.py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            mod.names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            mod.names.add(node.name)
            members: set[str] = set()
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add(sub.name)
                elif isinstance(sub, ast.AnnAssign) and isinstance(sub.target, ast.Name):
                    members.add(sub.target.id)
                elif isinstance(sub, ast.Assign):
                    members.update(t.id for t in sub.targets if isinstance(t, ast.Name))
                elif isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self":
                    members.add(sub.attr)
            mod.members[node.name] = members
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        mod.names.add(n.id)
            lazy = any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets)
            if lazy and isinstance(node.value, ast.Dict):  # a lazy public API: its keys are the module's names
                mod.names.update(
                    k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
                )
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mod.names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If):  # TYPE_CHECKING imports and other guarded definitions
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    mod.names.update((a.asname or a.name).split(".")[0] for a in sub.names)
                elif isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    mod.names.add(sub.name)
    return mod


def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        mod = _collect(path)
        found[mod.name] = mod
    return found


def resolves(name: str, mods: dict[str, Module], here: Module | None = None) -> bool:
    """True when ``name`` (absolute ``unlearn_assert.x.y``, relative ``.x.y`` from ``here``, or a bare name
    of ``here``) names a module, a module attribute or a class member."""
    name = name.strip().rstrip("()")
    if name.startswith("."):
        if here is None:
            return False
        package = here.name if here.is_package else here.name.rpartition(".")[0]
        level = len(name) - len(name.lstrip("."))
        base = package.split(".")[: len(package.split(".")) - level + 1]
        name = ".".join(base + [name.lstrip(".")]) if name.lstrip(".") else ".".join(base)
    elif not name.startswith(ROOT):
        if here is None:
            return False
        head, _, rest = name.partition(".")
        if head in here.names:  # a name of this module (an imported one's own attributes are not checked)
            return not rest or head not in here.members or rest.split(".")[0] in here.members[head]
        return not rest and any(head in members for members in here.members.values())  # a member of a class here
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        mod = mods.get(".".join(parts[:cut]))
        if mod is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        if rest[0] not in mod.names:
            sub = ".".join(parts[: cut + 1])
            return sub in mods
        if len(rest) == 1:
            return True
        return rest[0] not in mod.members or rest[1] in mod.members[rest[0]]
    return False


def _prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every docstring and comment of a file."""
    text = path.read_text(encoding="utf-8")
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(text)):  # every string statement: docstrings of modules, classes, functions, fields
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.append((node.lineno, node.value.value))
    for i, line in enumerate(text.splitlines(), 1):
        if "#" in line:
            out.append((i, line[line.index("#") :]))
    return out


def test_every_name_and_path_in_the_package_prose_exists() -> None:
    mods = modules()
    missing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = mods[_collect(path).name]
        rel = path.relative_to(REPO)
        for line, text in _prose(path):
            for name in ROLE.findall(text):
                if not resolves(name, mods, here):
                    missing.append(f"{rel}:{line}: {name}")
            for name in DOTTED.findall(text):
                if not resolves(name, mods, here):
                    missing.append(f"{rel}:{line}: {name}")
            for ref in PATH.findall(text):
                ref = ref.split(":")[0]
                for installed, here_ in INSTALLED.items():
                    ref = here_ + ref[len(installed) :] if ref.startswith(installed) else ref
                if not (REPO / ref).exists() and not any((REPO / ref).parent.glob(Path(ref).name)):
                    missing.append(f"{rel}:{line}: {ref}")
    assert missing == [], "\n".join(missing)


def test_the_check_can_fail() -> None:
    mods = modules()
    assert resolves("unlearn_assert.engine.runner.Gate.check", mods)
    assert resolves("unlearn_assert.render.schema", mods)
    assert not resolves("unlearn_assert.report.schema", mods)  # where the schema was before render/
    assert not resolves("unlearn_assert.engine.runner.Gate.no_such_method", mods)
    assert not resolves("unlearn_assert.no_such_module", mods)
    here = mods["unlearn_assert.engine.runner"]
    assert resolves(".views.GateView", mods, here) and not resolves(".views.Views", mods, here)
