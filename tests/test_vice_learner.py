"""The vice learner end to end: its recipes, the CLI's exit 2 on a missing tree, a tiny
Cityscapes tree trained under both protocols, and what one training step moves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fw.cli import main
from fw.data import ArrayDataset, collate_batched
from fw.recipe import load_recipe
from fw.registry import get_registry
from fw_vice.learner import ViceLearner
from tests.conftest import RECIPES
from tests.test_stego_data import write_coco_tree

VICE_RECIPES = ["vice_texmosaic.yaml", "vice_cityscapes.yaml", "vice_cocostuff.yaml"]


@pytest.mark.parametrize("name", VICE_RECIPES)
def test_recipe_validates(name):
    load_recipe(RECIPES / name, registry=get_registry())


def write_cityscapes_tree(root, splits=("train", "val"), n=2, size=(48, 64)) -> None:
    rng = np.random.default_rng(0)
    for split in splits:
        img_dir = root / "leftImg8bit" / split / "aachen"
        gt_dir = root / "gtFine" / split / "aachen"
        img_dir.mkdir(parents=True)
        gt_dir.mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            img[:, : size[1] // 2] //= 4  # two halves, two textures
            Image.fromarray(img).save(img_dir / f"aachen_{i:06d}_000019_leftImg8bit.png")
            ids = np.full(size, 7, dtype=np.uint8)  # road
            ids[:, size[1] // 2 :] = 26  # car
            ids[0] = 4  # void: ignored
            Image.fromarray(ids).save(gt_dir / f"aachen_{i:06d}_000019_gtFine_labelIds.png")


def test_cityscapes_recipe_without_data_exits_2_naming_the_layout(tmp_path, capsys):
    code = main(["run", str(RECIPES / "vice_cityscapes.yaml"), f"data.root={tmp_path / 'none'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "leftImg8bit" in err and "gtFine" in err and "Traceback" not in err


def test_cocostuff_recipe_without_data_exits_2_naming_the_layout(tmp_path, capsys):
    code = main(["run", str(RECIPES / "vice_cocostuff.yaml"), f"data.root={tmp_path / 'none'}"])
    assert code == 2
    assert "curated/train2017" in capsys.readouterr().err


@pytest.mark.parametrize("dataset", ["cityscapes", "cocostuff"])
def test_recipe_trains_on_a_tiny_tree_under_both_protocols(tmp_path, dataset):
    root = tmp_path / dataset
    if dataset == "cityscapes":
        write_cityscapes_tree(root)
    else:
        write_coco_tree(root, {"train": ["1", "2"], "val": ["3", "4"]}, size=(48, 64))
    n_classes = 27
    out = tmp_path / "run"
    code = main(
        [
            "run",
            str(RECIPES / f"vice_{dataset}.yaml"),
            f"data.root={root}",
            f"eval_data.root={root}",
            "data.res=32",
            "eval_data.res=32",
            "learner.weights=null",  # no ResNet-18 file offline: the real architecture
            "learner.dim=16",
            "learner.concepts=8",
            "learner.fpn_dim=16",
            "learner.view_size=32",
            "learner.region_size=8",
            "learner.batch_size=2",
            "learner.queue_length=4",
            "learner.overclusters=[4]",
            "learner.fit_pixels=64",
            "trainer.max_steps=2",
            "trainer.accelerator=cpu",
            "trainer.progress=false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "hungarian_miou",  # K = 27, one-to-one (STEGO's protocol)
        f"greedy_c{n_classes}_miou",
        "greedy_c4_miou",  # over-clustering, many-to-one (ViCE's)
        "concepts_greedy_miou",
        "linear_miou",
        "linear_accuracy",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert (out / "vice.png").stat().st_size > 0


@pytest.mark.parametrize("region_mode", ["slic", "grid"])
def test_a_training_step_moves_the_network_and_the_concepts(region_mode):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 40, generator=g)
    x[:, :, :, 20:] *= 0.3
    data = ArrayDataset({"x": x, "label": torch.zeros(2, 40, 40, dtype=torch.long)})
    learner = ViceLearner(
        arch="mobilenet_v2", weights=None, n_classes=2, dim=8, concepts=4, fpn_dim=8,
        views=3, view_size=24, region_size=8, queue_length=3, train_stride=2, batch_size=2,
        region_mode=region_mode,
    )  # fmt: skip
    learner.setup(data)
    out = learner.training_step(collate_batched(data.__getitems__([0, 1])), 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and float(out["regions"]) >= 1
    assert learner.concepts.weight.grad.abs().sum() > 0
    assert learner.encoder.out.weight.grad.abs().sum() > 0
    assert learner.encoder.stages[0][0][0].weight.grad.abs().sum() > 0  # trained end to end
    assert 1 <= int(learner.queue_filled) <= 3 and learner.queue.abs().sum() > 0
