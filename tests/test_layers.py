"""The import rule between the core, the library layer and the plugins; no import cycles.

Every import counts, also one inside a function (a cycle hidden there is still a cycle), except
those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "framework", ROOT / "plugins"]
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").is_file())


def _module_name(path: Path) -> str:
    base = next(s for s in SOURCES if s in path.parents)
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(f): f for source in SOURCES for f in sorted(source.rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve(name: str) -> str | None:
    """The deepest first-party module ``name`` refers to (``fw.lib.icon.icon_loss`` -> module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path) -> set[str]:
    """First-party modules that ``path`` imports anywhere outside ``if TYPE_CHECKING:``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # `from fw import api` imports the module fw.api
                full = f"{node.module}.{alias.name}"
                found.add(full if full in MODULES else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in (_resolve(n) for n in found) if m is not None}


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> str:
    """``core``, ``library`` or the plugin package a module belongs to."""
    if module == "fw.lib" or module.startswith("fw.lib."):
        return "library"
    if module == "fw" or module.startswith("fw."):
        return "core"
    return module.split(".")[0]


def test_the_walk_sees_every_layer():
    layers = {layer(m) for m in MODULES}
    assert {"core", "library", "fw_sne", "fw_denseav", "fw_ksam"} <= layers
    assert "fw.lib.sparse" in GRAPH["fw.lib.icon"]
    assert "fw.lib.sparse" in GRAPH["fw_sne.distributions"]
    assert "fw.runs" in GRAPH["fw"]  # imports inside functions count


@pytest.mark.parametrize(
    ("lower", "allowed"), [("core", ("core",)), ("library", ("core", "library"))]
)
def test_core_and_library_import_nothing_above_them(lower, allowed):
    bad = [
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if layer(m) == lower
        for d in deps
        if layer(d) not in allowed
    ]
    assert not bad, f"the {lower} may import only {' and '.join(allowed)}:\n" + "\n".join(bad)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugins_import_only_what_they_declare(plugin):
    declared = set(importlib.import_module(plugin).requires)
    assert declared <= set(PLUGINS), f"{plugin}.requires names unknown plugins"
    bad = [
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if layer(m) == plugin
        for d in deps
        if layer(d) not in ("core", "library", plugin) and layer(d) not in declared
    ]
    assert not bad, (
        f"{plugin} imports plugins it does not declare; add them to `requires` in "
        f"plugins/{plugin}/__init__.py or move the shared code to fw.lib:\n" + "\n".join(bad)
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert not _cycles(GRAPH), f"import cycles: {_cycles(GRAPH)}"
