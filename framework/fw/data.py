"""In-memory datasets of named tensors, the common currency between dataset plugins and learners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fw.errors import DataError, ShapeError


class ArrayDataset(Dataset):
    """Named tensors sharing their first axis; items are dicts with an ``"index"`` entry.

    ``x`` holds inputs (``[N, ...]``), ``label`` class ids (``[N]``, optional); ``classes`` the
    class names when known. ``full_batch()`` returns everything at once for full-batch learners.
    """

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


def take(data: Dataset, key: str = "x", limit: int | None = None) -> Tensor:
    """The ``key`` entries of a dataset's first ``limit`` items (all when None), stacked.

    Works for in-memory `ArrayDataset` (a slice, no copy) and for any map-style dataset of
    dict items (read item by item), so learners never reach into ``data.x``.
    """
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
    first = data[0]
    if key not in first:
        raise DataError(
            f"dataset {type(data).__name__} has no '{key}' entries; its items have {sorted(first)}"
        )
    return torch.stack([torch.as_tensor(data[i][key]) for i in range(count)])
