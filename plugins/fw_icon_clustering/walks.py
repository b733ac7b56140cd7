"""Global k-nearest-neighbour tables and walks on them (I-Con, §3.3 and §4).

The ImageNet clusterer pre-computes, once, the k = 3 cosine nearest neighbours of every image
over the whole data set, samples neighbours of each anchor from that table into the batch, and
puts supervisory mass on the batch points that are neighbours of an anchor or reachable from it
by short walks on the kNN graph. Everything here works in dataset-id space: a table row
``table[a]`` lists the ids of a's neighbours, never a itself.

Walk convention (the one of `fw_icon.wrappers.Propagated`): ``steps`` is the longest walk, so
``steps: 1`` is the kNN graph ``P`` itself and ``steps: 2`` is ``P + P²`` ("kNNs + 1-walks" of
the paper's Table 4). ``P`` is uniform over each row's k table neighbours; walks that come back
to the start are dropped.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from fw import api
from fw.errors import ShapeError, check_choice
from fw.lib.distributions import OnMissing, candidates, ctx_dtype, geometry, present, row_col

Metric = Literal["cosine", "euclidean"]


#: kNN tables already computed in this process, by (content digest, k, metric)
_TABLES: dict[tuple[str, int, str], Tensor] = {}


@torch.no_grad()
def knn_table(
    features: Tensor,
    k: int,
    metric: Metric = "cosine",
    index: Literal["auto", "flat", "ivf", "ivf_sq8"] = "auto",
) -> Tensor:
    """``[N, k]`` ids of each point's k nearest neighbours, the point itself excluded.

    `fw.lib.features.knn` (faiss; ``index``: ``flat`` exact, ``ivf`` approximate, ``ivf_sq8``
    approximate with 8-bit codes re-ranked exactly, 1/4 of ``ivf``'s index memory, ``auto``
    exact below 100 000 points and ``ivf_sq8`` from there): ``cosine`` compares L2-normalised
    features (the paper's choice), ``euclidean`` squared distances. Tables are memoised per
    process by the features' content, so runs that share features (a benchmark's rows, seeds)
    search once.
    """
    from fw.lib.features import knn

    check_choice(metric, ("cosine", "euclidean"), "knn table: metric")
    x = features.detach().flatten(1).float().cpu().contiguous()
    digest = hashlib.sha256(x.numpy().tobytes()).hexdigest()
    key = (f"{tuple(x.shape)}:{digest}", k, f"{metric}/{index}")
    if key not in _TABLES:
        found, _ = knn(x.numpy(), k, "cosine" if metric == "cosine" else "l2", index=index)
        found[found < 0] = np.broadcast_to(found[:, :1], found.shape)[found < 0]  # IVF misses
        _TABLES.clear()  # keep one table: they can be large
        _TABLES[key] = torch.from_numpy(found).long()
    return _TABLES[key].clone()


def walk_targets(table: Tensor, ids: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Ends and weights of all walks of length 1..steps from each id: ``[n, L]`` twice.

    ``L = k + k² + … + k^steps``. A walk of length l has weight ``1/k^l``, so summing the
    weights of equal ends gives row ``ids`` of ``P + P² + … + P^steps``; walks that end where
    they started get weight 0.
    """
    if steps < 1:
        raise ValueError(f"walk steps must be >= 1, got {steps}")
    k = table.shape[1]
    ends, weights = [], []
    level = ids.unsqueeze(1)  # [n, 1]
    for length in range(1, steps + 1):
        level = table[level].flatten(1)  # [n, k^length]
        ends.append(level)
        weights.append(torch.full(level.shape, float(k) ** -length, device=table.device))
    end = torch.cat(ends, dim=1)
    weight = torch.cat(weights, dim=1).masked_fill(end == ids.unsqueeze(1), 0.0)
    return end, weight


def sample_walk_neighbors(table: Tensor, ids: Tensor, num: int, steps: int) -> Tensor:
    """``[n, num]`` ids drawn from ``(P + … + P^steps)/steps`` for each id (self excluded).

    Each draw picks a walk length uniformly in 1..steps and then a uniformly random table
    neighbour at every hop; a walk back to its start is replaced by a direct neighbour.
    Uses the global torch RNG (seeded and checkpointed by the training loop).
    """
    n, k = ids.shape[0], table.shape[1]
    start = ids.unsqueeze(1).expand(n, num)
    lengths = torch.randint(1, steps + 1, (n, num), device=table.device)
    cur = start
    for hop in range(steps):
        nxt = table[cur, torch.randint(0, k, (n, num), device=table.device)]
        cur = torch.where(lengths > hop, nxt, cur)
    direct = table[start, torch.randint(0, k, (n, num), device=table.device)]
    return torch.where(cur == start, direct, cur)


class KNNWalks(api.NeighborhoodDistribution):
    """p(j|i) ∝ (P + P² + … + P^steps)[id_i, id_j] on a global kNN table (I-Con, §3.3).

    ``P`` is uniform over the first ``k`` entries of the context's ``NEIGHBORS`` table
    (``[N, K]`` in dataset-id space, e.g. the learner's pre-computed cosine kNN); rows are
    matched to the table by ``INDEX`` (columns by ``INDEX_COL`` in a rectangular context) and
    only the batch columns reached by a walk get mass, renormalised over the batch.
    ``steps: 1`` is uniform over the kNN table (``knn`` with ``source: table``); ``steps: 2``
    adds neighbours of neighbours ("kNN + 1-walks"). ``mode: sum`` weighs by walk weight
    (``P̃``), ``uniform`` is uniform over everything reachable (``P̃_U``). Columns with row i's
    own id (its other views) get no mass here: they are positive pairs, not neighbours.
    ``symmetric`` (square contexts) uses ``W + Wᵀ`` before normalising, so a point sampled as
    someone's neighbour always links back to it even when the kNN relation is one-way.
    """

    family: ClassVar[str] = "Uniform over K-Neighbors"
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.INDEX, api.NEIGHBORS)

    def __init__(
        self,
        *,
        k: int | None = None,
        steps: int = 1,
        mode: Literal["sum", "uniform"] = "sum",
        symmetric: bool = False,
        on_missing: OnMissing = "skip",
    ) -> None:
        if k is not None and k < 1:
            raise ValueError(f"knn_walks: k must be >= 1 or null, got {k}")
        if steps < 1:
            raise ValueError(f"knn_walks: steps must be >= 1, got {steps}")
        check_choice(mode, ("sum", "uniform"), "knn_walks: mode")
        check_choice(on_missing, ("error", "skip"), "knn_walks: on_missing")
        self.k = k
        self.steps = steps
        self.mode = mode
        self.symmetric = symmetric
        self.on_missing = on_missing

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        geo = geometry(ctx)
        ids, ids_col = row_col(ctx, api.INDEX, api.INDEX_COL, geo, "knn_walks")
        if not present(ctx, api.NEIGHBORS):
            raise KeyError(f"knn_walks needs context key {api.NEIGHBORS!r}")
        table = torch.as_tensor(ctx[api.NEIGHBORS], device=geo.device)
        if table.dim() != 2:
            raise ShapeError(
                f"knn_walks: {api.NEIGHBORS!r} must be [N, k], got {tuple(table.shape)}"
            )
        k = table.shape[1] if self.k is None else self.k
        if k > table.shape[1]:
            raise ValueError(f"knn_walks: k={k} but the table has {table.shape[1]} columns")
        dtype = ctx_dtype(ctx)
        ends, weights = walk_targets(table[:, :k], ids, self.steps)
        weight = _weights_on_columns(ends, weights.to(dtype), ids_col)  # [n, m]
        if self.symmetric:
            if not geo.square:
                raise ShapeError("knn_walks: symmetric needs a square context (no *_col keys)")
            weight = weight + weight.T
        mask = candidates(geo)
        weight = weight.masked_fill(~mask, 0.0)
        if self.mode == "uniform":
            weight = (weight > 0).to(dtype)
        total = weight.sum(dim=1, keepdim=True)
        empty = total.squeeze(1) <= 0
        if self.on_missing == "error" and bool(empty.any()):
            raise ValueError(
                f"knn_walks: {int(empty.sum())} of {geo.n} row(s) have no table neighbour among "
                "the batch's columns; sample neighbours into the batch or use on_missing: skip"
            )
        has = weight > 0
        log_prob = torch.log(torch.where(has, weight / total.clamp_min(1e-30), 1.0))
        return api.Neighborhood(log_prob.masked_fill(~has, float("-inf")), mask)


def _weights_on_columns(ends: Tensor, weights: Tensor, ids_col: Tensor) -> Tensor:
    """``W[i, j] = Σ_l weights[i, l] · 1[ends[i, l] = ids_col[j]]`` without an [n, L, m] tensor."""
    uniq, inverse = torch.unique(ids_col, return_inverse=True)
    pos = torch.searchsorted(uniq, ends).clamp_max(uniq.numel() - 1)
    hit = uniq[pos] == ends
    per_id = torch.zeros(ends.shape[0], uniq.numel(), dtype=weights.dtype, device=ends.device)
    per_id.scatter_add_(1, pos, weights * hit.to(weights.dtype))
    return per_id[:, inverse]
