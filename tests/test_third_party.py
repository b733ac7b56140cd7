"""A separately packaged plugin is found through its entry point and usable from a recipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third_party_plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """Install the example distribution into a private directory; return a subprocess env."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    env.pop("FW_DISABLE_PLUGIN_AUTOLOAD", None)  # as a user's shell: autoload everything
    env.pop("FW_PLUGINS", None)
    return env


def _fw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fw.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fw_plugins_lists_the_third_party_distribution(installed):
    proc = _fw(installed, "plugins")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("laplace"))
    assert "fw-laplace 0.1.0" in line


def test_recipe_using_it_runs(installed, tmp_path):
    recipe = EXAMPLE / "recipes" / "laplace_digits.yaml"
    proc = _fw(
        installed,
        "run",
        str(recipe),
        "trainer.max_steps=5",
        "trainer.progress=false",
        "data.limit=400",
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.json").exists()


def test_plugin_can_be_selected_explicitly(installed):
    env = {**installed, "FW_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = _fw(env, "--plugin", "laplace", "plugins")
    assert proc.returncode == 0, proc.stderr
    assert "laplace" in proc.stdout and "embedding" not in proc.stdout


def test_its_command_is_listed_with_the_plugin_and_runs(installed):
    help_text = _fw(installed, "--help").stdout
    line = next(x for x in help_text.splitlines() if x.strip().startswith("laplace-row"))
    assert "[laplace]" in line
    proc = _fw(installed, "laplace-row", "0", "1", "--scale", "1")
    assert proc.returncode == 0, proc.stderr
    e = 2.718281828459045
    assert proc.stdout.split() == [f"{e / (e + 1):.4f}", f"{1 / (e + 1):.4f}"]
    bad = _fw(installed, "laplace-row", "0", "--scale", "-1")
    assert bad.returncode == 2 and "--scale must be positive" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_without_the_distribution_the_command_is_gone(installed):
    env = {**installed, "PYTHONPATH": str(ROOT)}  # the same environment, plugin uninstalled
    assert "laplace-row" not in _fw(env, "--help").stdout
    proc = _fw(env, "laplace-row", "0")
    assert proc.returncode == 2 and "invalid choice: 'laplace-row'" in proc.stderr
