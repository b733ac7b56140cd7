"""Learned kernels of the catalog (I-Con, Table 1) beyond SNE's Gaussian/Student-t.

Conventions: distances are **squared** Euclidean; a Euclidean Gaussian has logits
``−‖u − v‖²/2σ²`` except the two limits, which follow their theorems' ``/σ²``
(Prop. 1 and Thm 5); a cosine kernel has logits ``cos(u, v)/τ`` (τ is a temperature, not σ:
on the unit sphere ``‖u − v‖² = 2 − 2cos``, so ``τ = σ²`` for ``/2σ²``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw import api
from fw.errors import ShapeError, check_choice
from fw.lib.distributions import (
    candidates,
    features,
    geometry,
    learned_prototypes,
    prototype_points,
    row_col,
    sq_dists,
)
from fw_icon.discrete import cross_modal_candidates


class CrossModalGaussian(api.NeighborhoodDistribution, nn.Module):
    """q(j|i) ∝ exp(sim(f_i, g_j)) normalised over the other modality only (I-Con, Thm 6).

    Layouts as for ``cross_modal`` p: rectangular ``[n_A, n_B]`` (``FEATURES`` modality A,
    ``FEATURES_COL`` modality B), or square with ``MODALITY`` ``[n]`` so that each point is
    normalised over the other modality's points (both directions at once).

    ``metric``: ``cosine`` — ``cos(f_i, g_j)/τ`` (CLIP; τ = ``temperature``, CLIP's initial
    0.07 by default); ``dot`` — ``f_i·g_j/τ`` (thesis Table 8.1 with τ = 1); ``euclidean`` —
    ``−‖f_i − g_j‖²/2σ²`` (I-Con's Table 1 has ``σ² = 1/2``). ``learn_temperature`` makes
    ``log(1/τ)`` a parameter (CLIP's learned logit scale, clamped to ≤ 100).
    """

    family: ClassVar[str] = "Gaussian"
    role: ClassVar[str] = "either"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(
        self,
        *,
        metric: Literal["cosine", "dot", "euclidean"] = "cosine",
        temperature: float = 0.07,
        sigma: float = 1.0,
        learn_temperature: bool = False,
    ) -> None:
        super().__init__()
        if metric not in ("cosine", "dot", "euclidean"):
            raise ValueError(f"cross_modal_gaussian: unknown metric {metric!r}")
        if temperature <= 0 or sigma <= 0:
            raise ValueError("cross_modal_gaussian: temperature and sigma must be > 0")
        if learn_temperature and metric == "euclidean":
            raise ValueError("cross_modal_gaussian: learn_temperature needs metric cosine or dot")
        self.metric = metric
        self.temperature = temperature
        self.sigma = sigma
        self.log_scale = (
            nn.Parameter(torch.tensor(math.log(1.0 / temperature))) if learn_temperature else None
        )

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        mask = cross_modal_candidates(ctx, geo)
        x, y = features(ctx, geo, "cross_modal_gaussian")
        if self.metric == "euclidean":
            logits = -sq_dists(x, y) / (2.0 * self.sigma**2)
        else:
            if self.metric == "cosine":
                x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
            sims = x @ y.T
            if self.log_scale is None:
                logits = sims / self.temperature
            else:
                logits = sims * self.log_scale.clamp(max=math.log(100.0)).exp()
        return api.Neighborhood.from_logits(logits, mask)


class PrototypeSoftmax(api.NeighborhoodDistribution, nn.Module):
    """q(j|i) = softmax_j(f_i·φ_j / τ) over class prototypes φ (I-Con, Cor. 3, Thm 7).

    Where the prototypes come from:

    - ``num_classes`` and ``dim``: learned prototypes ``φ`` ``[C, dim]`` held by this module
      (it is an ``nn.Module``, so a learner that holds it trains them);
    - ``num_classes`` without ``dim``: the features already are the class scores ``[n, C]``
      (identity prototypes; the mapper's last linear layer holds φ);
    - neither: prototypes are the context's ``FEATURES_COL`` ``[C, d]`` (e.g. text embeddings).

    ``bias`` adds a learned per-class bias (``f·φ_j + b_j``: a linear classifier's logits).
    ``normalize`` L2-normalises f and φ first (a cosine classifier). With ``data_label`` as p
    the I-Con loss is exactly ``F.cross_entropy`` of these logits (I-Con, Cor. 3).
    """

    table_params: ClassVar[dict[str, Any]] = {"q": {"num_classes": 10, "dim": 16}}

    example: ClassVar[dict[str, Any]] = {"num_classes": 3, "dim": 4}

    family: ClassVar[str] = "Gaussian"
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        dim: int | None = None,
        temperature: float = 1.0,
        normalize: bool = False,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"prototype_softmax: temperature must be > 0, got {temperature}")
        if num_classes is None and bias:
            raise ValueError("prototype_softmax: learned biases need `num_classes`")
        self.num_classes = num_classes
        self.temperature = temperature
        self.normalize = normalize
        init = learned_prototypes(num_classes, dim, "prototype_softmax")
        self.prototypes = None if init is None else nn.Parameter(init)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        f = ctx[api.FEATURES]
        protos = prototype_points(ctx, self.prototypes, self.num_classes, "prototype_softmax")
        if self.normalize:
            f, protos = F.normalize(f, dim=1), F.normalize(protos, dim=1)
        logits = f @ protos.T / self.temperature
        if self.bias is not None:
            logits = logits + self.bias.to(f.dtype)
        mask = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)
        return api.Neighborhood.from_logits(logits, mask)


class CohesionVariance(api.NeighborhoodDistribution):
    """The wide-Gaussian limit σ→∞ (I-Con, Prop. 1): PCA, MDS, VICReg, Average Margin.

    Not a literal kernel: ``q_σ(j|i) ∝ exp(−‖f_i − f_j‖²/σ²)`` tends to uniform as σ→∞, and
    what survives is its first-order term. With ``sigma: null`` (the default) ``log_prob`` is
    that term, rescaled by σ² — a *pseudo* log-probability (rows do **not** sum to 1; the
    instance says so with ``normalized = False``)::

        log q̃(j|i) = −log N_i − (d_ij − d̄_i),    d_ij = ‖f_i − f_j‖²,  d̄_i = mean_k d_ik

    over the ``N_i`` candidates of row i. Hence, exactly, for any p summing to 1 per row::

        icon_loss(p, q̃, mode="ce") = (1/n) Σ_ij p(j|i) d_ij − (1/n) Σ_i d̄_i + mean_i log N_i
                                    = L_cohesion-var + log n       (candidates include i)

    with ``L_cohesion-var = (1/n) Σ_ij p(j|i)‖f_i − f_j‖² − 2 Var(f)`` (Prop. 1, Var = mean
    squared distance to the mean); ``mode="kl"`` adds the constant ``−H(p)``. This equals
    ``lim σ→∞ σ²·(H(p, q_σ) − log n) + log n`` (tested), gradients included. Use it in
    forward direction only (reverse KL reads ``q.prob``, which means nothing here), and do not
    debias it. ``cohesion_variance_loss`` computes the same objective directly.

    The candidates include ``i = j`` (normalisation over all k, as in the MDS/K-Means proofs;
    PCA's identity p needs it); ``exclude_self`` removes it. A float ``sigma`` instead gives the
    literal, normalised Gaussian ``exp(−d_ij/σ²)`` at that width, to check convergence.
    """

    #: its loss is unbounded below for an unconstrained mapper (cohesion − 2·Var): generated
    #: table recipes project orthonormally instead (`fw_table.table.generic_recipe`)
    table_learner: ClassVar[dict[str, Any]] = {
        "mapper": {"name": "orthonormal_projection", "dim": 2},
        "optimizer": {"lr": 0.05},
    }

    family: ClassVar[str] = "Gaussian σ→∞"
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(self, *, sigma: float | None = None, exclude_self: bool = False) -> None:
        if sigma is not None and sigma <= 0:
            raise ValueError(f"cohesion_variance: sigma must be > 0 or null, got {sigma}")
        self.sigma = sigma
        self.exclude_self = exclude_self
        self.normalized = sigma is not None

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        x, y = features(ctx, geo, "cohesion_variance")
        d = sq_dists(x, y)
        mask = candidates(geo, exclude_self=self.exclude_self)
        if self.sigma is not None:
            return api.Neighborhood.from_logits(-d / self.sigma**2, mask)
        count = mask.sum(dim=1, keepdim=True).to(d.dtype)
        d_mean = d.masked_fill(~mask, 0.0).sum(dim=1, keepdim=True) / count
        pseudo = -torch.log(count) - (d - d_mean)
        return api.Neighborhood(pseudo.masked_fill(~mask, float("-inf")), mask)


def cohesion_variance_loss(p: api.Neighborhood, x: Tensor) -> Tensor:
    """``(1/n) Σ_ij p(j|i)‖x_i − x_j‖² − 2 Var(x)`` (I-Con, Prop. 1), square p only."""
    n = x.shape[0]
    if p.log_prob.shape != (n, n):
        raise ShapeError(f"cohesion_variance_loss needs p of shape [{n}, {n}]")
    cohesion = (p.prob.detach() * sq_dists(x, x)).sum() / n
    variance = (x - x.mean(dim=0)).pow(2).sum(dim=1).mean()
    return cohesion - 2.0 * variance


class Triplet(api.NeighborhoodDistribution):
    """The narrow-Gaussian limit σ→0 with one negative (I-Con, Thm 5): Triplet loss.

    Row i is normalised over its positives and **one** negative only::

        q(j|i) = exp(−d_ij/σ²) / Σ_{k ∈ {positives of i} ∪ {i⁻}} exp(−d_ik/σ²),  d = ‖f_i − f_j‖²

    so with one positive (two views) the I-Con cross-entropy row is
    ``softplus((d⁺ − d⁻)/σ²)`` and ``σ²·L − σ² log 2 ≤ mean_i max(d⁺ − d⁻, 0) ≤ σ²·L`` (the
    bounds of I-Con, Thm 5; the hinge is the σ→0 limit). Positives are the other points with
    the same ``INDEX`` (``positives: index``) or label (``labels``; Triplet SupCon); the negative
    is drawn uniformly (``random``, from torch's global generator) or is the nearest one
    (``hardest``) among the rest. p must put its mass on those positives only (e.g.
    ``positive_pairs`` with two views). ``normalize`` puts f on the unit sphere (FaceNet).
    """

    table_params: ClassVar[dict[str, Any]] = {"q": {"positives": "labels"}}

    family: ClassVar[str] = "Gaussian σ→0"
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES, api.INDEX)

    def __init__(
        self,
        *,
        sigma: float = 1.0,
        negative: Literal["random", "hardest"] = "random",
        positives: Literal["index", "labels"] = "index",
        normalize: bool = False,
    ) -> None:
        if sigma <= 0:
            raise ValueError(f"triplet: sigma must be > 0, got {sigma}")
        check_choice(negative, ("random", "hardest"), "triplet: negative")
        check_choice(positives, ("index", "labels"), "triplet: positives")
        self.sigma = sigma
        self.negative = negative
        self.positives = positives
        self.normalize = normalize
        self.requires = (api.FEATURES, api.INDEX if positives == "index" else api.LABELS)

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        x, y = features(ctx, geo, "triplet")
        if self.normalize:
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        d = sq_dists(x, y)
        positive, negative = self.select(ctx, d)
        mask = positive.clone()
        mask[torch.arange(geo.n, device=geo.device), negative] = True
        return api.Neighborhood.from_logits(-d / self.sigma**2, mask)

    def select(self, ctx: api.Context, d: Tensor) -> tuple[Tensor, Tensor]:
        """Positive mask ``[n, m]`` and the chosen negative column ``[n]`` of every row."""
        geo = geometry(ctx)
        by_index = self.positives == "index"
        key = api.INDEX if by_index else api.LABELS
        key_col = api.INDEX_COL if by_index else api.LABELS_COL
        ids, ids_col = row_col(ctx, key, key_col, geo, "triplet")
        allowed = candidates(geo)
        same = ids.unsqueeze(1) == ids_col.unsqueeze(0)
        positive, negatives = same & allowed, ~same & allowed
        for what, rel in (("positive", positive), ("negative", negatives)):
            if not bool(rel.any(dim=1).all()):
                raise ValueError(f"triplet: some row has no {what} in the batch")
        if self.negative == "hardest":
            score = -d.detach().masked_fill(~negatives, float("inf"))
        else:
            score = torch.rand(d.shape, device=d.device).masked_fill(~negatives, -1.0)
        return positive, score.argmax(dim=1)
