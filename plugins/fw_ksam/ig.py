"""IGSAM: integrated gradients (order 1) and integrated Hessians (order 2) on soft masks.

First order (thesis App. E): φᵢ = ∫₀¹ ∂v(α𝟙)/∂wᵢ dα, the Aumann–Shapley value along the straight
path from the background (w = 0) to the input (w = 𝟙); ``game.soft_value`` interpolates
b + w(x − b) per player, so ∂v/∂wᵢ is the chain rule Σ (x − b) ∂f/∂z. Midpoint
Riemann sum with ``steps`` evaluations.

Second order (thesis §7.7; Integrated Hessians): Γᵢⱼ = ∫∫ αβ ∂²v(αβ𝟙)/∂wᵢ∂wⱼ dα dβ. The
integrand depends on t = αβ only, whose density on [0, 1] is −ln t, so
Γ = ∫₀¹ t(−ln t) H(t) dt: a one-dimensional midpoint rule over ``hessian_steps`` Hessians, its
weights rescaled to integrate t(−ln t) exactly (1/4), so Γ = ¼·H for a constant Hessian (GAP models:
¼ of the Shapley–Taylor index). The diagonal (self-interactions and main effects)
is kept in ``last_diagonal``; ``explain`` returns the off-diagonal interactions. The thesis's
experiments used the expected-Hessians variant (random baselines); this is the single-background
integrated Hessians, the background being the game's.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from fw.api import Explainer, Game


def integrated_gradients(game: Game, steps: int) -> Tensor:
    """∫₀¹ ∇_w v(α𝟙) dα by the midpoint rule, ``[n]``."""
    alphas = (torch.arange(steps, dtype=torch.get_default_dtype()) + 0.5) / steps
    total = torch.zeros(game.n_players, dtype=torch.float64)
    for chunk in alphas.split(game.batch_size):
        with torch.enable_grad():
            w = chunk.unsqueeze(1).expand(-1, game.n_players).clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(game.soft_value(w).sum(), w)
        total += grad.double().sum(0)
    return (total / steps).to(torch.get_default_dtype())


def _hessian(game: Game, point: Tensor) -> Tensor:
    def f(w: Tensor) -> Tensor:
        return game.soft_value(w.unsqueeze(0))[0]

    try:
        return torch.autograd.functional.hessian(f, point, vectorize=True)
    except RuntimeError:  # similarity not vmappable: one backward pass per row
        return torch.autograd.functional.hessian(f, point)


def integrated_hessians(game: Game, steps: int) -> Tensor:
    """Γ ``[n, n]`` including the diagonal main effects (Janizek et al.)."""
    n = game.n_players
    t = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
    # ∫∫ g(αβ) dα dβ = ∫ (−ln t) g(t) dt: Hessian weights t(−ln t), gradient weights −ln t,
    # each rescaled so the rule integrates its density exactly (1/4 and 1)
    w_hess = t * -torch.log(t)
    w_hess = w_hess * (0.25 / w_hess.sum())
    w_grad = -torch.log(t)
    w_grad = w_grad / w_grad.sum()
    gamma = torch.zeros(n, n, dtype=torch.float64)
    main = torch.zeros(n, dtype=torch.float64)
    for k, tk in enumerate(t.tolist()):
        point = torch.full((n,), tk, dtype=torch.get_default_dtype())
        gamma += float(w_hess[k]) * _hessian(game, point).double()
        with torch.enable_grad():
            p = point.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(game.soft_value(p.unsqueeze(0)).sum(), p)
        main += float(w_grad[k]) * g.double()
    gamma.diagonal().add_(main)
    return gamma


class IGSAM(Explainer):
    """Integrated gradients (order 1) / integrated Hessians (order 2) on the players' masks."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)
    example: ClassVar[dict] = {"steps": 8, "hessian_steps": 4}

    def __init__(self, steps: int = 64, hessian_steps: int = 16) -> None:
        self.steps, self.hessian_steps = steps, hessian_steps
        self.evaluations = 0  # forward (and backward) passes of the last explanation
        self.last_diagonal: Tensor | None = None

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        if order == 1:
            self.evaluations = self.steps
            return integrated_gradients(game, self.steps).detach()
        self.evaluations = 2 * self.hessian_steps  # plus n Hessian-vector products each
        gamma = integrated_hessians(game, self.hessian_steps)
        self.last_diagonal = gamma.diagonal().clone().float()
        gamma.fill_diagonal_(0.0)
        return gamma.to(torch.get_default_dtype()).detach()
