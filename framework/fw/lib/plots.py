"""Figures runs write next to their metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write and close ``fig`` at ``path`` (parent folders created)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def scatter(points: np.ndarray, labels: np.ndarray | None, path: Path, title: str = "") -> Path:
    """Save a 2-D scatter plot coloured by label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, linewidths=0)
    if labels is not None:
        ax.legend(*sc.legend_elements(), loc="best", fontsize=7, markerscale=1.5, title="label")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def class_palette(n_classes: int) -> np.ndarray:
    """RGB colours ``[n_classes + 1, 3]``; the last (black) is for ignored or unmatched ids."""
    cmap = pyplot().get_cmap("tab20" if n_classes <= 20 else "gist_ncar", n_classes)
    return np.concatenate([cmap(np.arange(n_classes))[:, :3], np.zeros((1, 3))])


def paint(ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids to RGB; ids outside ``[0, n_classes)`` are black."""
    n = palette.shape[0] - 1
    return palette[np.where((ids >= 0) & (ids < n), ids, n)]


def segmentation_grid(
    images: list[Any],
    maps: list[list[np.ndarray]],
    titles: list[str],
    n_classes: int,
    path: Path,
    classes: list[str] | None = None,
) -> Path:
    """One row per image: the image (``[C, H, W]`` in [0, 1]), then its class-id maps.

    Every map is drawn in one colour per class, so equal colours mean equal classes in every
    column; ``titles`` head the columns, and a legend row names the classes when given.
    """
    plt = pyplot()
    palette = class_palette(n_classes)
    cols = len(titles)
    legend = classes is not None and len(classes) == n_classes
    ratios = [1.0] * len(images) + ([0.25] if legend else [])
    fig, axes = plt.subplots(
        len(ratios),
        cols,
        figsize=(3 * cols, 3 * len(images) + (0.8 if legend else 0)),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for r, (image, row_maps) in enumerate(zip(images, maps, strict=True)):
        img = image.detach().cpu().float().clamp(0, 1)
        img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
        shown = [img.permute(1, 2, 0).numpy(), *(paint(ids, palette) for ids in row_maps)]
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


def matched_order(counts: np.ndarray) -> list[int]:
    """Columns of a class × cluster count matrix: each class's Hungarian match, then the rest."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(counts, maximize=True)
    matched = [int(c) for c in cols[np.argsort(rows)]]
    return matched + [c for c in range(counts.shape[1]) if c not in matched]


def cluster_confusion(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: Path,
    class_names: list[str] | None = None,
    title: str = "",
) -> Path:
    """Save the class × cluster count matrix, clusters ordered by their Hungarian match."""
    from fw.lib.metrics import confusion_matrix

    plt = pyplot()
    counts = confusion_matrix(y_true, y_pred, n_true=len(class_names) if class_names else None)
    order = matched_order(counts)
    counts = counts[:, order]
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    size = 2.5 + 0.45 * max(counts.shape)
    fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=120)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if max(counts.shape) <= 30:
        for (i, j), c in np.ndenumerate(counts):
            if c:
                color = "white" if share[i, j] > 0.6 else "black"
                ax.text(j, i, str(c), ha="center", va="center", fontsize=6, color=color)
    names = class_names or [str(c) for c in range(counts.shape[0])]
    ax.set_yticks(range(counts.shape[0]), names, fontsize=7)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in order], fontsize=7)
    ax.set_ylabel("class")
    ax.set_xlabel("cluster (ordered by Hungarian match)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of class")
    return save_figure(fig, path)
