"""The host knows no method by name: no string in framework/fw names a registered component."""

from __future__ import annotations

import ast
from pathlib import Path

import fw
from fw.hookspecs import KINDS
from fw.registry import get_registry

HOST = Path(fw.__file__).resolve().parent


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _vocabulary(tree: ast.Module) -> set[int]:
    """Module-level UPPER_CASE constants: context keys and metric prefixes, not components."""
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(
            isinstance(t, ast.Name) and t.id.isupper() for t in node.targets
        ):
            found.update(id(n) for n in ast.walk(node.value))
    return found


def host_mentions(names: set[str]) -> list[str]:
    """``file:line 'name'`` for every string literal of the host that is a registered name."""
    hits = []
    for path in sorted(HOST.glob("*.py")):
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree) | _vocabulary(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value in names
                and id(node) not in skip
            ):
                hits.append(f"{path.name}:{node.lineno} {node.value!r}")
    return hits


def test_framework_names_no_registered_component():
    registry = get_registry()
    names = {e.name for k in KINDS for e in registry.entries(k.name)}
    assert host_mentions(names) == []


def test_the_scan_finds_a_mention(tmp_path, monkeypatch):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('def f():\n    return {"name": "tsne"}\n')
    monkeypatch.setattr(f"{__name__}.HOST", tmp_path)
    assert host_mentions({"tsne"}) == ["sneaky.py:2 'tsne'"]
