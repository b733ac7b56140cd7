"""The training loop: outputs, Ctrl-C and resume, wandb offline, two-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fw.errors import FwError, Interrupted, RecipeError
from fw.lib.batches import BatchStream
from fw.recipe import load_recipe
from fw.train import train

ROOT = Path(__file__).resolve().parents[1]


def _run(recipe_path, registry, out, *overrides, resume=False):
    recipe = load_recipe(recipe_path, overrides, registry)
    return train(recipe, out, resume=resume, registry=registry)


def test_run_writes_metrics_recipe_and_plot(toy_recipe, registry, tmp_path):
    out = tmp_path / "run"
    final = _run(toy_recipe, registry, out)
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(final)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines[:4]] == [5, 10, 15, 20]
    assert 0.0 <= final["kmeans_hungarian_accuracy"] <= 1.0
    assert (out / "recipe.yaml").exists() and (out / "embedding.png").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_interrupt_then_resume_equals_uninterrupted(
    toy_recipe, registry, tmp_path, interrupt_at, monkeypatch
):
    full = _run(toy_recipe, registry, tmp_path / "full")
    interrupt_at(8)
    with pytest.raises(Interrupted, match="--resume"):
        _run(toy_recipe, registry, tmp_path / "cut")
    monkeypatch.undo()
    resumed = _run(toy_recipe, registry, tmp_path / "cut", resume=True)
    full.pop("train_seconds")
    resumed.pop("train_seconds")
    assert resumed == full
    records = [json.loads(x) for x in (tmp_path / "cut/metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == [5, 10, 15, 20]  # no duplicated log lines after resume


def test_resume_without_checkpoint_is_a_clear_error(toy_recipe, registry, tmp_path):
    with pytest.raises(FwError, match="no checkpoint"):
        _run(toy_recipe, registry, tmp_path / "empty", resume=True)


def test_batch_stream_is_a_function_of_the_step(registry):
    from fw.recipe import build

    data = build("dataset", {"name": "digits", "limit": 50}, registry)
    a = BatchStream(data, 8, seed=1)
    b = BatchStream(data, 8, seed=1)
    assert a.batches_per_epoch == 6
    for step in (0, 5, 6, 13):
        assert a.batch(step)["index"].tolist() == b.batch(step)["index"].tolist()
    ranks = [BatchStream(data, 8, seed=1, rank=r, world_size=2).batch(0)["index"] for r in (0, 1)]
    assert not set(ranks[0].tolist()) & set(ranks[1].tolist())


def test_wandb_offline_logger(toy_recipe, registry, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    _run(toy_recipe, registry, out, "logger.name=wandb", "trainer.max_steps=5")
    runs = list((out / "wandb").glob("offline-run-*"))
    assert runs, "wandb wrote no offline run"
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_ddp_two_cpu_processes(toy_recipe, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(
        textwrap.dedent(f"""
        from fw.recipe import load_recipe
        from fw.registry import get_registry
        from fw.train import train
        from tests.support import toy_plugin
        reg = get_registry(modules=[toy_plugin])
        recipe = load_recipe({str(toy_recipe)!r},
                             ["trainer.strategy=ddp", "trainer.devices=2"], reg)
        train(recipe, {str(tmp_path / "ddp")!r}, registry=reg)
    """)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FW_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    final = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert final["steps"] == 20 and 0.0 <= final["kmeans_hungarian_accuracy"] <= 1.0


def test_a_run_leaves_no_run_directory_behind_for_the_next(
    toy_recipe, registry, tmp_path, monkeypatch
):
    """In one process, a run without --out after another does not land in the first's directory."""
    from fw.train import RUN_DIR_ENV, default_run_dir

    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    _run(toy_recipe, registry, tmp_path / "first", "trainer.max_steps=2")
    assert RUN_DIR_ENV not in os.environ
    assert default_run_dir(load_recipe(toy_recipe, [], registry)).parent == Path("runs")


@pytest.mark.parametrize(
    ("epochs", "max_steps", "batch", "world", "expected"),
    [
        (None, None, 100, 1, 1000),  # neither: the default
        (None, 7, 100, 1, 7),
        (2.0, None, 100, 1, 6),  # 2 · 300 / 100
        (85.5, None, 256, 1, 101),  # ceil(85.5 · 300 / 256) = ceil(100.2)
        (2.0, 4, 100, 1, 4),  # capped
        (1.0, None, None, 1, 1),  # full batch: one step per pass
        (1.0, None, 100, 2, 2),  # two processes share a pass
        (1.0, None, 500, 1, 1),  # a batch larger than the data
    ],
)
def test_steps_follow_the_data_size_with_epochs(epochs, max_steps, batch, world, expected):
    from fw.recipe import TrainerConfig
    from fw.train import total_steps

    cfg = TrainerConfig(max_steps=max_steps, epochs=epochs)
    assert total_steps(cfg, range(300), batch, world) == expected


def test_epochs_run_that_many_steps_and_refuse_unsized_data(toy_recipe, registry, tmp_path):
    from fw.recipe import TrainerConfig
    from fw.train import total_steps

    final = _run(
        toy_recipe, registry, tmp_path / "run", "trainer.epochs=1.5", "trainer.max_steps=null"
    )
    assert final["steps"] == 5.0  # ceil(1.5 · 300 / 100)
    with pytest.raises(FwError, match="trainer.epochs needs a dataset with a known length"):
        total_steps(TrainerConfig(epochs=1.0), iter([]), 10)
    with pytest.raises(RecipeError, match="trainer.epochs: must be >= 0"):
        load_recipe(toy_recipe, ["trainer.epochs=-1"], registry)


@pytest.mark.parametrize("flush", [True, False])
def test_subnormals_are_flushed_during_training_and_recorded(
    toy_recipe, registry, tmp_path, monkeypatch, flush
):
    from fw_common.learner import IConLearner

    seen, original = [], IConLearner.training_step

    def step(self, batch, step):
        seen.append(torch.tensor(1e-39).item())  # a float32 subnormal
        return original(self, batch, step)

    monkeypatch.setattr(IConLearner, "training_step", step)
    final = _run(toy_recipe, registry, tmp_path / "run", f"trainer.flush_denormal={flush}")
    assert final["flush_denormal"] == float(flush)
    assert all((v == 0.0) is flush for v in seen) and len(seen) == 20
    assert torch.tensor(1e-39).item() != 0.0  # the process default again after the run


def test_evaluate_false_trains_and_checkpoints_without_evaluating(
    toy_recipe, registry, tmp_path, monkeypatch
):
    from fw_common.learner import IConLearner

    def refuse(self, data, run_dir=None):
        raise AssertionError("evaluate ran")

    monkeypatch.setattr(IConLearner, "evaluate", refuse)
    final = _run(toy_recipe, registry, tmp_path / "run", "trainer.evaluate=false")
    assert final["steps"] == 20.0 and "final_loss" in final
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == pytest.approx(final)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_a_run_inside_a_run_hands_flushing_and_threads_back(
    toy_recipe, registry, tmp_path, monkeypatch
):
    """A chained stage trains inside the outer run's setup; the outer steps must still flush."""
    from fw_common.learner import IConLearner

    outer_seen, original = [], IConLearner.training_step
    depth = []  # 1 while the inner run trains

    def step(self, batch, step):
        if not depth:
            depth.append(1)
            _run(
                toy_recipe,
                registry,
                tmp_path / "inner",
                "trainer.flush_denormal=false",
                "trainer.threads=2",
            )
            outer_seen.append(torch.get_num_threads())
            depth.append(0)
        if depth[-1] == 0:
            outer_seen.append(torch.tensor(1e-39).item())
        return original(self, batch, step)

    monkeypatch.setattr(IConLearner, "training_step", step)
    _run(toy_recipe, registry, tmp_path / "outer", "trainer.threads=1")
    assert outer_seen[0] == 1  # the outer run's thread count again
    assert outer_seen[1:] == [0.0] * 20  # flushed on every outer step, the first included
