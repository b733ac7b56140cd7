"""Sparse neighbourhoods: each row keeps ``k`` candidate column ids and their log-probabilities.

A dense `fw.api.Neighborhood` holds ``[n, m]`` log-probabilities; at N = 70,000 points a joint
t-SNE p would take ``N²`` floats (~20 GB). A :class:`SparseNeighborhood` stores, for each of the
``n`` rows, ``k`` column ids ``index [n, k]`` into ``[0, num_cols)``, their row-normalised
``log_prob [n, k]`` and a ``mask [n, k]`` that marks padding (rows may have fewer than ``k``
candidates). Every column that is not listed has probability 0. A joint neighbourhood (t-SNE's
``p_ij``, one row over all ordered pairs, see `fw_sne.distributions`) is one row ``[1, nnz]``
whose ids are the flat pair ids ``i·N + j`` (``num_cols = N²``), exactly the dense ``[1, N·N]``
convention.

`fw.lib.icon.icon_loss` accepts a sparse p with a sparse q on the same ids or with a dense q; the
rules are those of the dense loss: terms with p = 0 contribute nothing
(``0·log 0 = 0``), ``log q`` is filled with 0 before it is multiplied by p, and p mass on a
column where q is ``-inf`` gives an infinite loss.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch import Tensor

from fw.api import Neighborhood
from fw.errors import ShapeError


@attrs.frozen
class SparseNeighborhood:
    """Row-normalised log-probabilities on ``k`` listed columns per row (ids ``[n, k]``).

    ``log_norm`` (``[n]``, optional) is the log row normaliser of the kernel the rows came from
    (``log_prob = logits - log_norm``); early exaggeration needs it, as for the dense form.
    """

    index: Tensor
    log_prob: Tensor
    mask: Tensor
    num_cols: int
    log_norm: Tensor | None = None

    def __attrs_post_init__(self) -> None:
        if self.log_prob.dim() != 2:
            raise ShapeError(
                "a SparseNeighborhood's log_prob must be [n, k], got shape "
                f"{tuple(self.log_prob.shape)}"
            )
        if self.index.shape != self.log_prob.shape or self.index.dtype not in (
            torch.int64,
            torch.int32,
        ):
            raise ShapeError(
                "a SparseNeighborhood's index must be an integer tensor shaped like log_prob "
                f"{tuple(self.log_prob.shape)}, got {self.index.dtype} {tuple(self.index.shape)}"
            )
        if self.mask.shape != self.log_prob.shape or self.mask.dtype != torch.bool:
            raise ShapeError(
                "a SparseNeighborhood's mask must be a bool tensor shaped like log_prob "
                f"{tuple(self.log_prob.shape)}, got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        if self.num_cols < 1:
            raise ShapeError(f"a SparseNeighborhood needs num_cols >= 1, got {self.num_cols}")

    @property
    def shape(self) -> tuple[int, int]:
        """The dense shape ``(n, num_cols)`` this neighbourhood stands for."""
        return (self.log_prob.shape[0], self.num_cols)

    @property
    def prob(self) -> Tensor:
        """Probabilities ``[n, k]`` of the listed columns (exactly 0 on padding)."""
        return self.log_prob.exp().masked_fill(~self.mask, 0.0)

    def to(self, device: torch.device | str) -> SparseNeighborhood:
        """The same neighbourhood on ``device``."""
        log_norm = None if self.log_norm is None else self.log_norm.to(device)
        return SparseNeighborhood(
            self.index.to(device),
            self.log_prob.to(device),
            self.mask.to(device),
            self.num_cols,
            log_norm,
        )

    def to_dense(self) -> Neighborhood:
        """The same distribution as a dense ``[n, num_cols]`` neighbourhood (small data only)."""
        n = self.log_prob.shape[0]
        dense = torch.full(
            (n, self.num_cols), float("-inf"), dtype=self.log_prob.dtype, device=self.index.device
        )
        mask = torch.zeros(n, self.num_cols, dtype=torch.bool, device=self.index.device)
        rows = torch.arange(n, device=self.index.device).unsqueeze(1).expand_as(self.index)
        keep = self.mask
        dense[rows[keep], self.index[keep].long()] = self.log_prob[keep]
        mask[rows[keep], self.index[keep].long()] = True
        return Neighborhood(dense, mask, self.log_norm)

    @classmethod
    def from_dense(cls, nb: Neighborhood, k: int | None = None) -> SparseNeighborhood:
        """Keep each row's ``k`` most probable candidates (default: every one with mass).

        With ``k`` below a row's support the kept probabilities are renormalised over the kept
        columns, so each row still sums to one.
        """
        if nb.log_prob.dim() != 2:
            raise ShapeError(f"from_dense needs a [n, m] neighbourhood, got {nb.log_prob.shape}")
        log_prob = nb.log_prob.masked_fill(~nb.mask, float("-inf"))
        support = torch.isfinite(log_prob)
        width = int(support.sum(dim=1).max()) if k is None else int(k)
        width = max(1, min(width, log_prob.shape[1]))
        top, index = torch.topk(log_prob, width, dim=1)
        mask = torch.isfinite(top)
        if k is not None:
            top = top - torch.logsumexp(top, dim=1, keepdim=True)
            top = top.masked_fill(~mask, float("-inf"))
        return cls(index, top, mask, nb.log_prob.shape[1], nb.log_norm if k is None else None)

    def gather(self, nb: Neighborhood) -> Tensor:
        """``nb.log_prob`` at this neighbourhood's listed columns, ``[n, k]`` (padding: -inf)."""
        if tuple(nb.log_prob.shape) != self.shape:
            raise ShapeError(
                f"a dense q must cover the sparse p's pairs {self.shape}, got "
                f"{tuple(nb.log_prob.shape)}"
            )
        out = torch.gather(nb.log_prob, 1, self.index.long())
        return out.masked_fill(~self.mask, float("-inf"))


AnyNeighborhood = Neighborhood | SparseNeighborhood


def _log_q_at(p: SparseNeighborhood, q: AnyNeighborhood) -> Tensor:
    """log q at p's listed columns, checking both cover the same pairs."""
    if isinstance(q, Neighborhood):
        return p.gather(q)
    if q.index is not p.index and (
        q.index.shape != p.index.shape or not torch.equal(q.index, p.index)
    ):
        raise ShapeError(
            "a sparse q must list the same column ids as the sparse p it is compared with; "
            "evaluate q at p.index (see fw_sne.scale.sparse_q)"
        )
    if q.num_cols != p.num_cols:
        raise ShapeError(f"p covers {p.shape} pairs but q covers {q.shape}")
    return q.log_prob.masked_fill(~q.mask, float("-inf"))


def sparse_icon_loss(
    p: AnyNeighborhood,
    q: AnyNeighborhood,
    direction: Literal["forward", "reverse"] = "forward",
    mode: Literal["kl", "ce"] = "kl",
    reduction: Literal["mean", "sum", "none"] = "mean",
    exaggeration: float = 1.0,
) -> Tensor:
    """`fw.lib.icon.icon_loss` for a sparse ``p`` (I-Con, Eq. 1); q sparse on p's ids, or dense.

    Only the forward direction exists: ``KL(q || p)`` needs q's mass on every pair, which a
    sparse p's zero columns would send to infinity. Early exaggeration α uses the same rows as
    the dense loss, ``α·H(p, q) − (α − 1)·log Z + Σ p log p`` (needs ``q.log_norm``).
    """

    if not isinstance(p, SparseNeighborhood):
        raise ShapeError(
            "a sparse q needs a sparse p on the same ids (a dense p has mass q does not list)"
        )
    if direction != "forward":
        raise ShapeError(
            f"direction {direction!r} is not defined for a sparse p: KL(q || p) needs p on "
            "every pair q covers; use direction 'forward' or a dense p"
        )
    log_q = _log_q_at(p, q)
    log_p = p.log_prob.detach().masked_fill(~p.mask, float("-inf"))
    prob = log_p.exp()
    support = prob > 0
    # 0·log 0 = 0: fill log q (and log p) with 0 where p has no mass, before multiplying.
    cross = -(prob * log_q.masked_fill(~support, 0.0)).sum(dim=1)
    if exaggeration != 1.0:
        if q.log_norm is None:
            raise ValueError("early exaggeration needs a kernel q that records its log_norm")
        cross = exaggeration * cross - (exaggeration - 1.0) * q.log_norm
    if mode == "kl":
        cross = cross + (prob * log_p.masked_fill(~support, 0.0)).sum(dim=1)
    elif mode != "ce":
        raise ValueError(f"mode must be 'kl' or 'ce', got {mode!r}")
    return reduce_rows(cross, reduction)


def reduce_rows(rows: Tensor, reduction: str) -> Tensor:
    """Per-row losses reduced by ``reduction``: ``mean``, ``sum`` or ``none``."""
    if reduction == "mean":
        return rows.mean()
    if reduction == "sum":
        return rows.sum()
    if reduction == "none":
        return rows
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
