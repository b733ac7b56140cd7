"""From a recipe file or mapping to a validated `Recipe`, and from component specs to objects."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fw.errors import FwError, RecipeError
from fw.recipe.checker import (
    RecipeChecker,
    _component_kind,
    _component_list_kind,
    _hints,
    _takes_any,
    factory_params,
)
from fw.recipe.files import apply_overrides, read_recipe_file
from fw.recipe.schema import Recipe
from fw.registry import Registry, get_registry


def load_recipe(
    path: str | Path,
    overrides: Iterable[str] = (),
    registry: Registry | None = None,
) -> Recipe:
    """Read, merge ``extends``, apply overrides, validate and fill defaults."""
    path = Path(path)
    raw, lines = read_recipe_file(path)
    raw = apply_overrides(raw, overrides)
    checker = RecipeChecker(registry or get_registry(), path, lines)
    return Recipe(checker.check_recipe(raw), path, lines)


def check_component(
    kind: str, spec: Any, registry: Registry | None = None, path: str | None = None
) -> dict[str, Any]:
    """Validate one component spec of ``kind`` (names, types, defaults); return it resolved."""
    return RecipeChecker(registry or get_registry(), None, {}).component(path or kind, spec, kind)


def recipe_from_dict(raw: Mapping[str, Any], registry: Registry | None = None) -> Recipe:
    """Validate a recipe given as a mapping (tests, programmatic use)."""
    checker = RecipeChecker(registry or get_registry(), None, {})
    return Recipe(checker.check_recipe(copy.deepcopy(dict(raw))), None, {})


def build(
    kind: str,
    spec: Mapping[str, Any],
    registry: Registry | None = None,
    path: str | None = None,
    **injected: Any,
) -> Any:
    """Build a validated component spec (nested components first); ``injected`` adds kwargs."""
    registry = registry or get_registry()
    path = path or kind
    entry = registry.get(kind, spec["name"])
    skip = 1 if kind == "optimizer" else 0
    params = factory_params(entry.factory, skip=skip)
    hints = _hints(entry.factory)
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key not in params:
            if _takes_any(entry.factory):
                kwargs[key] = value
                continue
            raise RecipeError(f"{path}.{key}: unknown parameter of {kind} '{spec['name']}'")
        annotation = hints.get(key, params[key].annotation)
        sub_kind = _component_kind(annotation)
        if sub_kind is not None and isinstance(value, Mapping):
            value = build(sub_kind, value, registry, f"{path}.{key}")
        list_kind = _component_list_kind(annotation)
        if list_kind is not None and isinstance(value, (list, tuple)):
            value = [
                build(list_kind, v, registry, f"{path}.{key}.{i}") if isinstance(v, Mapping) else v
                for i, v in enumerate(value)
            ]
        kwargs[key] = value
    kwargs.update(injected)
    if kind == "optimizer":
        return functools.partial(entry.factory, **kwargs)
    try:
        obj = entry.factory(**kwargs)
    except FwError as err:
        if isinstance(err, ValueError) and not isinstance(err, RecipeError):
            raise RecipeError(f"{path}: {err}") from err  # a value error: name the key
        raise
    except Exception as err:  # any other refusal of the recipe's values (--debug shows it)
        if isinstance(err, RuntimeError) and "allocate" in str(err):
            raise RecipeError(
                f"{path}: {kind} '{spec['name']}' with these parameters needs more memory than "
                f"this machine has. Lower the sizes under '{path}'."
            ) from err
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        kind_of = "" if isinstance(err, (ValueError, TypeError, KeyError)) else type(err).__name__
        raise RecipeError(
            f"{path}: {kind} '{spec['name']}' rejects its parameters: "
            f"{kind_of + ': ' if kind_of else ''}{message}. Fix the value under '{path}' in the "
            "recipe (or its dotted override)."
        ) from err
    try:
        obj._fw_spec = dict(spec)  # every component round-trips to its recipe entry
    except AttributeError:
        pass
    return obj
