"""Cluster kernels (spec icon.md §2.3 q9, q10, q11): "Uniform on Clusters".

Input ``FEATURES`` are cluster **logits** ``[n, k]``; ``φ = softmax(logits)`` are the soft
assignments ``φ_ic = p(c|x_i)`` (spec §2.3, last paragraph). ``FEATURES_COL`` (optional) are
the column points' logits, e.g. an EMA teacher's (spec §5.7).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch

from fw import api
from fw.errors import ShapeError
from fw_icon.base import Geometry, candidates, features, geometry, present


class ClusterKernel(api.NeighborhoodDistribution):
    """Probability that j is drawn uniformly from i's cluster (spec q9; q10 and q11 as options).

    ``by="cluster"`` (q9, k-Means / InfoNCE clustering)::

        q(j|i) = Σ_c φ_ic φ_jc / n_c,            n_c = Σ_k φ_kc

    ``by="point"`` (q10, "shared cluster likelihood by point")::

        q(j|i) = φ_i·φ_j / Σ_k φ_i·φ_k

    ``degree_weighted`` (q11, Normalized Cuts) multiplies every column term by its degree
    ``d_j`` (row sums of the square ``GRAPH``): ``Σ_c φ_ic φ_jc d_j / Σ_k φ_kc d_k``.

    Sums over k run over the batch's column points (the cluster sizes are batch estimates) and
    gradients flow through them — that denominator is the self-balancing term (spec §7.6).
    Rows are normalised **including** ``j = i`` (spec §7.2: only then do they sum to exactly 1).
    ``exclude_self`` drops ``i = j`` of a square context and renormalises by ``1 − q(i|i)`` so
    the candidates match a p that excludes the diagonal: forward KL(p||q) is finite either way
    (q just spends some mass on ``i``), but reverse KL(q||p) against such a p (spec §1.4) is
    infinite unless q drops the diagonal too. ``eps`` is added to the cluster sizes to keep
    empty clusters finite; rows are renormalised afterwards, so they still sum to 1.

    Everything is computed in log space (``log_softmax`` and ``logsumexp``, spec §7.3). Memory
    is O(n·m·k) for ``[n, m]`` rows × columns and k clusters (a ``[n, m, k]`` intermediate);
    chunk the rows for large batches.
    """

    family: ClassVar[str] = api.CLUSTER_FAMILY
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(
        self,
        *,
        by: Literal["cluster", "point"] = "cluster",
        degree_weighted: bool = False,
        eps: float = 0.0,
        exclude_self: bool = False,
    ) -> None:
        if by not in ("cluster", "point"):
            raise ValueError(f"cluster kernel: by must be 'cluster' or 'point', got {by!r}")
        if eps < 0:
            raise ValueError(f"cluster kernel: eps must be >= 0, got {eps}")
        self.by = by
        self.degree_weighted = degree_weighted
        self.eps = eps
        self.exclude_self = exclude_self
        if degree_weighted:
            self.requires = (api.FEATURES, api.GRAPH)

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        logits, logits_col = features(ctx, geo, "cluster kernel")
        log_phi = torch.log_softmax(logits, dim=1)  # [n, k]
        log_phi_col = log_phi if logits_col is logits else torch.log_softmax(logits_col, dim=1)
        col_terms = log_phi_col  # [m, k]: log φ_jc (+ log d_j)
        if self.degree_weighted:
            col_terms = col_terms + self._log_degree(ctx, geo).unsqueeze(1)
        joint = log_phi.unsqueeze(1) + col_terms.unsqueeze(0)  # [n, m, k]
        if self.by == "cluster":
            log_size = torch.logsumexp(col_terms, dim=0)  # [k]: log Σ_j φ_jc (d_j)
            if self.eps > 0:
                log_size = torch.logaddexp(log_size, log_size.new_tensor(math.log(self.eps)))
            joint = joint - log_size
        logits_q = torch.logsumexp(joint, dim=2)  # [n, m]
        mask = candidates(geo, exclude_self=self.exclude_self)
        return api.Neighborhood.from_logits(logits_q, mask)

    @staticmethod
    def _log_degree(ctx: api.Context, geo: Geometry) -> torch.Tensor:
        if not present(ctx, api.GRAPH):
            raise KeyError(f"the degree-weighted cluster kernel needs context key {api.GRAPH!r}")
        graph = torch.as_tensor(ctx[api.GRAPH], device=geo.device)
        if graph.shape != (geo.m, geo.m):
            raise ShapeError(
                "the degree-weighted cluster kernel needs a square GRAPH over the column points "
                f"[{geo.m}, {geo.m}] (degrees are its row sums), got {tuple(graph.shape)}"
            )
        degree = graph.sum(dim=1)
        if bool((degree <= 0).any()):
            raise ValueError("the degree-weighted cluster kernel got a node of degree 0")
        return torch.log(degree).to(ctx[api.FEATURES].dtype)
