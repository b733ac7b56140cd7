"""The fw command: exit codes and messages for users."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from fw import __version__
from fw.cli import main
from fw.registry import set_registry
from tests.conftest import RECIPES


@pytest.fixture
def cli(registry):
    """Run ``fw`` in-process against the test registry."""
    set_registry(registry)
    yield main
    set_registry(None)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_plugins_lists_every_kind(cli, capsys):
    assert cli(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind in (
        "distribution",
        "featurizer",
        "upsampler",
        "aggregator",
        "explainer",
        "learner",
        "dataset",
    ):
        assert f"{kind} (" in out
    assert "toy_gaussian" in out and "<in-process>" in out


def test_show_prints_resolved_recipe(cli, capsys, toy_recipe):
    assert cli(["show", str(toy_recipe), "trainer.max_steps=3"]) == 0
    out = capsys.readouterr().out
    assert "max_steps: 3" in out.replace("{", " ").replace(",", "\n") or "max_steps: 3" in out


def test_user_errors_exit_2_without_traceback(cli, capsys, toy_recipe, tmp_path):
    assert cli(["run", str(toy_recipe), "learner.q.name=toy_gausian"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fw: error:") and "toy_gaussian" in err and "Traceback" not in err
    assert cli(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_debug_keeps_exit_2_and_adds_the_traceback(cli, toy_recipe, capsys):
    assert cli(["run", str(toy_recipe), "learner.q.name=nope", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RecipeError" in err
    assert "fw: error:" in err.split("Traceback")[-1] and "learner.q.name" in err


def test_changing_a_component_name_by_override_starts_from_its_defaults(cli, capsys):
    recipe = RECIPES / "tsne_digits.yaml"
    assert cli(["show", str(recipe), "learner.p.name=student_t", "learner.p.dof=2"]) == 0
    p = yaml.safe_load(capsys.readouterr().out)["learner"]["p"]
    assert p["name"] == "student_t" and p["dof"] == 2  # the gaussian's perplexity is gone
    assert "perplexity" not in p


def test_fw_help_names_the_plugin_of_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for command, plugin in [("run", "fw"), ("table", "table"), ("explain", "ksam")]:
        assert re.search(rf" {command} [^\[]*\[{plugin}\]", out), command


def test_run_prints_a_one_line_summary(cli, capsys, toy_recipe, tmp_path):
    out_dir = tmp_path / "r"
    assert cli(["run", str(toy_recipe), "--out", str(out_dir), "trainer.max_steps=4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    final = json.loads((out_dir / "metrics.json").read_text())
    assert f"kmeans_hungarian_accuracy {final['kmeans_hungarian_accuracy']:.4g}" in line
    assert str(out_dir) in line and "metrics.json" in line and "embedding.png" in line


def test_console_script_is_installed():
    proc = subprocess.run(
        [sys.executable, "-m", "fw.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "run" in proc.stdout and "plugins" in proc.stdout


TSNE = str(RECIPES / "tsne_digits.yaml")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["learner.q.name=studnet_t"], ["learner.q.name", "Did you mean 'student_t'"]),
        (["learner.p.perplexity=thirty"], ["learner.p.perplexity", "expected", "'thirty'"]),
        (["trainr.max_steps=5"], ["unknown top-level key", "Did you mean 'trainer'"]),
    ],
)
def test_tsne_recipe_user_errors(cli, capsys, args, expected):
    assert cli(["run", TSNE, *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err.replace("\n", " ")


def test_missing_recipe_file_names_the_path(cli, capsys, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert cli(["run", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err.replace("\n", "")
