"""New points into a fixed t-SNE (or SNE) map: each optimised alone against the training map.

The procedure of openTSNE's ``TSNEEmbedding.transform`` (Poličar, Stražar & Zupan 2024,
"openTSNE: A Modular Python Library for t-SNE Dimensionality Reduction and Embedding", JSS
109(3), Sec. 4 "Adding new samples to an existing embedding"; defaults of openTSNE 1.0
``transform``: perplexity 5, k = 25, exaggeration 1.5, 250 steps, momentum 0.8, gradient norm
clipped at 0.25). For a new point i:

- p: a Gaussian over its ``k`` nearest training points (exact squared Euclidean distances),
  its width calibrated to ``perplexity`` (`fw_sne.calibration.perplexity_precisions`);
- init: the p-weighted mean of those neighbours' positions in the map;
- q: the map's kernel w (Student-t, or SNE's Gaussian) from y_i to every training point,
  normalised over the training points, ``q_ij = w_ij / Σ_l w_il``; the training map is fixed;
- loss: ``KL(p_i || q_i)`` with the attraction scaled by ``exaggeration``; its gradient is
  ``Σ_j (α p_ij - q_ij) c_ij (y_i - y_j)`` with ``c_ij = -∂ log w_ij / ∂(d_ij) · 2``
  (``(ν + 1) / (ν + d_ij)`` for the Student-t kernel, ``1/σ²`` for the Gaussian), computed
  exactly over all N training points, ``chunk`` new points at a time;
- steps: gradient descent with momentum and t-SNE's gains (Jacobs 1988, as in t-SNE), each
  point's gradient clipped to norm ``max_grad_norm``.

The new points do not interact: each one's result does not depend on the others in the batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fw_sne.calibration import perplexity_precisions


@torch.no_grad()
def new_point_affinities(
    x_new: np.ndarray, x_train: np.ndarray, perplexity: float, k: int
) -> tuple[Tensor, Tensor]:
    """``(neighbour ids [m, k], p [m, k] float64)``: each new point's calibrated Gaussian."""
    import faiss

    k = min(k, len(x_train))
    dist, ids = faiss.knn(
        np.ascontiguousarray(x_new, dtype=np.float32),
        np.ascontiguousarray(x_train, dtype=np.float32),
        k,
    )
    d = torch.from_numpy(dist).double().clamp_min(0.0)
    mask = torch.ones_like(d, dtype=torch.bool)
    beta = perplexity_precisions(d, mask, min(perplexity, k))
    logits = -d * beta.unsqueeze(1)
    p = torch.softmax(logits, dim=1)
    return torch.from_numpy(ids).long(), p


def _kernel_grad(
    y: Tensor, ref: Tensor, ids: Tensor, p: Tensor, kernel: tuple[str, float], alpha: float
) -> Tensor:
    """Gradient of ``KL(p_i || q_i)`` (attraction × alpha) for each new point ``y [m, d]``."""
    kind, param = kernel
    if kind == "student_t" and param == 1.0:  # t-SNE's Cauchy kernel, in place: c = 2w
        w = torch.cdist(y, ref).pow_(2).add_(1.0).reciprocal_()  # [m, N]
        w_nb = w.gather(1, ids)
        scale = -2.0 / w.sum(dim=1, keepdim=True)
        coef = w.mul_(w).mul_(scale)  # -q_ij c_ij = -2 w_ij² / Z_i
        coef.scatter_add_(1, ids, (2.0 * alpha) * p.to(y.dtype) * w_nb)
        return y * coef.sum(dim=1, keepdim=True) - coef @ ref
    d = torch.cdist(y, ref).pow_(2)  # [m, N]
    if kind == "student_t":
        nu = param
        c = (nu + 1.0) / (nu + d)  # -2 ∂ log w / ∂d
        log_w = -(nu + 1.0) / 2.0 * torch.log1p(d / nu)
    else:  # gaussian with w = exp(-param·d)
        c = torch.full_like(d, 2.0 * param)
        log_w = -param * d
    q = torch.softmax(log_w, dim=1)
    coef = -q * c
    c_nb = c.gather(1, ids)
    coef.scatter_add_(1, ids, alpha * p.to(y.dtype) * c_nb)
    # Σ_j coef_ij (y_i - y_j) = y_i Σ_j coef_ij - coef @ ref
    return y * coef.sum(dim=1, keepdim=True) - coef @ ref


@torch.no_grad()
def transform_points(
    x_new: np.ndarray,
    x_train: np.ndarray,
    y_train: Tensor,
    kernel: tuple[str, float],
    perplexity: float = 5.0,
    k: int = 25,
    n_iter: int = 250,
    learning_rate: float = 0.1,
    exaggeration: float = 1.5,
    momentum: float = 0.8,
    max_grad_norm: float | None = 0.25,
    min_gain: float = 0.01,
    chunk: int = 1024,
) -> np.ndarray:
    """Positions ``[m, d]`` of new points in the fixed map ``y_train`` (see the module doc)."""
    ref = y_train.detach().float().cpu()
    ids, p = new_point_affinities(x_new, x_train, perplexity, k)
    out = np.empty((len(x_new), ref.shape[1]), dtype=np.float32)
    for start in range(0, len(x_new), chunk):
        sl = slice(start, start + chunk)
        i_c, p_c = ids[sl], p[sl].float()
        y = (p_c.unsqueeze(2) * ref[i_c].double()).sum(dim=1).float()
        update = torch.zeros_like(y)
        gains = torch.ones_like(y)
        for _ in range(n_iter):
            grad = _kernel_grad(y, ref, i_c, p_c, kernel, exaggeration)
            if max_grad_norm is not None:
                norm = grad.norm(dim=1, keepdim=True)
                grad = grad * torch.clamp(max_grad_norm / norm.clamp_min(1e-12), max=1.0)
            descending = update * grad < 0.0  # as t-SNE: the step kept its direction
            gains = torch.where(descending, gains + 0.2, gains * 0.8).clamp_min_(min_gain)
            update = momentum * update - learning_rate * gains * grad
            y = y + update
        if not torch.isfinite(y).all():
            raise FloatingPointError(
                "transform diverged; lower transform_learning_rate or raise max_grad_norm"
            )
        out[sl] = y.numpy()
    return out


def kl_of_new_points(
    y: Tensor, ref: Tensor, ids: Tensor, p: Tensor, kernel: tuple[str, float]
) -> Tensor:
    """``KL(p_i || q_i)`` per new point (for tests and diagnostics)."""
    kind, param = kernel
    d = torch.cdist(y.double(), ref.double()).pow(2)
    if kind == "student_t":
        log_w = -(param + 1.0) / 2.0 * torch.log1p(d / param)
    else:
        log_w = -param * d
    log_q = log_w - torch.logsumexp(log_w, dim=1, keepdim=True)
    p = p.double()
    return (p * (torch.log(p.clamp_min(1e-300)) - log_q.gather(1, ids))).sum(dim=1)
