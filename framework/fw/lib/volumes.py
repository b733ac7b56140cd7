"""Aggregators from multi-head local similarity volumes, walked in memory-bounded blocks.

The local volume of a pair is ``vol[k, n, m] = <a[k, :, n], b[k, :, m]>`` over ``heads`` equal
channel groups (Hamilton, PhD thesis, §6.5, Eq. 6.1).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from fw.api import Aggregator
from fw.dense import Dense
from fw.errors import ShapeError


class VolumeAggregator(Aggregator):
    """An aggregator that reduces volumes ``[P, K, Na, Nb]`` with :meth:`pool`.

    ``forward`` never builds the full ``[B_a, B_b, K, Na, Nb]`` tensor: it walks blocks of rows
    of ``a`` so that at most ``max_elements`` volume entries exist at once.
    """

    heads: int = 1
    max_elements: int = 1 << 25

    @abc.abstractmethod
    def pool(self, volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
        """Scores ``[P]`` from volumes ``[P, K, Na, Nb]`` and masks ``[P, Na]``, ``[P, Nb]``.

        Masked positions hold arbitrary values in ``volume``; ``pool`` must ignore them.
        """

    def forward(self, a: Dense | Tensor, b: Dense | Tensor) -> Tensor:
        """Scores ``[B_a, B_b]``, computed block by block."""
        a, b = Dense.of(a), Dense.of(b)
        self._check(a, b)
        fa, ma = _heads(a, self.heads), a.flat()[1]  # [Ba, K, c, Na], [Ba, Na]
        fb, mb = _heads(b, self.heads), b.flat()[1]
        ba, bb = fa.shape[0], fb.shape[0]
        per_row = bb * self.heads * fa.shape[-1] * fb.shape[-1]
        block = max(1, self.max_elements // max(per_row, 1))
        rows = []
        for start in range(0, ba, block):
            fa_blk = fa[start : start + block]
            vol = torch.einsum("akcn,bkcm->abknm", fa_blk, fb)
            n_blk = vol.shape[0]
            scores = self.pool(
                vol.reshape(n_blk * bb, *vol.shape[2:]),
                ma[start : start + block].repeat_interleave(bb, dim=0),
                mb.repeat(n_blk, 1),
            )
            rows.append(scores.reshape(n_blk, bb))
        return torch.cat(rows)

    def pair_volumes(self, a: Dense | Tensor, b: Dense | Tensor, pairs: Tensor) -> Tensor:
        """Local volumes ``[P, K, *Sa, *Sb]`` of the pairs ``[P, 2]`` (rows: index into a, b)."""
        a, b = Dense.of(a), Dense.of(b)
        self._check(a, b)
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ShapeError(f"pairs must be [P, 2] indices, got shape {tuple(pairs.shape)}")
        fa = _heads(a, self.heads)[pairs[:, 0]]
        fb = _heads(b, self.heads)[pairs[:, 1]]
        vol = torch.einsum("pkcn,pkcm->pknm", fa, fb)
        return vol.reshape(pairs.shape[0], self.heads, *a.spatial, *b.spatial)

    def _check(self, a: Dense, b: Dense) -> None:
        if a.channels != b.channels:
            raise ShapeError(
                f"{type(self).__name__}: both sides need the same channels, got {a.channels} "
                f"and {b.channels}"
            )


def _heads(dense: Dense, k: int) -> Tensor:
    """Features split into ``k`` heads along channels: ``[B, k, C/k, N]`` (multi-head)."""
    if dense.channels % k:
        raise ShapeError(f"{dense.channels} channels cannot be split into {k} equal heads")
    f, _ = dense.flat()
    return f.reshape(f.shape[0], k, dense.channels // k, f.shape[2])
