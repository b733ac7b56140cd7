"""Learned downsamplers σ↓ (Hamilton, PhD thesis, §5.5.1, Eq. 5.2): how the backbone pooled.

Both produce exactly the backbone grid with a ``k × k`` window and
``stride = (H − k) // (h − 1)`` (no padding, pitfall 7.2); a window/size pair that cannot
reach ``h`` cells raises a `ShapeError` naming the kernel size to change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw.api import Downsampler
from fw.errors import ShapeError


def window_stride(size_in: int, size_out: int, kernel: int) -> int:
    """The stride that maps ``size_in`` to ``size_out`` cells with a ``kernel`` window."""
    if size_out == 1:
        return max(size_in - kernel, 0) + 1
    stride = (size_in - kernel) // (size_out - 1)
    if kernel > size_in or stride < 1 or (size_in - kernel) // stride + 1 != size_out:
        raise ShapeError(
            f"a downsampler window of {kernel} px cannot pool {size_in} px into {size_out} cells "
            f"without padding; choose kernel_size ≤ {size_in - (size_out - 1)}"
        )
    return stride


def _gaussian_blur(x: Tensor, size: int = 5, sigma: float = 1.0) -> Tensor:
    """Depthwise Gaussian blur with reflect padding (kornia's ``gaussian_blur2d(5, (1, 1))``)."""
    coords = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(x.shape[1], 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), kernel, groups=x.shape[1])


class SimpleDownsampler(Downsampler):
    """A learned blur: one ``k × k`` kernel ``|θ| / Σ|θ|`` applied depthwise (init: a box)."""

    example = {"kernel_size": 4}

    def __init__(self, kernel_size: int = 16) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.ones(kernel_size, kernel_size))

    def kernel(self) -> Tensor:
        """The normalised kernel: non-negative, sums to 1 (pitfall 7.3)."""
        w = self.weight.abs()
        return w / w.sum()

    def forward(
        self, features: Tensor, size: tuple[int, int], guidance: Tensor | None = None
    ) -> Tensor:
        b, c, h, w = features.shape
        k = self.kernel_size
        stride = (window_stride(h, size[0], k), window_stride(w, size[1], k))
        weight = self.kernel().to(features.dtype).expand(c, 1, k, k)
        return F.conv2d(features, weight, stride=stride, groups=c)


class AttentionDownsampler(Downsampler):
    """Eq. 5.2: ``softmax(w ⊙ Conv1x1(F[Ω]) + b) · F[Ω]`` over each ``k × k`` patch.

    A per-pixel saliency (Dropout(0.2) → Linear(C, 1)), spatially invariant ``w, b ∈ R^{k×k}``,
    softmax over the k² patch positions. The reference zeroes a random 20 % of the logits even
    at evaluation; here that mask is applied in training only (pitfall 7.4). ``blur_attn``
    blurs the features (Gaussian 5, σ = 1) before pooling, as the reference trainers do. The
    channel width ``dim`` may be left None and bound on first use (:meth:`bind`).
    """

    example = {"kernel_size": 4}  # dim binds to the input on first use

    def __init__(
        self, dim: int | None = None, kernel_size: int = 16, blur_attn: bool = True
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.blur_attn = blur_attn
        k = kernel_size
        self.w = nn.Parameter(1 + 0.01 * torch.randn(k, k))
        self.b = nn.Parameter(0.01 * torch.randn(k, k))
        self.dropout = nn.Dropout(0.2)
        self.saliency: nn.Linear | None = None
        if dim is not None:
            self.bind(dim)

    def bind(self, dim: int) -> AttentionDownsampler:
        """Build the saliency layer for ``dim`` channels (no-op when already built for it)."""
        if self.saliency is None:
            self.saliency = nn.Linear(dim, 1)
        elif self.saliency.in_features != dim:
            raise ShapeError(
                f"attention downsampler built for {self.saliency.in_features} channels, got {dim}"
            )
        return self

    def forward(
        self, features: Tensor, size: tuple[int, int], guidance: Tensor | None = None
    ) -> Tensor:
        b, c, h, w = features.shape
        self.bind(c)
        if self.saliency.weight.device != features.device:
            self.saliency.to(features.device)
        k = self.kernel_size
        stride = (window_stride(h, size[0], k), window_stride(w, size[1], k))
        if self.blur_attn:
            features = _gaussian_blur(features)
        sal = self.saliency(self.dropout(features.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        patches = F.unfold(features, k, stride=stride).view(b, c, k * k, -1)  # [B, C, k², L]
        logits = F.unfold(sal, k, stride=stride)  # [B, k², L]
        if self.training:
            logits = logits * (torch.rand_like(logits[:, :1]) > 0.2)
        attn = torch.softmax(logits * self.w.view(1, -1, 1) + self.b.view(1, -1, 1), dim=1)
        out = torch.einsum("bckl,bkl->bcl", patches, attn)
        return out.view(b, c, size[0], size[1])
