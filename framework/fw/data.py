"""In-memory datasets of named tensors, the common currency between dataset plugins and learners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fw.errors import ShapeError


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
