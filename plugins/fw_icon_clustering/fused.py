"""The clusterer's loss with a sparse supervisory p: same value and gradient, far less memory.

The generic path materialises every distribution as a dense ``[n, n]`` neighbourhood (a dozen
passes over n² entries per step). The clusterer's p is sparse, though: each point has a
handful of positives (its other views) and walk neighbours, plus — when debiased — the same
uniform mass ``α/N`` on every candidate. :func:`compile_p` recognises the compositions

    [debiased(α)] ∘ [union(weights)] ∘ {positive_pairs, knn_walks}

and :func:`compile_q` ``[debiased(α)] ∘ cluster(by=cluster)``; :func:`sparse_icon_loss` then
evaluates exactly ``icon_loss(p(ctx), q(ctx))`` (mean over rows of KL or CE) from the sparse
entries of p and, for the uniform part, row sums of ``log q̃`` over all candidates. Memory is
O(nnz·k) without p-debiasing and O(n·m) with it (one ``[n, k] × [k, m]`` product, as the
cluster kernel's ``matmul`` form). Anything else returns ``None`` and the learner takes the
generic path. `tests/test_icon_clustering.py` checks both paths agree.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

from fw import api
from fw_icon.wrappers import Debiased, Union
from fw_icon_clustering.walks import KNNWalks, walk_targets
from fw_kmeans.distributions import ClusterKernel, log_matmul_exp
from fw_simclr.distributions import PositivePairs


@attrs.frozen
class SparseP:
    """A recognised supervisory composition: parts, union weights and p-debiasing."""

    parts: tuple[Any, ...]  # PositivePairs / KNNWalks instances
    weights: tuple[float, ...]
    alpha: float


@attrs.frozen
class ClusterQ:
    """A recognised learned composition: the cluster kernel with eps, and q-debiasing."""

    eps: float
    alpha: float


def compile_p(p: api.NeighborhoodDistribution) -> SparseP | None:
    """The sparse form of ``p``, or None when it is not a composition handled here."""
    alpha = 0.0
    if isinstance(p, Debiased):
        alpha, p = p.alpha, p.of
    if isinstance(p, Union):
        parts, weights = list(p.of), list(p.weights)
    else:
        parts, weights = [p], [1.0]
    if not all(type(part) in (PositivePairs, KNNWalks) for part in parts):
        return None
    return SparseP(tuple(parts), tuple(weights), alpha)


def compile_q(q: api.NeighborhoodDistribution) -> ClusterQ | None:
    """The fused form of ``q``, or None when it is not a (debiased) cluster kernel."""
    alpha = 0.0
    if isinstance(q, Debiased):
        alpha, q = q.alpha, q.of
    if type(q) is not ClusterKernel or q.by != "cluster" or q.degree_weighted or q.exclude_self:
        return None
    return ClusterQ(q.eps, alpha)


# ----------------------------------------------------------------------------- sparse p


def _matches(keys: Tensor, ids_col: Tensor) -> tuple[Tensor, Tensor]:
    """All (position in ``keys``, column j) with ``keys[pos] == ids_col[j]``."""
    order = torch.argsort(ids_col)
    sorted_ids = ids_col[order]
    lo = torch.searchsorted(sorted_ids, keys, right=False)
    hi = torch.searchsorted(sorted_ids, keys, right=True)
    count = hi - lo
    pos = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), count)
    start = torch.cumsum(count, 0) - count
    offset = torch.arange(pos.numel(), device=keys.device) - start[pos]
    return pos, order[lo[pos] + offset]


def _coalesce(rows: Tensor, cols: Tensor, vals: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
    key = rows * m + cols
    uniq, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(uniq.numel(), dtype=vals.dtype, device=vals.device)
    summed.scatter_add_(0, inverse, vals)
    return uniq // m, uniq % m, summed


def _row_normalize(rows: Tensor, vals: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Values divided by their row sums, and the ``[n]`` mask of rows with mass."""
    total = torch.zeros(n, dtype=vals.dtype, device=vals.device).scatter_add_(0, rows, vals)
    return vals / total[rows], total > 0


def _part_entries(part: Any, ctx: api.Context, n: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """(rows, cols, values) of one part's row-normalised p, and its rows-with-mass mask."""
    ids = torch.as_tensor(ctx[api.INDEX])
    if isinstance(part, PositivePairs):
        rows, cols = _matches(ids, ids)
        keep = rows != cols
        rows, cols = rows[keep], cols[keep]
        vals = torch.ones(rows.numel(), dtype=dtype, device=ids.device)
    else:  # KNNWalks
        table = torch.as_tensor(ctx[api.NEIGHBORS], device=ids.device)
        k = table.shape[1] if part.k is None else part.k
        ends, weights = walk_targets(table[:, :k], ids, part.steps)
        live = weights > 0
        row_of = torch.arange(n, device=ids.device).unsqueeze(1).expand_as(ends)[live]
        pos, cols = _matches(ends[live], ids)
        rows, vals = row_of[pos], weights[live][pos].to(dtype)
        keep = rows != cols
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if part.symmetric:
            rows, cols, vals = torch.cat([rows, cols]), torch.cat([cols, rows]), vals.repeat(2)
        rows, cols, vals = _coalesce(rows, cols, vals, n)
        if part.mode == "uniform":
            vals = torch.ones_like(vals)
    vals, has_mass = _row_normalize(rows, vals, n)
    if part.on_missing == "error" and not bool(has_mass.all()):
        raise ValueError(
            f"{type(part).__name__}: {int((~has_mass).sum())} of {n} row(s) have no neighbour in "
            "the batch; use on_missing: skip"
        )
    return rows, cols, vals, has_mass


def sparse_p(spec: SparseP, ctx: api.Context, n: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Coalesced (rows, cols, p) of the union before debiasing (rows sum to 1 or 0)."""
    entries = [_part_entries(part, ctx, n, dtype) for part in spec.parts]
    w = torch.tensor(spec.weights, dtype=dtype)
    total = sum(wk * has.to(dtype) for wk, (*_, has) in zip(w, entries, strict=True))
    total = total.clamp_min(torch.finfo(dtype).tiny)
    rows = torch.cat([e[0] for e in entries])
    cols = torch.cat([e[1] for e in entries])
    vals = torch.cat([e[2] * wk / total[e[0]] for wk, e in zip(w, entries, strict=True)])
    return _coalesce(rows, cols, vals, n)


# ----------------------------------------------------------------------------- loss


#: logits more than this many nats below their row's largest are raised to it (see below)
LOGIT_RANGE = 80.0


def _within_range(logits: Tensor) -> Tensor:
    """Logits floored at ``LOGIT_RANGE`` below their row's largest.

    A sharp head's log-softmax holds entries far below e^-87.3 (float32's smallest normal),
    where torch's exp takes a slow path whatever the flush mode, in log_softmax, every
    logsumexp over φ and their backward passes (30-50x slower there). Floored entries have
    φ < e^-80 beside a largest near 1: they change no float32 sum of φ, and their gradient,
    now 0, was of order e^-80.
    """
    return torch.maximum(logits, logits.amax(dim=1, keepdim=True).detach() - LOGIT_RANGE)


class DebiasedKernelLogs(torch.autograd.Function):
    """``Σ_{j≠i} log q̃_ij`` per row and ``log q̃`` at p's entries, for ``q̃ = (1−α)·φ Cᵀ + α/m``.

    One ``[n, m]`` buffer is kept for the backward pass, which forms ``∂L/∂q̃`` in one pass and
    returns it through two matrix products (autograd would hold and sweep half a dozen).
    """

    @staticmethod
    def forward(ctx: Any, phi: Tensor, col: Tensor, rows: Tensor, cols: Tensor, alpha: float):
        q = torch.addmm(phi.new_tensor(alpha / col.shape[0]), phi, col.T, alpha=1.0 - alpha)
        log_q = torch.log(q)
        off_diag = log_q.sum(dim=1) - torch.diagonal(log_q)
        ctx.save_for_backward(phi, col, rows, cols, q)
        ctx.alpha = alpha
        return off_diag, log_q[rows, cols]

    @staticmethod
    def backward(ctx: Any, g_off: Tensor, g_sup: Tensor):
        phi, col, rows, cols, q = ctx.saved_tensors
        grad_q = g_off.unsqueeze(1) / q
        grad_q.diagonal().zero_()
        grad_q.index_put_((rows, cols), g_sup / q[rows, cols], accumulate=True)
        scale = 1.0 - ctx.alpha
        return scale * (grad_q @ col), scale * (grad_q.T @ phi), None, None, None


def sparse_icon_loss(
    p_spec: SparseP,
    q_spec: ClusterQ,
    p_ctx: api.Context,
    logits: Tensor,
    logits_col: Tensor | None = None,
    mode: str = "kl",
    p_entries: tuple[Tensor, ...] | None = None,
) -> Tensor:
    """``mean_i KL(p̃(.|i) || q̃(.|i))`` (or CE) for the square batch of ``logits`` ``[n, k]``.

    p's candidates are ``j ≠ i`` (N = n − 1), q's every column (m = n), exactly as the dense
    distributions define them. ``p_entries`` reuses :func:`sparse_p`'s output across heads.
    """
    n = logits.shape[0]
    dtype = logits.dtype
    rows, cols, pv = p_entries if p_entries is not None else sparse_p(p_spec, p_ctx, n, dtype)
    log_phi = torch.log_softmax(_within_range(logits), dim=1)
    log_phi_col = log_phi if logits_col is None else torch.log_softmax(_within_range(logits_col), 1)
    log_mass = torch.logsumexp(log_phi_col, dim=0)  # [k]: log Σ_j φ_jc
    log_size = log_mass
    if q_spec.eps > 0:
        log_size = torch.logaddexp(log_mass, log_mass.new_tensor(math.log(q_spec.eps)))
    col_terms = log_phi_col - log_size  # [m, k]
    # rows of the kernel sum to Σ_c φ_ic Σ_j φ_jc / size_c (1 unless eps > 0): renormalise
    log_norm = torch.logsumexp(log_phi + (log_mass - log_size), dim=1)  # [n]
    m = col_terms.shape[0]
    a_q = q_spec.alpha

    def debias_q(log_q: Tensor) -> Tensor:
        if a_q == 0.0:
            return log_q
        if a_q == 1.0:
            return torch.full_like(log_q, math.log(1.0 / m))
        return torch.logaddexp(math.log1p(-a_q) + log_q, torch.full_like(log_q, math.log(a_q / m)))

    a_p, big_n = p_spec.alpha, n - 1
    if a_p > 0 and a_q > 0:
        # q̃ ≥ α_q/m everywhere, so the kernel can be formed in probability space (one matmul)
        # exp below float32's smallest normal (e^-87.3) takes a slow underflow path even with
        # subnormals flushed (35x slower on sharp heads); floored terms are < 1.2e-38 and vanish
        # beside α_q/m, so the floor changes no value (and gradients by less than 1.2e-38)
        floor = math.log(torch.finfo(dtype).tiny)
        phi = torch.exp((log_phi - log_norm.unsqueeze(1)).clamp_min(floor))
        col = torch.exp(col_terms.clamp_min(floor))
        off_diag, log_q_sup = DebiasedKernelLogs.apply(phi, col, rows, cols, a_q)
    elif a_p > 0:
        log_q = log_matmul_exp(log_phi, col_terms) - log_norm.unsqueeze(1)  # [n, m]
        off_diag = log_q.sum(dim=1) - torch.diagonal(log_q)
        log_q_sup = log_q[rows, cols]  # a gather, not an [nnz, k] logsumexp
    else:
        log_q_sup = torch.logsumexp(log_phi[rows] + col_terms[cols], dim=1) - log_norm[rows]
        log_q_sup = debias_q(log_q_sup)
    p_sup = (1.0 - a_p) * pv + a_p / big_n
    ce = torch.zeros(n, dtype=dtype, device=logits.device)
    ce = ce.index_add(0, rows, -(1.0 - a_p) * pv * log_q_sup)
    if a_p > 0:
        ce = ce - (a_p / big_n) * off_diag
    if mode == "ce":
        return ce.mean()
    neg_h = torch.zeros(n, dtype=dtype, device=logits.device)
    neg_h = neg_h.index_add(0, rows, torch.special.xlogy(p_sup, p_sup))
    if a_p > 0:
        support = torch.zeros(n, dtype=dtype, device=logits.device)
        support = support.index_add(0, rows, torch.ones_like(pv))
        u = a_p / big_n
        neg_h = neg_h + (big_n - support) * u * math.log(u)
    return (ce + neg_h).mean()
