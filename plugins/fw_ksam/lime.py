"""LIME lifted to similarity (thesis Eq. 7.2, §7.7): a locally weighted surrogate over coalitions.

First order follows ImageLIME's defaults: each player is kept with probability ½ (the first
sample keeps all), samples are weighted by sqrt(exp(−D²/width²)) with D the cosine distance
between the coalition indicator and 𝟙 (width 0.25), and the surrogate is a ridge regression
(α = 1) with an intercept. Second order fits the quadratic model [zᵢ, zᵢzⱼ] with an L1 penalty
(Lasso; ``l1`` is the penalty on the target divided by its standard deviation, since
the thesis gives none); the thesis's similarity kernel on masked inputs has an unspecified λ, so the
same coalition-space kernel is used (a documented choice). LIME is not efficient: the
attributions need not sum to v(N) − v(∅).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from fw.api import Explainer, Game
from fw_ksam.kernel import design, to_matrix


def lime_coalitions(n: int, samples: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """ImageLIME's random coalitions (first = all players) and their kernel weights."""
    z = torch.rand(samples, n, generator=gen) < 0.5
    z[0] = True
    zf = z.double()
    cos = zf.sum(1) / (zf.norm(dim=1).clamp(min=1e-12) * n**0.5)
    distance = 1.0 - cos
    return z, torch.exp(-(distance**2) / 0.25**2).sqrt()


def weighted_ridge(x: Tensor, y: Tensor, w: Tensor, alpha: float) -> Tensor:
    """Coefficients of a ridge fit with an unpenalised intercept (sklearn's Ridge semantics)."""
    w = w / w.sum()
    xm, ym = (w.unsqueeze(1) * x).sum(0), (w * y).sum()
    xc, yc = x - xm, y - ym
    a = (xc * w.unsqueeze(1)).T @ xc * w.numel()
    b = (xc * w.unsqueeze(1)).T @ yc * w.numel()
    a = a + alpha * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(a, b)


class LIME(Explainer):
    """LIME surrogate: ridge on random coalitions (order 1), Lasso on pair terms (order 2)."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)
    example: ClassVar[dict] = {"samples": 64}

    def __init__(
        self, samples: int = 1000, alpha: float = 1.0, l1: float = 1e-3, seed: int = 0
    ) -> None:
        self.samples, self.alpha, self.l1, self.seed = samples, alpha, l1, seed
        self.evaluations = 0

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        n = game.n_players
        z, w = lime_coalitions(n, self.samples, torch.Generator().manual_seed(self.seed))
        values = game.value(z).double()
        self.evaluations = values.numel()
        if order == 1:
            return weighted_ridge(z.double(), values, w, self.alpha).float()
        from sklearn.linear_model import Lasso

        feats = torch.cat([z.double(), design(z, 2)], 1).numpy()
        scale = float(values.std()) or 1.0  # l1 acts on the standardised target
        fit = Lasso(alpha=self.l1, fit_intercept=True, max_iter=5000)
        fit.fit(feats, (values / scale).numpy(), sample_weight=w.numpy())
        pairs = torch.as_tensor(fit.coef_[n:], dtype=torch.float64) * scale
        return to_matrix(pairs, n).float()
