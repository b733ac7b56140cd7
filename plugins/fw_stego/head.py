"""STEGO's segmentation head and its two online probes (thesis §4.5.3, §4.6.1, App. B.10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw_stego.loss import NORM_EPS


class SegmentationHead(nn.Module):
    """``s = W1·drop(f) + W3·ReLU(W2·drop(f))``: a linear map and a 2-layer ReLU MLP, summed.

    1×1 convolutions, ``dim`` output channels (70), no output normalisation. Each branch draws
    its own channel-dropout mask (``Dropout2d(p)``, train mode only), as the reference code's
    ``DinoFeaturizer`` does.
    """

    def __init__(self, in_dim: int, dim: int = 70, dropout: float = 0.1, nonlinear: bool = True):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.linear = nn.Conv2d(in_dim, dim, 1)
        self.mlp = (
            nn.Sequential(nn.Conv2d(in_dim, in_dim, 1), nn.ReLU(), nn.Conv2d(in_dim, dim, 1))
            if nonlinear
            else None
        )

    def forward(self, feats: Tensor) -> Tensor:
        code = self.linear(self.dropout(feats))
        if self.mlp is not None:
            code = code + self.mlp(self.dropout(feats))
        return code


class ClusterProbe(nn.Module):
    """Cosine k-means on codes, trained by minibatch gradient steps (reference ``ClusterLookup``).

    Centroids start as ``randn``; ``inner = cos(code, centroid)``. The training loss is minus
    the mean cosine to the nearest centroid (hard assignment); ``log_probs(code, alpha)`` is
    ``log_softmax(alpha · inner)`` (alpha = 2 feeds the CRF).
    """

    def __init__(self, dim: int, n_clusters: int):
        super().__init__()
        self.clusters = nn.Parameter(torch.randn(n_clusters, dim))

    def inner(self, code: Tensor) -> Tensor:
        """Cosine similarities ``[B, K, H, W]`` of codes ``[B, dim, H, W]`` to the centroids."""
        c = F.normalize(self.clusters, dim=1, eps=NORM_EPS)
        z = F.normalize(code, dim=1, eps=NORM_EPS)
        return torch.einsum("bchw,kc->bkhw", z, c)

    def loss(self, code: Tensor) -> Tensor:
        inner = self.inner(code)
        hard = F.one_hot(inner.argmax(dim=1), inner.shape[1]).permute(0, 3, 1, 2).to(inner.dtype)
        return -(hard * inner).sum(dim=1).mean()

    def log_probs(self, code: Tensor, alpha: float = 2.0) -> Tensor:
        return torch.log_softmax(alpha * self.inner(code), dim=1)


class LinearProbe(nn.Module):
    """``Conv1x1(dim -> n_classes)`` on codes, trained with cross-entropy (thesis §4.6.1)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, n_classes, 1)

    def forward(self, code: Tensor) -> Tensor:
        return self.conv(code)

    def loss(self, code: Tensor, label: Tensor) -> Tensor:
        """CE of logits upsampled bilinearly to the label grid; labels outside [0, K) ignored."""
        logits = F.interpolate(self(code), size=label.shape[-2:], mode="bilinear")
        target = label.long().clone()
        target[(target < 0) | (target >= logits.shape[1])] = -1
        if not bool((target >= 0).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1)
