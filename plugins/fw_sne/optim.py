"""t-SNE's gradient descent: momentum plus per-parameter delta-bar-delta gains.

The optimiser of van der Maaten & Hinton (2008) as scikit-learn runs it
(``sklearn.manifold._t_sne._gradient_descent`` and ``TSNE._tsne``): for each parameter entry,

    gain  <- gain + 0.2   if sign(grad) != sign(previous update)   else   gain · 0.8
    gain  <- max(gain, min_gain)
    update <- momentum · update - lr · gain · grad
    x     <- x + update

with ``momentum`` for the first ``momentum_switch_step`` steps and ``final_momentum`` after.
``final_lr`` (default: ``lr`` throughout) sets the rate after the switch; its ``"auto"`` is
``max(N / 4, 50)``, the ``N / α`` rule of Belkina et al. (2019) with α = 1 once exaggeration
ends, which openTSNE follows (its gradient omits t-SNE's factor 4, hence N/4 here).
scikit-learn runs the two phases as two calls of ``_gradient_descent``, so gains and the update
restart at the switch; ``reset_at_switch`` keeps that behaviour (False: carry them over, as
van der Maaten's original code does). scikit-learn's early stopping (``min_grad_norm``,
``n_iter_without_progress``) is not an optimiser's job here: the trainer runs ``max_steps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn


class TSNEGradientDescent(torch.optim.Optimizer):
    """Gradient descent with momentum and delta-bar-delta gains (t-SNE's optimiser)."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float | Literal["auto"] = "auto",
        momentum: float = 0.5,
        final_momentum: float = 0.8,
        momentum_switch_step: int = 250,
        min_gain: float = 0.01,
        early_exaggeration: float = 12.0,
        reset_at_switch: bool = True,
        final_lr: float | Literal["auto"] | None = None,
    ) -> None:
        if lr != "auto" and not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"tsne_gd lr must be a positive number or 'auto', got {lr!r}")
        if final_lr not in (None, "auto") and not (
            isinstance(final_lr, (int, float)) and final_lr > 0
        ):
            raise ValueError(
                f"tsne_gd final_lr must be a positive number, 'auto' or null, got {final_lr!r}"
            )
        for name, value in (("momentum", momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"tsne_gd {name} must lie in [0, 1), got {value}")
        if momentum_switch_step < 0:
            raise ValueError(
                f"tsne_gd momentum_switch_step must be >= 0, got {momentum_switch_step}"
            )
        if not min_gain > 0:
            raise ValueError(f"tsne_gd min_gain must be > 0, got {min_gain}")
        if not early_exaggeration > 0:
            raise ValueError(f"tsne_gd early_exaggeration must be > 0, got {early_exaggeration}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            final_momentum=final_momentum,
            momentum_switch_step=momentum_switch_step,
            min_gain=min_gain,
            early_exaggeration=early_exaggeration,
            reset_at_switch=reset_at_switch,
            final_lr=final_lr,
        )
        super().__init__(params, defaults)

    @staticmethod
    def resolve_lr(lr: float | str, n: int, early_exaggeration: float) -> float:
        """``"auto"``: ``max(N / early_exaggeration / 4, 50)`` (scikit-learn, issue #18018)."""
        if lr == "auto":
            return max(n / early_exaggeration / 4.0, 50.0)
        return float(lr)

    @staticmethod
    def update_gains(gains: Tensor, update: Tensor, grad: Tensor, min_gain: float) -> None:
        """Delta-bar-delta in place: +0.2 where grad opposes the last update, else ×0.8."""
        gains.copy_(torch.where((update * grad) < 0.0, gains + 0.2, gains * 0.8))
        gains.clamp_(min=min_gain)

    @staticmethod
    def apply_update(param: Tensor, update: Tensor) -> None:
        """x <- x + update (a subclass may clip or re-centre here)."""
        param.add_(update)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One t-SNE update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            switch = group["momentum_switch_step"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["update"] = torch.zeros_like(param)
                    state["gains"] = torch.ones_like(param)
                step = state["step"]
                if step == switch and group["reset_at_switch"] and step > 0:
                    state["update"].zero_()
                    state["gains"].fill_(1.0)
                momentum = group["momentum"] if step < switch else group["final_momentum"]
                n = param.shape[0] if param.dim() > 0 else 1
                if step >= switch and group.get("final_lr") is not None:
                    lr = self.resolve_lr(group["final_lr"], n, 1.0)
                else:
                    lr = self.resolve_lr(group["lr"], n, group["early_exaggeration"])
                grad, update, gains = param.grad, state["update"], state["gains"]
                self.update_gains(gains, update, grad, group["min_gain"])
                update.mul_(momentum).sub_(lr * (gains * grad))
                self.apply_update(param, update)
                state["step"] = step + 1
        return loss


def tsne_gd(
    params: Iterable[nn.Parameter],
    lr: float | Literal["auto"] = "auto",
    momentum: float = 0.5,
    final_momentum: float = 0.8,
    momentum_switch_step: int = 250,
    min_gain: float = 0.01,
    early_exaggeration: float = 12.0,
    reset_at_switch: bool = True,
    final_lr: float | Literal["auto"] | None = None,
) -> torch.optim.Optimizer:
    """t-SNE's gradient descent (momentum schedule, gains); ``lr: auto`` follows scikit-learn."""
    return TSNEGradientDescent(
        params,
        lr=lr,
        momentum=momentum,
        final_momentum=final_momentum,
        momentum_switch_step=momentum_switch_step,
        min_gain=min_gain,
        early_exaggeration=early_exaggeration,
        reset_at_switch=reset_at_switch,
        final_lr=final_lr,
    )
