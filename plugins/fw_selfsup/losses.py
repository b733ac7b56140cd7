"""The objectives and schedules of DINO, SwAV, BYOL and SimSiam as plain tensor functions.

Each is written from its paper's formula (cited per function) so that tests can compare it with
a hand-written reference and with its I-Con form (`fw_selfsup.distributions`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

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
