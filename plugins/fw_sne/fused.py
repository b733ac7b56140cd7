"""The I-Con loss of a fixed p against a radial-kernel q, fused into one autograd node.

For a kernel whose logits are a function of squared distances, ``ℓ_ij = k(||z_i - z_j||²)``
(the Gaussian ``-d/2σ²`` and the Student-t ``-(ν+1)/2·log1p(d/ν)`` of
`fw_sne.distributions`), the loss that `fw.lib.icon.icon_loss` computes from ``p`` and
``q = from_logits(ℓ)`` with exaggeration α is, per normalisation row r (I-Con, Eq. 1),

    L_r = -α Σ_j p_rj ℓ_rj + log Z_r + Σ_j p_rj log p_rj,     Z_r = Σ_j exp ℓ_rj,

averaged over the R rows (``conditional``: one row per anchor, ``j != i``; ``joint``: R = 1 row
holding every ordered pair). Its gradient is ``∂L/∂ℓ_rj = (q_rj - α p_rj) / R`` and, through
``d_ij = ||z_i - z_j||²``, ``∂L/∂z = 2[(H 1 + Hᵀ 1) ∘ z - (H + Hᵀ) z]`` with
``H = ∂L/∂ℓ · k'(d)``. For t-SNE this is the familiar ``4 Σ_j (α p_ij - q_ij) w_ij (z_i - z_j)``.

Why: the generic path (kernel -> `Neighborhood.from_logits` -> `icon_loss`) allocates some
twenty ``N × N`` temporaries per step; this one works in place on two. It computes the same
numbers (tests compare both), so a learner may use it wherever its p is cached and its q is
one of these kernels on the full batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from fw_sne.distributions import Gaussian, StudentT


def radial_kernel(q: Any) -> tuple[str, float] | None:
    """``("student_t", ν)`` or ``("gaussian", 1/2σ²)`` when q can use the fused loss."""
    if isinstance(q, StudentT):
        return "student_t", float(q.dof)
    if isinstance(q, Gaussian) and q.metric == "euclidean" and q.sigma is not None:
        return "gaussian", 1.0 / (2.0 * q.sigma**2)
    return None


def _log_tiny(dtype: torch.dtype) -> float:
    """Smallest exponent whose exp is a normal float of ``dtype``.

    Kernel weights below it are floored there before ``exp``: computing subnormal results is
    two orders of magnitude slower on CPUs, and a weight of 1e-38 next to a row sum of at least
    1 changes nothing representable.
    """
    return math.log(torch.finfo(dtype).tiny)


def _pairwise(zc: Tensor, sq: Tensor, scale: float, shift: float) -> Tensor:
    """``shift + scale·||z_i - z_j||²`` as one new ``[N, N]`` buffer (Gram expansion, in place)."""
    sq = sq * scale
    out = torch.add((sq + shift).unsqueeze(1), sq.unsqueeze(0))
    if zc.shape[1] <= 4:  # rank-1 updates stream through memory faster than a thin GEMM
        for col in zc.T:
            out.addr_(col, col, alpha=-2.0 * scale)
    else:
        out.addmm_(zc, zc.T, alpha=-2.0 * scale)
    return out.clamp_(min=shift)


def _row_dot(a: Tensor, b: Tensor, joint: bool) -> Tensor:
    """``Σ a∘b`` (joint) or its row sums, without an ``[N, N]`` temporary."""
    if joint:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])


class _RadialKL(torch.autograd.Function):
    """Forward: the exaggerated I-Con loss; backward: its analytic gradient w.r.t. ``z``."""

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        p: Tensor,
        p_log_p: float,
        kernel: str,
        param: float,
        joint: bool,
        alpha: float,
        symmetric: bool,
    ) -> Tensor:
        n = z.shape[0]
        # Distances are translation invariant; centring keeps the Gram expansion accurate.
        zc = z.detach() - z.detach().mean(dim=0, keepdim=True)
        sq = zc.pow(2).sum(dim=1)
        if kernel == "student_t":
            nu = param
            u = _pairwise(zc, sq, 1.0 / nu, 1.0).fill_diagonal_(1.0)  # u = 1 + d/ν >= 1
            log_u = torch.log(u)
            cross = -(nu + 1.0) / 2.0 * _row_dot(p, log_u, joint)
            # w = u^(-(ν+1)/2) <= 1 never overflows, so no max shift is needed (top = 0)
            if nu == 1.0:
                e = torch.reciprocal(u, out=log_u)
            else:
                e = log_u.mul_(-(nu + 1) / 2).clamp_(min=_log_tiny(z.dtype)).exp_()
            e.fill_diagonal_(0.0)
            top = torch.zeros((), dtype=z.dtype, device=z.device)
        else:
            u = None
            logits = _pairwise(zc, sq, 1.0, 0.0).mul_(-param).fill_diagonal_(0.0)  # ℓ = -β d
            cross = _row_dot(p, logits, joint)  # p_ii = 0: the diagonal adds nothing
            logits.fill_diagonal_(-math.inf)
            top = logits.max() if joint else logits.max(dim=1, keepdim=True).values
            e = logits.sub_(top).clamp_(min=_log_tiny(z.dtype)).exp_().fill_diagonal_(0.0)
            top = top if joint else top.squeeze(1)
        total = e.sum() if joint else e.sum(dim=1)
        rows = -alpha * cross + torch.log(total) + top
        ctx.save_for_backward(zc, p, e, total, u)
        ctx.settings = (kernel, param, alpha, 1 if joint else n, symmetric)
        return rows.mean() + p_log_p

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        zc, p, e, total, u = ctx.saved_tensors
        kernel, param, alpha, n_rows, symmetric = ctx.settings
        norm = total if total.dim() == 0 else total.unsqueeze(1)
        h = e.div_(norm).sub_(p, alpha=alpha)  # q - α p, in place of e
        if kernel == "student_t":
            h.div_(u)
            scale = -(param + 1.0) / (2.0 * param)  # k'(d) = scale / u
        else:
            scale = -param
        # [(H + Hᵀ) z, (H + Hᵀ) 1] as rows, in one pass over H when it is symmetric
        z1 = torch.cat([zc, torch.ones_like(zc[:, :1])], dim=1).T.contiguous()
        r = (z1 @ h * 2.0 if symmetric else z1 @ h + z1 @ h.T).T
        grad = (r[:, -1:] * zc - r[:, :-1]) * (2.0 * scale / n_rows) * grad_out
        return grad, None, None, None, None, None, None, None


def radial_kl(
    z: Tensor,
    p: Tensor,
    p_log_p: float,
    q: Any,
    joint: bool,
    exaggeration: float = 1.0,
    symmetric: bool | None = None,
) -> Tensor:
    """Mean I-Con KL of dense ``p`` ``[N, N]`` (zero diagonal) against kernel ``q`` on ``z``.

    ``p_log_p`` is the constant ``mean_r Σ_j p log p`` (0 gives the cross-entropy);
    ``symmetric`` (default: checked) says ``p`` equals its transpose, which halves the work.
    """
    spec = radial_kernel(q)
    if spec is None:
        raise TypeError(f"{type(q).__name__} is not a radial kernel the fused loss supports")
    if p.shape != (z.shape[0], z.shape[0]):
        raise ValueError(f"p must be [N, N] for N = {z.shape[0]} points, got {tuple(p.shape)}")
    p = p.to(z.dtype)
    if symmetric is None:
        symmetric = bool(torch.equal(p, p.T))
    symmetric = symmetric and joint  # conditional q is not symmetric even when p is
    return _RadialKL.apply(z, p, p_log_p, spec[0], spec[1], joint, exaggeration, symmetric)
