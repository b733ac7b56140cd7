"""Figures: the cluster confusion plot orders clusters by their Hungarian match; class maps."""

from __future__ import annotations

import numpy as np
import torch

from fw.lib import metrics
from fw.lib.plots import class_palette, cluster_confusion, matched_order, paint, segmentation_grid


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


def test_paint_gives_each_class_its_colour_and_anything_else_black(tmp_path) -> None:
    palette = class_palette(3)
    ids = np.array([[0, 1], [2, -1], [3, 255]])
    rgb = paint(ids, palette)
    for (r, c), k in np.ndenumerate(ids):
        want = palette[k] if 0 <= k < 3 else np.zeros(3)
        assert np.array_equal(rgb[r, c], want)
    assert len({tuple(palette[k]) for k in range(3)}) == 3  # distinct class colours
    images = [torch.rand(1, 4, 4), torch.rand(3, 4, 4)]  # grey images are shown as RGB
    maps = [[ids[:2, :2]] * 2, [ids[1:, :2]] * 2]
    path = segmentation_grid(images, maps, ["image", "a", "b"], 3, tmp_path / "g.png", list("xyz"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
