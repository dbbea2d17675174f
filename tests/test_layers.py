"""The layer rules of the package, read from the source (ast; nothing is imported, nothing downloaded).

Every import between two files of `src/vlaforge` counts, also one inside a function (it couples the two
files all the same). Two rules, the map of docs/architecture.md:

* no file-level import cycles: no file reaches itself through imports;
* arrows run down the layer order only: a package imports itself, the ground files and the packages
  listed for it in `MAY_IMPORT`, nothing else. A new package must be placed in the order here (and in
  docs/architecture.md) before anything can import it.

`python ../shared/tools/layers.py` prints the same map with file:line for every break.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "src" / "vlaforge"

# Files anything may import; they import nothing of vlaforge but the version in vlaforge/__init__.py.
GROUND = {"vlaforge", "vlaforge.types", "vlaforge.errors", "vlaforge.info"}
# Entry points above every package: they may import anything, and nothing imports them.
TOP = {"vlaforge.cli", "vlaforge.quickstart"}
# The layer order, lowest first: package -> the packages it may import besides itself and GROUND.
MAY_IMPORT: dict[str, set[str]] = {
    "transforms": set(),
    "runtime": set(),
    "data": {"transforms"},
    "models": {"transforms"},
    "policies": {"models", "transforms"},
    "convert": {"policies", "models", "data", "transforms"},
    "inference": {"policies", "models", "runtime", "transforms"},
    "envs": {"data", "transforms"},
    "eval": {"inference", "policies", "models", "envs", "runtime", "data", "transforms"},
    "export": {"inference", "policies", "models", "runtime", "transforms"},
    "serve": {"inference", "policies", "models", "runtime", "transforms"},
    "bench": {"inference", "policies", "models", "runtime", "data", "transforms"},
    "train": {"eval", "inference", "policies", "models", "envs", "runtime", "data", "transforms"},
}
# Known cycles being fixed elsewhere, as sorted tuples of the files in them (none today).
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_statements(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (in functions, classes, if / try blocks); expressions, which
    hold none, are not walked, which keeps the whole package well under a second."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(node, field, ()))
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the vlaforge modules it imports (`from a import b` counts as a.b when b is a module)."""
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        targets: set[str] = set()
        for node in import_statements(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                while name and name not in files:  # a name inside a module -> that module
                    name = name.rpartition(".")[0]
                if name and name != mod:
                    targets.add(name)
        graph[mod] = targets
    return graph


def layer(mod: str) -> str:
    """The package of a module ('vlaforge.models.lm.cache' -> 'models'); a top-level file is its own name."""
    return mod.split(".")[1] if "." in mod else mod


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one file (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_every_file_and_function_level_imports(graph):
    assert len(graph) == sum(1 for _ in ROOT.rglob("*.py"))
    assert "vlaforge.inference.load" in graph["vlaforge.serve.commands"]  # imported inside _serve()


def test_no_file_level_import_cycles(graph):
    unexpected = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not unexpected, "import cycles (files that reach each other):\n" + "\n".join(map(str, unexpected))


def test_imports_run_down_the_layer_order(graph):
    packages = {layer(m) for m in graph if m not in GROUND | TOP}
    assert packages == set(MAY_IMPORT), "place every package in MAY_IMPORT (and docs/architecture.md)"
    bad = []
    for mod, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target in TOP and mod not in TOP:
                bad.append(f"{mod} -> {target} (an entry point)")
            elif mod in GROUND and target not in GROUND:
                bad.append(f"{mod} -> {target} (a ground file imports nothing above it)")
            elif mod not in GROUND | TOP and target not in GROUND | TOP:
                a, b = layer(mod), layer(target)
                if a != b and b not in MAY_IMPORT[a]:
                    bad.append(f"{mod} -> {target} ({a} may import {sorted(MAY_IMPORT[a]) or 'nothing'})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)
