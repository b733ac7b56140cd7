"""Games of a similarity model d(x, y) over parts of its inputs (thesis Eqs. 7.2 and 7.6).

First order, ``players="match"``: v₁(S) = d(x, mask(y, S)), the players are parts of y
(``"query"`` swaps the roles); second order, ``players="both"``: v₂(S) = d(mask(x, S∩L_q),
mask(y, S∩L_r)) with N = L_q ∪ L_r, the first ``split[0]`` players belonging to the query.
Players are a label map over an input's positional axes (superpixels, or the cells of
:func:`grid_players`); masking keeps the parts in S and takes the rest from a background:
``mask(y, w) = w·y + (1 − w)·b`` per position.

Example::

    d = lambda a, b: (a.mean((2, 3)) * b.mean((2, 3))).sum(1)      # GAP inner product
    game = SimilarityGame(d, x, y, grid_players((7, 7)), background_y=torch.zeros_like(y))
    v = game.value(torch.ones(1, game.n_players, dtype=torch.bool))  # = d(x, y)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from fw.api import Game
from fw.errors import ShapeError

Similarity = Callable[[Tensor, Tensor], Tensor]  # batched inputs [S, ...] x2 -> scores [S]


def grid_players(size: tuple[int, ...], cells: tuple[int, ...] | None = None) -> Tensor:
    """A label map ``size`` that tiles the positional axes into ``cells`` equal-ish blocks.

    With ``cells`` None every position is its own player (deep feature-map locations).
    """
    cells = cells or size
    if len(cells) != len(size) or any(c < 1 or c > s for c, s in zip(cells, size, strict=True)):
        raise ShapeError(f"cannot tile positions {size} into {cells} cells")
    label = torch.zeros(size, dtype=torch.long)
    stride = 1
    for axis in reversed(range(len(size))):
        coord = torch.arange(size[axis]) * cells[axis] // size[axis]
        shape = [1] * len(size)
        shape[axis] = size[axis]
        label = label + coord.reshape(shape) * stride
        stride *= cells[axis]
    return label


def empty_and_full(game: Game) -> tuple[float, float]:
    """``(v(∅), v(N))``: the two ends efficiency compares the attributions with."""
    ends = torch.zeros(2, game.n_players, dtype=torch.bool)
    ends[1] = True
    v = game.value(ends)
    return float(v[0]), float(v[1])


def cross_block(game: Game, interactions: Tensor) -> Tensor:
    """The query × match block ``[P_q, P_r]`` of a game's second-order interactions ``[n, n]``."""
    if game.split is None:
        raise ShapeError("this game's players do not span a query and a match")
    nq = game.split[0]
    return interactions[:nq, nq:]


class SimilarityGame(Game):
    """v₁(S) = d(x, mask(y, S)) or v₂(S) = d(mask(x, ·), mask(y, ·)) (thesis Eq. 7.2 / 7.6)."""

    def __init__(
        self,
        similarity: Similarity,
        x: Tensor,
        y: Tensor,
        players_y: Tensor,
        players_x: Tensor | None = None,
        background_x: Tensor | None = None,
        background_y: Tensor | None = None,
        players: Literal["match", "query", "both"] = "match",
        batch_size: int = 64,
    ) -> None:
        self.similarity = similarity
        self.x, self.y = x, y
        self.players = players
        self.batch_size = batch_size
        self.background_x = torch.zeros_like(x) if background_x is None else background_x
        self.background_y = torch.zeros_like(y) if background_y is None else background_y
        for name, t, bg in (("x", x, self.background_x), ("y", y, self.background_y)):
            if t.shape != bg.shape:
                raise ShapeError(
                    f"the background of {name} must have its shape {tuple(t.shape)}, got "
                    f"{tuple(bg.shape)}"
                )
        self.labels_y = self._labels(players_y, y, "players_y")
        self.labels_x = None
        if players in ("query", "both"):
            if players_x is None:
                raise ShapeError(f"players={players!r} needs players_x (a label map over x)")
            self.labels_x = self._labels(players_x, x, "players_x")
        nx = 0 if self.labels_x is None else int(self.labels_x.max()) + 1
        ny = int(self.labels_y.max()) + 1
        if players == "match":
            self.n_players = ny
        elif players == "query":
            self.n_players = nx
        elif players == "both":
            self.n_players = nx + ny
            self.split = (nx, ny)
        else:
            raise ShapeError(f"players must be 'match', 'query' or 'both', got {players!r}")
        self._nx = nx

    @staticmethod
    def _labels(labels: Tensor, t: Tensor, what: str) -> Tensor:
        if tuple(labels.shape) != tuple(t.shape[1:]):
            raise ShapeError(
                f"{what} must label the positions {tuple(t.shape[1:])} of an input "
                f"{tuple(t.shape)}, got shape {tuple(labels.shape)}"
            )
        return labels.long()

    @staticmethod
    def _mask(t: Tensor, bg: Tensor, labels: Tensor, w: Tensor) -> Tensor:
        """``w·t + (1 − w)·bg`` with the player weights ``w [S, P]`` spread over positions."""
        per_pos = w[:, labels].unsqueeze(1).to(t.dtype)  # [S, 1, *S]
        return per_pos * t.unsqueeze(0) + (1.0 - per_pos) * bg.unsqueeze(0)

    def soft_value(self, weights: Tensor) -> Tensor:
        if weights.dim() != 2 or weights.shape[1] != self.n_players:
            raise ShapeError(
                f"coalition weights must be [S, {self.n_players}], got {tuple(weights.shape)}"
            )
        s = weights.shape[0]
        x = self.x.unsqueeze(0).expand(s, *self.x.shape)
        y = self.y.unsqueeze(0).expand(s, *self.y.shape)
        if self.players == "match":
            y = self._mask(self.y, self.background_y, self.labels_y, weights)
        elif self.players == "query":
            assert self.labels_x is not None
            x = self._mask(self.x, self.background_x, self.labels_x, weights)
        else:
            assert self.labels_x is not None
            x = self._mask(self.x, self.background_x, self.labels_x, weights[:, : self._nx])
            y = self._mask(self.y, self.background_y, self.labels_y, weights[:, self._nx :])
        return self.similarity(x, y).reshape(s)
