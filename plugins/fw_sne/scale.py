"""SNE and t-SNE at scale: a sparse kNN p and a learned q whose normaliser is estimated.

I-Con's loss for a kernel q with logits ``ℓ_ij`` and normaliser ``Z`` is, per row r (I-Con,
Eq. 1; the same algebra as `fw_sne.fused`),

    L_r = -α Σ_j p_rj ℓ_rj + log Z_r + Σ_j p_rj log p_rj.

With p zero outside each point's k nearest neighbours only the first term is sparse; ``log Z``
sums the kernel over all N points. Two estimators replace that sum here:

- ``"sampled"`` (any radial q, conditional or joint): each step draws ``m`` distinct offsets
  ``r_s`` from ``1..N-1`` and compares every point i with ``(i + r_s) mod N`` (m distinct
  points, never i). ``Ẑ_i = (N-1)/m Σ_s w_{i, i+r_s}`` is unbiased for a row's normaliser, and
  their sum for the joint one; with ``m = N - 1`` every pair is visited and Ẑ = Z exactly.
- ``"fft"`` (joint Student-t with ν = 1, 1-D or 2-D embeddings): openTSNE's FFT-accelerated
  interpolation (FIt-SNE, Linderman et al. 2019) returns ``Z = Σ_{i≠j} w_ij`` and the
  repulsive force ``-(1/Z) Σ_j w_ij² (y_i - y_j)`` in O(N); ``∂ log Z / ∂y_i`` is four times
  that force. openTSNE is maintained, tested against exact t-SNE and is what users would
  otherwise switch to, so fw calls it rather than carrying its own interpolation code.

The supervisory side: `sparse_gaussian` calibrates each point's width on its k ≈ 3·perplexity
nearest neighbours (found with faiss through `fw.lib.features.knn`), as openTSNE and scikit-learn's
Barnes–Hut t-SNE do, and symmetrises ``P = (P_cond + P_condᵀ) / 2N`` for joint t-SNE.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fw.lib.sparse import SparseNeighborhood
from fw_sne import compiled
from fw_sne.calibration import ScaleError, perplexity_precisions

Repulsion = Literal["exact", "sampled", "fft"]


# ------------------------------------------------------------------------- supervisory p


def default_neighbors(perplexity: float, n: int) -> int:
    """k = ⌊3·perplexity⌋ neighbours (van der Maaten 2014), at most N - 1."""
    return int(min(n - 1, max(2, math.floor(3 * perplexity))))


#: ``auto`` neighbours: exact below this many points, HNSW from it (`knn_sq_distances`)
HNSW_FROM = 50_000
#: HNSW links per point and candidate list for the sparse p's k = 90 neighbours
HNSW_M, HNSW_EF_SEARCH = 16, 128


def resolve_knn_index(knn_index: str, n: int) -> str:
    """The faiss index ``auto`` means at N points: ``flat`` below `HNSW_FROM`, else ``hnsw``."""
    if knn_index != "auto":
        return knn_index
    return "flat" if n < HNSW_FROM else "hnsw"


@torch.no_grad()
def knn_sq_distances(
    x: Tensor, k: int, knn_index: str = "auto", report: dict[str, float] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(ids [N, k], squared distances [N, k] float64, valid mask [N, k])`` from faiss.

    ``knn_index`` is `fw.lib.features.knn`'s ``index`` (HNSW with `HNSW_M` links and a
    candidate list of `HNSW_EF_SEARCH`); ``auto`` is exact search below `HNSW_FROM` points and
    HNSW from there. Measured on Fashion-MNIST images (784 pixels, k = 91 with self, one
    thread), exact search vs HNSW (build + search, recall@91 on 1000 points): 20,000 images
    5.0 s vs 5.6 s (0.996); 40,000 18.9 s vs 16.0 s (0.993); 70,000 about 58 s (O(N² D))
    vs 31 s (0.990). At 70,000, HNSW with 32 links and a list of 182 took 65 s (recall
    0.999); with 16 and 100, 29 s (0.984). IVF-SQ8 was slower than exact search at 20,000.
    """
    from fw.lib.features import knn

    feats = np.ascontiguousarray(x.detach().cpu().float().numpy())
    knn_index = resolve_knn_index(knn_index, len(feats))
    ids, d = knn(feats, k, metric="l2", index=knn_index, hnsw_m=HNSW_M, ef_search=HNSW_EF_SEARCH)
    if knn_index != "flat":  # what the approximate search missed, logged
        import sys

        from fw.lib.features import knn_recall

        recall = knn_recall(feats, ids, metric="l2")
        print(
            f"fw: {knn_index} neighbours: recall@{k} {recall:.4f} (1000 sampled points)",
            file=sys.stderr,
        )
        if report is not None:
            report["knn_recall"] = recall
    ids_t = torch.from_numpy(ids).long()
    valid = ids_t >= 0  # an IVF search may come back short (id -1)
    d_t = torch.from_numpy(d).double().clamp_min(0.0).masked_fill(~valid, 0.0)
    return ids_t.clamp_min(0), d_t, valid


@torch.no_grad()
def sparse_gaussian(
    x: Tensor,
    perplexity: float,
    neighbors: int | None = None,
    normalization: str = "joint",
    knn_index: str = "auto",
    report: dict[str, float] | None = None,
) -> SparseNeighborhood:
    """Perplexity-calibrated Gaussian p on each point's k nearest neighbours.

    ``conditional``: rows ``[N, k]`` over the neighbours; ``joint``: one row ``[1, nnz]`` of
    ``p_ij = (p_j|i + p_i|j) / 2N`` on the symmetrised kNN graph, ids ``i·N + j``.
    """
    n = x.shape[0]
    k = neighbors if neighbors is not None else default_neighbors(perplexity, n)
    if not 0 < k < n:
        raise ScaleError(f"gaussian 'neighbors' must lie in [1, N-1] = [1, {n - 1}], got {k}")
    if perplexity >= k:
        raise ScaleError(
            f"gaussian perplexity ({perplexity}) must be less than 'neighbors' ({k}); the "
            "sparse mode calibrates each width on k ≈ 3·perplexity neighbours"
        )
    ids, d, valid = knn_sq_distances(x.flatten(1), k, knn_index, report)
    beta = perplexity_precisions(d, valid, perplexity)
    logits = (-d * beta.unsqueeze(1)).masked_fill(~valid, -math.inf)
    del d
    log_cond = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    del logits
    dtype = x.dtype if x.dtype.is_floating_point else torch.float32
    if normalization == "conditional":
        log_cond = log_cond.masked_fill(~valid, -math.inf)
        return SparseNeighborhood(ids, log_cond.to(dtype), valid, n)
    index, joint = symmetrize(ids, log_cond.exp_().div_(2.0 * n), valid)
    log_joint = torch.log(joint).to(dtype).unsqueeze(0)
    mask = torch.ones_like(log_joint, dtype=torch.bool)
    return SparseNeighborhood(index.unsqueeze(0), log_joint, mask, n * n)


def symmetrize(ids: Tensor, vals: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """``A + Aᵀ`` of the kNN matrix ``A[i, ids[i, j]] = vals[i, j]``: flat ids ``i·N + j`` (sorted)
    and float64 values.

    In scipy's CSR with int32 column ids: about a third of the memory of sorting the
    ``i·N + j`` keys of both directions (0.9 GiB at 70,000 × 90), and each entry is the same
    float sum ``a_ij + a_ji``.
    """
    import scipy.sparse as sp

    n = ids.shape[0]
    counts = valid.sum(dim=1)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts.numpy(), out=indptr[1:])
    col_dtype = np.int32 if n < 2**31 else np.int64
    a = sp.csr_matrix(
        (vals[valid].double().numpy(), ids[valid].numpy().astype(col_dtype), indptr), shape=(n, n)
    )
    a.sort_indices()
    both = (a + a.T.tocsr()).tocsr()
    del a
    both.sort_indices()
    rows = torch.repeat_interleave(torch.arange(n), torch.from_numpy(np.diff(both.indptr)))
    index = rows.mul_(n).add_(torch.from_numpy(both.indices.astype(np.int64)))
    return index, torch.from_numpy(both.data)


def pair_ids(p: SparseNeighborhood, n: int) -> tuple[Tensor, Tensor]:
    """Row and column point ids ``(i, j)`` of every listed entry, shaped like ``p.index``."""
    index = p.index.long()
    if p.num_cols == n * n and p.log_prob.shape[0] == 1 and n > 1:  # joint: flat ids i·N + j
        return torch.div(index, n, rounding_mode="floor"), index % n
    if p.num_cols != n:
        raise ScaleError(f"a sparse p over {p.shape} pairs does not fit a batch of {n} points")
    return torch.arange(n, device=index.device).unsqueeze(1).expand_as(index), index


# ------------------------------------------------------------------------------ learned q


def kernel_logits(kind: str, param: float, d: Tensor) -> Tensor:
    """Radial kernel logits of squared distances: Student-t or Gaussian."""
    if kind == "student_t":
        return -(param + 1.0) / 2.0 * torch.log1p(d / param)
    return -param * d


def sampled_log_norm(
    z: Tensor,
    kind: str,
    param: float,
    negatives: int,
    joint: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log Ẑ from ``m`` distinct non-self points per row (module docstring); ``[N]`` or ``[1]``."""
    n = z.shape[0]
    m = min(int(negatives), n - 1)
    if m == n - 1:
        offsets = torch.arange(1, n, device=z.device)
    else:
        offsets = torch.randperm(n - 1, generator=generator)[:m].to(z.device) + 1
    cols = (torch.arange(n, device=z.device).unsqueeze(1) + offsets.unsqueeze(0)) % n
    d = (z.unsqueeze(1) - z[cols]).pow(2).sum(dim=-1)
    logits = kernel_logits(kind, param, d)
    scale = math.log((n - 1) / m)
    if joint:
        return (torch.logsumexp(logits.reshape(-1), dim=0) + scale).reshape(1)
    return torch.logsumexp(logits, dim=1) + scale


def _attraction_value(d: Tensor, p: Tensor, kind: str, param: float) -> Tensor:
    """``Σ_e p_e · (-ℓ_e)`` from the pairs' squared distances."""
    if kind == "student_t":
        u = torch.log1p(d / param) if param != 1.0 else torch.log1p(d)
        return torch.dot(p, u) * ((param + 1.0) / 2.0)
    return torch.dot(p, d) * param


class _Attraction(torch.autograd.Function):
    """``Σ_e p_e · (-ℓ_e) / R`` over the listed pairs, with its gradient formed in the forward.

    Per coordinate c the gradient is ``2 h_e (z_ic - z_jc)`` added to i and subtracted from j,
    ``h_e = -p_e ∂ℓ/∂d`` (``(ν+1)/(2ν) / (1 + d/ν)`` for Student-t, ``1/2σ²`` for the
    Gaussian): one-dimensional gathers and scatters, several times faster on CPUs than
    autograd through ``z[rows]`` ``[nnz, dim]``. With ``lengths`` (the pairs sorted by row,
    ``lengths[i]`` of them in row i) the row side's scatter is a segment sum, which streams
    through memory instead of jumping; both sum each row in list order, as ``bincount`` does.
    Sorted pairs on the CPU take `fw_sne.compiled`'s loop when numba is installed: the same
    bits in one pass (at 70,000 points, 4.9 million pairs: about 30 ms against 90 ms).
    """

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        rows: Tensor,
        cols: Tensor,
        p: Tensor,
        kind: str,
        param: float,
        n_rows: int,
        lengths: Tensor | None,
    ) -> Tensor:
        if lengths is not None and compiled.available(z):
            d, grad = compiled.attraction_pairs(z, lengths, cols, p, kind, param)
            value = _attraction_value(d, p, kind, param)
            ctx.save_for_backward(grad.T.contiguous() / n_rows)
            return value / n_rows
        n, dim = z.shape
        zt = z.detach().T.contiguous()
        diffs = [zt[c].index_select(0, rows).sub_(zt[c].index_select(0, cols)) for c in range(dim)]
        d = diffs[0] * diffs[0]
        for dc in diffs[1:]:
            d.addcmul_(dc, dc)
        value = _attraction_value(d, p, kind, param)
        if kind == "student_t":
            if param != 1.0:
                d.div_(param)
            h = p / d.add_(1.0) * ((param + 1.0) / param)  # 2·h_e, in place of d
        else:
            h = p * (2.0 * param)
        grad = torch.empty_like(zt)
        for c, dc in enumerate(diffs):
            g = dc.mul_(h)
            if lengths is not None:
                grad[c] = torch.segment_reduce(g, "sum", lengths=lengths)
            else:
                grad[c] = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, rows, g)
            grad[c] -= torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, cols, g)
        ctx.save_for_backward(grad.T.contiguous() / n_rows)
        return value / n_rows

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None, None


def row_lengths(rows: Tensor, n: int) -> Tensor | None:
    """Pairs per row when ``rows`` is sorted (`attraction`'s streaming path), else None."""
    if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):
        return None
    return torch.bincount(rows.long(), minlength=n)


def attraction(
    z: Tensor,
    kind: str,
    param: float,
    rows: Tensor,
    cols: Tensor,
    p: Tensor,
    n_rows: int,
    lengths: Tensor | None = None,
) -> Tensor:
    """Attractive term ``(1/R) Σ_r Σ_j p_rj (-ℓ_rj)`` on flat pair lists (``rows``, ``cols``).

    ``lengths``: `row_lengths` of sorted ``rows``, for the faster streaming path.
    """
    return _Attraction.apply(z, rows, cols, p.to(z.dtype), kind, param, n_rows, lengths)


class _FFTLogNorm(torch.autograd.Function):
    """log Z of the joint Cauchy kernel and its gradient, from openTSNE's FFT interpolation."""

    @staticmethod
    def forward(ctx: Any, z: Tensor, params: dict[str, int]) -> Tensor:
        from openTSNE import _tsne

        y = np.ascontiguousarray(z.detach().cpu().double().numpy())
        grad = np.zeros_like(y)
        if y.shape[1] == 1:
            total = _tsne.estimate_negative_gradient_fft_1d(
                y.ravel(), grad.ravel(), **params, dof=1.0
            )
        else:
            total = _tsne.estimate_negative_gradient_fft_2d(y, grad, **params, dof=1.0)
        # openTSNE returns -(1/Z) Σ_j w_ij² (y_i - y_j); ∂ log Z/∂y_i is 4 times that.
        ctx.save_for_backward(torch.from_numpy(4.0 * grad).to(z.dtype).to(z.device))
        return torch.tensor([math.log(total)], dtype=z.dtype, device=z.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad * grad_out.sum(), None


#: openTSNE's defaults for the interpolation grid (openTSNE.TSNE).
FFT_PARAMS = {"n_interpolation_points": 3, "min_num_intervals": 50, "ints_in_interval": 1}


def fft_log_norm(z: Tensor) -> Tensor:
    """log Z of the joint Student-t (ν = 1) kernel over all pairs i ≠ j, by FFT; ``[1]``."""
    try:
        import openTSNE  # noqa: F401
    except ImportError as exc:
        raise ScaleError(
            "learner.repulsion 'fft' uses openTSNE's interpolation: pip install 'fw[scale]' "
            "(or openTSNE), or set learner.repulsion to 'sampled'"
        ) from exc
    if z.shape[1] not in (1, 2):
        raise ScaleError(
            f"learner.repulsion 'fft' embeds in 1 or 2 dimensions, the mapper gives {z.shape[1]}; "
            "use learner.repulsion 'sampled'"
        )
    return _FFTLogNorm.apply(z, FFT_PARAMS)


def sparse_q_log_norm(
    z: Tensor,
    kind: str,
    param: float,
    joint: bool,
    repulsion: Repulsion,
    negatives: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log Ẑ of a radial kernel by the chosen estimator: ``[1]`` (joint) or ``[N]``."""
    if repulsion == "sampled":
        return sampled_log_norm(z, kind, param, negatives, joint, generator)
    if repulsion == "fft":
        if not (joint and kind == "student_t" and param == 1.0):
            raise ScaleError(
                "learner.repulsion 'fft' is t-SNE's joint Student-t q with dof 1; "
                "use learner.repulsion 'sampled' for other kernels"
            )
        return fft_log_norm(z)
    raise ScaleError(f"learner.repulsion must be 'sampled' or 'fft' here, got {repulsion!r}")


def sparse_q(
    z: Tensor,
    kind: str,
    param: float,
    p: SparseNeighborhood,
    rows: Tensor,
    cols: Tensor,
    repulsion: Repulsion,
    negatives: int = 64,
    generator: torch.Generator | None = None,
) -> SparseNeighborhood:
    """The learned kernel q on p's listed pairs, normalised by an estimated log Z."""
    joint = p.num_cols != z.shape[0]
    d = (z[rows] - z[cols]).pow(2).sum(dim=-1)
    logits = kernel_logits(kind, param, d)
    log_norm = sparse_q_log_norm(z, kind, param, joint, repulsion, negatives, generator)
    log_prob = (logits - log_norm.unsqueeze(1)).masked_fill(~p.mask, -math.inf)
    return SparseNeighborhood(p.index, log_prob, p.mask, p.num_cols, log_norm)
