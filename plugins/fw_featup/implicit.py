"""Implicit FeatUp (Hamilton, PhD thesis, §5.5.2-§5.5.3, Eq. 5.7): an MLP fitted per image.

``F_hr = MLP(h(e_i : e_j : x̃, ω̂))`` over Fourier features of the pixel coordinates and the
min-max scaled colour, predicting the image's features in their own PCA-128 space; the
un-projector maps them back. :meth:`ImplicitUpsampler.fit` runs the multi-view objective on one
image: a pool of jittered views is featurized once (the first ``pca_views`` of them also fit the
PCA, reference ``pca_batch``), then each step reconstructs ``n_jitters`` views from the pool through
the attention downsampler over ``[‖F_hr‖, F_hr]`` with the uncertainty term, plus the TV prior
on ``‖F_hr‖`` (λ 0.05) and, with ``reference_extras``, the authors' magnitude (0.001) and blur-pin
(0.1) losses.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from fw.api import Upsampler
from fw.errors import FwError, ShapeError
from fw_featup.downsamplers import AttentionDownsampler, _gaussian_blur
from fw_featup.jitter import apply_jitter, sample_jitter
from fw_featup.losses import PCA, Uncertainty, magnitude_loss, magnitude_tv, reconstruction_loss


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of a map ``[B, C, H, W]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def minmax_scale(image: Tensor) -> Tensor:
    """Per image and channel: ``(x − min) / max(max − min, 1e-4) − 0.5`` in [−0.5, 0.5]."""
    flat = image.flatten(2)
    lo, hi = flat.min(dim=2).values[..., None, None], flat.max(dim=2).values[..., None, None]
    return (image - lo) / (hi - lo).clamp_min(1e-4) - 0.5


class FourierFeatures(nn.Module):
    """``[sin(ω_k z_c + φ_sin), cos(ω_k z_c + φ_cos)]`` for ω = exp(linspace(−2, 10, n)), learned
    phases, over the 5 channels ``z = [e_i, e_j, x̃]``; the scaled colour is appended."""

    def __init__(self, n_freqs: int = 30, channels: int = 5) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(-2, 10, n_freqs)))
        self.phase_sin = nn.Parameter(torch.randn(n_freqs, channels))
        self.phase_cos = nn.Parameter(torch.randn(n_freqs, channels))
        self.out_dim = 2 * n_freqs * channels + 3

    def forward(self, image: Tensor) -> Tensor:
        b, _, h, w = image.shape
        colour = minmax_scale(image)
        ei = torch.linspace(-1, 1, h, dtype=image.dtype, device=image.device)
        ej = torch.linspace(-1, 1, w, dtype=image.dtype, device=image.device)
        grid = torch.stack(torch.meshgrid(ei, ej, indexing="ij")).expand(b, 2, h, w)
        z = torch.cat([grid, colour], dim=1)  # [B, 5, H, W]
        arg = self.freqs.view(1, -1, 1, 1, 1) * z.unsqueeze(1)  # [B, n, 5, H, W]
        sin = torch.sin(arg + self.phase_sin[None, :, :, None, None])
        cos = torch.cos(arg + self.phase_cos[None, :, :, None, None])
        return torch.cat([sin.flatten(1, 2), cos.flatten(1, 2), colour], dim=1)


class ImplicitNet(nn.Module):
    """The 3-layer ReLU MLP with channel LayerNorm and dropout, as 1×1 convs (reference layers)."""

    def __init__(
        self, out_dim: int = 128, n_freqs: int = 30, hidden: int = 128, dropout: float = 0.1
    ):
        super().__init__()
        self.fourier = FourierFeatures(n_freqs)
        d = self.fourier.out_dim
        self.mlp = nn.Sequential(
            ChannelNorm(d),
            nn.Dropout2d(dropout),
            nn.Conv2d(d, hidden, 1),
            nn.ReLU(),
            nn.Dropout2d(dropout),
            ChannelNorm(hidden),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, out_dim, 1),
        )

    def forward(self, image: Tensor) -> Tensor:
        return self.mlp(self.fourier(image))


class ImplicitUpsampler(Upsampler):
    """Implicit FeatUp: fit with :meth:`fit` on each image, then query at any size.

    The output ignores the ``features`` argument's values (it predicts them from the image);
    their channel count must match what was fitted. One image at a time (``per_image``).
    """

    per_image = True
    example = {
        "steps": 2,
        "pool": 3,
        "pca_views": 3,
        "n_jitters": 2,
        "pca_dim": 4,
        "n_freqs": 2,
        "hidden": 8,
        "kernel_size": 4,
        "max_pad": 2,
        "progress": False,
    }

    def __init__(
        self,
        steps: int = 2000,
        n_jitters: int = 10,
        pool: int = 50,
        pca_views: int = 50,
        pca_dim: int = 128,
        n_freqs: int = 30,
        hidden: int = 128,
        dropout: float = 0.1,
        kernel_size: int = 29,
        max_pad: int = 30,
        max_zoom: float = 1.8,
        tv_weight: float = 0.05,
        uncertainty: bool = True,
        reference_extras: bool = True,
        lr: float = 1e-3,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.cfg = dict(
            steps=steps,
            n_jitters=n_jitters,
            pool=pool,
            pca_views=pca_views,
            kernel_size=kernel_size,
            max_pad=max_pad,
            max_zoom=max_zoom,
            tv_weight=tv_weight,
            uncertainty=uncertainty,
            reference_extras=reference_extras,
            lr=lr,
            progress=progress,
        )
        self.pca_dim, self.n_freqs, self.hidden, self.dropout = pca_dim, n_freqs, hidden, dropout
        self.net: ImplicitNet | None = None
        self.pca: PCA | None = None
        self.history: list[float] = []

    def fit(self, guidance: Tensor, featurize: Callable[[Tensor], Tensor]) -> None:
        """Fit the network to one image ``[1, 3, H, W]`` in [0, 1] (re-initialised each call)."""
        if guidance.dim() != 4 or guidance.shape[0] != 1:
            raise ShapeError(
                f"implicit fit takes one image [1, 3, H, W], got {tuple(guidance.shape)}"
            )
        c = self.cfg
        h, w = guidance.shape[-2:]
        with torch.no_grad():
            jitters, views = [], []
            for i in range(max(c["pool"], c["pca_views"])):
                jit = sample_jitter(h, w, c["max_pad"], c["max_zoom"]) if i else None
                jitters.append(jit)
                views.append(featurize(guidance if jit is None else apply_jitter(guidance, jit)))
            feats = torch.cat(views)  # [P, C, h, w]
            dim = feats.shape[1]
            self.pca = PCA(dim, self.pca_dim).to(feats.device).fit(feats[: c["pca_views"]])
            targets = self.pca.project(feats)
        self.net = ImplicitNet(self.pca_dim, self.n_freqs, self.hidden, self.dropout)
        down = AttentionDownsampler(self.pca_dim + 1, c["kernel_size"])
        scale = Uncertainty(self.pca_dim) if c["uncertainty"] else None
        device = guidance.device
        self.net.to(device)
        down.to(device)
        if scale is not None:
            scale.to(device)
        params = [*self.net.parameters(), *down.parameters()]
        params += [] if scale is None else list(scale.parameters())
        opt = torch.optim.NAdam(params, lr=c["lr"])
        self.history = []
        self.net.train()
        down.train()
        lr_size = tuple(targets.shape[-2:])
        bar = tqdm(range(c["steps"]), desc="implicit fit", disable=not c["progress"], leave=False)
        for _ in bar:
            hr = self.net(guidance)  # [1, k, H, W]
            both = torch.cat([hr.norm(dim=1, keepdim=True), hr], dim=1)
            pick = torch.randint(0, len(jitters), (c["n_jitters"],)).tolist()
            moved = torch.cat(
                [both if jitters[i] is None else apply_jitter(both, jitters[i]) for i in pick]
            )
            pooled = down(moved, lr_size)
            target = targets[pick]
            s = None if scale is None else scale(target)
            loss = reconstruction_loss(pooled[:, 1:], target, s)
            loss = loss + c["tv_weight"] * magnitude_tv(hr)
            if c["reference_extras"]:
                loss = loss + 0.001 * magnitude_loss(pooled[:, :1], target)
                loss = loss + 0.1 * ((_gaussian_blur(hr) - hr) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not torch.isfinite(loss):
                raise FwError("implicit FeatUp diverged (non-finite loss); lower lr")
            self.history.append(float(loss.detach()))
            bar.set_postfix(loss=f"{self.history[-1]:.4g}")
        self.net.eval()

    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        if self.net is None or self.pca is None:
            raise FwError(
                "the implicit upsampler is fitted per image: call fit(image, featurize) "
                "before upsampling that image"
            )
        size = self.target_size(guidance, size)
        if guidance.shape[0] != 1 or features.shape[0] != 1:
            raise ShapeError("the implicit upsampler handles one image at a time (batch 1)")
        if features.shape[1] != self.pca.mean.shape[0]:
            raise ShapeError(
                f"fitted on {self.pca.mean.shape[0]} channels, got {features.shape[1]}"
            )
        image = F.interpolate(guidance, size=size, mode="bilinear", align_corners=False)
        return self.pca.unproject(self.net(image))
