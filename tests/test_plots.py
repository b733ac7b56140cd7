"""Figures: the cluster confusion plot orders clusters by their Hungarian match."""

from __future__ import annotations

import numpy as np

from fw.lib import metrics
from fw.lib.plots import cluster_confusion, matched_order


def test_matched_order_undoes_a_permutation_and_keeps_extra_clusters() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    perm = np.array([3, 5, 0, 1])  # cluster ids of classes 0..3; clusters 2 and 4 unused
    pred = perm[y]
    counts = metrics.confusion_matrix(y, pred, n_pred=6)
    order = matched_order(counts)
    assert order[:4] == [3, 5, 0, 1]
    assert sorted(order) == list(range(6))
    reordered = counts[:, order]
    assert np.array_equal(np.diag(reordered[:, :4]), np.bincount(y, minlength=4))


def test_cluster_confusion_writes_a_png(tmp_path) -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    path = cluster_confusion(y, np.array([1, 1, 0, 2, 2, 2]), tmp_path / "c.png", ["a", "b", "c"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
