"""SAM: the closed-form Shapley values of GAP inner-product similarities, and GradCAM.

SAM (thesis Prop. 7.6.1): for d(x, y) = Σ_c GAP(x)_c GAP(y)_c and players the positions of y,
φ(h, w) = 1/(HW) Σ_c GAP(x)_c (y − b)_{chw}. Second order (Prop. 7.7.1): the query × match
interaction is 1/(H²W²) Σ_c (x − a)_{chw} (y − b)_{cij}; pairs within one image get 0. Players
that group several positions (grid cells, superpixels) sum their positions' terms, which is
still exact because the game is linear (bilinear) in the player weights. On other similarities
(e.g. cosine) this is the linearised "SAM*" baseline of the thesis, not a Shapley value; with
``normalize=True`` the terms are divided by ‖GAP(x)‖·‖GAP(y)‖ at the full inputs, the
linearisation of the cosine similarity that keeps the norms fixed (the thesis does not say how
SAM* was scaled for cosine models; this is our choice).

GradCAM (thesis Prop. 7.6.2): Σ_c y_{chw} GAP(∂d/∂y)_c — features times the spatially pooled
gradient, which violates the dummy axiom when the gradient is not spatially invariant (Fig. E.2).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from fw.api import Game
from fw_ksam.games import SimilarityGame
from fw_ksam.structure import StructuralExplainer, pool_to_players, similarity_game


def _gap(t: Tensor) -> Tensor:
    """Mean over the positional axes of one input ``[C, *S]`` -> ``[C]``."""
    return t.reshape(t.shape[0], -1).mean(1)


def _sides(game: SimilarityGame) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(fixed input, explained input, its background, its labels) for a first-order game."""
    if game.players == "query":
        assert game.labels_x is not None
        return game.y, game.x, game.background_x, game.labels_x
    return game.x, game.y, game.background_y, game.labels_y


class SAM(StructuralExplainer):
    """Closed-form Shapley values (order 1) / Shapley–Taylor pairs (order 2) of GAP dot products."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = normalize
        self.evaluations = 0  # reads the game's tensors; no model call

    def _scale(self, g: SimilarityGame) -> float:
        if not self.normalize:
            return 1.0
        return float(_gap(g.x).norm() * _gap(g.y).norm()) or 1.0

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        g = similarity_game(game, "sam")
        if order == 1:
            if g.players == "both":
                raise_both("sam")
            fixed, t, bg, labels = _sides(g)
            per_pos = torch.einsum("c,c...->...", _gap(fixed), t - bg) / labels.numel()
            return (pool_to_players(per_pos, labels, g.n_players) / self._scale(g)).detach()
        assert g.split is not None and g.labels_x is not None
        nq, nr = g.split
        dx = pool_to_players(g.x - g.background_x, g.labels_x, nq) / g.labels_x.numel()  # [C, nq]
        dy = pool_to_players(g.y - g.background_y, g.labels_y, nr) / g.labels_y.numel()  # [C, nr]
        out = torch.zeros(g.n_players, g.n_players, dtype=dx.dtype)
        block = dx.T @ dy / self._scale(g)
        out[:nq, nq:] = block
        out[nq:, :nq] = block.T
        return out.detach()


def raise_both(name: str) -> None:
    from fw.errors import ShapeError

    raise ShapeError(
        f"{name} explains order 1 on a game over one input (players='match' or 'query'); "
        "this game's players span both inputs, ask for order=2"
    )


class GradCAM(StructuralExplainer):
    """GradCAM for similarity: features × GAP of the similarity's gradient (first order)."""

    orders: ClassVar[tuple[int, ...]] = (1,)

    def __init__(self, relu: bool = False) -> None:
        self.relu = relu
        self.evaluations = 1  # one forward and backward pass

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        g = similarity_game(game, "gradcam")
        if g.players == "both":
            raise_both("gradcam")
        fixed, t, _, labels = _sides(g)
        with torch.enable_grad():
            z = t.detach().clone().requires_grad_(True)
            pair = (fixed[None], z[None]) if g.players == "match" else (z[None], fixed[None])
            (grad,) = torch.autograd.grad(g.similarity(*pair).sum(), z)
        per_pos = torch.einsum("c,c...->...", _gap(grad), t.detach())
        if self.relu:
            per_pos = per_pos.clamp(min=0)
        return pool_to_players(per_pos, labels, g.n_players).detach()
