"""Plugin discovery, duplicate names, typo suggestions, explicit plugin selection."""

from __future__ import annotations

import pluggy
import pytest

from fw import hookimpl
from fw.errors import RegistryError
from fw.registry import get_registry, plugin_manager
from tests.support import toy_plugin


def test_builtin_plugins_are_entry_points(registry):
    plugins = {e.plugin for kind in registry.kinds() for e in registry.entries(kind)}
    assert {"common", "data"} <= plugins
    entry = registry.get("featurizer", "embedding")
    assert entry.distribution.startswith("fw ")


def test_in_process_plugin_is_registered(registry):
    entry = registry.get("distribution", "toy_gaussian")
    assert entry.distribution == "<in-process>"


def test_duplicate_name_names_both_plugins():
    with pytest.raises(RegistryError) as info:
        get_registry(modules=[toy_plugin, toy_plugin.Duplicate()])
    msg = str(info.value)
    assert "registered twice" in msg and "toy_gaussian" in msg
    assert msg.count("<in-process>") == 2


def test_unknown_name_suggests_closest(registry):
    with pytest.raises(RegistryError, match="Did you mean 'toy_gaussian'"):
        registry.get("distribution", "toy_gausian")


def test_misspelled_hook_fails_at_startup():
    class Bad:
        @hookimpl
        def fw_distribution(self):  # missing "s"
            return {}

    with pytest.raises(pluggy.PluginValidationError):
        plugin_manager(modules=[Bad()], autoload=False)


def test_autoload_can_be_disabled_and_plugins_named(monkeypatch):
    monkeypatch.setenv("FW_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("FW_PLUGINS", raising=False)  # the suite's own selection (conftest)
    reg = get_registry(plugins=["data"])
    assert reg.names("dataset") and not reg.names("optimizer")
    with pytest.raises(RegistryError, match="Did you mean 'data'"):
        get_registry(plugins=["dta"])
