"""Runs as objects: rebuild a trained learner from its run directory, or run a recipe in-process."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fw.api import Learner
from fw.errors import DataError
from fw.files import load, why
from fw.recipe import build, load_recipe, recipe_from_dict
from fw.registry import Registry, get_registry

CHECKPOINT = "checkpoints/last.ckpt"


@attrs.frozen
class RunResult:
    """What `fw.run` returns: the final metrics, where the run wrote its files, the learner."""

    metrics: dict[str, float]
    run_dir: Path
    learner: Learner


def load_run(run_dir: str | Path, registry: Registry | None = None, setup: bool = True) -> Learner:
    """The trained learner of a run: rebuilt from ``recipe.yaml``, weights from the checkpoint."""
    registry = registry or get_registry()
    run_dir = Path(run_dir)
    recipe_path, ckpt = run_dir / "recipe.yaml", run_dir / CHECKPOINT
    for path in (recipe_path, ckpt):
        if not path.is_file():
            raise DataError(
                f"{run_dir} is not a run directory: {path} is missing (a run written by "
                "`fw run --out DIR` holds recipe.yaml and checkpoints/last.ckpt)"
            )
    recipe = load_recipe(recipe_path, registry=registry)
    learner: Learner = build("learner", recipe.raw["learner"], registry, "learner")
    if recipe.trainer.batch_size is not None:
        learner.batch_size = recipe.trainer.batch_size
    if setup:
        learner.setup(build("dataset", recipe.raw["data"], registry, "data"))
    state = load(ckpt, "Delete it or the run directory and train again")
    try:
        learner.load_state_dict(state["learner"])
        learner.load_extra_state(state.get("extra", {}))
    except Exception as err:  # another learner's state, or not a checkpoint of fw
        raise DataError(
            f"cannot restore the learner of {recipe_path} ({type(learner).__name__}) from "
            f"{ckpt}: {why(err)}. The checkpoint was written by another recipe."
        ) from err
    learner.eval()
    return learner


def run(
    recipe: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    registry: Registry | None = None,
) -> RunResult:
    """Train and evaluate a recipe (a file or a mapping) in-process, as `fw run` does."""
    from fw.recipe import apply_overrides
    from fw.train import default_run_dir, fit

    registry = registry or get_registry()
    if isinstance(recipe, Mapping):
        loaded = recipe_from_dict(apply_overrides(dict(recipe), overrides), registry)
    else:
        loaded = load_recipe(recipe, overrides, registry)
    run_dir = Path(out) if out is not None else default_run_dir(loaded)
    metrics, learner = fit(loaded, run_dir, resume, registry, overwrite)
    return RunResult(metrics, run_dir, learner)
