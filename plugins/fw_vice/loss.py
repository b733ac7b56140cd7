"""ViCE's swapped-prediction objective over regions (Karlsson et al., Eq. 3 and App. Alg. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fw.lib.prototypes import sinkhorn_knopp


def swapped_prediction_loss(
    primary: Tensor,
    others: Tensor,
    image_of: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue: Tensor | None = None,
) -> Tensor:
    """``L_cl = −1/(N(M−1)) Σ_n Σ_{m≥2} 1/I_n Σ_i q^(i) · log softmax(s^(i,m)/τ)`` (Eq. 3).

    ``primary`` ``[R, K]``: scores of the R mutual regions of the batch in the primary view
    (m = 1); ``others`` ``[M−1, R, K]``: the same regions' scores in the other views;
    ``image_of`` ``[R]``: the image n of each region. The codes ``q`` are Sinkhorn–Knopp's
    equipartition of the primary scores (stop-gradient), computed together with the ``queue``
    ``[Q, K]`` of past primary scores (§3.3) and then dropped from it; ε, iterations and τ are
    SwAV's (Caron et al. 2020, §4: ε = 0.05, 3 iterations, τ = 0.1). Images without regions
    do not count in N.
    """
    if others.dim() != 3 or others.shape[1:] != primary.shape:
        raise ValueError(
            f"others must be [M-1, {primary.shape[0]}, {primary.shape[1]}], "
            f"got {tuple(others.shape)}"
        )
    r = primary.shape[0]
    target = primary.detach()
    if queue is not None and queue.numel():
        target = torch.cat([target, queue.detach().to(target.dtype)])
    q = sinkhorn_knopp(target, epsilon, iterations)[:r]
    ce = -(q[None] * F.log_softmax(others / temperature, dim=-1)).sum(-1)  # [M-1, R]
    n = int(image_of.max()) + 1 if r else 0
    per_image = ce.new_zeros(ce.shape[0], n).index_add_(1, image_of, ce)
    counts = torch.bincount(image_of, minlength=n)
    used = counts > 0
    return (per_image[:, used] / counts[used].to(ce.dtype)).mean()
