"""An in-process test plugin: a fixed-width Gaussian kernel, and a duplicate name on demand."""

from __future__ import annotations

import torch

from fw import api, hookimpl


class ToyGaussian(api.NeighborhoodDistribution):
    """exp(-||x_i - x_j||² / 2σ²) over j ≠ i (test double for the real plugins)."""

    family = "Gaussian"

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = sigma

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        x = ctx[api.FEATURES]
        d2 = torch.cdist(x, x).pow(2)
        mask = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
        return api.Neighborhood.from_logits(-d2 / (2 * self.sigma**2), mask)


@hookimpl
def fw_distributions():
    return {"toy_gaussian": ToyGaussian}


class Duplicate:
    """A second plugin that registers the same name again."""

    @hookimpl
    def fw_distributions(self):
        return {"toy_gaussian": ToyGaussian}
