"""Wrappers that transform nested distributions (I-Con, §3.3).

Each takes its inner distribution(s) as recipe sub-components (parameters annotated
``NeighborhoodDistribution``) and is an ``nn.Module`` so that learned parts inside (e.g.
``prototype_softmax``) stay registered with the learner that holds the wrapper. A wrapper has
no family of its own: ``family``, ``role`` and ``requires`` of an instance are those of what
it wraps (``union``: the family of its first component).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from fw import api
from fw.errors import check_choice
from fw.lib.icon import debias, propagate


class _Wrapper(api.NeighborhoodDistribution, nn.Module):
    family: ClassVar[str] = ""
    role: ClassVar[str] = "either"
    requires: ClassVar[tuple[str, ...]] = ()

    def _adopt(self, parts: list[api.NeighborhoodDistribution], register: bool = False) -> None:
        for k, part in enumerate(parts):
            if not isinstance(part, api.NeighborhoodDistribution):
                raise TypeError(
                    f"{type(self).__name__} wraps distributions, got {type(part).__name__} "
                    f"({part!r}); build nested specs through a recipe or fw.recipe.build"
                )
            if register and isinstance(part, nn.Module):
                self.add_module(f"part{k}", part)
        roles = {part.role for part in parts}
        self.family = parts[0].family
        mixed_role = "learned" if "learned" in roles else "either"
        self.role = roles.pop() if len(roles) == 1 else mixed_role
        self.requires = tuple(dict.fromkeys(key for part in parts for key in part.requires))
        self.normalized = all(getattr(part, "normalized", True) for part in parts)


class Debiased(_Wrapper):
    """Uniform mixing ``(1 − α)·p(j|i) + α/N`` (I-Con, Eq. 2 on p; §3.3 on q).

    ``N`` is the row's real number of candidates (the mask of what ``of`` returns),
    so rows still sum to 1. Works in log space (`fw.lib.icon.debias`), so it can wrap a learned q
    and keep its gradient; "both sides" debiasing wraps p and q each. ``alpha = 0`` returns the
    inner neighbourhood unchanged. Default α = 0.6, the low end of the recommended 0.6–0.8
    (I-Con, §4.3); feature learning used 0.2–0.6 (I-Con, App. A).
    """

    example: ClassVar[dict[str, Any]] = {"of": {"name": "knn", "k": 3}, "alpha": 0.2}

    def __init__(self, *, of: api.NeighborhoodDistribution, alpha: float = 0.6) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"debiased: alpha must lie in [0, 1], got {alpha}")
        self.of = of
        self.alpha = alpha
        self._adopt([of])

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        return debias(self.of(ctx), self.alpha)


class Propagated(_Wrapper):
    """Neighbour propagation by walks, ``P̃ ∝ P + P² + … + P^steps`` (I-Con, §3.3).

    ``mode: sum`` weighs neighbours by their number of walks (``P̃``); ``uniform`` is uniform
    over every point reachable within ``steps`` (``P̃_U``). Walks return to i, so that mass is
    removed and rows renormalised. ``steps`` is the longest walk: "kNN +
    1-walks" of the paper's Table 4 (neighbours of neighbours) is
    ``steps: 2`` on a ``knn`` p. Square contexts only.
    """

    example: ClassVar[dict[str, Any]] = {"of": {"name": "knn", "k": 3}, "steps": 2}

    def __init__(
        self,
        *,
        of: api.NeighborhoodDistribution,
        steps: int = 2,
        mode: Literal["sum", "uniform"] = "sum",
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"propagated: steps must be >= 1, got {steps}")
        check_choice(mode, ("sum", "uniform"), "propagated: mode")
        self.of = of
        self.steps = steps
        self.mode = mode
        self._adopt([of])

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        return propagate(self.of(ctx), self.steps, mode=self.mode, remove_self=True)


class Union(_Wrapper):
    """Mixture ``Σ_k w_k p_k(j|i) / Σ_k w_k`` of distributions over the same pairs.

    E.g. the ImageNet clusterer's supervisory p: augmentation views + kNN (k=3) + kNN walks,
    ``of: [positive_pairs, knn, propagated(knn)]`` (I-Con, §4), usually debiased afterwards.
    The candidates are the union of the parts' candidates; ``weights`` default to equal. A row
    where some part has no mass (``on_missing: skip``) is renormalised over the parts that do,
    so every row with any neighbour still sums to 1.
    """

    example: ClassVar[dict[str, Any]] = {"of": [{"name": "knn", "k": 3}, {"name": "same_class"}]}

    def __init__(
        self,
        *,
        of: list[api.NeighborhoodDistribution],
        weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        parts = list(of)
        if not parts:
            raise ValueError("union: `of` needs at least one distribution")
        if weights is None:
            weights = [1.0] * len(parts)
        if len(weights) != len(parts) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"union: weights must be {len(parts)} non-negative numbers with a positive sum, "
                f"got {weights}"
            )
        self.weights = [float(w) for w in weights]
        self._adopt(parts, register=True)
        self.of = parts

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        hoods = [part(ctx) for part in self.of]
        shape = hoods[0].log_prob.shape
        if any(h.log_prob.shape != shape for h in hoods):
            shapes = [tuple(h.log_prob.shape) for h in hoods]
            raise ValueError(f"union: parts must cover the same [n, m] pairs, got {shapes}")
        mask = torch.stack([h.mask for h in hoods]).any(dim=0)
        log_w = [math.log(w) if w > 0 else float("-inf") for w in self.weights]
        terms = torch.stack([h.log_prob + lw for h, lw in zip(hoods, log_w, strict=True)])
        reached = torch.isfinite(terms).any(dim=0)  # [n, m]; elsewhere no part has mass
        mixed = torch.logsumexp(terms.masked_fill(~reached, 0.0), dim=0)  # NaN-free gradients
        mixed = mixed.masked_fill(~reached, float("-inf"))
        # per row: total weight of the parts that have mass there
        has_mass = torch.stack([torch.isfinite(h.log_prob).any(dim=1) for h in hoods])  # [K, n]
        w = torch.tensor(self.weights, dtype=mixed.dtype, device=mixed.device).unsqueeze(1)
        total = (w * has_mass.to(mixed.dtype)).sum(dim=0).clamp_min(torch.finfo(mixed.dtype).tiny)
        mixed = (mixed - torch.log(total).unsqueeze(1)).masked_fill(~mask, float("-inf"))
        return api.Neighborhood(mixed, mask)
