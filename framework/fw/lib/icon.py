"""The I-Con loss: mean over anchors of KL(p(.|i) || q(.|i)) (I-Con, Eq. 1).

Also the two generic transforms of a neighbourhood that every method may use: uniform-mixing
debiasing (I-Con, Eq. 2) and neighbour propagation by walks (I-Con, §3.3).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from fw.api import Neighborhood
from fw.errors import ShapeError
from fw.lib.sparse import reduce_rows, sparse_icon_loss

Direction = Literal["forward", "reverse"]
Mode = Literal["kl", "ce"]


def _check_pair(p: Neighborhood, q: Neighborhood) -> None:
    ps, qs = tuple(p.log_prob.shape), tuple(q.log_prob.shape)
    if ps == qs:
        return
    fix = "give both the same rows and columns (context and candidates)"
    for joint, conditional, norm in ((ps, qs, "joint"), (qs, ps, "conditional")):
        if joint[-2:] == (1, conditional[-2] * conditional[-1]) and len(conditional) >= 2:
            # one is normalised over all n·n pairs ([1, n·n]), the other per row ([n, n])
            fix = f"set learner.q.normalization={norm} to match learner.p's"
    raise ShapeError(
        f"p and q must cover the same [..., n, m] pairs: p (learner.p) is {ps}, q (learner.q) "
        f"is {qs}; {fix}"
    )


def _row_kl(a: Neighborhood, b: Neighborhood, mode: Mode) -> Tensor:
    """Per-row KL(a || b) (or cross-entropy H(a, b)) ``[..., n]`` with 0·log 0 = 0, NaN-free."""
    pa = a.prob
    support = pa > 0
    # Fill log b with 0 *before* multiplying, where a has no mass (0 · -inf would be NaN).
    log_b = b.log_prob.masked_fill(~support, 0.0)
    cross = -(pa * log_b).sum(dim=-1)
    if mode == "ce":
        return cross
    log_a = a.log_prob.masked_fill(~support, 0.0)
    neg_entropy = (pa * log_a).sum(dim=-1)
    return cross + neg_entropy


def icon_loss(
    p: Neighborhood,
    q: Neighborhood,
    direction: Direction = "forward",
    mode: Mode = "kl",
    reduction: Literal["mean", "sum", "none"] = "mean",
    exaggeration: float = 1.0,
) -> Tensor:
    """I-Con loss between supervisory ``p`` and learned ``q``.

    ``direction="forward"`` is ``KL(p || q)`` (every method of the periodic table);
    ``"reverse"`` is ``KL(q || p)`` (the K-Means theorem, I-Con, Thm 9).
    ``mode="ce"`` drops the entropy of the first argument (same gradient for a fixed p).
    ``p`` is detached in forward mode; in reverse mode gradients reach q through both terms.
    Neighbourhoods with leading batch axes ``[..., n, m]`` are reduced over every row of every
    batch (``reduction="none"`` returns ``[..., n]``).

    ``exaggeration`` α ≠ 1 weights the attractive term ``-Σ p·log w`` by α and leaves the
    repulsive ``log Z`` alone (early exaggeration, van der Maaten 2014): rows become
    ``α·H(p, q) − (α − 1)·log Z + Σ p log p``, whose gradient is ``−Σ (α·p − q)∇log w``. It
    needs ``q.log_norm`` (kernels built with `Neighborhood.from_logits`).

    A `fw.lib.sparse.SparseNeighborhood` p (with q sparse on its ids, or dense) goes to
    `fw.lib.sparse.sparse_icon_loss`, which applies the same rules.
    """
    if not isinstance(p, Neighborhood) or not isinstance(q, Neighborhood):
        return sparse_icon_loss(p, q, direction, mode, reduction, exaggeration)
    _check_pair(p, q)
    if direction == "forward":
        p = p.detach()
        if exaggeration != 1.0:
            if q.log_norm is None:
                raise ValueError("early exaggeration needs a kernel q that records its log_norm")
            cross = _row_kl(p, q, "ce")
            rows = exaggeration * cross - (exaggeration - 1.0) * q.log_norm
            if mode == "kl":
                rows = rows - _row_kl(p, p, "ce")
            return reduce_rows(rows, reduction)
        rows = _row_kl(p, q, mode)
    elif direction == "reverse":
        p = p.detach()
        rows = _row_kl(q, p, mode)
    else:
        raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
    return reduce_rows(rows, reduction)


def debias(nb: Neighborhood, alpha: float) -> Neighborhood:
    """Uniform mixing ``(1 - alpha)·p + alpha/N`` with N the row's real number of candidates.

    I-Con, Eq. 2 (on p) and §3.3 (on q as well); works in log space so it can wrap a learned q.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"debiasing alpha must lie in [0, 1], got {alpha}")
    if alpha == 0.0:
        return nb
    n_cand = nb.num_candidates.clamp_min(1).to(nb.log_prob.dtype).unsqueeze(-1)
    uniform = torch.log(alpha / n_cand).expand_as(nb.log_prob)
    if alpha == 1.0:
        mixed = uniform
    else:
        mixed = torch.logaddexp(math.log1p(-alpha) + nb.log_prob, uniform)
    return Neighborhood(mixed.masked_fill(~nb.mask, float("-inf")), nb.mask)


def propagate(
    nb: Neighborhood,
    steps: int,
    mode: Literal["sum", "uniform"] = "sum",
    remove_self: bool = True,
) -> Neighborhood:
    """Neighbour propagation ``P + P² + … + P^steps`` (or its support, uniform), renormalised.

    I-Con, §3.3 and Table 4. Needs a square neighbourhood (rows and columns are the same points);
    walks acquire mass on ``i = i``, which is removed when ``remove_self``.
    Leading batch axes are independent graphs.
    """
    n, m = nb.log_prob.shape[-2:]
    if n != m:
        raise ShapeError(f"propagation needs a square neighbourhood, got [..., {n}, {m}]")
    if steps < 1:
        raise ValueError(f"propagation steps must be >= 1, got {steps}")
    P = nb.prob
    total = P.clone()
    power = P
    for _ in range(steps - 1):
        power = power @ P
        total = total + power
    mask = nb.mask
    if remove_self:
        eye = torch.eye(n, dtype=torch.bool, device=P.device)
        total = total.masked_fill(eye, 0.0)
        mask = mask & ~eye
    if mode == "uniform":
        total = (total > 0).to(P.dtype)
    elif mode != "sum":
        raise ValueError(f"propagation mode must be 'sum' or 'uniform', got {mode!r}")
    return Neighborhood.from_weights(total, mask)
