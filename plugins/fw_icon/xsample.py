"""X-Sample contrastive learning's supervisory p: a Gaussian on corresponding embeddings."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from fw import api
from fw.errors import ShapeError
from fw.lib.distributions import ctx_dtype, geometry, present


class CorrespondingGaussian(api.NeighborhoodDistribution):
    """p(j|i) = exp(g_i·g_j/τ) / Σ_{k≠i} exp(g_i·g_k/τ) on a side embedding g.

    X-Sample CL (Sobal et al. 2025; thesis Thm F.3.5): the neighbours of a point are weighted by
    the similarity of *corresponding* features — e.g. the caption embeddings of images — not by
    the inputs. ``g`` comes from the context key ``EMBEDDING`` ``[n, e]`` (``EMBEDDING_COL``
    ``[m, e]`` for the columns of a rectangular context), which learners fill from the batch
    key ``embedding`` that a dataset provides (a fixed, precomputed embedding: no gradient).

    ``metric: dot`` is the thesis's ``g_i·g_j`` with the temperature folded into g (τ = 1 by
    default); ``cosine`` normalises g first. A square context excludes ``j = i``; the two views
    of one sample share g, so each gets the largest weight of its row.
    """

    family: ClassVar[str] = "Gaussian"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.EMBEDDING,)

    def __init__(
        self, *, temperature: float = 1.0, metric: Literal["dot", "cosine"] = "dot"
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"corresponding_gaussian: temperature must be > 0, got {temperature}")
        if metric not in ("dot", "cosine"):
            raise ValueError(
                f"corresponding_gaussian: metric must be dot or cosine, got {metric!r}"
            )
        self.temperature = temperature
        self.metric = metric

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        g = torch.as_tensor(ctx[api.EMBEDDING])
        square = not present(ctx, api.EMBEDDING_COL)
        if square and _has_points(ctx) and not geometry(ctx).square:
            raise KeyError(
                "corresponding_gaussian: the columns are a different set of points; give "
                f"context key {api.EMBEDDING_COL!r}"
            )
        g_col = g if square else torch.as_tensor(ctx[api.EMBEDDING_COL], device=g.device)
        if g.dim() != 2 or g_col.dim() != 2 or g.shape[1] != g_col.shape[1]:
            raise ShapeError(
                f"corresponding_gaussian: embeddings must be [n, e] and [m, e], got "
                f"{tuple(g.shape)} and {tuple(g_col.shape)}"
            )
        dtype = ctx_dtype(ctx)
        if not present(ctx, api.FEATURES) and g.is_floating_point():
            dtype = g.dtype
        g, g_col = g.to(dtype), g_col.to(dtype)
        if self.metric == "cosine":
            g, g_col = F.normalize(g, dim=1), F.normalize(g_col, dim=1)
        logits = g @ g_col.T / self.temperature
        mask = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)
        if square:
            mask.fill_diagonal_(False)
        return api.Neighborhood.from_logits(logits, mask)


def _has_points(ctx: Any) -> bool:
    return any(present(ctx, k) for k in (api.FEATURES, api.INDEX, api.LABELS))
