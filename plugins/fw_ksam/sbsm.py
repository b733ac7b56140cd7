"""SBSM: sliding-square occlusion maps (Dong et al.), lifted to second order (thesis §7.7, App. E).

A window of ``window`` positions per axis slides with ``stride`` over the explained input's
positional axes (pixels of an image, cells of a feature map); each window removes the players it
covers (at least half of their positions) and scores w = max(v(N) − v(N∖W), 0). The sign is the
documented fix of the thesis's min[·, 0]: a window whose removal lowers the
similarity gets a large positive weight. A player's attribution is the weight-average of the
windows over its positions, Σ_k w_k c_ki / Σ_k c_ki with c_ki the fraction of player i inside
window k. Second order samples ``samples`` (query window, match window) pairs, removes both,
and weight-averages their products c_qi c_rj into the query × match block.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import Tensor

from fw.api import Game
from fw_ksam.games import SimilarityGame
from fw_ksam.sam import raise_both
from fw_ksam.structure import StructuralExplainer, player_sizes, pool_to_players


def _starts(size: int, window: int, stride: int) -> list[int]:
    last = size - window
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def window_coverage(labels: Tensor, n: int, window: int, stride: int) -> Tensor:
    """Fraction of each player inside each window, ``[K, n]``."""
    shape = labels.shape
    sizes = player_sizes(labels, n).clamp(min=1)
    rows = []
    axes = [_starts(s, min(window, s), stride) for s in shape]
    for corner in itertools.product(*axes):
        inside = torch.zeros(shape, dtype=torch.float32)
        inside[tuple(slice(c, c + min(window, s)) for c, s in zip(corner, shape, strict=True))] = 1
        rows.append(pool_to_players(inside, labels, n) / sizes)
    return torch.stack(rows)


def _labels(game: Game, side: str) -> Tensor:
    if isinstance(game, SimilarityGame):
        labels = game.labels_x if side == "query" else game.labels_y
        assert labels is not None
        return labels
    return torch.arange(game.n_players)  # players on a line when the game has no layout


class SBSM(StructuralExplainer):
    """Sliding-window occlusion saliency, first order and pairs of windows for second order."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)
    example: ClassVar[dict] = {"window": 2, "stride": 1, "samples": 64}

    def __init__(self, window: int = 20, stride: int = 3, samples: int = 4096, seed: int = 0):
        self.window, self.stride, self.samples, self.seed = window, stride, samples, seed
        self.evaluations = 0

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        both = isinstance(game, SimilarityGame) and game.players == "both"
        v_full = float(game.value(torch.ones(1, game.n_players, dtype=torch.bool))[0])
        if order == 1:
            if both:
                raise_both("sbsm")
            side = "query" if getattr(game, "players", "match") == "query" else "match"
            cover = window_coverage(_labels(game, side), game.n_players, self.window, self.stride)
            values = game.value(cover < 0.5)
            self.evaluations = values.numel() + 1
            weight = (v_full - values.double()).clamp(min=0)
            return ((weight @ cover.double()) / cover.double().sum(0).clamp(min=1e-12)).float()
        if not both:
            raise_both_needed()
        assert isinstance(game, SimilarityGame) and game.split is not None
        nq, nr = game.split
        cq = window_coverage(_labels(game, "query"), nq, self.window, self.stride).double()
        cr = window_coverage(_labels(game, "match"), nr, self.window, self.stride).double()
        gen = torch.Generator().manual_seed(self.seed)
        iq = torch.randint(cq.shape[0], (self.samples,), generator=gen)
        ir = torch.randint(cr.shape[0], (self.samples,), generator=gen)
        keep = torch.cat([cq[iq] < 0.5, cr[ir] < 0.5], 1)
        values = game.value(keep)
        self.evaluations = values.numel() + 1
        weight = (v_full - values.double()).clamp(min=0)
        num = (cq[iq] * weight.unsqueeze(1)).T @ cr[ir]
        den = cq[iq].T @ cr[ir]
        block = num / den.clamp(min=1e-12)
        out = torch.zeros(game.n_players, game.n_players, dtype=torch.float64)
        out[:nq, nq:] = block
        out[nq:, :nq] = block.T
        return out.float()


def raise_both_needed() -> None:
    from fw.errors import ShapeError

    raise ShapeError("sbsm order 2 needs a SimilarityGame with players='both'")
