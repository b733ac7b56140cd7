"""The batches a run sees, addressed by step number, for code that trains outside `fw.train`."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fw.data import StepSampler, gather, load_all


class BatchStream:
    """The batches of a dataset by step number (the loop itself uses `fw.train.batches`)."""

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int | None,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        n = len(dataset)  # type: ignore[arg-type]
        self.sampler = (
            None if batch_size is None else StepSampler(n, batch_size, seed, 0, 0, rank, world_size)
        )
        self.batches_per_epoch = 1 if self.sampler is None else self.sampler.batches_per_epoch
        self._full: dict[str, torch.Tensor] | None = None

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch for ``step`` (the whole dataset when ``batch_size`` is None)."""
        if self.sampler is None:
            if self._full is None:
                self._full = load_all(self.dataset)
            return self._full
        return gather(self.dataset, self.sampler.indices(step).tolist())
