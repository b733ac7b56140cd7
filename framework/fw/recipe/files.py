"""Reading recipe files: YAML with line numbers, ``extends`` chains and dotted overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fw.errors import RecipeError


def _node_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[key] = key_node.start_mark.line + 1
            _node_lines(value_node, key, out)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    if not path.is_file():
        raise RecipeError(
            f"recipe file '{path}' not found (working directory: {Path.cwd()}). "
            "Pass the path of a YAML recipe, e.g. `fw run recipes/tsne_digits.yaml`."
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of keys, got {type(data).__name__}")
    lines: dict[str, int] = {}
    if node is not None:
        _node_lines(node, "", lines)
    return data, lines


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            # A nested component that changes its name starts from a clean slate.
            if "name" in value and value["name"] != out[key].get("name"):
                out[key] = copy.deepcopy(dict(value))
            else:
                out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_file(
    path: Path, seen: tuple[Path, ...] = ()
) -> tuple[dict[str, Any], dict[str, int]]:
    """A recipe file's mapping with its ``extends`` chain merged, and its key -> line numbers."""
    path = path.resolve() if path.exists() else path
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise RecipeError(f"recipes extend each other in a cycle: {chain}")
    data, lines = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return data, lines
    merged: dict[str, Any] = {}
    for parent in [parents] if isinstance(parents, str) else list(parents):
        parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
        if not parent_path.is_file():
            raise RecipeError(
                f"{path}:{lines.get('extends', '?')}: extends '{parent}', but {parent_path} "
                "does not exist (paths are relative to the recipe file)"
            )
        parent_data, _ = read_recipe_file(parent_path, (*seen, path))
        merged = _deep_merge(merged, parent_data)
    return _deep_merge(merged, data), lines


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise RecipeError(
            f"override '{text}' is not of the form key.path=value (e.g. trainer.max_steps=200)"
        )
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise RecipeError(f"override '{text}' has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set dotted keys; intermediate mappings are created as needed."""
    out = copy.deepcopy(raw)
    parsed = [(text, *parse_override(text)) for text in overrides]
    parsed.sort(key=lambda item: item[1][-1] != "name")  # stable: name changes first
    for text, parts, value in parsed:
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise RecipeError(f"override '{text}': '{where}' is a value, not a mapping")
            node = child
        if len(parts) > 1 and parts[-1] == "name" and node.get("name", value) != value:
            node.clear()
        node[parts[-1]] = value
    return out
