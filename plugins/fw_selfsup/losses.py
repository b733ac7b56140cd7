"""The objectives and schedules of DINO, SwAV, BYOL, SimSiam and VICReg as plain tensor functions.

Each is written from its paper's formula (cited per function) so that tests can compare it with
a hand-written reference and with its I-Con form (`fw_selfsup.distributions`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fw.lib.distributed import gather_across
from fw.lib.prototypes import sinkhorn_knopp


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """``end + (start − end)·(1 + cos(π·step/total))/2``, then ``end`` after ``total`` steps.

    The EMA momentum schedule of BYOL (Grill et al. 2020, §3.2: ``τ = 1 − (1 − τ_base)·(cos(πk/K)
    + 1)/2``) and DINO (Caron et al. 2021, §3.1 and App. B: 0.996 → 1 with a cosine schedule).
    """
    if total <= 0 or step >= total:
        return float(end)
    return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / total)))


def linear_warmup(step: int, warmup: int, start: float, end: float) -> float:
    """``start`` rising linearly to ``end`` over ``warmup`` steps, then ``end``.

    DINO's teacher temperature, "a linear warm-up from 0.04 to 0.07 during the first 30 epochs"
    (Caron et al. 2021, §4 / App. B).
    """
    if warmup <= 0 or step >= warmup:
        return float(end)
    return float(start + (end - start) * step / warmup)


def dino_loss(
    student: list[Tensor],
    teacher: list[Tensor],
    center: Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> Tensor:
    """DINO's cross-entropy between teacher and student crops (Caron et al. 2021, Eq. 1-2, Alg. 1).

    ``student``: the student's head outputs ``[B, K]`` of every crop (global crops first);
    ``teacher``: the teacher's head outputs of the global crops; ``center`` ``[K]``.
    ``P_t = softmax((g_t − c)/τ_t)`` (centred and sharpened, no gradient),
    ``P_s = softmax(g_s/τ_s)``, and the loss is the mean over the pairs of a teacher crop and a
    *different* student crop of ``mean_b H(P_t, P_s)``.
    """
    targets = [F.softmax((t.detach() - center) / teacher_temperature, dim=1) for t in teacher]
    logs = [F.log_softmax(s / student_temperature, dim=1) for s in student]
    total, terms = student[0].new_zeros(()), 0
    for i, p_t in enumerate(targets):
        for v, log_s in enumerate(logs):
            if v == i:  # the same view for teacher and student
                continue
            total = total + (-(p_t * log_s).sum(dim=1)).mean()
            terms += 1
    return total / max(terms, 1)


@torch.no_grad()
def dino_center(center: Tensor, teacher: list[Tensor], momentum: float = 0.9) -> Tensor:
    """``c ← m·c + (1 − m)·mean_b g_t(x_b)`` over the batch's global crops (Caron et al. 2021,
    Eq. 4). Under ``torch.distributed`` the mean runs over every process's batch."""
    out = torch.cat([t.detach() for t in teacher])
    total = out.sum(dim=0)
    count = torch.tensor(float(out.shape[0]), device=out.device, dtype=out.dtype)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(count)
    return center * momentum + (total / count) * (1.0 - momentum)


def swav_loss(
    scores: list[Tensor],
    assign: tuple[int, ...] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue_scores: list[Tensor] | None = None,
) -> Tensor:
    """SwAV's swapped prediction (Caron et al. 2020, Eq. 1-3, Alg. 1 and §3.2).

    ``scores``: prototype scores ``z·c`` ``[B, K]`` of every crop. For each crop ``s`` in
    ``assign`` the codes ``q_s = Sinkhorn(scores_s)`` (stop-gradient; with ``queue_scores[k]``,
    the scores of stored features, appended before Sinkhorn and dropped after) are predicted from
    every other crop ``t`` by ``p_t = softmax(scores_t/τ)``: the loss is the mean over ``s`` of
    ``1/(V−1)·Σ_{t≠s} mean_b H(q_s, p_t)``.
    """
    batch = scores[0].shape[0]
    logs = [F.log_softmax(s / temperature, dim=1) for s in scores]
    total = scores[0].new_zeros(())
    for k, s in enumerate(assign):
        out = scores[s].detach()
        if queue_scores is not None and queue_scores[k] is not None:
            out = torch.cat([out, queue_scores[k].detach()])
        q = sinkhorn_knopp(out, epsilon, iterations)[:batch]
        sub = scores[0].new_zeros(())
        for t, log_p in enumerate(logs):
            if t == s:
                continue
            sub = sub + (-(q * log_p).sum(dim=1)).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(assign)


def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """``‖p̂ − ẑ‖² = 2 − 2·⟨p, z⟩/(‖p‖‖z‖)`` per row, mean over rows (Grill et al. 2020, Eq. 2)."""
    return (2.0 - 2.0 * F.cosine_similarity(prediction, target.detach(), dim=1)).mean()


def byol_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """BYOL's symmetrised loss ``L + L̃`` (Grill et al. 2020, Eq. 2 and the line after it).

    ``p_v``: the online network's predictions of view ``v``; ``z_v``: the target network's
    projections (no gradient). View 1's prediction regresses view 2's target and vice versa.
    """
    return normalized_mse(p1, z2) + normalized_mse(p2, z1)


def simsiam_loss(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """``D(p1, sg(z2))/2 + D(p2, sg(z1))/2``, ``D = −cos`` (Chen & He 2021, Eqs. 1-4, Alg. 1)."""
    d12 = -F.cosine_similarity(p1, z2.detach(), dim=1).mean()
    d21 = -F.cosine_similarity(p2, z1.detach(), dim=1).mean()
    return 0.5 * d12 + 0.5 * d21


def vicreg_variance(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """``v(Z) = (1/d)·Σ_j max(0, γ − √(Var(z^j) + ε))`` with the unbiased variance of each
    dimension over the batch (Bardes, Ponce & LeCun 2022, Eqs. 1-2)."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def vicreg_covariance(z: Tensor) -> Tensor:
    """``c(Z) = (1/d)·Σ_{i≠j} C(Z)_ij²``, ``C`` the unbiased covariance matrix of the batch
    (Bardes, Ponce & LeCun 2022, Eqs. 3-4)."""
    n, d = z.shape
    centred = z - z.mean(dim=0)
    cov = centred.T @ centred / (n - 1)
    off = cov - torch.diag_embed(torch.diagonal(cov))
    return off.pow(2).sum() / d


def vicreg_terms(
    z1: Tensor, z2: Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> dict[str, Tensor]:
    """VICReg's three terms for the embeddings ``z1``, ``z2`` ``[B, d]`` of two views.

    As the authors' ``main_vicreg.py`` (facebookresearch/vicreg at 4e12602), which fixed the
    published coefficients: ``invariance`` is the mean squared difference over batch *and*
    dimensions (the paper's Eq. 5 divided by d); ``variance`` is ``(v(Z) + v(Z'))/2`` and
    ``covariance`` ``c(Z) + c(Z')``. Under ``torch.distributed`` the variance and covariance
    read every process's batch (the authors' ``FullGatherLayer``), the invariance the local one.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"vicreg: need two [B, d] embeddings, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    invariance = F.mse_loss(z1, z2)
    a, b = gather_across(z1), gather_across(z2)
    return {
        "invariance": invariance,
        "variance": 0.5 * (vicreg_variance(a, gamma, eps) + vicreg_variance(b, gamma, eps)),
        "covariance": vicreg_covariance(a) + vicreg_covariance(b),
    }


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    invariance: float = 25.0,
    variance: float = 25.0,
    covariance: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """``λ·s + μ·v + ν·c`` of :func:`vicreg_terms` (Bardes, Ponce & LeCun 2022, Eq. 6; λ = μ = 25,
    ν = 1, γ = 1, ε = 1e-4 as published)."""
    terms = vicreg_terms(z1, z2, gamma, eps)
    return (
        invariance * terms["invariance"]
        + variance * terms["variance"]
        + covariance * terms["covariance"]
    )
