"""The self-supervised recipes validate, train a few steps on the digits without NaN (the
table's smoke form), and the ImageNet recipe fails cleanly, naming the folder layout."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from fw.recipe import load_recipe, read_recipe_file, recipe_from_dict
from fw.registry import get_registry
from fw.train import train
from fw_table.table import smoke_recipe

ROOT = Path(__file__).resolve().parents[1]
FASHION = [f"{m}_fashion_mnist.yaml" for m in ("dino", "swav", "byol", "simsiam", "vicreg")]


@pytest.mark.parametrize("name", [*FASHION, "dino_imagenet_vits16.yaml"])
def test_recipe_validates(name):
    load_recipe(ROOT / "recipes" / name, registry=get_registry())


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "name", ["byol_fashion_mnist.yaml", "simsiam_fashion_mnist.yaml", "vicreg_fashion_mnist.yaml"]
)
def test_recipe_trains_on_the_digits_without_nan(name, tmp_path):
    # DINO's and SwAV's recipes run in tests/test_table.py (their periodic-table cells)
    raw, _ = read_recipe_file(ROOT / "recipes" / name)
    raw = smoke_recipe(raw, "digits", steps=5, limit=200)
    raw["learner"]["probe_limit"] = 200
    final = train(recipe_from_dict(raw, get_registry()), tmp_path / "run")
    assert math.isfinite(final["final_loss"])
    for key in ("holdout_knn_probe_accuracy", "effective_rank", "alignment", "uniformity"):
        assert math.isfinite(final[key]), key


def test_imagenet_recipe_without_data_exits_2_naming_the_layout(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "fw.cli", "run", str(ROOT / "recipes" / "dino_imagenet_vits16.yaml"),
         "data.root=" + str(tmp_path / "missing"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "root/<class>/<image>" in run.stderr and "Traceback" not in run.stderr
