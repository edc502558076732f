"""The package's import graph: no cycles, no upward imports, no private names across modules.

Every import statement of ``unlearn_assert`` counts, wherever it stands (module level, inside a
function, under ``TYPE_CHECKING``): a lazy import is still a dependency. A module may import modules
of its own layer or of a lower one; within a layer the imports must not form a cycle. The layers,
lowest first (a name stands for the module or for every module of the package it names):

====  ========================================================================================
0     ``version``, ``errors``, ``names``: the vocabulary, ``fs`` (broken-link facts) and ``plain`` (plain data,
digests),
      importing nothing of ours
1     ``data`` (MUSE files, their Hugging Face forms, items linked to forget documents), ``hardware``,
      ``variants`` (the id grammar: quantizer and attack ids, id lists), ``models`` (safe loading, fingerprints;
      torch only inside functions)
2     ``cache`` (results and model fingerprints by content), ``config`` (options, budgets,
      RunConfig: pure Python), ``render.schema``, ``quant.gguf_header`` (GGUF headers and names, pure Python),
      ``quant.llama_cpp_source`` (where llama.cpp's converter is), ``quant.support`` (families a backend refuses)
3     ``quant`` (the package), ``quant.base`` (the backend contract), ``quant.calibration``,
      ``quant.packed``, ``testing`` (tiny-model builders)
4     ``quant.rtn|bnb|hqq|llmc|gguf|gguf_convert|llama_cpp|artifact`` (backends, artifacts), ``metrics``,
      ``render`` (terminal and HTML renderers of a report), ``lmeval`` (lm-evaluation-harness as the scorer:
      WMDP-form tasks, building tasks, evaluating a loaded model; lm-eval imported inside functions)
5     ``unlearning``, ``scaleout`` (the threads and GPU of one process of a parallel run, claims on rows),
      ``benchmark`` (what a row measures: MUSE and the other benchmarks; its ``registry`` of names is layer 1)
6     ``engine`` (inputs < sources < rows < derive < verdicts < report < views < runner)
7     ``demo``, ``lmeval.backend`` (the lm-eval model backend over the engine's sources)
8     ``plugin.session`` and the plugin's other parts (pytest-side state, the payload channel, the report writer)
9     ``plugin`` (the hooks), ``cli``
10    ``unlearn_assert`` itself (the lazy public API)
====  ========================================================================================

So ``config`` imports neither ``demo`` nor ``quant.checkpoint`` (the plugin resolves ``demo:NAME``
before it builds the run config), ``metrics`` imports neither ``engine`` nor the verdicts, and
nothing below the engine knows it exists.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "unlearn_assert"
ROOT = "unlearn_assert"

LAYERS: dict[str, int] = {
    "version": 0,
    "errors": 0,
    "names": 0,
    "fs": 0,
    "plain": 0,
    "data": 1,
    "hardware": 1,
    "variants": 1,
    "models": 1,
    "cache": 2,
    "config": 2,
    "render.schema": 2,
    "quant.gguf_header": 2,
    "quant.llama_cpp_source": 2,
    "quant.support": 2,
    "quant": 3,
    "quant.base": 3,
    "quant.calibration": 3,
    "quant.packed": 3,
    "testing": 3,
    "quant.rtn": 4,
    "quant.bnb": 4,
    "quant.hqq": 4,
    "quant.llmc": 4,
    "quant.gguf": 4,
    "quant.gguf_convert": 4,
    "quant.artifact": 4,
    "quant.llama_cpp": 4,
    "metrics": 4,
    "render": 4,
    "lmeval": 4,
    "unlearning": 5,
    "scaleout": 5,
    "benchmark": 5,
    "benchmark.registry": 1,
    "engine": 6,
    "demo": 7,
    "lmeval.backend": 7,
    "plugin.session": 8,
    "plugin.channel": 8,
    "plugin.writer": 8,
    "plugin.internal": 8,
    "plugin": 9,
    "cli": 9,
    "": 10,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([ROOT, *parts])


def layer(name: str) -> int:
    """The layer of a module: the longest entry of LAYERS that is the module or one of its packages."""
    rel = name[len(ROOT) + 1 :] if name != ROOT else ""
    while True:
        if rel in LAYERS:
            return LAYERS[rel]
        if not rel:
            raise AssertionError(f"{name} has no layer; add it to LAYERS (and to the docstring's table)")
        rel = rel.rpartition(".")[0]


def exists(name: str) -> bool:
    rel = PACKAGE.joinpath(*name.split(".")[1:])
    return rel.with_suffix(".py").is_file() or (rel / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement of one file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{module}.{n}" for n in names if exists(f"{module}.{n}")]
            out += [(sub, []) for sub in submodules]
            rest = [n for n in names if not exists(f"{module}.{n}")]
            if rest or not submodules:
                out.append((module, rest))
    return [(m, names) for m, names in out if m == ROOT or m.startswith(ROOT + ".")]


def graph() -> dict[str, dict[str, list[str]]]:
    return {module_name(p): {m: n for m, n in imports(p)} for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down_or_sideways() -> None:
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)})"
        for src, deps in graph().items()
        for dst in deps
        if dst != src and layer(dst) > layer(src)
    ]
    assert upward == []


def find_cycles(deps: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk of ``deps`` meets, as "a -> b -> a"."""
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(deps.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(deps):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_cycles() -> None:
    deps = {src: {d for d in targets if d != src} for src, targets in graph().items()}
    assert find_cycles(deps) == []


def test_no_module_imports_another_modules_private_names() -> None:
    private = [
        f"{src} imports {name} from {dst}"
        for src, targets in graph().items()
        for dst, names in targets.items()
        for name in names
        if name.startswith("_") and not name.startswith("__") and dst != src
    ]
    assert private == []


def test_the_layer_rule_catches_what_it_is_for() -> None:
    """The checks above can fail: the rule they apply flags the dependencies this design removed."""
    assert layer("unlearn_assert.config") < layer("unlearn_assert.demo.family")
    assert layer("unlearn_assert.config") < layer("unlearn_assert.quant.artifact")
    assert layer("unlearn_assert.metrics.privleak") < layer("unlearn_assert.engine.verdicts")
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    found = imports(PACKAGE / "engine" / "runner.py")
    assert ("unlearn_assert.engine.rows", ["Row", "RowKey", "cached_row", "compute_row", "row_key"]) in found
