"""The FeatUp picture: input, low-res features and upsampled features, PCA → RGB shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fw.lib.plots import pyplot, save_figure


def pca_rgb(low: Tensor, others: list[Tensor]) -> list[np.ndarray]:
    """One image's maps ``[C, h, w]`` and ``[C, H, W]`` -> RGB arrays in [0, 1].

    The 3-d PCA is fitted on the *low-res* features only and that same projection,
    and the same per-component 1st–99th percentile scaling, colour every map.
    """
    c = low.shape[0]
    x = low.reshape(c, -1).T.double()
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    basis = vh[:3].T  # [C, 3]
    if basis.shape[1] < 3:
        basis = torch.nn.functional.pad(basis, (0, 3 - basis.shape[1]))
    coded_low = (x - mean) @ basis
    lo = torch.quantile(coded_low, 0.01, dim=0)
    hi = torch.quantile(coded_low, 0.99, dim=0)
    out = []
    for m in [low, *others]:
        flat = m.reshape(c, -1).T.double()
        rgb = ((flat - mean) @ basis - lo) / (hi - lo).clamp_min(1e-8)
        out.append(rgb.clamp(0, 1).T.reshape(3, *m.shape[1:]).permute(1, 2, 0).numpy())
    return out


def feature_picture(
    images: Tensor, low: Tensor, upsampled: dict[str, Tensor], path: Path, title: str = ""
) -> Path:
    """Rows = images; columns = input, low-res features, then each named upsampled map."""
    plt = pyplot()
    n, cols = images.shape[0], 2 + len(upsampled)
    fig, axes = plt.subplots(n, cols, figsize=(2.6 * cols, 2.6 * n), dpi=110, squeeze=False)
    for i in range(n):
        rgbs = pca_rgb(low[i].detach().cpu(), [u[i].detach().cpu() for u in upsampled.values()])
        panels = [images[i].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), *rgbs]
        names = ["input", f"low-res {tuple(low.shape[-2:])}", *upsampled]
        for ax, img, name in zip(axes[i], panels, names, strict=True):
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
