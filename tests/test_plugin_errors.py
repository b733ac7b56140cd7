"""What a plugin author meets when a plugin is broken: one clear error (exit 2), or a skip."""

from __future__ import annotations

import sys
import types

import pytest

from fw import hookimpl
from fw.cli import main
from fw.errors import RegistryError
from fw.registry import AUTOLOAD_ENV, PLUGINS_ENV, get_registry, set_registry

BROKEN_MODULE = "fw_broken_example_plugin"


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """An installed distribution whose `fw` entry point fails to import (a missing dependency)."""
    dist = tmp_path / "fw_broken_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fw-broken-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[fw]\nbroken = {BROKEN_MODULE}.plugin\n")
    package = tmp_path / BROKEN_MODULE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    yield
    for name in [m for m in sys.modules if m.startswith(BROKEN_MODULE)]:
        del sys.modules[name]
    set_registry(None)


def test_a_plugin_that_fails_to_import_is_named(broken_distribution):
    with pytest.raises(RegistryError) as info:
        get_registry(autoload=True)
    message = str(info.value)
    assert "plugin 'broken'" in message and "fw-broken-example 0.1" in message
    assert "a_dependency_that_is_not_installed" in message
    assert "--skip-broken-plugins" in message


def test_the_cli_exits_2_without_a_traceback(broken_distribution, capsys):
    set_registry(None)
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert "plugin 'broken'" in err and "Traceback" not in err


def test_it_can_be_skipped_with_a_warning(broken_distribution, capsys):
    set_registry(None)
    with pytest.warns(UserWarning, match="plugin 'broken'"):
        assert main(["--skip-broken-plugins", "plugins"]) == 0
    assert "tsne" in capsys.readouterr().out


def _plugin(**functions) -> types.ModuleType:
    module = types.ModuleType("my_plugin")
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def test_a_misspelt_hook_gets_a_suggestion():
    @hookimpl
    def fw_distribution():  # the hook is fw_distributions
        return {}

    with pytest.raises(RegistryError, match="unknown hook fw_distribution.*'fw_distributions'"):
        get_registry(modules=[_plugin(fw_distribution=fw_distribution)])


def test_a_hook_without_hookimpl_is_not_silently_ignored():
    def fw_distributions():
        return {}

    with pytest.raises(RegistryError, match="without @fw.hookimpl"):
        get_registry(modules=[_plugin(fw_distributions=fw_distributions)])
