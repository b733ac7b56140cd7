"""p(j|i) ∝ exp(-||x_i - x_j|| / b): a heavier-tailed supervisory kernel than the Gaussian."""

from __future__ import annotations

import torch

from fw import api


class Laplace(api.NeighborhoodDistribution):
    """Laplace kernel on (unsquared) Euclidean distance with scale ``b``, over j ≠ i."""

    family = "Laplace"  # a new column (and row) of `fw table`
    role = "either"

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError(f"laplace: scale must be positive, got {scale}")
        self.scale = scale

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        x = ctx[api.FEATURES]
        cols = ctx.get(api.FEATURES_COL)
        y = x if cols is None else cols
        dist = torch.cdist(x, y)
        mask = torch.ones_like(dist, dtype=torch.bool)
        if cols is None:
            mask &= ~torch.eye(len(x), dtype=torch.bool, device=x.device)
        return api.Neighborhood.from_logits(-dist / self.scale, mask)
