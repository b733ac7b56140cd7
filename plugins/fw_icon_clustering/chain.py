"""Datasets that chain methods: one model's output becomes the next one's input or p-space.

- ``featurized``: a frozen featurizer (e.g. a pretrained backbone) run once over a dataset
  through the feature cache of `fw.features`; the features replace ``x`` (or go to ``key``).
- ``chained``: another recipe trained (once, cached by its resolved text) and its learner's
  output (``infer``, e.g. a t-SNE embedding) added to that recipe's data under ``key``.

Both return an in-memory `fw.data.ArrayDataset`, so any learner can use the new key: the
clusterer takes its kNN graph from it (``knn_key``) or its head inputs (``input_key``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from fw import api
from fw.data import ArrayDataset
from fw.errors import DataError
from fw.files import load, save, why
from fw.runs import load_run

#: where the chained runs are kept unless a recipe says otherwise
DEFAULT_CACHE = "~/.cache/fw"


def _as_array_dataset(data: Any, what: str) -> ArrayDataset:
    if not isinstance(data, ArrayDataset):
        raise DataError(
            f"{what} needs an in-memory dataset (fw.data.ArrayDataset), got {type(data).__name__}"
        )
    return data


@api.example(
    of={"name": "digits", "limit": 40},
    featurizer={"name": "linear", "dim": 4},
    progress=False,
    cache_dir=".fw-smoke-cache",
)
def featurized(
    of: Dataset,
    featurizer: api.Featurizer,
    key: str = "x",
    keep_input: str | None = None,
    cache_dir: str = f"{DEFAULT_CACHE}/features",
    batch_size: int = 256,
    progress: bool = True,
) -> ArrayDataset:
    """``of`` with ``featurizer``'s global features ``[N, D]`` under ``key`` (default ``x``).

    Features are computed once per (dataset, featurizer) and cached under ``cache_dir`` by
    `fw.lib.features.cached_features` (later runs read the file). ``keep_input`` names a key under
    which the original ``x`` is kept when ``key`` replaces it (``null``: dropped). ``of`` may
    also be a lazy dataset (items read one by one, e.g. a large image folder): then only its
    ``targets`` (labels) and ``classes`` are carried over, and ``key`` must be ``x``.
    """
    from fw.lib.features import cached_features

    cache = Path(cache_dir).expanduser()
    featurizer.setup(of)  # lazy layers and data-fitted featurizers see the data first
    feats = cached_features(of, featurizer, cache, batch_size=batch_size, progress=progress)
    feats_t = torch.from_numpy(np.array(feats, dtype=np.float32))
    if isinstance(of, ArrayDataset):
        tensors, name, classes, meta = dict(of.tensors), of.name, of.classes, dict(of.meta)
    else:  # a lazy dataset (e.g. torchvision's ImageFolder): keep only its targets
        targets = getattr(of, "targets", None)
        tensors = {} if targets is None else {"label": torch.as_tensor(targets, dtype=torch.long)}
        name = str(getattr(of, "name", type(of).__name__))
        classes, meta = getattr(of, "classes", None), {}
        if key != "x":
            raise DataError("featurized: a lazy dataset has no in-memory x; use key: x")
    if key == "x" and keep_input and "x" in tensors:
        tensors[keep_input] = tensors["x"]
    tensors[key] = feats_t
    fp = getattr(featurizer, "fingerprint", None)
    meta["features"] = fp() if callable(fp) else type(featurizer).__name__
    if key == "x":
        meta.pop("image_shape", None)  # x is no longer an image
    return ArrayDataset(tensors, name=name, classes=classes, meta=meta)


def _resolve(path: str) -> Path:
    """A recipe path as given (relative to the working directory), else under ``recipes/``."""
    candidate = Path(path).expanduser()
    if candidate.is_file() or candidate.is_absolute():
        return candidate
    repo_recipes = Path(__file__).resolve().parents[2] / "recipes"
    for alt in (repo_recipes / path, repo_recipes / Path(path).name):
        if alt.is_file():
            return alt
    return candidate


def chained(
    recipe: str,
    key: str = "z",
    data: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    cache_dir: str = f"{DEFAULT_CACHE}/chained",
    batch_size: int = 4096,
    seed: int | Literal["outer", "recipe"] = "outer",
) -> ArrayDataset:
    """The data of ``recipe`` with its trained learner's output ``[N, d]`` under ``key``.

    The recipe (with ``overrides``, dotted ``key=value`` as on the command line) is trained by
    `fw.train.train` into ``cache_dir/<recipe>-<fw.recipe.settings_digest>`` (without its final
    evaluation unless ``trainer.evaluate=true`` is among the overrides) unless that run
    already finished there, then its learner is rebuilt from the checkpoint and ``infer`` is
    applied to the whole training data, ``batch_size`` items at a time. The global RNG states
    are restored afterwards, so a cached and a fresh chain leave the outer run identical.
    ``key: x`` replaces the inputs by the embedding. ``data`` replaces the chained recipe's
    dataset (a dataset spec, e.g. ``{name: mnist5k}``), so one pipeline runs on any data.

    ``seed``: ``outer`` (default) trains the chained recipe with the outer run's seed (the
    global torch seed that `fw.train` sets from the recipe before building data), so the
    outer recipe's seed varies the whole pipeline; ``recipe`` keeps the chained recipe's own
    seed; an int pins it.
    """
    from fw.recipe import build, load_recipe, settings_digest
    from fw.registry import get_registry
    from fw.train import RUN_DIR_ENV

    path = _resolve(recipe)
    registry = get_registry()
    # the stage's own metrics are never read here (trustworthiness alone is O(N²) up to 20,000)
    overrides = ["trainer.evaluate=false", *(overrides or [])]
    if data is not None:
        overrides.insert(0, f"data={json.dumps(data)}")
    if seed == "outer":
        overrides.append(f"seed={torch.initial_seed()}")
    elif seed != "recipe":
        overrides.append(f"seed={int(seed)}")
    inner = load_recipe(path, overrides, registry)
    digest = settings_digest(inner.raw)  # settings that cannot change the output are left out
    run_dir = Path(cache_dir).expanduser() / f"{inner.name}-{digest}"
    emb_path = run_dir / f"output-{key}.pt"

    dataset = _as_array_dataset(build("dataset", inner.raw["data"], registry), "chained")
    emb = _cached_output(emb_path)
    if emb is None:
        saved = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        saved_env = os.environ.get(RUN_DIR_ENV)
        try:
            emb = _stage_output(inner, run_dir, emb_path, dataset, batch_size, registry)
        finally:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])
            if saved_env is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = saved_env
    if emb.shape[0] != len(dataset):
        raise DataError(f"chained: {path} produced {emb.shape[0]} outputs for {len(dataset)} items")
    tensors = dict(dataset.tensors)
    tensors[key] = emb
    meta = dict(dataset.meta)
    meta.setdefault("chained", {})[key] = str(run_dir)
    return ArrayDataset(tensors, name=dataset.name, classes=dataset.classes, meta=meta)


def _cached_output(path: Path) -> torch.Tensor | None:
    """A stage's cached output, or None (absent; truncated or corrupt: removed to be rebuilt)."""
    if not path.is_file():
        return None
    try:
        emb = load(path, f"Delete {path.parent} to rebuild the stage")
    except DataError as err:
        if isinstance(err.__cause__, pickle.UnpicklingError):
            raise  # not a file fw wrote: the user should see it
        print(f"fw: rebuilding {path}: {why(err.__cause__ or err)}", file=sys.stderr)
        emb = None
    if torch.is_tensor(emb) and emb.ndim >= 1:
        return emb
    with contextlib.suppress(OSError):  # a read-only cache fails below, naming the directory
        path.unlink()
    return None


def _stage_output(
    inner: Any, run_dir: Path, emb_path: Path, dataset: ArrayDataset, batch_size: int, registry: Any
) -> torch.Tensor:
    """Train the stage (once, in a temporary directory renamed into place), then infer."""
    from fw.train import CHECKPOINT, train

    try:
        if not ((run_dir / CHECKPOINT).is_file() and (run_dir / "metrics.json").is_file()):
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
            try:
                train(inner, tmp, registry=registry, overwrite=True)  # locks its directory
                _publish(tmp, run_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        learner = load_run(run_dir, registry)
        full = dataset.full_batch()
        with torch.no_grad():
            parts = [
                learner.infer({k: v[s : s + batch_size] for k, v in full.items()})
                for s in range(0, len(dataset), batch_size)
            ]
        emb = torch.cat(parts).detach().float().cpu()
        save(emb, emb_path)  # atomic: concurrent stages write the same tensor
    except OSError as err:  # a read-only or full cache
        raise DataError(
            f"chained: cannot write the stage cache {run_dir} ({err.strerror or err}); make it "
            "writable or give the chained dataset another cache_dir (e.g. data.cache_dir=DIR)"
        ) from err
    return emb


def _publish(tmp: Path, run_dir: Path) -> None:
    """Rename a finished stage into place; a complete stage already there wins."""
    if (run_dir / "metrics.json").is_file():
        return  # another process finished the same stage first
    if run_dir.exists():  # an incomplete stage left by an older fw: set it aside
        stale = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.stale.", dir=run_dir.parent))
        os.replace(run_dir, stale / "stage")
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, run_dir)
    except OSError:  # lost the race to another process: its stage is complete
        if not (run_dir / "metrics.json").is_file():
            raise
