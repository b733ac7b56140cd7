"""Prototypes and equipartitioned assignments to them: Sinkhorn–Knopp and a prototype layer.

Shared by prototype methods (SwAV's codes, DINO's head, clusterers): the assignment ``Q`` of
``B`` samples to ``K`` prototypes is the entropic optimal-transport plan between the samples
(uniform mass) and the prototypes (uniform mass) for the cost ``-scores``, computed by
Sinkhorn–Knopp iterations (Cuturi 2013; Caron et al. 2020, SwAV, §3.1 and Alg. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _logsumexp_over_samples(log_q: Tensor) -> Tensor:
    """``log Σ_b exp(log_q[b, k])`` ``[1, K]`` over every process's samples (one process: local)."""
    if not _distributed():
        return torch.logsumexp(log_q, dim=0, keepdim=True)
    top = log_q.max(dim=0, keepdim=True).values
    torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.exp(log_q - top).sum(dim=0, keepdim=True)
    torch.distributed.all_reduce(total)
    return torch.log(total) + top


def _global_count(n: int, device: torch.device) -> int:
    if not _distributed():
        return n
    count = torch.tensor([n], device=device, dtype=torch.long)
    torch.distributed.all_reduce(count)
    return int(count.item())


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Equipartitioned soft assignments ``Q`` ``[B, K]`` of samples to prototypes; rows sum to 1.

    SwAV (Caron et al. 2020), §3.1, Eq. 3 and its Alg. 1: start from
    ``Q ∝ exp(scores / ε)``, then alternate normalising each prototype's column to mass
    ``1/K`` and each sample's row to mass ``1/B``; ``iterations`` is the number of such
    pairs, the last step being the row normalisation, so the result (scaled by ``B``) has rows
    that sum to exactly 1 and column sums that approach ``B/K`` as ``iterations`` grows.
    Computed in log space in float64 (no overflow at small ``ε``) and without gradient (the
    codes are targets). Under ``torch.distributed`` the column sums run over every process's
    samples, as in the authors' code, so ``B`` is the global batch.
    """
    if scores.dim() != 2:
        raise ValueError(f"sinkhorn_knopp needs scores [B, K], got {tuple(scores.shape)}")
    if epsilon <= 0:
        raise ValueError(f"sinkhorn_knopp: epsilon must be > 0, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"sinkhorn_knopp: iterations must be >= 1, got {iterations}")
    b, k = scores.shape
    total = _global_count(b, scores.device)
    log_q = scores.detach().double() / epsilon
    for _ in range(iterations):
        # each prototype receives total mass 1/K ...
        log_q = log_q - _logsumexp_over_samples(log_q) - torch.log(log_q.new_tensor(float(k)))
        # ... and each sample gives total mass 1/B
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True)
        log_q = log_q - torch.log(log_q.new_tensor(float(total)))
    return torch.exp(log_q + torch.log(log_q.new_tensor(float(total)))).to(scores.dtype)


class PrototypeLayer(nn.Module):
    """``K`` learnable prototype directions; scores are cosines ``ẑ · ĉ_k`` ``[B, K]``.

    ``weight_norm=True`` normalises the prototypes inside the forward pass (gradients see the
    normalisation, as DINO's weight-normalised last layer with its norm fixed to 1; Caron
    et al. 2021, §3.1, App. "Projection head"). ``weight_norm=False`` uses the stored vectors as
    they are, and the caller keeps them unit length with :meth:`normalize_` once per step (SwAV,
    Caron et al. 2020, §4, "we normalize the prototypes"). ``frozen`` stops gradients to the
    prototypes (SwAV freezes them during the first iterations).
    """

    def __init__(self, dim: int, prototypes: int, weight_norm: bool = True) -> None:
        super().__init__()
        if dim < 1 or prototypes < 1:
            raise ValueError(f"PrototypeLayer needs dim, prototypes >= 1, got {dim}, {prototypes}")
        self.weight = nn.Parameter(F.normalize(torch.randn(prototypes, dim), dim=1))
        self.weight_norm = weight_norm
        self.frozen = False

    @property
    def prototypes(self) -> int:
        """``K``, the number of prototypes."""
        return int(self.weight.shape[0])

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere (in place, no gradient)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: Tensor) -> Tensor:
        w = self.weight.detach() if self.frozen else self.weight
        if self.weight_norm:
            w = F.normalize(w, dim=1)
        return F.normalize(z, dim=1) @ w.T.to(z.dtype)
