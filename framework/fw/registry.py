"""Plugin discovery (entry-point group ``fw``) and the (kind, name) -> factory map."""

from __future__ import annotations

import difflib
import os
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
        dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
        for kind, hook_name in hookspecs.KIND_HOOKS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                contributed = impl.function() or {}
                dist = _dist_name(dists.get(id(impl.plugin)))
                for name, factory in contributed.items():
                    self._add(Entry(kind, name, factory, impl.plugin_name, dist))

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


def plugin_manager(
    plugins: Sequence[str] = (),
    modules: Iterable[ModuleType | object] = (),
    autoload: bool | None = None,
) -> pluggy.PluginManager:
    """Build the plugin manager: entry points (unless disabled), named plugins, in-process ones.

    Autoloading is off when ``FW_DISABLE_PLUGIN_AUTOLOAD`` is set; then only the entry points
    named in ``plugins`` (or in ``FW_PLUGINS``) are loaded, as pytest does with ``-p``.
    """
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not os.environ.get(AUTOLOAD_ENV)
    wanted = list(plugins) + [p for p in os.environ.get(PLUGINS_ENV, "").split(",") if p]
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    available = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for name in wanted:
        if name not in available:
            close = difflib.get_close_matches(name, sorted(available), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(
                f"no installed plugin named '{name}' in entry-point group '{ENTRY_POINT_GROUP}'."
                f"{hint} Installed: {', '.join(sorted(available)) or 'none'}."
            )
        if pm.get_plugin(name) is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for module in modules:
        pm.register(module)
    pm.check_pending()
    return pm


_DEFAULT: Registry | None = None


def get_registry(
    plugins: Sequence[str] = (),
    modules: Iterable[ModuleType | object] = (),
    autoload: bool | None = None,
    fresh: bool = False,
) -> Registry:
    """The registry of loaded plugins; cached unless arguments are given or ``fresh``."""
    global _DEFAULT
    modules = list(modules)
    custom = bool(plugins) or bool(modules) or autoload is not None
    if custom:
        return Registry(plugin_manager(plugins, modules, autoload))
    if _DEFAULT is None or fresh:
        _DEFAULT = Registry(plugin_manager())
    return _DEFAULT


def set_registry(registry: Registry | None) -> None:
    """Install ``registry`` as the process default (CLI plugin selection, tests)."""
    global _DEFAULT
    _DEFAULT = registry
