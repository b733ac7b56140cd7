"""The core knows no method by name: no code, string, docstring or comment of the core names a
registered component or a plugin, and the core imports no plugin (tests/test_layers.py)."""

from __future__ import annotations

import ast
import re
from importlib.metadata import entry_points
from pathlib import Path

import fw
from fw.hookspecs import KINDS
from fw.registry import get_registry

HOST = Path(fw.__file__).resolve().parent
#: registered names that are also plain words of the contracts' own vocabulary; as whole words
#: in prose they name the general idea (a string literal equal to one is still caught)
ORDINARY_WORDS = {
    "data", "table", "common", "backbones", "embedding", "graph", "identity", "exact", "union",
    "linear", "cluster", "simple", "attention", "knn", "icon",
}  # fmt: skip


def core_files(root: Path) -> list[Path]:
    """The core's modules: every file under framework/fw except the library layer."""
    return sorted(p for p in root.rglob("*.py") if "lib" not in p.relative_to(root).parts)


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
    for path in core_files(HOST):
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


def host_words(words: set[str]) -> list[str]:
    """``file:line word`` for every whole-word mention in the core's text, comments included."""
    pattern = re.compile(
        r"(?<![\w.-])(" + "|".join(map(re.escape, sorted(words))) + r")(?![\w-])", re.I
    )
    hits = []
    for path in core_files(HOST):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits += [f"{path.name}:{number} {m.group(1)}" for m in pattern.finditer(line)]
    return hits


def _vocabulary_of_plugins() -> set[str]:
    registry = get_registry()
    names = {e.name for k in KINDS for e in registry.entries(k.name)}
    plugins = {ep.name for ep in entry_points(group="fw")}
    packages = {ep.value.split(".")[0] for ep in entry_points(group="fw")}
    return (names | plugins | packages) - ORDINARY_WORDS


def test_framework_names_no_registered_component():
    registry = get_registry()
    names = {e.name for k in KINDS for e in registry.entries(k.name)}
    assert host_mentions(names) == []


def test_core_text_names_no_component_or_plugin():
    assert host_words(_vocabulary_of_plugins()) == []


def test_the_word_scan_finds_prose(tmp_path, monkeypatch):
    (tmp_path / "prose.py").write_text("# the STEGO loss, fw_stego.loss\nx = 1  # tsne_gd\n")
    monkeypatch.setattr(f"{__name__}.HOST", tmp_path)
    found = host_words({"stego", "fw_stego", "tsne_gd", "tsne"})
    assert found == ["prose.py:1 STEGO", "prose.py:1 fw_stego", "prose.py:2 tsne_gd"]


def test_the_scan_finds_a_mention(tmp_path, monkeypatch):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('def f():\n    return {"name": "tsne"}\n')
    monkeypatch.setattr(f"{__name__}.HOST", tmp_path)
    assert host_mentions({"tsne"}) == ["sneaky.py:2 'tsne'"]
