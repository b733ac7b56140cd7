"""Datasets as fw sees them (named tensors or streamed items) and how the loop samples them."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from fw.errors import DataError, ShapeError


class ArrayDataset(Dataset):
    """Named tensors sharing their first axis; items are dicts with an ``"index"`` entry."""

    def __init__(
        self,
        tensors: Mapping[str, Tensor],
        name: str = "dataset",
        classes: list[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if "x" not in tensors:
            raise ShapeError(f"dataset '{name}' needs an 'x' tensor; got keys {sorted(tensors)}")
        sizes = {k: int(v.shape[0]) for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ShapeError(f"dataset '{name}': tensors disagree on the number of items {sizes}")
        self.tensors = dict(tensors)
        n = sizes["x"]
        self.tensors.setdefault("index", torch.arange(n))
        self.name = name
        self.classes = classes
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return int(self.tensors["x"].shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = torch.as_tensor(indices)
        return Batch({k: v[idx] for k, v in self.tensors.items()})  # see `collate_batched`

    @property
    def x(self) -> Tensor:
        return self.tensors["x"]

    @property
    def labels(self) -> Tensor | None:
        return self.tensors.get("label")

    @property
    def num_classes(self) -> int | None:
        if self.classes is not None:
            return len(self.classes)
        lab = self.labels
        return int(lab.max()) + 1 if lab is not None else None

    def full_batch(self) -> dict[str, Tensor]:
        """All items as one batch."""
        return dict(self.tensors)

    def subset(self, indices: Tensor, name: str | None = None) -> ArrayDataset:
        """A new dataset with the given items (ids in ``index`` are kept)."""
        return ArrayDataset(
            {k: v[indices] for k, v in self.tensors.items()},
            name=name or self.name,
            classes=self.classes,
            meta=self.meta,
        )


class Batch(dict):
    """A dict of already-batched tensors (returned by `ArrayDataset.__getitems__`)."""


def collate_batched(items: Any) -> dict[str, Tensor]:
    """Collate for data loaders: passes pre-batched `Batch` through, stacks per-item dicts."""
    if isinstance(items, Batch):
        return dict(items)
    return torch.utils.data.default_collate(items)


def gather(dataset: Dataset, idx: list[int]) -> dict[str, Tensor]:
    """The items ``idx`` of a dataset collated into one batch (``__getitems__`` when it has it)."""
    if hasattr(dataset, "__getitems__"):
        return collate_batched(dataset.__getitems__(idx))
    return collate_batched([dataset[i] for i in idx])


def take(data: Dataset, key: str = "x", limit: int | None = None) -> Tensor:
    """The ``key`` entries of a dataset's first ``limit`` items (all when None), stacked."""
    n = len(data)  # type: ignore[arg-type]
    count = n if limit is None else min(limit, n)
    if isinstance(data, ArrayDataset):
        if key not in data.tensors:
            raise DataError(
                f"dataset '{data.name}' has no '{key}' entries; it has {sorted(data.tensors)}"
            )
        return data.tensors[key][:count]
    if count == 0:
        raise DataError(f"dataset {type(data).__name__} is empty")
    items = SeededItems(data)  # item i is always drawn with seed i: the same view every call
    first = items[(0, 0)]
    if key not in first:
        raise DataError(
            f"dataset {type(data).__name__} has no '{key}' entries; its items have {sorted(first)}"
        )
    return torch.stack([torch.as_tensor(items[(i, i)][key]) for i in range(count)])


def item_seed(seed: int, step: int, position: int) -> int:
    """The RNG seed of the ``position``-th item of step ``step``'s batch (a run's ``seed``)."""
    return ((seed * 1_000_003 + step) * 65_537 + position) % (1 << 62)


class StepSampler(Sampler):
    """Batch sampler for steps ``start..stop``: each batch is a list of ``(index, item_seed)``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        per_rank = n // world_size
        if batch_size < 1:
            raise ShapeError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > per_rank:
            raise ShapeError(
                f"batch_size {batch_size} is larger than the {per_rank} items each of the "
                f"{world_size} process(es) sees; lower trainer.batch_size or learner.batch_size"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop = start, stop
        self.rank, self.world_size = rank, world_size
        self.batches_per_epoch = per_rank // batch_size

    def _perm(self, epoch: int) -> Tensor:
        """This rank's share of epoch ``epoch``'s permutation (the last one is kept)."""
        if getattr(self, "_cached", (None,))[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.n, generator=gen)[self.rank :: self.world_size]
            self._cached = (epoch, perm)
        return self._cached[1]

    def indices(self, step: int) -> Tensor:
        """Dataset indices of this rank's batch at ``step``."""
        epoch, b = divmod(step, self.batches_per_epoch)
        return self._perm(epoch)[b * self.batch_size : (b + 1) * self.batch_size]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        offset = self.rank * self.batch_size
        for step in range(self.start, self.stop):
            idx = self.indices(step).tolist()
            yield [(i, item_seed(self.seed, step, offset + k)) for k, i in enumerate(idx)]


class SeededItems(Dataset):
    """Serves ``(index, seed)`` requests: item ``index`` with every RNG seeded by ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, request: tuple[int, int]) -> dict[str, Any]:
        index, seed = request
        in_worker = torch.utils.data.get_worker_info() is not None
        saved = None if in_worker else _global_rng()
        torch.manual_seed(seed)
        np.random.seed(seed % (1 << 32))
        random.seed(seed)
        try:
            item = self.dataset[index]
        finally:
            if saved is not None:
                _restore_rng(saved)
        if not isinstance(item, Mapping):
            raise DataError(
                f"dataset {type(self.dataset).__name__} must return dict items (got "
                f"{type(item).__name__}); see fw.data"
            )
        item = dict(item)
        item.setdefault("index", torch.tensor(index))
        return item


def _global_rng() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _restore_rng(state: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def load_all(data: Dataset) -> dict[str, Tensor]:
    """Every item of a dataset as one batch (in memory: no copy; streamed: read item by item)."""
    if isinstance(data, ArrayDataset):
        return data.full_batch()
    items = SeededItems(data)
    return collate_batched([items[(i, i)] for i in range(len(items))])
