"""SpokenObjects metrics (docs/benchmarks.md) on heat maps of (image, name) items.

Heat maps are upsampled bilinearly to 224 (``align_corners=False``) and subsampled ``[::2, ::2]``
to 112 with the masks; binary ">" outcomes count ties as ½.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

EVAL = 112


def to_pixels(heat: Tensor, size: int = 224) -> Tensor:
    """Token-grid heat ``[N, h, w]`` -> ``[N, 112, 112]``: bilinear to ``size``, every 2nd pixel."""
    up = torch.nn.functional.interpolate(
        heat[:, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )
    return up[:, 0, ::2, ::2]


def _gt(a: Tensor, b: Tensor) -> Tensor:
    return (a > b).float() + 0.5 * (a == b).float()


def pointing(heat: Tensor, target: Tensor) -> Tensor:
    """Per item: the argmax pixel (first in row-major order) lies in the target mask."""
    flat = heat.flatten(1).argmax(dim=1)
    return target.flatten(1).gather(1, flat[:, None])[:, 0].float()


def disc(heat: Tensor, target: Tensor, other: Tensor) -> Tensor:
    """Per item: mean heat in the target mask > in the other object's mask (ties ½)."""
    t = (heat * target).flatten(1).sum(1) / target.flatten(1).sum(1).clamp_min(1)
    o = (heat * other).flatten(1).sum(1) / other.flatten(1).sum(1).clamp_min(1)
    return _gt(t, o)


class SortedPixels:
    """Ascending sorted heat of one class's pooled pixels and of its target pixels.

    Both AP and the IoU at a threshold depend only on how many (target) pixels score above a
    value, so one sort per class serves every metric (instead of a sort inside sklearn per AP
    and a ``[thresholds, pixels]`` comparison per mIoU).
    """

    def __init__(self, heat: Tensor, target: Tensor) -> None:
        h = heat.flatten().numpy()
        self.all = np.sort(h)
        self.pos = np.sort(h[target.flatten().bool().numpy()])

    def above(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Counts of all and of target pixels with heat strictly greater than each value."""
        return (
            len(self.all) - np.searchsorted(self.all, values, side="right"),
            len(self.pos) - np.searchsorted(self.pos, values, side="right"),
        )

    def average_precision(self) -> float:
        """sklearn's ``average_precision_score`` (bit for bit: the same float64 operations)."""
        a, n = self.all, len(self.all)
        # ascending distinct values = sklearn's thresholds in its final (flipped) order
        starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
        values = a[starts]
        # sklearn: tps = positives scoring >= each threshold, threshold_idxs = (all >=) - 1
        tps = (len(self.pos) - np.searchsorted(self.pos, values, side="left")).astype(np.float64)
        fps = 1 + (n - 1 - starts).astype(np.float64) - tps
        ps = tps + fps
        precision = np.concatenate((np.where(ps != 0, np.divide(tps, ps), 0.0), [1.0]))
        recall = np.concatenate((tps / tps[0], [0.0]))
        return float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))


def _per_class(
    heat: Tensor, target: Tensor, classes: Tensor, num_classes: int
) -> list[SortedPixels]:
    """The ``SortedPixels`` of each class present in ``classes`` (in class order)."""
    return [
        SortedPixels(heat[classes == c], target[classes == c])
        for c in range(num_classes)
        if bool((classes == c).any())
    ]


def class_map(
    heat: Tensor,
    target: Tensor,
    classes: Tensor,
    num_classes: int = 10,
    pixels: list[SortedPixels] | None = None,
) -> tuple[float, list[float]]:
    """Mean over classes of the pixel AP of each class's pooled items (as sklearn computes it)."""
    if pixels is None:
        pixels = _per_class(heat, target, classes, num_classes)
    aps = [p.average_precision() for p in pixels if len(p.pos) > 0]
    return float(np.mean(aps)) if aps else float("nan"), aps


def class_miou(
    heat: Tensor,
    target: Tensor,
    classes: Tensor,
    num_classes: int = 10,
    steps: int = 20,
    pixels: list[SortedPixels] | None = None,
) -> dict[str, float]:
    """IoU pooled per class at 20 thresholds between the global min and max heat.

    Returns the mean over classes of each class's best threshold (the authors' code) and of the
    best single threshold (the thesis).
    """
    lo, hi = float(heat.min()), float(heat.max())
    thresholds = torch.linspace(lo, hi, steps + 2)[1:-1] if hi > lo else torch.tensor([lo])
    if pixels is None:
        pixels = _per_class(heat, target, classes, num_classes)
    ious = []
    for p in pixels:
        pred, inter = p.above(thresholds.numpy())
        union = pred + len(p.pos) - inter  # |pred ∪ target| = |pred| + |target| − |pred ∩ target|
        ious.append(torch.from_numpy(inter).float() / torch.from_numpy(union).float().clamp_min(1))
    table = torch.stack(ious)  # [classes, thresholds]
    return {"miou_per_class": float(table.max(1).values.mean()), "miou": float(table.mean(0).max())}


def localisation(
    heat: Tensor, target: Tensor, other: Tensor | None, classes: Tensor
) -> dict[str, float]:
    """mAP, mIoU, pointing and (two-object items) right-object accuracy of pixel heat maps."""
    pixels = _per_class(heat, target, classes, 10)
    out = {
        "map": class_map(heat, target, classes, pixels=pixels)[0],
        **class_miou(heat, target, classes, pixels=pixels),
    }
    out["pointing"] = float(pointing(heat, target).mean())
    if other is not None:
        has = other.flatten(1).any(1)
        if bool(has.any()):
            out["disc"] = float(disc(heat[has], target[has], other[has]).mean())
    return out


def auroc(positive: Tensor, negative: Tensor) -> float:
    """Area under the ROC curve of scores of positives vs negatives (sklearn)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(y, np.r_[positive.numpy(), negative.numpy()]))


def retrieval(
    scores: Tensor, labels: Tensor | None = None, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """R@k for audio→image (rows) and image→audio (columns) of a square score matrix.

    rank = 1 + the number of *other* candidates scoring ≥ the true one (ties count against).
    With ``labels`` (label-set ids), semantic P@1/P@5 (fraction of the top-k sharing the
    query's label set), their chance Σ n_g²/N² and the instance R@1 ceiling (sets/N).
    """
    n = scores.shape[0]
    out: dict[str, float] = {}
    for name, mat in (("a2i", scores), ("i2a", scores.T)):
        true = mat.diagonal()[:, None]
        others = mat >= true
        others.fill_diagonal_(False)
        rank = 1 + others.sum(1)
        for k in ks:
            out[f"r{k}_{name}"] = float((rank <= k).float().mean())
        if labels is not None:
            order = mat.argsort(dim=1, descending=True)
            same = labels[order] == labels[:, None]
            for k in (1, 5):
                out[f"p{k}_{name}"] = float(same[:, :k].float().mean())
    for k in ks:
        out[f"r{k}_chance"] = k / n
    if labels is not None:
        counts = torch.bincount(labels).float()
        out["p_chance"] = float((counts**2).sum() / n**2)
        out["r1_ceiling"] = float((counts > 0).sum() / n)
    return out
