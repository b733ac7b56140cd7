"""Perplexity calibration shared by the dense and the sparse Gaussian p (SNE, t-SNE).

Each row's precision is chosen so that its conditional distribution has the requested
perplexity (Hinton & Roweis 2002; van der Maaten & Hinton 2008, Sec. 2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fw.errors import FwError


class ScaleError(FwError, ValueError):
    """A sparse / approximate (large-data) setting that cannot work; names the recipe key."""


#: scikit-learn's perplexity search settings (sklearn/manifold/_utils.pyx).
PERPLEXITY_TOLERANCE = 1e-5
PERPLEXITY_STEPS = 100
LOG_TINY_64 = math.log(torch.finfo(torch.float64).tiny)

# Below this feature width the [n, m, d] difference tensor is cheap and exact; above it the
# Gram-matrix expansion is used (it loses precision when points are far from the origin).
_EXACT_DIFF_MAX_DIM = 16


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``[n, m]`` between rows of ``a`` and ``b``."""
    if a.shape[1] <= _EXACT_DIFF_MAX_DIM:
        return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(dim=2)
    gram = a @ b.T
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2 * gram).clamp_min(0)


@torch.no_grad()
def perplexity_precisions(
    sq_dist: Tensor,
    mask: Tensor,
    perplexity: float,
    tol: float = PERPLEXITY_TOLERANCE,
    max_steps: int = PERPLEXITY_STEPS,
) -> Tensor:
    """Per-row precisions ``β_i = 1/(2σ_i²)`` with ``exp(H(P_i)) = perplexity`` (as t-SNE).

    The bisection of scikit-learn's ``_binary_search_perplexity`` (start at β = 1, double or
    halve until bracketed, then bisect; stop when the entropy in nats is within ``tol`` of
    ``log(perplexity)``, at most ``max_steps`` steps), run on all rows at once in float64.
    Distances are shifted by their row minimum first, which leaves P unchanged but keeps the
    row sums away from underflow.
    """
    excluded = ~mask
    d = sq_dist.double()
    big = torch.finfo(torch.float64).max
    d = d - d.masked_fill(excluded, big).min(dim=1, keepdim=True).values
    d = d.masked_fill_(excluded, 0.0)
    n = d.shape[0]
    target = math.log(perplexity)
    beta = torch.ones(n, dtype=torch.float64, device=d.device)
    lo = torch.full_like(beta, -math.inf)
    hi = torch.full_like(beta, math.inf)
    active = torch.arange(n, device=d.device)
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        every = active.numel() == n  # gathering the active rows costs a copy of them
        da, ex = (d, excluded) if every else (d[active], excluded[active])
        b = beta[active]
        # floored at the smallest normal float: subnormal exp results are very slow on CPUs
        w = torch.mul(da, -b.unsqueeze(1)).clamp_(min=LOG_TINY_64).exp_().masked_fill_(ex, 0.0)
        total = w.sum(dim=1)
        weighted = torch.bmm(w.unsqueeze(1), da.unsqueeze(2)).reshape(-1)  # Σ_j w_ij d_ij
        entropy = torch.log(total) + b * weighted / total
        diff = entropy - target
        keep = diff.abs() > tol
        active, b, diff = active[keep], b[keep], diff[keep]
        too_flat = diff > 0  # entropy too high: raise the precision
        lo_a = torch.where(too_flat, b, lo[active])
        hi_a = torch.where(too_flat, hi[active], b)
        up = torch.where(torch.isinf(hi_a), b * 2.0, (b + hi_a) / 2.0)
        down = torch.where(torch.isinf(lo_a), b / 2.0, (b + lo_a) / 2.0)
        beta[active] = torch.where(too_flat, up, down)
        lo[active], hi[active] = lo_a, hi_a
    return beta
