"""The picture every STEGO run writes: image, ground truth, cluster and linear predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fw.lib.plots import pyplot, save_figure


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
    plt = pyplot()
    cmap = plt.get_cmap("tab20" if n_classes <= 20 else "gist_ncar", n_classes)
    palette = np.concatenate([cmap(np.arange(n_classes))[:, :3], np.zeros((1, 3))])

    def paint(ids: np.ndarray) -> np.ndarray:
        ids = np.where((ids >= 0) & (ids < n_classes), ids, n_classes)
        return palette[ids]

    titles = ("image", "ground truth", "cluster probe (Hungarian)", "linear probe")
    legend = classes is not None and len(classes) == n_classes
    n_rows = len(rows) + (1 if legend else 0)
    ratios = [1.0] * len(rows) + ([0.25] if legend else [])
    fig, axes = plt.subplots(
        n_rows,
        4,
        figsize=(12, 3 * len(rows) + (0.8 if legend else 0)),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for r, (image, label, cluster, linear) in enumerate(rows):
        img = image.detach().cpu().float().clamp(0, 1)
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
        mapped = np.asarray(assignment)[cluster.cpu().numpy()]
        panels = (
            img.permute(1, 2, 0).numpy(),
            paint(label.cpu().numpy()),
            paint(mapped),
            paint(linear.cpu().numpy()),
        )
        for c, (panel, title) in enumerate(zip(panels, titles, strict=True)):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title)
    if legend:  # a row of its own, spanning the four columns, so nothing covers it
        grid = axes[-1, 0].get_gridspec()
        for ax in axes[-1]:
            ax.remove()
        box = fig.add_subplot(grid[-1, :])
        box.axis("off")
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[k]) for k in range(n_classes)]
        box.legend(handles, classes, loc="center", ncol=min(n_classes, 9), fontsize=8)
    return save_figure(fig, path)
