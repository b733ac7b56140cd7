"""HNSW neighbours for t-SNE's sparse p, and the recall fw logs for approximate searches."""

from __future__ import annotations

import numpy as np
import pytest

from fw.lib.features import knn, knn_recall


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(10, d))
    return (centres[rng.integers(0, 10, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _brute_force(x: np.ndarray, k: int) -> np.ndarray:
    d = ((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def _recall(table: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) for a, b in zip(table, truth, strict=True)]))


def test_hnsw_finds_the_neighbours_and_recall_is_measured_exactly():
    x = _clustered(1000, 12)
    truth = _brute_force(x, 10)
    ids, _ = knn(x, 10, metric="l2", index="hnsw")
    reference = _recall(ids, truth) / 10
    assert reference >= 0.95
    assert knn_recall(x, ids, metric="l2", sample=1000) == pytest.approx(reference, abs=1e-12)
    exact, _ = knn(x, 10, metric="l2", index="flat")
    assert knn_recall(x, exact, metric="l2", sample=200) == 1.0


def test_recall_of_a_damaged_table():
    x = _clustered(400, 6, seed=1)
    truth = _brute_force(x, 8)
    damaged = truth.copy()
    damaged[:, 4:] = (np.arange(400)[:, None] + 200) % 400  # far from most rows' neighbours
    expected = _recall(damaged, truth) / 8
    assert knn_recall(x, damaged, metric="l2", sample=400) == pytest.approx(expected, abs=1e-12)


def test_tsne_with_hnsw_neighbours_logs_recall(capsys):
    from sklearn.datasets import load_digits

    from fw_estimators import TSNE

    x = (load_digits().data[:300] / 16.0).astype(np.float32)
    est = TSNE(method="fft", knn_index="hnsw", max_iter=30, early_exaggeration_iter=15)
    est.set_params(random_state=0).fit(x)
    assert 0.9 <= est.metrics_["knn_recall"] <= 1.0
    assert "hnsw neighbours: recall@90" in capsys.readouterr().err
