"""FeatUp's training objective (Hamilton, PhD thesis, Eqs. 5.1 and 5.8, §5.5.3).

- :class:`Uncertainty` + :func:`reconstruction_loss`: Eq. 5.1 with the adaptive, spatially
  varying scale ``s = exp(Conv1x1(f(t(x))) + 0.1)`` ≥ 1e-4 predicted from the *observed* view;
- :func:`random_projection`: the JBU trainer's per-jitter Johnson–Lindenstrauss map to 30 dims;
- :class:`PCA`: the implicit trainer's per-image compression to 128 components, with its
  un-projector;
- :func:`magnitude_tv`: Eq. 5.8, total variation of the per-pixel feature norm;
- :func:`magnitude_loss`: the reference code's ``mag_loss`` on the downsampled norm channel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Uncertainty(nn.Module):
    """``s = exp(Conv1x1(C → 1)(features) + 0.1).clamp_min(1e-4)`` (init 0.1× the default)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, 1, 1)
        with torch.no_grad():
            self.conv.weight.mul_(0.1)
            self.conv.bias.mul_(0.1)

    def forward(self, features: Tensor) -> Tensor:
        return torch.exp(self.conv(features) + 0.1).clamp_min(1e-4)


def reconstruction_loss(pred: Tensor, target: Tensor, scale: Tensor | None) -> Tensor:
    """Eq. 5.1 per view: ``mean[(pred − target)² / (2 s²) + log s]`` (plain MSE when s is None).

    The mean runs over batch, channels and positions, as in the reference (not a channel sum).
    """
    err = (pred - target) ** 2
    if scale is None:
        return err.mean()
    return (err / (2 * scale**2) + torch.log(scale)).mean()


def random_projection(batch: int, dim: int, out_dim: int, like: Tensor) -> Tensor:
    """``P [B, C, out_dim] ~ N(0, 1)`` with each column L2-normalised over C."""
    proj = torch.randn(batch, dim, out_dim, dtype=like.dtype, device=like.device)
    return proj / proj.norm(dim=1, keepdim=True)


def project(features: Tensor, proj: Tensor) -> Tensor:
    """Apply ``P [B, C, D]`` to maps ``[B, C, H, W]`` -> ``[B, D, H, W]``."""
    return torch.einsum("bchw,bcd->bdhw", features, proj)


class PCA(nn.Module):
    """Principal components of feature maps (pixels as samples) with an un-projector."""

    def __init__(self, dim: int, components: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("basis", torch.zeros(dim, components))  # orthonormal columns

    @torch.no_grad()
    def fit(self, features: Tensor) -> PCA:
        """Fit on maps ``[N, C, H, W]``; keeps min(components, C, pixels) directions."""
        x = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()
        mean = x.mean(dim=0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.basis.shape[1], vh.shape[0])
        basis = torch.zeros_like(self.basis, dtype=torch.float64)
        basis[:, :k] = vh[:k].T
        self.mean.copy_(mean)
        self.basis.copy_(basis)
        return self

    def project(self, features: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, k, H, W]``."""
        centred = features - self.mean.view(1, -1, 1, 1)
        return torch.einsum("bchw,ck->bkhw", centred, self.basis)

    def unproject(self, codes: Tensor) -> Tensor:
        """``[B, k, H, W]`` -> ``[B, C, H, W]``."""
        return torch.einsum("bkhw,ck->bchw", codes, self.basis) + self.mean.view(1, -1, 1, 1)


def magnitude_tv(features: Tensor) -> Tensor:
    """Eq. 5.8 on ``‖F[i, j]‖``: squared differences of neighbouring norms, / (b·h·w)."""
    mag = features.norm(dim=1)  # [B, H, W]
    dh = (mag[:, 1:, :] - mag[:, :-1, :]) ** 2
    dw = (mag[:, :, 1:] - mag[:, :, :-1]) ** 2
    return (dh.sum() + dw.sum()) / mag.numel()


def magnitude_loss(pred_norm: Tensor, target: Tensor) -> Tensor:
    """The reference code's ``mag_loss``: ``mean((σ↓(t(‖F_hr‖)) − ‖f(t(x))‖)²)``."""
    return ((pred_norm - target.norm(dim=1, keepdim=True)) ** 2).mean()
