"""The picture every ViCE run writes: image, ground truth, and each protocol's prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from fw.lib.plots import pyplot, save_figure

Panel = tuple[str, "np.ndarray | None", str]


def class_palette(n_classes: int) -> np.ndarray:
    """RGB colours ``[n_classes + 1, 3]``; the last (black) is for ignored / unmatched pixels."""
    plt = pyplot()
    cmap = plt.get_cmap("tab20" if n_classes <= 20 else "gist_ncar", n_classes)
    return np.concatenate([cmap(np.arange(n_classes))[:, :3], np.zeros((1, 3))])


def paint(ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids → RGB (ids outside ``[0, n_classes)`` black)."""
    n = palette.shape[0] - 1
    return palette[np.where((ids >= 0) & (ids < n), ids, n)]


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
    plt = pyplot()
    palette = class_palette(n_classes)
    cols = 2 + len(panels)
    legend = classes is not None and len(classes) == n_classes
    ratios = [1.0] * len(rows) + ([0.25] if legend else [])
    fig, axes = plt.subplots(
        len(ratios),
        cols,
        figsize=(3 * cols, 3 * len(rows) + (0.8 if legend else 0)),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for r, (image, label, preds) in enumerate(rows):
        img = image.detach().cpu().float().clamp(0, 1)
        shown = [img.permute(1, 2, 0).numpy(), paint(label.cpu().numpy(), palette)]
        titles = ["image", "ground truth"]
        for head, assignment, title in panels:
            ids = preds[head].cpu().numpy()
            shown.append(paint(ids if assignment is None else np.asarray(assignment)[ids], palette))
            titles.append(title)
        for c, (panel, title) in enumerate(zip(shown, titles, strict=True)):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    if legend:  # a row of its own under the images, so that nothing covers them
        grid = axes[-1, 0].get_gridspec()
        for ax in axes[-1]:
            ax.remove()
        box = fig.add_subplot(grid[-1, :])
        box.axis("off")
        handles = [plt.Rectangle((0, 0), 1, 1, color=palette[k]) for k in range(n_classes)]
        box.legend(handles, classes, loc="center", ncol=min(n_classes, 9), fontsize=8)
    return save_figure(fig, path)
