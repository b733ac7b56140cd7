"""Figures runs write next to their metrics (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def scatter(points: np.ndarray, labels: np.ndarray | None, path: Path, title: str = "") -> Path:
    """Save a 2-D scatter plot coloured by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=4, linewidths=0)
    if labels is not None:
        ax.legend(*sc.legend_elements(), loc="best", fontsize=7, markerscale=1.5, title="label")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
