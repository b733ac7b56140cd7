"""Checking a recipe against the factories' signatures: names, types, required values, defaults."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import attrs

from fw import hookspecs
from fw.errors import RecipeError, RegistryError
from fw.recipe.schema import TOP_LEVEL, LoggerConfig, TrainerConfig
from fw.registry import Registry

#: parameter annotation -> component kind built from a nested mapping (one row per hook kind)
_KIND_OF_ANNOTATION: dict[Any, str] = {k.base: k.name for k in hookspecs.KINDS}


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "any"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _hints(factory: Callable[..., Any]) -> dict[str, Any]:
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no type checks
        return {}


def factory_params(factory: Callable[..., Any], skip: int = 0) -> dict[str, inspect.Parameter]:
    """Keyword parameters a recipe may set (``self`` and the first ``skip`` positionals dropped)."""
    sig = inspect.signature(factory)
    params = [
        p
        for p in sig.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    return {p.name: p for p in params[skip:]}


def _takes_any(factory: Callable[..., Any]) -> bool:
    """Whether the factory accepts ``**kwargs`` (extra recipe keys pass through to it)."""
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(factory).parameters.values()
    )


class RecipeChecker:
    """Validates a raw recipe mapping against the registry; errors name file, line and key."""

    def __init__(self, registry: Registry, source: Path | None, lines: dict[str, int]) -> None:
        self.registry = registry
        self.source = source
        self.lines = lines

    def fail(self, key_path: str, message: str) -> RecipeError:
        where = str(self.source) if self.source else "<recipe>"
        line = self._line(key_path)
        loc = f"{where}:{line}" if line else where
        return RecipeError(f"{loc}: {key_path}: {message}" if key_path else f"{loc}: {message}")

    def _line(self, key_path: str) -> int | None:
        parts = key_path.split(".")
        while parts:
            line = self.lines.get(".".join(parts))
            if line:
                return line
            parts.pop()
        return None

    def check_recipe(self, raw: dict[str, Any]) -> dict[str, Any]:
        for key in raw:
            if key not in TOP_LEVEL:
                close = difflib.get_close_matches(str(key), list(TOP_LEVEL), n=1, cutoff=0.5)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                allowed = ", ".join(k for k in TOP_LEVEL if k != "extends")
                raise self.fail(str(key), f"unknown top-level key.{hint} Allowed keys: {allowed}.")
        for required in ("learner", "data"):
            if required not in raw:
                raise self.fail("", f"missing the required top-level key '{required}'")
        out: dict[str, Any] = {}
        if "description" in raw:
            out["description"] = raw["description"]
        out["seed"] = self.value("seed", raw.get("seed", 0), int)
        out["data"] = self.component("data", raw["data"], "dataset")
        if raw.get("eval_data") is not None:
            out["eval_data"] = self.component("eval_data", raw["eval_data"], "dataset")
        out["learner"] = self.component("learner", raw["learner"], "learner")
        out["trainer"] = self.config("trainer", raw.get("trainer") or {}, TrainerConfig)
        out["logger"] = self.config("logger", raw.get("logger") or {}, LoggerConfig)
        return out

    def config(self, path: str, value: Any, cls: type) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping of settings, got {value!r}")
        fields = {f.name: f for f in attrs.fields(cls)}
        hints = typing.get_type_hints(cls)
        out = {}
        for key, v in value.items():
            if key not in fields:
                raise self.fail(f"{path}.{key}", self.unknown(key, list(fields), path))
            out[key] = self.value(f"{path}.{key}", v, hints[key])
            low = fields[key].metadata.get("min")
            if low is not None and isinstance(out[key], int | float) and out[key] < low:
                raise self.fail(f"{path}.{key}", f"must be >= {low}, got {out[key]}")
        for name, field in fields.items():
            out.setdefault(name, field.default)
        return out

    @staticmethod
    def unknown(key: str, allowed: list[str], what: str) -> str:
        """The message for an unknown key, with the closest allowed name."""
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        names = ", ".join(allowed) or "none"
        return f"unknown parameter '{key}' of {what}.{hint} Allowed: {names}."

    def component(self, path: str, spec: Any, kind: str) -> dict[str, Any]:
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise self.fail(
                path, f"expected a {kind} component written {{name: ..., <params>}}, got {spec!r}"
            )
        name = spec["name"]
        try:
            entry = self.registry.get(kind, str(name))
        except RegistryError as exc:
            raise self.fail(f"{path}.name", str(exc)) from None
        skip = 1 if kind == "optimizer" else 0
        params = factory_params(entry.factory, skip=skip)
        hints = _hints(entry.factory)
        what = f"{kind} '{name}' (plugin {entry.plugin})"
        spec = self._aliases(path, dict(spec), getattr(entry.factory, "aliases", None) or {})
        out: dict[str, Any] = {"name": name}
        takes_any = _takes_any(entry.factory)
        for key, value in spec.items():
            if key == "name":
                continue
            if key not in params and takes_any:
                out[key] = value  # passed through to the factory's **kwargs
                continue
            if key not in params:
                raise self.fail(f"{path}.{key}", self.unknown(key, list(params), what))
            out[key] = self.value(f"{path}.{key}", value, hints.get(key, params[key].annotation))
        for pname, param in params.items():
            if pname in out:
                continue
            if param.default is inspect.Parameter.empty:
                raise self.fail(
                    f"{path}.{pname}",
                    f"{what} needs a value for '{pname}' "
                    f"({_type_name(hints.get(pname, param.annotation))})",
                )
            out[pname] = _plain(param.default)
        return out

    def _aliases(
        self, path: str, spec: dict[str, Any], aliases: Mapping[str, str]
    ) -> dict[str, Any]:
        """Move alias keys (``clusters`` -> ``mapper.dim``) to the nested key they stand for."""
        for alias, target in aliases.items():
            if alias not in spec:
                continue
            value = spec.pop(alias)
            *parents, leaf = target.split(".")
            node = spec
            for part in parents:
                child = node.get(part)
                if not isinstance(child, Mapping):
                    raise self.fail(
                        f"{path}.{alias}", f"sets {path}.{target}, but {path}.{part} is not given"
                    )
                node[part] = node = dict(child)
            if leaf in node and node[leaf] != value:
                raise self.fail(
                    f"{path}.{alias}",
                    f"{alias}={value!r} contradicts {path}.{target}={node[leaf]!r}; give one",
                )
            node[leaf] = value
        return spec

    def value(self, path: str, value: Any, annotation: Any) -> Any:
        if annotation is inspect.Parameter.empty or annotation is Any:
            return value
        kind = _component_kind(annotation)
        if kind is not None:
            if value is None and _allows_none(annotation):
                return None
            return self.component(path, value, kind)
        list_kind = _component_list_kind(annotation)
        if list_kind is not None:
            if value is None and _allows_none(annotation):
                return None
            if not isinstance(value, (list, tuple)):
                raise self.fail(path, f"expected a list of {list_kind} components, got {value!r}")
            return [self.component(f"{path}.{k}", v, list_kind) for k, v in enumerate(value)]
        ok, coerced = _coerce(value, annotation)
        if not ok:
            raise self.fail(
                path, f"expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
            )
        return coerced


def _plain(default: Any) -> Any:
    """Defaults shown in resolved recipes: plain YAML values only."""
    if isinstance(default, (int, float, str, bool, type(None))):
        return default
    if isinstance(default, (list, tuple)):
        return [_plain(v) for v in default]
    if isinstance(default, Mapping):
        return {k: _plain(v) for k, v in default.items()}
    return repr(default)


def _component_kind(annotation: Any) -> str | None:
    if annotation in _KIND_OF_ANNOTATION:
        return _KIND_OF_ANNOTATION[annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg in _KIND_OF_ANNOTATION:
                return _KIND_OF_ANNOTATION[arg]
    if inspect.isclass(annotation):
        for base, kind in _KIND_OF_ANNOTATION.items():
            if issubclass(annotation, base):
                return kind
    return None


def _component_list_kind(annotation: Any) -> str | None:
    """The component kind of ``list[<component>]`` (also inside ``| None``), else None."""
    candidates = [annotation]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        candidates = list(typing.get_args(annotation))
    for ann in candidates:
        if typing.get_origin(ann) in (list, tuple, Sequence, Iterable):
            args = [a for a in typing.get_args(ann) if a is not Ellipsis]
            if len(args) == 1 and _component_kind(args[0]) is not None:
                return _component_kind(args[0])
    return None


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def _coerce(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(ok, value) for a YAML value against a type hint; ints are accepted as floats."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return value is None, value
    if origin in (Union, types.UnionType):
        for arg in args:
            ok, coerced = _coerce(value, arg)
            if ok:
                return True, coerced
        return False, value
    if origin is Literal:
        return value in args, value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    if annotation in (Path,):
        return isinstance(value, str), value
    if origin in (list, tuple, Iterable, typing.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False, value
        if not args:
            return True, list(value)
        if origin is tuple and args[-1] is not Ellipsis:  # fixed-length tuple
            if len(args) != len(value):
                return False, value
            pairs = zip(value, args, strict=True)
        else:
            pairs = ((v, args[0]) for v in value)
        out = []
        for v, a in pairs:
            ok, c = _coerce(v, a)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if origin in (dict, Mapping) or annotation in (dict,):
        return isinstance(value, Mapping), value
    return True, value  # types we do not check (tensors, callables) pass through
