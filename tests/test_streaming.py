"""The streamed data path: files read per item by DataLoader workers, interrupt and resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fw.data import SeededItems, StepSampler, item_seed
from fw.errors import Interrupted
from fw.recipe import build, load_recipe
from fw.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """Three classes of 8 small PNG images each, in the ImageFolder layout."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for c, name in enumerate(["bars", "dots", "plain"]):
        (root / name).mkdir()
        for i in range(8):
            img = rng.integers(0, 60, size=(12, 12, 3)) + 60 * c
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def stream_recipe(tmp_path, image_tree) -> Path:
    path = tmp_path / "stream.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        seed: 3
        data: {{name: image_folder, root: {str(image_tree)!r}, size: 10, stream: true,
               crop: 0.8, flip: true}}
        learner:
          name: icon
          p: {{name: toy_gaussian, sigma: 3.0}}
          q: {{name: toy_gaussian}}
          mapper: {{name: mlp, dim: 2, hidden: [16]}}
          batch_size: 6
          optimizer: {{name: adam, lr: 0.01}}
        trainer: {{max_steps: 10, log_every: 2, progress: false, num_workers: 2}}
        """)
    )
    return path


def test_items_are_a_function_of_step_and_position(registry, image_tree):
    data = build(
        "dataset",
        {
            "name": "image_folder",
            "root": str(image_tree),
            "size": 10,
            "stream": True,
            "crop": 0.7,
            "flip": True,
        },
        registry,
    )
    items = SeededItems(data)
    a = items[(4, item_seed(0, 3, 1))]["x"]
    torch.manual_seed(123)  # the main process's generator is neither used nor disturbed
    state = torch.get_rng_state()
    b = items[(4, item_seed(0, 3, 1))]["x"]
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())
    assert not torch.equal(a, items[(4, item_seed(0, 4, 1))]["x"])  # another step: new crop


def test_step_sampler_resumes_mid_epoch_and_splits_ranks():
    whole = list(StepSampler(24, 5, seed=1, start=0, stop=9))
    tail = list(StepSampler(24, 5, seed=1, start=6, stop=9))
    assert tail == whole[6:] and len(whole) == 9
    ranks = [
        list(StepSampler(24, 5, seed=1, start=0, stop=1, rank=r, world_size=2)) for r in (0, 1)
    ]
    ids = [{i for i, _ in batch[0]} for batch in ranks]
    seeds = [{s for _, s in batch[0]} for batch in ranks]
    assert not ids[0] & ids[1] and not seeds[0] & seeds[1]


def test_streamed_workers_interrupt_resume_equals_uninterrupted(
    stream_recipe, registry, tmp_path, monkeypatch
):
    from fw_common.learner import IConLearner

    full = train(load_recipe(stream_recipe, [], registry), tmp_path / "full", registry=registry)
    original = IConLearner.training_step

    def interrupt(self, batch, step):
        if step == 4:
            import signal

            signal.raise_signal(signal.SIGINT)
        return original(self, batch, step)

    monkeypatch.setattr(IConLearner, "training_step", interrupt)
    with pytest.raises(Interrupted):
        train(load_recipe(stream_recipe, [], registry), tmp_path / "cut", registry=registry)
    monkeypatch.undo()
    resumed = train(
        load_recipe(stream_recipe, [], registry), tmp_path / "cut", resume=True, registry=registry
    )
    for result in (full, resumed):
        result.pop("train_seconds")
    assert resumed == full
    assert full["steps"] == 10


DDP_SCRIPT = """
import signal, sys
from fw.errors import Interrupted
from fw_common.learner import IConLearner
from fw.recipe import load_recipe
from fw.registry import get_registry
from fw.train import train
from tests.support import toy_plugin

recipe_path, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "cut":
    original = IConLearner.training_step
    def step(self, batch, step):
        import torch.distributed as dist
        if step == 4 and dist.get_rank() == 0:
            signal.raise_signal(signal.SIGINT)
        return original(self, batch, step)
    IConLearner.training_step = step
reg = get_registry(modules=[toy_plugin])
recipe = load_recipe(recipe_path, ["trainer.strategy=ddp", "trainer.devices=2"], reg)
try:
    train(recipe, out, resume=mode == "resume", registry=reg)
except Interrupted:
    sys.exit(130)
"""


@pytest.mark.slow
def test_ddp_streamed_interrupt_resume_equals_uninterrupted(stream_recipe, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FW_RUN_DIR", None)

    def run(out: str, mode: str) -> int:
        proc = subprocess.run(
            [sys.executable, str(script), str(stream_recipe), str(tmp_path / out), mode],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode in (0, 130), proc.stderr[-3000:]
        return proc.returncode

    assert run("full", "full") == 0
    assert run("cut", "cut") == 130
    assert run("cut", "resume") == 0
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for result in (full, resumed):
        result.pop("train_seconds")
    assert resumed == full
