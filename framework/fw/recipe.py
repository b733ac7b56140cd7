"""YAML recipes -> typed, validated configuration -> built components.

A recipe is a mapping with the top-level keys of :class:`Recipe`. Every component is written
``{name: <registered name>, <param>: <value>, ...}``; its params are checked against the
factory's signature (names, type hints, required values). A parameter whose type is a component
kind (e.g. ``p: NeighborhoodDistribution``, or ``of: Dataset`` for a dataset wrapping another)
takes a nested component mapping.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import attrs
import yaml

from fw import hookspecs
from fw.errors import FwError, RecipeError, RegistryError
from fw.registry import Registry, get_registry

#: parameter annotation -> component kind built from a nested mapping (one row per hook kind)
_KIND_OF_ANNOTATION: dict[Any, str] = {k.base: k.name for k in hookspecs.KINDS}


#: steps of a run whose recipe gives neither trainer.max_steps nor trainer.epochs
DEFAULT_STEPS = 1000


#: `TrainerConfig` field metadata: the field changes speed, logging or memory, not results
NO_EFFECT = "no_effect"


@attrs.define
class TrainerConfig:
    """How `fw.train` runs a learner (lightning-fabric settings, steps, checkpoints, logging)."""

    # 0: evaluate only; None: 1000, or no cap when `epochs` is given
    max_steps: int | None = attrs.field(default=None, metadata={"min": 0})
    # passes over the data: ceil(epochs·N / global batch) steps, at most max_steps, so the
    # step count follows the dataset's size (None: max_steps alone)
    epochs: float | None = attrs.field(default=None, metadata={"min": 0})
    # None: the learner's own choice (None there = full batch)
    batch_size: int | None = attrs.field(default=None, metadata={"min": 1})
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = attrs.field(default=1, metadata={"min": 1})
    num_workers: int = attrs.field(default=0, metadata={"min": 0, NO_EFFECT: True})
    # 0: checkpoint only on interrupt and at the end
    checkpoint_every: int = attrs.field(default=0, metadata={"min": 0, NO_EFFECT: True})
    # torch CPU threads (None: torch's default)
    # (results agree up to the order of floating-point sums)
    threads: int | None = attrs.field(default=None, metadata={"min": 1, NO_EFFECT: True})
    log_every: int = attrs.field(default=10, metadata={"min": 1, NO_EFFECT: True})
    progress: bool = attrs.field(default=True, metadata={NO_EFFECT: True})
    # keep freed large blocks in the heap (fw.memory): less page-fault system time, higher
    # peak RSS (DenseAV recipe: 30.5 -> 20.4 CPU-min, max RSS 6.2 -> 14.1 GB)
    reuse_memory: bool = attrs.field(default=False, metadata={NO_EFFECT: True})


def result_settings(raw: Mapping[str, Any], also_ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The part of a resolved recipe that can change its results.

    Dropped: ``description``, the trainer fields marked `NO_EFFECT` (threads, progress, …), the
    dotted paths in ``also_ignore``, and every null entry: a null setting counts as absent, so
    a parameter added later with a null default leaves older recipes' settings as they were.
    """
    ignore = {"description", *also_ignore}
    ignore |= {
        f"trainer.{f.name}" for f in attrs.fields(TrainerConfig) if f.metadata.get(NO_EFFECT)
    }

    def prune(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                sub = f"{path}.{key}" if path else str(key)
                if value is not None and sub not in ignore:
                    out[key] = prune(value, sub)
            return out
        if isinstance(node, (list, tuple)):
            return [prune(v, path) for v in node]
        return node

    return prune(raw, "")


def dump_yaml(raw: Mapping[str, Any]) -> str:
    """A recipe mapping as fw writes it: keys in order, leaves in flow style, UTF-8 as is."""
    return yaml.safe_dump(dict(raw), sort_keys=False, allow_unicode=True, default_flow_style=None)


def settings_digest(raw: Mapping[str, Any], also_ignore: Iterable[str] = ()) -> str:
    """12 hex digits of SHA-256 over `result_settings` (sorted JSON): a key for cached results."""
    text = json.dumps(result_settings(raw, also_ignore), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@attrs.define
class LoggerConfig:
    """Where metrics go: JSONL in the run directory always, wandb too when ``name: wandb``."""

    name: Literal["jsonl", "wandb"] = "jsonl"
    project: str = "fw"
    mode: Literal["online", "offline", "disabled"] = "offline"
    entity: str | None = None


TOP_LEVEL: dict[str, str] = {
    "extends": "a recipe file (or list) this one builds on",
    "seed": "random seed (int)",
    "data": "training dataset component",
    "eval_data": "evaluation dataset component (default: the training data)",
    "learner": "the learner component",
    "trainer": "training-loop settings",
    "logger": "metric logging settings",
    "description": "free text",
}


@attrs.frozen
class Recipe:
    """A validated recipe: resolved raw mapping plus where it came from."""

    raw: dict[str, Any]
    source: Path | None
    lines: dict[str, int] = attrs.field(factory=dict)

    @property
    def seed(self) -> int:
        return int(self.raw.get("seed", 0))

    @property
    def trainer(self) -> TrainerConfig:
        return TrainerConfig(**self.raw.get("trainer", {}))

    @property
    def logger(self) -> LoggerConfig:
        return LoggerConfig(**self.raw.get("logger", {}))

    @property
    def name(self) -> str:
        return self.source.stem if self.source else "recipe"

    def to_yaml(self) -> str:
        """The fully resolved recipe as YAML (rebuilds this run)."""
        return dump_yaml(self.raw)


# ----------------------------------------------------------------------------- loading


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
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise RecipeError(f"override '{text}': '{where}' is a value, not a mapping")
            node = child
        node[parts[-1]] = value
    return out


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


# ----------------------------------------------------------------------------- validation


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


# ----------------------------------------------------------------------------- building


def build(
    kind: str,
    spec: Mapping[str, Any],
    registry: Registry | None = None,
    path: str | None = None,
    **injected: Any,
) -> Any:
    """Build a validated component spec (nested components first); ``injected`` adds kwargs.

    A value the factory rejects (``ValueError``/``TypeError`` while constructing) becomes a
    :class:`RecipeError` naming the recipe key ``path`` (default: the kind).
    """
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
