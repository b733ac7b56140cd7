"""Exact game-theoretic values by enumerating every coalition (thesis Eq. 7.1, §7.7.1).

Coalitions are indexed by bitmask: bit ``i`` of the index is player ``i``. Everything here is
O(n·2ⁿ) and meant for small games (n ≤ ~18), where it is the oracle the estimators are tested
against.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from fw.api import Explainer, Game
from fw.errors import ShapeError


def all_coalitions(n: int) -> Tensor:
    """Bool ``[2ⁿ, n]``: row ``m`` is the coalition whose bitmask is ``m``."""
    masks = torch.arange(2**n).unsqueeze(1)
    return (masks >> torch.arange(n)) & 1 == 1


def game_values(game: Game, max_players: int = 18) -> Tensor:
    """``v(S)`` for all ``2ⁿ`` coalitions in bitmask order (float64)."""
    n = game.n_players
    if n > max_players:
        raise ShapeError(
            f"exact enumeration needs 2^n model calls; the game has n={n} players "
            f"(more than max_players={max_players}). Use a sampling explainer such as ksam."
        )
    return game.value(all_coalitions(n)).double()


def moebius(values: Tensor) -> Tensor:
    """Harsanyi dividends d(S) = Σ_{T⊆S} (−1)^{|S|−|T|} v(T) (thesis Eq. 7.4), d(∅) = v(∅).

    ``values`` is ``[2ⁿ]`` in bitmask order; the fast Möbius transform flips one bit per pass.
    """
    d = values.clone().double()
    size = d.numel()
    n = size.bit_length() - 1
    if 2**n != size:
        raise ShapeError(f"values must have 2^n entries, got {size}")
    for i in range(n):
        view = d.view(-1, 2, 2**i)  # [.., bit i, lower bits]
        view[:, 1] -= view[:, 0]
    return d


def shapley_from_dividends(dividends: Tensor, n: int) -> Tensor:
    """φ(i) = Σ_{T∋i} d(T)/|T| (dividends split equally among members)."""
    members = all_coalitions(n).double()
    sizes = members.sum(1)
    share = torch.where(sizes > 0, dividends / sizes.clamp(min=1), torch.zeros_like(dividends))
    return members.T @ share


def shapley_taylor_from_dividends(dividends: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Order-2 Shapley–Taylor indices (thesis Eq. 7.5, read with T ⊇ S).

    Returns ``(first [n], pairs [n, n])``: ``first[i] = d({i}) = v({i}) − v(∅)`` and
    ``pairs[i, j] = Σ_{T⊇{i,j}} d(T)/C(|T|, 2)`` (symmetric, zero diagonal).
    """
    members = all_coalitions(n).double()
    sizes = members.sum(1)
    singles = 2 ** torch.arange(n)
    first = dividends[singles]
    pairs_in = sizes * (sizes - 1) / 2
    share = torch.where(sizes >= 2, dividends / pairs_in.clamp(min=1), torch.zeros_like(dividends))
    pairs = (members * share.unsqueeze(1)).T @ members
    pairs.fill_diagonal_(0.0)
    return first, pairs


class Exact(Explainer):
    """Exact Shapley values (order 1) or Shapley–Taylor pair indices (order 2) by enumeration."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)
    example: ClassVar[dict] = {"max_players": 12}

    def __init__(self, max_players: int = 16) -> None:
        self.max_players = max_players

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        dividends = moebius(game_values(game, self.max_players))
        n = game.n_players
        if order == 1:
            return shapley_from_dividends(dividends, n)
        return shapley_taylor_from_dividends(dividends, n)[1]

    def dividends(self, game: Game) -> Tensor:
        """All Harsanyi dividends ``[2ⁿ]`` in bitmask order."""
        return moebius(game_values(game, self.max_players))
