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
