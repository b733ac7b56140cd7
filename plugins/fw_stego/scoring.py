"""Segmentation scores from one confusion matrix over the whole validation set (thesis §4.6.1).

Accumulate `Confusion` batch by batch, then match once: Hungarian for the cluster probe,
identity for the linear probe. The matching is that of `fw.lib.metrics.unsupervised_miou`, which
works on label maps held in memory; these work on counts so the validation set may stream.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import maximum_filter, minimum_filter
from scipy.optimize import linear_sum_assignment
from torch import Tensor


class Confusion:
    """Counts ``[n_classes, n_clusters]`` of (ground-truth class, predicted id) pixel pairs.

    Pixels whose ground truth lies outside ``[0, n_classes)`` are ignored (label -1 or 255).
    """

    def __init__(self, n_classes: int, n_clusters: int | None = None):
        self.n_classes = int(n_classes)
        self.n_clusters = self.n_classes if n_clusters is None else int(n_clusters)
        self.counts = np.zeros((self.n_classes, self.n_clusters), dtype=np.int64)

    def update(self, gt: Tensor, pred: Tensor, where: Tensor | None = None) -> None:
        """Add the pixels of label maps ``gt`` and ``pred`` (same shape; ``where`` selects)."""
        gt, pred = gt.reshape(-1).long().cpu(), pred.reshape(-1).long().cpu()
        keep = (gt >= 0) & (gt < self.n_classes)
        if where is not None:
            keep &= where.reshape(-1).cpu().bool()
        gt, pred = gt[keep], pred[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= self.n_clusters):
            raise ValueError(f"predictions must lie in [0, {self.n_clusters})")
        flat = torch.bincount(gt * self.n_clusters + pred, minlength=self.counts.size)
        self.counts += flat.numpy().reshape(self.counts.shape)


def hungarian_assignment(counts: np.ndarray) -> np.ndarray:
    """``assignment[k]`` = class matched to cluster ``k`` (-1 unmatched), maximising matches."""
    clusters, classes = linear_sum_assignment(counts.T, maximize=True)
    out = np.full(counts.shape[1], -1, dtype=np.int64)
    out[clusters] = classes
    return out


def scores(counts: np.ndarray, assignment: np.ndarray | None = None) -> dict[str, float]:
    """mIoU and pixel accuracy (fractions) of ``counts [class, cluster]`` under ``assignment``.

    ``assignment`` None means identity (linear probe). IoU = tp / (tp + fp + fn); mIoU averages
    the classes whose IoU is defined (non-zero union); accuracy = Σ tp / Σ pixels.
    """
    n_classes, n_clusters = counts.shape
    if assignment is None:
        assignment = np.arange(n_clusters)
    mapped = np.zeros((n_classes, n_classes), dtype=np.float64)  # [class, predicted class]
    for k, c in enumerate(assignment):
        if 0 <= c < n_classes:
            mapped[:, c] += counts[:, k]
    total = counts.sum()
    tp = np.diag(mapped)
    # actual pixels of each class include those in unmatched clusters (they are errors)
    union = mapped.sum(axis=0) + counts.sum(axis=1) - tp
    valid = union > 0
    iou = tp[valid] / union[valid]
    return {
        "miou": float(iou.mean()) if iou.size else float("nan"),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
    }


def boundary_band(label: np.ndarray | Tensor, size: int = 9) -> Tensor:
    """Pixels within ``size // 2`` (chessboard) of a label change (docs/benchmarks.md)."""
    lab = label.cpu().numpy() if torch.is_tensor(label) else np.asarray(label)
    footprint = (1,) * (lab.ndim - 2) + (size, size)
    hi = maximum_filter(lab, size=footprint, mode="nearest")
    lo = minimum_filter(lab, size=footprint, mode="nearest")
    return torch.from_numpy(hi != lo)
