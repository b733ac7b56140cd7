"""LARS, layer-wise adaptive rate scaling (You et al. 2017), ViCE's optimizer (§4)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step for each tensor is scaled by its trust ratio.

    You et al. 2017, Alg. 1: the local rate is ``η · ‖w‖ / (‖∇w‖ + β‖w‖)`` with trust
    coefficient ``η`` and weight decay ``β``; the update is
    ``v ← m·v + lr · local · (∇w + β w)``, ``w ← w − v``. Tensors with fewer than two dimensions
    (biases, normalisation scales) skip the scaling and the decay, as SwAV's LARC use leaves
    them with the global rate (Caron et al. 2020, App.); a zero norm gives ratio 1.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float = 0.04,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 0.001,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coefficient <= 0:
            raise ValueError("LARS needs lr, momentum, weight_decay >= 0 and trust_coefficient > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.dim() > 1:
                    w_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(grad)
                    decay = group["weight_decay"]
                    ratio = group["eta"] * w_norm / (g_norm + decay * w_norm)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    grad = (grad + decay * p) * ratio
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"]
                buf.mul_(group["momentum"]).add_(grad, alpha=group["lr"])
                p.sub_(buf)
        return loss


def lars(
    params: Iterable[nn.Parameter],
    lr: float = 0.04,
    momentum: float = 0.9,
    weight_decay: float = 1e-6,
    trust_coefficient: float = 0.001,
) -> torch.optim.Optimizer:
    """LARS (You et al. 2017) over SGD with momentum; ViCE: base lr 0.04, weight decay 1e-6."""
    return LARS(params, lr, momentum, weight_decay, trust_coefficient)
