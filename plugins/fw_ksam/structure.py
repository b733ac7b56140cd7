"""What the structural explainers (SAM, GradCAM, SBSM) read from a game: inputs and players."""

from __future__ import annotations

import torch
from torch import Tensor

from fw.api import Explainer, Game
from fw.errors import ShapeError
from fw_ksam.games import SimilarityGame, grid_players


class StructuralExplainer(Explainer):
    """An explainer that reads a :class:`SimilarityGame`'s inputs and players, not only values."""

    def example_game(self, order: int) -> Game:
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(3, 2, 2, generator=g), torch.randn(3, 2, 2, generator=g)

        def gap_inner(a: Tensor, b: Tensor) -> Tensor:
            return (a.mean(dim=(2, 3)) * b.mean(dim=(2, 3))).sum(dim=1)

        players = "match" if order == 1 else "both"
        cells = grid_players((2, 2))
        return SimilarityGame(gap_inner, x, y, cells, players_x=cells, players=players)


def similarity_game(game: Game, explainer: str) -> SimilarityGame:
    """The game as a :class:`SimilarityGame`, or a clear error naming the explainer."""
    if not isinstance(game, SimilarityGame):
        raise ShapeError(
            f"{explainer} reads the inputs and players of a similarity model: it needs an "
            f"fw_ksam.games.SimilarityGame, got {type(game).__name__}"
        )
    return game


def pool_to_players(per_position: Tensor, labels: Tensor, n: int) -> Tensor:
    """Sum a per-position map ``[*S]`` (or ``[k, *S]``) over each player's positions -> ``[n]``."""
    flat = per_position.reshape(*per_position.shape[: per_position.dim() - labels.dim()], -1)
    out = flat.new_zeros(*flat.shape[:-1], n)
    return out.index_add_(-1, labels.reshape(-1), flat)


def player_sizes(labels: Tensor, n: int) -> Tensor:
    """Positions per player ``[n]`` (float)."""
    return labels.reshape(-1).bincount(minlength=n).float()
