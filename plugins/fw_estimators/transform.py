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
  exactly over all N training points, ``chunk`` new points at a time, or, for a 2-D t-SNE map,
  its repulsive part read from fields tabulated once on a grid (`GridRepulsion`);
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


class GridRepulsion:
    """The repulsion of a fixed 2-D Cauchy map on any point, from fields tabulated once.

    With the map fixed, ``Z(y) = Σ_j w(y, y_j)`` and ``V(y) = Σ_j w(y, y_j)² (y - y_j)``
    (``w = 1/(1 + |y - y_j|²)``) are convolutions of the map's point density with the kernels
    ``w`` and ``w² r``: the training points are spread onto a regular grid of spacing ``h``
    (bilinear weights), convolved with the kernels by FFT once, and the fields are read back by
    bilinear interpolation at each new point on every step, O(1) per point instead of O(N). This
    is FIt-SNE's interpolation idea (Linderman et al. 2019, Nature Methods 16, "Fast
    interpolation-based t-SNE for improved visualization of single-cell RNA-seq data") on a map
    that does not move, so the grid is built once. Points outside the grid fall back to the exact
    sums. The repulsive part of the gradient is ``-(2 / Z(y_i)) V(y_i)``.
    """

    def __init__(self, ref: Tensor, h: float = 0.2, margin: float = 5.0, cells: int = 2000) -> None:
        ref = ref.double()
        self.ref = ref
        extent = float((ref.max(dim=0).values - ref.min(dim=0).values).max()) + 2 * margin
        h = max(h, extent / cells)  # at most ``cells`` nodes a side (memory, FFT time)
        self.h = h
        self.lo = ref.min(dim=0).values - margin
        size = ((ref.max(dim=0).values + margin - self.lo) / h).ceil().long() + 2
        gx, gy = int(size[0]), int(size[1])
        self.shape = (gx, gy)
        density = self._spread(ref, torch.ones(len(ref), dtype=torch.float64))
        pad = (2 * gx, 2 * gy)
        off_x = torch.fft.fftfreq(pad[0], d=1.0 / pad[0], dtype=torch.float64) * h
        off_y = torch.fft.fftfreq(pad[1], d=1.0 / pad[1], dtype=torch.float64) * h
        dx, dy = torch.meshgrid(off_x, off_y, indexing="ij")
        w = 1.0 / (1.0 + dx * dx + dy * dy)
        dens_f = torch.fft.rfft2(density, s=pad)

        def conv(kernel: Tensor) -> Tensor:
            return torch.fft.irfft2(dens_f * torch.fft.rfft2(kernel), s=pad)[:gx, :gy]

        # fields at node y: Σ_j K(y - y_j), with the kernel indexed by the offset y - y_j
        self.fields = torch.stack([conv(w), conv(w * w * dx), conv(w * w * dy)])

    def _nodes(self, y: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """The four grid nodes around each point (flat ids, bilinear weights); which lie inside."""
        gx, gy = self.shape
        u = (y.double() - self.lo) / self.h
        base = u.floor().long()
        t = u - base
        inside = (base[:, 0] >= 0) & (base[:, 1] >= 0)
        inside &= (base[:, 0] < gx - 1) & (base[:, 1] < gy - 1)
        b = torch.stack([base[:, 0].clamp(0, gx - 2), base[:, 1].clamp(0, gy - 2)], dim=1)
        nodes = []
        for ox, oy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            wx = t[:, 0] if ox else 1.0 - t[:, 0]
            wy = t[:, 1] if oy else 1.0 - t[:, 1]
            nodes.append(((b[:, 0] + ox) * gy + b[:, 1] + oy, wx * wy))
        return nodes, inside

    def _spread(self, y: Tensor, mass: Tensor) -> Tensor:
        gx, gy = self.shape
        grid = torch.zeros(gx * gy, dtype=torch.float64)
        for ids, w in self._nodes(y)[0]:
            grid.index_add_(0, ids, mass * w)
        return grid.view(gx, gy)

    def repulsion(self, y: Tensor) -> Tensor:
        """``-(2 / Z(y_i)) V(y_i)`` for points ``y [m, 2]``."""
        nodes, inside = self._nodes(y)
        flat = self.fields.reshape(3, -1)
        vals = torch.zeros(3, len(y), dtype=torch.float64)
        for ids, w in nodes:
            vals += flat[:, ids] * w
        out = -2.0 * vals[1:].T / vals[0].unsqueeze(1)
        if not bool(inside.all()):  # off the grid: the exact sums
            far = ~inside
            diff = y[far].double().unsqueeze(1) - self.ref.unsqueeze(0)
            w = 1.0 / (1.0 + diff.pow(2).sum(-1))
            v = (w * w).unsqueeze(2).mul(diff).sum(1)
            out[far] = -2.0 * v / w.sum(1, keepdim=True)
        return out.to(y.dtype)


def _grid_grad(
    y: Tensor, ref: Tensor, ids: Tensor, p: Tensor, grid: GridRepulsion, alpha: float
) -> Tensor:
    """`_kernel_grad` for t-SNE's Cauchy kernel with the repulsion read from ``grid``."""
    diff = y.unsqueeze(1) - ref[ids]  # [m, k, 2]
    w_nb = 1.0 / (1.0 + diff.pow(2).sum(-1))
    attract = ((2.0 * alpha) * p * w_nb).unsqueeze(2).mul(diff).sum(1)
    return attract + grid.repulsion(y)


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
    repulsion: str = "auto",
    grid_spacing: float = 0.2,
) -> np.ndarray:
    """Positions ``[m, d]`` of new points in the fixed map ``y_train`` (see the module doc).

    ``repulsion``: ``exact`` sums over all training points every step; ``grid`` reads it from
    `GridRepulsion` (2-D Cauchy maps only); ``auto`` is ``grid`` where it applies and the
    exact sums would cost more than 10⁷ pairs per step.
    """
    ref = y_train.detach().float().cpu()
    cauchy_2d = kernel == ("student_t", 1.0) and ref.shape[1] == 2
    if repulsion not in ("auto", "exact", "grid") or (repulsion == "grid" and not cauchy_2d):
        raise ValueError(
            f"transform repulsion {repulsion!r}: give 'exact', 'auto' or (for a 2-D t-SNE map) "
            "'grid'"
        )
    use_grid = repulsion == "grid" or (
        repulsion == "auto" and cauchy_2d and len(x_new) * len(ref) > 10**7
    )
    grid = GridRepulsion(ref, grid_spacing) if use_grid else None
    ids, p = new_point_affinities(x_new, x_train, perplexity, k)
    out = np.empty((len(x_new), ref.shape[1]), dtype=np.float32)
    for start in range(0, len(x_new), chunk):
        sl = slice(start, start + chunk)
        i_c, p_c = ids[sl], p[sl].float()
        y = (p_c.unsqueeze(2) * ref[i_c].double()).sum(dim=1).float()
        update = torch.zeros_like(y)
        gains = torch.ones_like(y)
        for _ in range(n_iter):
            if grid is not None:
                grad = _grid_grad(y, ref, i_c, p_c, grid, exaggeration)
            else:
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
