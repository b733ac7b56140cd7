"""Plugin discovery (entry-point group ``fw``) and the (kind, name) -> factory map."""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import attrs
import pluggy

from fw import hookspecs
from fw.errors import RegistryError

ENTRY_POINT_GROUP = "fw"
AUTOLOAD_ENV = "FW_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "FW_PLUGINS"  # comma-separated plugin names to load when autoload is off


@attrs.frozen
class Entry:
    """One registered factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str


def _dist_name(dist: Any) -> str:
    if dist is None:
        return "<in-process>"
    meta = getattr(dist, "metadata", None)
    name = meta["name"] if meta is not None else getattr(dist, "project_name", str(dist))
    return f"{name} {getattr(dist, 'version', '')}".strip()


class Registry:
    """Maps (kind, name) to factories contributed by the loaded plugins."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._entries: dict[str, dict[str, Entry]] = {k: {} for k in hookspecs.KIND_HOOKS}
        dists: dict[str, str] = getattr(pm, "distributions", {})
        for kind, hook_name in hookspecs.KIND_HOOKS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                contributed = impl.function() or {}
                dist = dists.get(impl.plugin_name, "<in-process>")
                for name, factory in contributed.items():
                    self._add(Entry(kind, name, factory, impl.plugin_name, dist))

    def add_plugin(self, module: object, name: str) -> None:
        """Register one more in-process plugin (the CLI adds the host's commands this way)."""
        if self.pm.get_plugin(name) is None:
            _check_hook_names(name, module)
            self.pm.register(module, name=name)
            if name == HOST_PLUGIN:
                self.pm.distributions[name] = _dist_name(_own_distribution())

    @property
    def commands(self) -> dict[str, Entry]:
        """``fw`` sub-commands by name, each with the plugin that provides it."""
        dists: dict[str, str] = getattr(self.pm, "distributions", {})
        found: dict[str, Entry] = {}
        for impl in reversed(self.pm.hook.fw_commands.get_hookimpls()):
            for name, command in (impl.function() or {}).items():
                dist = dists.get(impl.plugin_name, "<in-process>")
                entry = Entry("command", name, command, impl.plugin_name, dist)
                if name in found:
                    raise RegistryError(
                        f"command 'fw {name}' is provided twice: by plugin "
                        f"'{found[name].plugin}' and by plugin '{entry.plugin}'. Uninstall one."
                    )
                found[name] = entry
        return found

    def _add(self, entry: Entry) -> None:
        table = self._entries[entry.kind]
        if entry.name in table:
            other = table[entry.name]
            raise RegistryError(
                f"{entry.kind} '{entry.name}' is registered twice: by plugin '{other.plugin}' "
                f"({other.distribution}) and by plugin '{entry.plugin}' ({entry.distribution}). "
                "Rename one of them or uninstall one distribution."
            )
        table[entry.name] = entry

    def kinds(self) -> list[str]:
        """Every component kind, in display order."""
        return list(self._entries)

    def names(self, kind: str) -> list[str]:
        """Sorted names registered under ``kind``."""
        return sorted(self._entries[self._check_kind(kind)])

    def entries(self, kind: str) -> list[Entry]:
        """Registered entries of ``kind`` sorted by name."""
        table = self._entries[self._check_kind(kind)]
        return [table[n] for n in sorted(table)]

    def get(self, kind: str, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the closest registered names."""
        table = self._entries[self._check_kind(kind)]
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"unknown {kind} '{name}'.{hint} Registered {kind}s: {', '.join(sorted(table))}."
                " (`fw plugins` lists everything that is installed.)"
            )
        return table[name]

    def hook_results(self, hook_name: str) -> list[tuple[str, Any]]:
        """(plugin name, result) of every implementation of a non-factory hook."""
        return [
            (impl.plugin_name, impl.function())
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls()
        ]

    def _check_kind(self, kind: str) -> str:
        if kind not in self._entries:
            kinds = ", ".join(self._entries)
            raise RegistryError(f"unknown component kind '{kind}'; kinds: {kinds}")
        return kind


BUILTIN_DISTRIBUTION = "fw"
SKIP_BROKEN_ENV = "FW_SKIP_BROKEN_PLUGINS"
#: the plugin name of the host's own commands (`fw.commands`, added by the CLI)
HOST_PLUGIN = "fw"


class PluginManager(pluggy.PluginManager):
    """pluggy's plugin manager that also remembers the distribution of each plugin."""

    def __init__(self) -> None:
        super().__init__(ENTRY_POINT_GROUP)
        self.distributions: dict[str, str] = {}


def _load_entry_point(ep: Any, skip_broken: bool) -> ModuleType | None:
    """Import one entry point; a failure names the plugin and what to do, or warns and skips."""
    try:
        return ep.load()
    except Exception as err:  # any import-time failure of somebody else's package
        dist = _dist_name(getattr(ep, "dist", None))
        message = (
            f"plugin '{ep.name}' ({ep.value}, from {dist}) failed to import: "
            f"{type(err).__name__}: {err}. Fix or uninstall that distribution, or set "
            f"{SKIP_BROKEN_ENV}=1 (or pass --skip-broken-plugins) to skip it with a warning."
        )
        if not skip_broken:
            raise RegistryError(message) from err
        warnings.warn(message, stacklevel=2)
        return None


def _check_hook_names(name: str, plugin: object) -> None:
    """Reject ``fw_*`` functions that look like hooks but are misspelt or lack ``@hookimpl``."""
    specs = sorted(n for n in vars(hookspecs) if n.startswith("fw_"))
    for attr, value in vars(plugin).items() if hasattr(plugin, "__dict__") else ():
        if not attr.startswith("fw_") or not callable(value):
            continue
        marked = hasattr(value, f"{ENTRY_POINT_GROUP}_impl")
        if attr in specs and not marked:
            raise RegistryError(
                f"plugin '{name}' defines {attr}() without @fw.hookimpl, so fw would ignore "
                "it: decorate it with `@hookimpl` (`from fw import hookimpl`)."
            )
        if marked and attr not in specs:
            close = difflib.get_close_matches(attr, specs, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"plugin '{name}' implements unknown hook {attr}().{hint} Hooks: "
                f"{', '.join(specs)}."
            )


def plugin_manager(
    plugins: Sequence[str] = (),
    modules: Iterable[ModuleType | object] = (),
    autoload: bool | None = None,
    skip_broken: bool | None = None,
) -> PluginManager:
    """Build the plugin manager: entry points (unless disabled), named plugins, in-process ones."""
    pm = PluginManager()
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    if skip_broken is None:
        skip_broken = bool(os.environ.get(SKIP_BROKEN_ENV))
    wanted = list(plugins) + [p for p in os.environ.get(PLUGINS_ENV, "").split(",") if p]
    available = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in wanted:
        if name not in available:
            close = difflib.get_close_matches(name, sorted(available), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"no installed plugin named '{name}' in entry-point group '{ENTRY_POINT_GROUP}'."
                f"{hint} Installed: {', '.join(sorted(available)) or 'none'}."
            )
    for name, ep in sorted(available.items()):
        if (autoload or name in wanted) and pm.get_plugin(name) is None:
            module = _load_entry_point(ep, skip_broken)
            if module is not None:
                _check_hook_names(name, module)
                pm.register(module, name=name)
                pm.distributions[name] = _dist_name(getattr(ep, "dist", None))
    for module in modules:
        _check_hook_names(getattr(module, "__name__", repr(module)), module)
        pm.register(module)
    pm.check_pending()
    return pm


def _own_distribution() -> Any:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return distribution(BUILTIN_DISTRIBUTION)
    except PackageNotFoundError:
        return None


_DEFAULT: Registry | None = None


def get_registry(
    plugins: Sequence[str] = (),
    modules: Iterable[ModuleType | object] = (),
    autoload: bool | None = None,
    fresh: bool = False,
    skip_broken: bool | None = None,
) -> Registry:
    """The registry of loaded plugins; cached unless arguments are given or ``fresh``."""
    global _DEFAULT
    modules = list(modules)
    custom = bool(plugins) or bool(modules) or autoload is not None or skip_broken is not None
    if custom:
        return Registry(plugin_manager(plugins, modules, autoload, skip_broken))
    if _DEFAULT is None or fresh:
        _DEFAULT = Registry(plugin_manager())
    return _DEFAULT


def set_registry(registry: Registry | None) -> None:
    """Install ``registry`` as the process default (CLI plugin selection, tests)."""
    global _DEFAULT
    _DEFAULT = registry
