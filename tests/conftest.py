"""Shared fixtures: a registry with the installed plugins plus an in-process toy plugin."""

from __future__ import annotations

import os
import signal
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from fw.registry import (
    AUTOLOAD_ENV,
    BUILTIN_DISTRIBUTION,
    ENTRY_POINT_GROUP,
    PLUGINS_ENV,
    Registry,
    get_registry,
)
from fw_common.learner import IConLearner
from tests.support import toy_plugin


def builtin_plugins() -> list[str]:
    """Entry-point names of the plugins the fw distribution itself ships."""
    return sorted(
        ep.name
        for ep in entry_points(group=ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.metadata["name"] == BUILTIN_DISTRIBUTION
    )


# The suite runs against fw's own plugins only, whatever else is installed (a broken or
# conflicting third-party plugin must not fail fw's tests); subprocesses inherit this.
os.environ[AUTOLOAD_ENV] = "1"
os.environ[PLUGINS_ENV] = ",".join(builtin_plugins())

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Installed plugins + the toy test plugin."""
    return get_registry(modules=[toy_plugin])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def toy_recipe(tmp_path: Path) -> Path:
    """A small, fast recipe using the generic I-Con learner on 300 digits."""
    path = tmp_path / "toy.yaml"
    path.write_text(
        """\
seed: 0
data: {name: digits, limit: 300}
learner:
  name: icon
  p: {name: toy_gaussian, sigma: 1.0}
  q: {name: toy_gaussian}
  mapper: {name: mlp, dim: 2, hidden: [32]}
  batch_size: 100
  optimizer: {name: adam, lr: 0.01}
trainer: {max_steps: 20, log_every: 5, progress: false}
"""
    )
    return path


@pytest.fixture
def interrupt_at(monkeypatch):
    """Send a real SIGINT to this process during a given training step of a learner class."""

    def arm(at_step: int, learner_cls: type = IConLearner) -> None:
        original = learner_cls.training_step

        def step(self, batch, step):
            if step == at_step:
                signal.raise_signal(signal.SIGINT)
            return original(self, batch, step)

        monkeypatch.setattr(learner_cls, "training_step", step)

    return arm
