"""What the structural explainers (SAM, GradCAM, SBSM) read from a game: inputs and players."""

from __future__ import annotations

from torch import Tensor

from fw.errors import ShapeError
from fw.games import Game, SimilarityGame


def similarity_game(game: Game, explainer: str) -> SimilarityGame:
    """The game as a :class:`SimilarityGame`, or a clear error naming the explainer."""
    if not isinstance(game, SimilarityGame):
        raise ShapeError(
            f"{explainer} reads the inputs and players of a similarity model: it needs an "
            f"fw.games.SimilarityGame, got {type(game).__name__}"
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
