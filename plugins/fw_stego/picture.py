"""The picture every STEGO run writes: image, ground truth, cluster and linear predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fw.lib.plots import segmentation_grid


def save_picture(
    rows: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    assignment: np.ndarray,
    n_classes: int,
    path: Path,
    classes: list[str] | None = None,
) -> Path:
    """One row per image: the image, its labels, Hungarian-mapped clusters, linear classes.

    Clusters are drawn in the colour of the class the global matching gave them (unmatched
    clusters and ignored pixels are black), so equal colours mean equal classes in all columns.
    """
    maps = [
        [label.cpu().numpy(), np.asarray(assignment)[cluster.cpu().numpy()], linear.cpu().numpy()]
        for _, label, cluster, linear in rows
    ]
    titles = ["image", "ground truth", "cluster probe (Hungarian)", "linear probe"]
    return segmentation_grid([r[0] for r in rows], maps, titles, n_classes, path, classes)
