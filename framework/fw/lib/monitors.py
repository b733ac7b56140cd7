"""Representation diagnostics any learner can log: alignment, uniformity and collapse monitors.

- alignment and uniformity of L2-normalised embeddings (Wang & Isola 2020, §4.1, Eqs. 4-5);
- the per-dimension standard deviation of L2-normalised embeddings, about ``1/√d`` for
  embeddings spread over the sphere and 0 at complete collapse (Chen & He 2021, SimSiam,
  §4.1 and Fig. 2);
- the effective rank ``exp H(σ / ‖σ‖₁)`` of the embedding matrix's singular values (Roy &
  Vetterli 2007, Def. 1), 1 for a rank-one (collapsed) matrix and ``min(n, d)`` for a flat
  spectrum.

:func:`collapse_report` combines them and says which of them show collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: a normalised per-dimension std below this fraction of ``1/√d`` counts as collapse
STD_COLLAPSE = 0.1
#: an effective rank below this counts as (complete) collapse
RANK_COLLAPSE = 2.0


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0, normalize: bool = True) -> Tensor:
    """``E ‖f(x) − f(y)‖₂^α`` over positive pairs (rows of ``x`` and ``y`` are the pairs).

    Wang & Isola 2020, Eq. 4 (``α = 2`` in their experiments). Embeddings are put on the unit
    sphere first unless ``normalize=False``.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(
            f"alignment needs two [n, d] tensors, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if alpha <= 0:
        raise ValueError(f"alignment: alpha must be > 0, got {alpha}")
    if normalize:
        x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniformity(x: Tensor, t: float = 2.0, normalize: bool = True) -> Tensor:
    """``log E exp(−t ‖f(x) − f(y)‖₂²)`` over pairs of distinct samples ``i < j``.

    Wang & Isola 2020, Eq. 5 (``t = 2``); the expectation runs over the ``n(n−1)/2``
    unordered pairs of rows, as their reference code's ``pdist``.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs [n >= 2, d] embeddings, got {tuple(x.shape)}")
    if t <= 0:
        raise ValueError(f"uniformity: t must be > 0, got {t}")
    if normalize:
        x = F.normalize(x, dim=1)
    sq = torch.pdist(x).pow(2)
    return torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel())


def dimension_std(x: Tensor) -> Tensor:
    """Per-dimension standard deviation ``[d]`` of the L2-normalised rows of ``x``."""
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"dimension_std needs [n >= 2, d] embeddings, got {tuple(x.shape)}")
    return F.normalize(x.double(), dim=1).std(dim=0).to(x.dtype)


def effective_rank(x: Tensor, eps: float = 1e-12) -> float:
    """Roy & Vetterli 2007: ``exp(−Σ p_k log p_k)`` with ``p = σ / Σσ``, σ the singular values.

    Computed in float64 on the matrix as given (not centred), as in the definition.
    """
    if x.dim() != 2:
        raise ValueError(f"effective_rank needs a matrix [n, d], got {tuple(x.shape)}")
    s = torch.linalg.svdvals(x.detach().double())
    total = s.sum()
    if total <= eps:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_report(
    z: Tensor, pair: Tensor | None = None, prefix: str = ""
) -> tuple[dict[str, float], list[str]]:
    """Monitors of embeddings ``z`` ``[n, d]`` (and their positives ``pair``), and collapse reasons.

    Returns ``{prefix + name: value}`` with ``dim_std`` (mean normalised per-dimension std),
    ``dim_std_ratio`` (that times ``√d``: about 1 when spread, 0 when collapsed),
    ``effective_rank``, ``uniformity`` and, given ``pair``, ``alignment``; and the list of
    reasons (empty when healthy): the std ratio below :data:`STD_COLLAPSE` or the effective
    rank below :data:`RANK_COLLAPSE`.
    """
    z = z.detach().float()
    d = z.shape[1]
    std = float(dimension_std(z).mean())
    ratio = std * math.sqrt(d)
    rank = effective_rank(z)
    out = {
        f"{prefix}dim_std": std,
        f"{prefix}dim_std_ratio": ratio,
        f"{prefix}effective_rank": rank,
        f"{prefix}uniformity": float(uniformity(z)),
    }
    if pair is not None:
        out[f"{prefix}alignment"] = float(alignment(z, pair.detach().float()))
    reasons = []
    if ratio < STD_COLLAPSE:
        reasons.append(
            f"the per-dimension std of the normalised embeddings is {std:.3g}, "
            f"{ratio:.3g} × 1/√d (d = {d})"
        )
    if rank < RANK_COLLAPSE:
        reasons.append(f"the effective rank is {rank:.3g} (of at most {min(z.shape)})")
    return out, reasons
