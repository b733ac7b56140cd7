"""Neighbour-graph supervisory distributions (I-Con, Table 1; Hamilton, PhD thesis, Fig. 8.1)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fw import api
from fw.errors import ShapeError, check_choice
from fw.lib.distributions import (
    Geometry,
    OnMissing,
    candidates,
    ctx_dtype,
    features,
    geometry,
    present,
    row_col,
    sq_dists,
    uniform_over,
)


class UniformKNN(api.NeighborhoodDistribution):
    """p(j|i) = 1/k · 1[j is one of the k nearest neighbours of i].

    Two sources of neighbours (``source: auto`` takes the table when the context has one):

    - ``batch``: exact kNN among the batch's column points by faiss — ``IndexFlatIP`` on
      L2-normalised features for ``metric: cosine`` (the experiments' choice), ``IndexFlatL2``
      for ``euclidean``. In a square context i itself is never its own neighbour;
    - ``table``: a precomputed global kNN table ``NEIGHBORS`` ``[N, K]`` in dataset-id space
      (the ImageNet clusterer's k=3 cosine neighbours, I-Con §4), matched to the batch by
      ``INDEX`` / ``INDEX_COL``; its first ``k`` entries other than i's own id are used, and
      only those present in the batch get mass (see ``on_missing``).

    ``symmetric`` makes the relation mutual-or: ``1/Z · 1[j ∈ kNN(i) or i ∈ kNN(j)]`` (the
    LGSimCLR form ``1[x_i ∈ kNN(x_j)]`` united with the usual one).
    """

    example: ClassVar[dict[str, Any]] = {"k": 3}

    family: ClassVar[str] = "Uniform over K-Neighbors"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        k: int = 10,
        metric: Literal["cosine", "euclidean"] = "cosine",
        symmetric: bool = False,
        source: Literal["auto", "batch", "table"] = "auto",
        on_missing: OnMissing = "error",
    ) -> None:
        if k < 1:
            raise ValueError(f"knn: k must be >= 1, got {k}")
        check_choice(metric, ("cosine", "euclidean"), "knn: metric")
        check_choice(source, ("auto", "batch", "table"), "knn: source")
        self.k = k
        self.metric = metric
        self.symmetric = symmetric
        self.source = source
        self.on_missing = on_missing

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        table = self.source == "table" or (self.source == "auto" and present(ctx, api.NEIGHBORS))
        support = self._from_table(ctx, geo) if table else self._from_batch(ctx, geo)
        return uniform_over(support, candidates(geo), self.on_missing, "knn", ctx_dtype(ctx))

    # -- in-batch neighbours ---------------------------------------------------------------

    def _from_batch(self, ctx: api.Context, geo: Geometry) -> Tensor:
        x, y = features(ctx, geo, "knn")
        x, y = x.detach(), y.detach()
        support = self._search(x, y, exclude_self=geo.square)
        if self.symmetric:
            back = support if geo.square else self._search(y, x, exclude_self=False)
            support = support | back.T
        return support.to(geo.device)

    def _search(self, queries: Tensor, base: Tensor, exclude_self: bool) -> Tensor:
        import faiss

        n, m = queries.shape[0], base.shape[0]
        available = m - 1 if exclude_self else m
        if self.k > available:
            raise ValueError(
                f"knn: k={self.k} neighbours asked, but only {available} candidates per row "
                "are in the batch; lower k or raise the batch size"
            )
        if self.metric == "cosine":
            queries, base = F.normalize(queries, dim=1), F.normalize(base, dim=1)
            index = faiss.IndexFlatIP(base.shape[1])
        else:
            index = faiss.IndexFlatL2(base.shape[1])
        index.add(base.float().cpu().contiguous().numpy())
        want = self.k + 1 if exclude_self else self.k
        _, found = index.search(queries.float().cpu().contiguous().numpy(), want)
        found = torch.from_numpy(found).long()
        support = torch.zeros(n, m, dtype=torch.bool)
        support.scatter_(1, found, True)
        if exclude_self:
            # i is usually its own first hit; where ties pushed it out, drop the farthest hit.
            hit_self = (found == torch.arange(n).unsqueeze(1)).any(dim=1)
            support.fill_diagonal_(False)
            rows = (~hit_self).nonzero().squeeze(1)
            support[rows, found[rows, self.k]] = False
        return support

    # -- global table ----------------------------------------------------------------------

    def _from_table(self, ctx: api.Context, geo: Geometry) -> Tensor:
        if not present(ctx, api.NEIGHBORS):
            raise KeyError(f"knn with source 'table' needs context key {api.NEIGHBORS!r}")
        table = torch.as_tensor(ctx[api.NEIGHBORS], device=geo.device)
        if table.dim() != 2:
            raise ShapeError(f"knn: {api.NEIGHBORS!r} must be [N, k], got {tuple(table.shape)}")
        if table.shape[1] < self.k:
            raise ValueError(
                f"knn: k={self.k} but the neighbour table has only {table.shape[1]} columns"
            )
        ids, ids_col = row_col(ctx, api.INDEX, api.INDEX_COL, geo, "knn (table)")
        support = _table_links(table, ids, ids_col, self.k)
        if self.symmetric:
            support = support | _table_links(table, ids_col, ids, self.k).T
        return support


def _table_links(table: Tensor, ids: Tensor, ids_col: Tensor, k: int) -> Tensor:
    """``[n, m]``: column j's id is among the first k table neighbours of row i (own id skipped)."""
    rows = table[ids]  # [n, K]
    own = rows == ids.unsqueeze(1)
    order = torch.sort(own.long(), dim=1, stable=True).indices  # own id (if listed) moves last
    nbrs = torch.gather(rows, 1, order)[:, :k]
    return (nbrs.unsqueeze(2) == ids_col.view(1, 1, -1)).any(dim=1)


class GraphKernel(api.NeighborhoodDistribution):
    """p(j|i) ∝ edge weight w_ij of a graph (Normalized Cuts, I-Con, Thm 11).

    The graph is ``GRAPH`` ``[n, m]`` (non-negative weights) when the context has one, else an
    RBF affinity on the features, ``w_ij = exp(−‖x_i − x_j‖² / 2σ²)`` (squared Euclidean
    distance, the ``/2σ²`` convention), kept only on the mutual-or ``k`` nearest
    neighbours when ``k`` is given. Self-loops are dropped in square contexts
    (``exclude_self``).

    ``kernel: weights`` gives ``p(j|i) = w_ij / Σ_k w_ik``; ``kernel: exp`` is the NCut row of
    I-Con's Table 1, "Gaussians on edge weights", ``exp(w_ij) / Σ_k exp(w_ik)``.
    ``degree_normalized`` divides every column's weight by its degree ``d_j = Σ_k w_jk``
    first (``w_ij/d_j``, as in NCut's ``exp(w_ij/d_j)``); it needs a square graph.
    """

    family: ClassVar[str] = "Graph Kernel Weights"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        kernel: Literal["weights", "exp"] = "weights",
        degree_normalized: bool = False,
        sigma: float = 1.0,
        k: int | None = None,
        exclude_self: bool = True,
    ) -> None:
        check_choice(kernel, ("weights", "exp"), "graph: kernel")
        if sigma <= 0:
            raise ValueError(f"graph: sigma must be > 0, got {sigma}")
        if k is not None and k < 1:
            raise ValueError(f"graph: k must be >= 1 or null, got {k}")
        self.kernel = kernel
        self.degree_normalized = degree_normalized
        self.sigma = sigma
        self.k = k
        self.exclude_self = exclude_self

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        if present(ctx, api.GRAPH):
            weights = torch.as_tensor(ctx[api.GRAPH]).detach()
            if weights.dim() != 2:
                raise ShapeError(f"graph: {api.GRAPH!r} must be [n, m], got {tuple(weights.shape)}")
            if bool((weights < 0).any()):
                raise ValueError("graph: edge weights must be non-negative")
            n, m = weights.shape
            square = n == m and not any(
                present(ctx, key) for key in (api.FEATURES_COL, api.INDEX_COL, api.LABELS_COL)
            )
            geo = Geometry(n, m, square, weights.device)
            log_w = torch.log(weights)
        else:
            geo = geometry(ctx)
            x, y = features(ctx, geo, "graph")
            log_w = -sq_dists(x.detach(), y.detach()) / (2.0 * self.sigma**2)
        mask = candidates(geo, exclude_self=self.exclude_self)
        log_w = log_w.masked_fill(~mask, float("-inf"))
        if self.k is not None:
            log_w = self._sparsify(log_w, geo)
        log_degree = torch.logsumexp(log_w, dim=1)  # [n]
        if bool(torch.isneginf(log_degree).any()):
            first = int(torch.isneginf(log_degree).nonzero()[0, 0])
            raise ValueError(f"graph: node {first} has no edge to any candidate (degree 0)")
        if self.degree_normalized and geo.n != geo.m:
            raise ShapeError("graph: degree_normalized needs a square graph (degrees of columns)")
        if self.kernel == "weights":
            logits = log_w - log_degree.unsqueeze(0) if self.degree_normalized else log_w
        else:
            w = log_w.exp()
            logits = w / log_degree.exp().unsqueeze(0) if self.degree_normalized else w
        return api.Neighborhood.from_logits(logits, mask)

    def _sparsify(self, log_w: Tensor, geo: Geometry) -> Tensor:
        available = int(torch.isfinite(log_w).sum(dim=1).min())
        if self.k > available:
            raise ValueError(f"graph: k={self.k} but a row has only {available} weighted edges")
        top = log_w.topk(self.k, dim=1).indices
        keep = torch.zeros_like(log_w, dtype=torch.bool).scatter_(1, top, True)
        if geo.square:
            keep = keep | keep.T
        return log_w.masked_fill(~keep, float("-inf"))
