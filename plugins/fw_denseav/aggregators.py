"""DenseAV's aggregators: pool a [K, Na, Nb] similarity volume to one score (thesis Eq. 6.2).

Side ``a`` is the one averaged over time (audio tokens, padding excluded by ``mask_a``); side
``b`` is the one searched for evidence (image positions, ``mask_b`` marks valid ones). Heads are
reduced by an element-wise max first, as the authors' ``head_agg: max_elementwise`` does, so the
max over heads and image space is a joint max (Eq. 6.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fw.lib.volumes import VolumeAggregator


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over the True entries of ``mask`` along ``dim`` (0 where none is valid)."""
    if x.shape[dim] > 0 and bool(mask.all()):  # nothing to mask (image positions): no copies
        return x.mean(dim)
    total = torch.where(mask, x, torch.zeros_like(x)).sum(dim)
    return total / mask.sum(dim).clamp_min(1).to(x.dtype)


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of ``x`` over the True entries of ``mask`` along ``dim`` (0 where none is valid).

    ``max`` (not ``amax``): its backward scatters the gradient to the arg-max instead of
    comparing the whole volume with the maximum, several times cheaper on big volumes; the
    two differ only on exact ties.
    """
    if x.shape[dim] > 0 and bool(mask.all()):
        return x.max(dim).values
    filled = x.masked_fill(~mask, float("-inf")).max(dim).values
    return torch.where(torch.isfinite(filled), filled, torch.zeros_like(filled))


class _HeadMaxAggregator(VolumeAggregator):
    """Base of the DenseAV aggregators: element-wise max over the K channel-split heads."""

    def __init__(self, heads: int = 1, max_elements: int = 1 << 25) -> None:
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1, got {heads}")
        self.heads = heads
        self.max_elements = max_elements

    def local(self, volume: Tensor) -> Tensor:
        """Head-pooled volume ``[P, Na, Nb]`` (element-wise max over heads)."""
        if volume.shape[1] == 1:  # one head: a view, no copy and no max backward
            return volume[:, 0]
        return volume.max(dim=1).values

    def extra_repr(self) -> str:
        return f"heads={self.heads}"


class MaxMean(_HeadMaxAggregator):
    """MISA, Eq. 6.2: max over heads and image space, mean over the valid audio time steps."""

    example = {"heads": 2}

    def pool(self, volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        best = masked_max(self.local(volume), mask_b[:, None, :], dim=2)  # [P, Na]
        return masked_mean(best, mask_a, dim=1)


class MeanMean(_HeadMaxAggregator):
    """SISA (the ablation of Table 6.4): mean over valid image positions and valid audio time."""

    example = {"heads": 2}

    def pool(self, volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        avg = masked_mean(self.local(volume), mask_b[:, None, :], dim=2)  # [P, Na]
        return masked_mean(avg, mask_a, dim=1)


class MaxMax(_HeadMaxAggregator):
    """MIMA: max over heads, image space and valid audio time (an option of the authors' code)."""

    example = {"heads": 2}

    def pool(self, volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        best = masked_max(self.local(volume), mask_b[:, None, :], dim=2)
        return masked_max(best, mask_a, dim=1)
