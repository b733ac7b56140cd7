"""Spatial neighbourhood kernels: Gaussian (SNE's p and q) and Student-t (t-SNE's q).

Conventions, fixed here once for every kernel of this module:

- distances are *squared* Euclidean, ``d_ij = ||x_i - x_j||²``, computed once and never squared
  again (the I-Con reference code squares twice);
- the Gaussian kernel is ``exp(-d_ij / (2σ²))`` (I-Con, Table 1); SNE's q
  ``exp(-||φ_i - φ_j||²)`` is ``sigma = 1/√2``; with ``perplexity`` the precision
  ``β_i = 1/(2σ_i²)`` of each row is found by binary search so that ``2^H(P_i) = perplexity``
  (van der Maaten & Hinton 2008), as scikit-learn's ``_binary_search_perplexity`` does;
- ``metric="cosine"`` uses logits ``cos(x_i, x_j) / τ`` (SimCLR / InfoNCE, I-Con, Thm 4);
- the Student-t kernel is ``(1 + d_ij/ν)^(-(ν+1)/2)`` (thesis Table 8.1), evaluated in log space
  with ``log1p``;
- ``normalization="conditional"`` normalises each row over ``j != i``, or over the
  columns of ``features_col`` when the context has them (rectangular, nothing masked);
  ``"joint"`` is t-SNE's symmetric form (van der Maaten & Hinton 2008):
  a kernel with per-row widths (``perplexity``) is symmetrised, ``P = (P_cond + P_condᵀ) / (2N)``
  (t-SNE's p); a kernel that is already symmetric (fixed ``sigma``, cosine, Student-t) is
  normalised over all ordered pairs ``i != j`` (t-SNE's q, symmetric SNE). The rule depends on
  the kernel, not on the role, so p and q computed with or without gradient agree. A joint
  neighbourhood is returned as one row ``[1, N·N]``: the joint KL is I-Con with a single anchor
  whose neighbours are all ordered pairs, so `fw.lib.icon.icon_loss` on it is exactly t-SNE's cost
  ``Σ_ij p_ij log(p_ij / q_ij)``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fw import api
from fw.api import Neighborhood, NeighborhoodDistribution
from fw.errors import check_choice
from fw.lib.sparse import SparseNeighborhood
from fw_sne.calibration import ScaleError, perplexity_precisions, squared_distances
from fw_sne.scale import sparse_gaussian

Normalization = Literal["conditional", "joint"]


def _support(ctx: api.Context, features: Tensor) -> tuple[Tensor, Tensor]:
    """Column points and the candidate mask (``j != i`` unless columns are a separate set)."""
    cols = ctx.get(api.FEATURES_COL)
    n = features.shape[0]
    if cols is None:
        mask = ~torch.eye(n, dtype=torch.bool, device=features.device)
        return features, mask
    cols = cols.flatten(1) if cols.dim() > 2 else cols
    mask = torch.ones(n, cols.shape[0], dtype=torch.bool, device=features.device)
    return cols.to(features.dtype), mask


def _features(ctx: api.Context) -> Tensor:
    x = ctx[api.FEATURES]
    return x.flatten(1) if x.dim() > 2 else x


def _check_normalization(normalization: str) -> None:
    check_choice(normalization, ("conditional", "joint"), "normalization")


def _joint_over_pairs(logits: Tensor, mask: Tensor) -> Neighborhood:
    """Log-weights ``[N, N]`` normalised over all allowed ordered pairs, as one row."""
    return Neighborhood.from_logits(logits.reshape(1, -1), mask.reshape(1, -1))


def _finish(
    logits: Tensor, mask: Tensor, normalization: str, rectangular: bool, symmetrize: bool
) -> Neighborhood:
    """Normalise kernel logits as a conditional or joint neighbourhood."""
    if normalization == "conditional":
        return Neighborhood.from_logits(logits, mask)
    if rectangular:
        raise ValueError(
            "normalization='joint' needs rows and columns to be the same points; "
            "drop 'features_col' from the context or use normalization='conditional'"
        )
    if not symmetrize:
        return _joint_over_pairs(logits, mask)
    # t-SNE's symmetrised p: p_ij = (p_j|i + p_i|j) / 2N (van der Maaten & Hinton 2008, §3.1).
    cond = Neighborhood.from_logits(logits, mask).prob
    n = cond.shape[0]
    joint = (cond + cond.T) / (2.0 * n)
    log_joint = torch.log(joint).masked_fill(~mask, -math.inf)
    return Neighborhood(log_joint.reshape(1, -1), mask.reshape(1, -1))


class Gaussian(NeighborhoodDistribution):
    """Gaussian kernel ``exp(-||x_i - x_j||² / 2σ²)`` or cosine softmax (I-Con, Table 1).

    Exactly one of ``sigma`` (one global width) and ``perplexity`` (per-row widths, as
    t-SNE) is given for ``metric="euclidean"``; ``metric="cosine"`` takes neither and uses
    ``cos(x_i, x_j) / temperature``. See the module docstring for the normalisations.
    As p it runs under ``no_grad`` (the learner's doing); as q gradients reach the features
    (the perplexity-calibrated widths are constants).
    """

    #: parameters a generated table recipe gives it (`fw_table.table.generic_recipe`)
    table_params: ClassVar[dict[str, Any]] = {
        "p": {"perplexity": 30},
        "q": {"sigma": 0.7071067811865476},  # SNE's q: exp(-||z_i - z_j||²)
    }

    example: ClassVar[dict[str, Any]] = {"perplexity": 4.0}

    role = "either"
    family = "Gaussian"

    def __init__(
        self,
        sigma: float | None = None,
        perplexity: float | None = None,
        metric: Literal["euclidean", "cosine"] = "euclidean",
        temperature: float = 1.0,
        normalization: Normalization = "conditional",
        scale: Literal["dense", "sparse"] = "dense",
        neighbors: int | None = None,
        knn_index: Literal["auto", "flat", "ivf", "ivf_sq8", "hnsw"] = "auto",
    ) -> None:
        _check_normalization(normalization)
        check_choice(scale, ("dense", "sparse"), "Gaussian scale")
        check_choice(knn_index, ("auto", "flat", "ivf", "ivf_sq8", "hnsw"), "Gaussian knn_index")
        if scale == "sparse" and (metric != "euclidean" or perplexity is None):
            raise ScaleError(
                "Gaussian scale 'sparse' calibrates a perplexity on each point's nearest "
                "neighbours: it needs metric 'euclidean' and a 'perplexity'"
            )
        if neighbors is not None and scale != "sparse":
            raise ScaleError("Gaussian 'neighbors' applies to scale 'sparse' only")
        if metric == "euclidean":
            if (sigma is None) == (perplexity is None):
                raise ValueError(
                    "Gaussian(metric='euclidean') needs exactly one of 'sigma' (a fixed width) "
                    f"and 'perplexity' (per-point widths); got sigma={sigma}, "
                    f"perplexity={perplexity}"
                )
            if sigma is not None and not sigma > 0:
                raise ValueError(f"Gaussian sigma must be > 0, got {sigma}")
            if perplexity is not None and not perplexity > 1:
                raise ValueError(
                    f"Gaussian perplexity must be > 1 (an effective number of neighbours), "
                    f"got {perplexity}"
                )
            if temperature != 1.0:
                raise ValueError(
                    "Gaussian 'temperature' applies to metric='cosine'; for the euclidean "
                    "metric set 'sigma' instead"
                )
        elif metric == "cosine":
            if sigma is not None or perplexity is not None:
                raise ValueError(
                    "Gaussian(metric='cosine') is a softmax of cos / temperature; "
                    "'sigma' and 'perplexity' are for metric='euclidean'"
                )
            if not temperature > 0:
                raise ValueError(f"Gaussian temperature must be > 0, got {temperature}")
        else:
            raise ValueError(f"Gaussian metric must be 'euclidean' or 'cosine', got {metric!r}")
        self.sigma = sigma
        self.perplexity = perplexity
        self.metric = metric
        self.temperature = temperature
        self.normalization = normalization
        self.scale = scale
        self.neighbors = neighbors
        self.knn_index = knn_index
        #: ``knn_recall`` of the last approximate neighbour search (sparse scale)
        self.knn_report: dict[str, float] = {}

    def logits(self, ctx: api.Context) -> tuple[Tensor, Tensor, bool]:
        """Unnormalised log-kernel ``[n, m]``, candidate mask, and whether it is rectangular."""
        x = _features(ctx)
        cols, mask = _support(ctx, x)
        rectangular = api.FEATURES_COL in ctx and ctx[api.FEATURES_COL] is not None
        if self.metric == "cosine":
            sim = F.normalize(x, dim=1) @ F.normalize(cols, dim=1).T
            return sim / self.temperature, mask, rectangular
        candidates = cols.shape[0] - (0 if rectangular else 1)
        if self.perplexity is not None and self.perplexity >= candidates:
            raise ValueError(
                f"perplexity ({self.perplexity}) must be less than the number of neighbour "
                f"candidates of each point ({candidates})"
            )
        if self.sigma is not None:
            return -squared_distances(x, cols) / (2.0 * self.sigma**2), mask, rectangular
        # Calibrated kernels are built in float64 (once per p) and cast back in `log_prob`.
        d = squared_distances(x.double(), cols.double())
        beta = perplexity_precisions(d, mask, self.perplexity)
        return -d * beta.unsqueeze(1), mask, rectangular

    def log_prob(self, ctx: api.Context) -> Neighborhood:
        if self.scale == "sparse":
            return self.sparse_log_prob(ctx)  # type: ignore[return-value]
        logits, mask, rectangular = self.logits(ctx)
        per_row_widths = self.perplexity is not None
        nb = _finish(logits, mask, self.normalization, rectangular, per_row_widths)
        dtype = _features(ctx).dtype
        if nb.log_prob.dtype == dtype or not dtype.is_floating_point:
            return nb
        log_norm = None if nb.log_norm is None else nb.log_norm.to(dtype)
        return Neighborhood(nb.log_prob.to(dtype), nb.mask, log_norm)

    def sparse_log_prob(self, ctx: api.Context) -> SparseNeighborhood:
        """p on each point's k nearest neighbours (`fw_sne.scale.sparse_gaussian`)."""
        if ctx.get(api.FEATURES_COL) is not None:
            raise ScaleError(
                "Gaussian scale 'sparse' finds neighbours among the rows themselves; drop "
                "'features_col' or use scale 'dense'"
            )
        assert self.perplexity is not None
        return sparse_gaussian(
            _features(ctx),
            self.perplexity,
            self.neighbors,
            self.normalization,
            self.knn_index,
            self.knn_report,
        )


class StudentT(NeighborhoodDistribution):
    """Student-t kernel ``(1 + ||z_i - z_j||²/ν)^(-(ν+1)/2)`` (ν = 1: t-SNE).

    Works on squared distances, in log space: logits ``-(ν+1)/2 · log1p(d_ij/ν)``.
    Normalisations as in the module docstring.
    """

    role = "either"
    family = "Student-T"

    def __init__(self, dof: float = 1.0, normalization: Normalization = "conditional") -> None:
        _check_normalization(normalization)
        if not dof > 0:
            raise ValueError(f"StudentT dof must be > 0, got {dof}")
        self.dof = dof
        self.normalization = normalization

    def logits(self, ctx: api.Context) -> tuple[Tensor, Tensor, bool]:
        """Unnormalised log-kernel ``[n, m]``, candidate mask, and whether it is rectangular."""
        x = _features(ctx)
        cols, mask = _support(ctx, x)
        rectangular = api.FEATURES_COL in ctx and ctx[api.FEATURES_COL] is not None
        d = squared_distances(x, cols)
        return -(self.dof + 1.0) / 2.0 * torch.log1p(d / self.dof), mask, rectangular

    def log_prob(self, ctx: api.Context) -> Neighborhood:
        logits, mask, rectangular = self.logits(ctx)
        return _finish(logits, mask, self.normalization, rectangular, False)
