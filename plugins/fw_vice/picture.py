"""The picture every ViCE run writes: image, ground truth, and each protocol's prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fw.lib.plots import segmentation_grid

Panel = tuple[str, "np.ndarray | None", str]


def save_picture(
    rows: list[tuple[Tensor, Tensor, dict[str, Tensor]]],
    panels: list[Panel],
    n_classes: int,
    path: Path,
    classes: list[str] | None = None,
) -> Path:
    """One row per image: image, labels, then each ``(head, assignment, title)`` panel.

    A head's ids are drawn in the colour of the class its matching gave them (``assignment``
    None: the ids are classes already), so equal colours mean equal classes in every column.
    """
    maps = []
    for _, label, preds in rows:
        row = [label.cpu().numpy()]
        for head, assignment, _ in panels:
            ids = preds[head].cpu().numpy()
            row.append(ids if assignment is None else np.asarray(assignment)[ids])
        maps.append(row)
    titles = ["image", "ground truth", *(title for _, _, title in panels)]
    return segmentation_grid([r[0] for r in rows], maps, titles, n_classes, path, classes)
