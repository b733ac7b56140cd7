"""Scoring a learned representation against labels: clustering metrics, trustworthiness, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from fw.data import ArrayDataset, SeededItems, take
from fw.lib import metrics
from fw.lib.plots import cluster_confusion, scatter

#: metric prefixes: clusters read off a cluster q's argmax, or k-means on an embedding
ARGMAX_PREFIX = "cluster"
KMEANS_PREFIX = "kmeans"


def evaluate_embedding(
    z: Tensor,
    data: Any,
    clusters_from_argmax: bool = False,
    n_clusters: int | None = None,
    run_dir: Path | None = None,
    title: str = "",
    seed: int = 0,
) -> dict[str, float]:
    """Cluster ``z`` (argmax, or k-means with one cluster per class) and score it.

    Reports Hungarian accuracy, NMI and ARI against ``data.labels``, trustworthiness
    (scikit-learn, 5 neighbours) for low-dimensional embeddings, and writes under ``run_dir``
    ``embedding.png`` when ``z`` is 2-D and ``clusters.png`` (class × cluster counts).
    """
    from sklearn.cluster import KMeans
    from sklearn.manifold import trustworthiness

    out: dict[str, float] = {}
    emb = z.detach().double().numpy()
    labels = _labels_of(data)
    if labels is not None:
        y = labels.numpy()
        classes = getattr(data, "classes", None)
        k = n_clusters or (len(classes) if classes else None) or int(y.max()) + 1
        if clusters_from_argmax:
            pred = emb.argmax(axis=1)
            prefix = ARGMAX_PREFIX
        else:
            pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
            prefix = KMEANS_PREFIX
        out[f"{prefix}_hungarian_accuracy"] = metrics.hungarian_accuracy(y, pred)
        out[f"{prefix}_nmi"] = metrics.nmi(y, pred)
        out[f"{prefix}_ari"] = metrics.ari(y, pred)
        if run_dir is not None and y.min() >= 0 and pred.min() >= 0:
            names = getattr(data, "classes", None)
            cluster_confusion(y, pred, Path(run_dir) / "clusters.png", names, title)
    # scikit-learn's trustworthiness needs more than 2 × 5 points
    if not clusters_from_argmax and emb.shape[1] <= 3 and 10 < emb.shape[0] <= 20000:
        x = take(data).flatten(1).double().numpy()
        out["trustworthiness"] = float(trustworthiness(x, emb, n_neighbors=5))
    if run_dir is not None and emb.shape[1] == 2:
        scatter(
            emb, None if labels is None else labels.numpy(), Path(run_dir) / "embedding.png", title
        )
    return {k: float(np.asarray(v)) for k, v in out.items()}


def _labels_of(data: Dataset) -> Tensor | None:
    """The class labels ``[N]`` of a dataset, or None when its items have none."""
    if isinstance(data, ArrayDataset):
        return data.labels
    if len(data) == 0 or "label" not in SeededItems(data)[(0, 0)]:  # type: ignore[arg-type]
        return None
    return take(data, "label")
