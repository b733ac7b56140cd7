"""fw.metrics against independent computations (brute force, hand-worked examples, formulas)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fw.lib import metrics


def _brute_force_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over every injective map from clusters to classes (small cases only)."""
    clusters, classes = np.unique(y_pred), np.unique(y_true)
    best = 0
    slots = list(classes) + [None] * max(0, len(clusters) - len(classes))
    for perm in itertools.permutations(slots, len(clusters)):
        mapping = dict(zip(clusters, perm, strict=True))
        hits = sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True))
        best = max(best, hits)
    return best / len(y_true)


# --- hungarian accuracy -----------------------------------------------------------------------


def test_hungarian_matches_brute_force_on_four_classes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 4, size=40)
        noisy = np.where(rng.random(40) < 0.4, rng.integers(0, 4, size=40), y)
        pred = np.array([2, 0, 3, 1])[noisy]  # permuted cluster ids
        assert metrics.hungarian_accuracy(y, pred) == pytest.approx(_brute_force_accuracy(y, pred))


def test_hungarian_more_or_fewer_clusters_than_classes() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    over = np.array([5, 5, 7, 1, 1, 1, 9, 9])  # four clusters, three classes: cluster 7 unmatched
    assert metrics.hungarian_accuracy(y, over) == pytest.approx(7 / 8)
    assert metrics.hungarian_accuracy(y, over) == pytest.approx(_brute_force_accuracy(y, over))
    under = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # two clusters for three classes
    assert metrics.hungarian_accuracy(y, under) == pytest.approx(5 / 8)
    assert metrics.hungarian_accuracy(y, under) == pytest.approx(_brute_force_accuracy(y, under))


def test_perfect_clustering_under_permutation_scores_one() -> None:
    y = torch.arange(10).repeat(7)
    pred = (y * 3 + 4) % 10  # a bijection of the labels
    assert metrics.hungarian_accuracy(y, pred) == 1.0
    assert metrics.nmi(y, pred) == pytest.approx(1.0)
    assert metrics.ari(y, pred) == pytest.approx(1.0)
    assert isinstance(metrics.hungarian_accuracy(y, pred), float)


# --- confusion matrix, NMI, ARI ----------------------------------------------------------------

Y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
P = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0, 2])


def test_confusion_matrix_hand_computed() -> None:
    expected = np.array([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    np.testing.assert_array_equal(metrics.confusion_matrix(Y, P), expected)
    padded = metrics.confusion_matrix(Y, P, n_true=4, n_pred=5)
    assert padded.shape == (4, 5) and padded.sum() == len(Y)
    np.testing.assert_array_equal(padded[:3, :3], expected)


def _nmi_formula(y: np.ndarray, p: np.ndarray) -> float:
    """I(Y;P) / ((H(Y) + H(P)) / 2) from the contingency table, in nats."""
    n = len(y)
    table = np.array([[np.sum((y == a) & (p == b)) for b in np.unique(p)] for a in np.unique(y)])
    pij = table / n
    pi, pj = pij.sum(1), pij.sum(0)
    mi = sum(
        pij[i, j] * math.log(pij[i, j] / (pi[i] * pj[j]))
        for i in range(pij.shape[0])
        for j in range(pij.shape[1])
        if pij[i, j] > 0
    )
    h = lambda q: -sum(v * math.log(v) for v in q if v > 0)  # noqa: E731
    return mi / ((h(pi) + h(pj)) / 2)


def _ari_formula(y: np.ndarray, p: np.ndarray) -> float:
    """Hubert & Arabie's adjusted Rand index from pair counts."""
    table = np.array([[np.sum((y == a) & (p == b)) for b in np.unique(p)] for a in np.unique(y)])
    c2 = lambda v: v * (v - 1) / 2  # noqa: E731
    index = c2(table).sum()
    a, b = c2(table.sum(1)).sum(), c2(table.sum(0)).sum()
    expected = a * b / c2(len(y))
    return (index - expected) / ((a + b) / 2 - expected)


def test_nmi_and_ari_against_contingency_formulas() -> None:
    assert metrics.nmi(Y, P) == pytest.approx(_nmi_formula(Y, P), abs=1e-12)
    assert metrics.ari(Y, P) == pytest.approx(_ari_formula(Y, P), abs=1e-12)
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
    assert metrics.nmi(y, p) == pytest.approx(_nmi_formula(y, p), abs=1e-12)
    assert metrics.ari(y, p) == pytest.approx(_ari_formula(y, p), abs=1e-12)


def test_label_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        metrics.hungarian_accuracy([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        metrics.nmi(np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="integer labels"):
        metrics.ari([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="integer labels"):
        metrics.hungarian_accuracy(np.array(["a", "b"]), [0, 1])
    with pytest.raises(ValueError, match="empty"):
        metrics.hungarian_accuracy([], [])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.confusion_matrix([-1, 0], [0, 1])
    with pytest.raises(ValueError, match="n_pred=2"):
        metrics.confusion_matrix([0, 1], [0, 2], n_pred=2)


# --- unsupervised mIoU ---------------------------------------------------------------------------


def test_unsupervised_miou_hand_computed() -> None:
    # 3 classes; -1 is ignored. Clusters: 2 -> class 0, 0 -> class 1, 1 -> class 2 (worked below).
    gt = np.array([[0, 0, 0, 1], [1, 1, 2, 2], [2, -1, -1, 0]])
    pr = np.array([[2, 2, 0, 0], [0, 0, 1, 1], [0, 1, 2, 2]])
    # valid pixels (10): conf[class, cluster]
    #   class 0: cluster2 x2, cluster0 x1, cluster2 x1 (last pixel) -> [1, 0, 3]
    #   class 1: cluster0 x3                                     -> [3, 0, 0]
    #   class 2: cluster1 x2, cluster0 x1                        -> [1, 2, 0]
    # best matching 2->0 (3), 0->1 (3), 1->2 (2): 8 of 10 pixels correct.
    # IoU class0 = 3 / (4 + 3 - 3) = 3/4; class1 = 3 / (3 + 5 - 3) = 3/5; class2 = 2 / (3+2-2) = 2/3
    out = metrics.unsupervised_miou(gt, pr, n_classes=3)
    assert out["assignment"] == [1, 2, 0]
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["per_class_iou"] == pytest.approx([3 / 4, 3 / 5, 2 / 3])
    assert out["miou"] == pytest.approx((3 / 4 + 3 / 5 + 2 / 3) / 3)
    # torch input with a batch axis gives the same numbers
    out_t = metrics.unsupervised_miou(torch.as_tensor(gt)[None], torch.as_tensor(pr)[None], 3)
    assert out_t == out


def test_unsupervised_miou_ignores_out_of_range_and_skips_absent_classes() -> None:
    gt = np.array([0, 0, 1, 1, 255, 255])  # 255: outside [0, n_classes), ignored like STEGO
    pr = np.array([1, 1, 0, 0, 0, 1])
    out = metrics.unsupervised_miou(gt, pr, n_classes=3, ignore_index=255)
    assert out["accuracy"] == 1.0
    assert out["miou"] == 1.0
    assert out["per_class_iou"][:2] == [1.0, 1.0] and math.isnan(out["per_class_iou"][2])


def test_unsupervised_miou_extra_clusters_count_as_errors() -> None:
    gt = np.array([0, 0, 0, 1, 1, 1])
    pr = np.array([0, 0, 2, 1, 1, 1])  # cluster 2 has no class left to match
    out = metrics.unsupervised_miou(gt, pr, n_classes=2, n_clusters=3)
    assert out["assignment"] == [0, 1, -1]
    assert out["accuracy"] == pytest.approx(5 / 6)
    assert out["per_class_iou"] == pytest.approx([2 / 3, 1.0])


def test_unsupervised_miou_errors() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.unsupervised_miou(np.zeros((2, 2), int), np.zeros(4, int), 2)
    with pytest.raises(ValueError, match="outside"):
        metrics.unsupervised_miou(np.zeros(4, int), np.array([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="ignored"):
        metrics.unsupervised_miou(-np.ones(4, int), np.zeros(4, int), 2)


# --- probes --------------------------------------------------------------------------------------


def _blobs(n: int, d: int, classes: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 3
    y = rng.integers(0, classes, n)
    return (centres[y] + spread * rng.normal(size=(n, d))).astype(np.float32), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_unweighted_equals_sklearn_majority_vote(metric: str) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr = _blobs(300, 8, 4, 3.0, seed=2)
    xte, yte = _blobs(100, 8, 4, 3.0, seed=3)
    for k in (1, 5, 20):
        sk = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute")
        expected = float((sk.fit(xtr, ytr).predict(xte) == yte).mean())
        got = metrics.knn_probe_accuracy(xtr, ytr, xte, yte, k=k, metric=metric, weighted=False)
        assert got == pytest.approx(expected)


def test_knn_weighted_matches_direct_computation() -> None:
    xtr, ytr = _blobs(200, 6, 3, 4.0, seed=4)
    xte, yte = _blobs(50, 6, 3, 4.0, seed=5)
    k, temp = 10, 0.07
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = b.astype(np.float64) @ a.T.astype(np.float64)
    hits = 0
    for i in range(len(xte)):
        nn = np.argsort(-sims[i])[:k]
        votes = np.zeros(3)
        for j in nn:
            votes[ytr[j]] += math.exp(sims[i, j] / temp)
        hits += int(votes.argmax() == yte[i])
    got = metrics.knn_probe_accuracy(
        torch.as_tensor(xtr), torch.as_tensor(ytr), xte, yte, k, temperature=temp
    )
    assert got == pytest.approx(hits / len(xte))


def test_knn_perfect_on_separated_clusters_with_arbitrary_labels() -> None:
    xtr, ytr = _blobs(100, 5, 3, 0.01, seed=6)
    labels = np.array([7, -2, 40])
    assert metrics.knn_probe_accuracy(xtr, labels[ytr], xtr + 1e-4, labels[ytr], k=3) == 1.0


def test_linear_probe_separable_and_chance() -> None:
    xtr, ytr = _blobs(300, 10, 3, 0.5, seed=7)
    xte, yte = _blobs(100, 10, 3, 0.5, seed=7)
    assert metrics.linear_probe_accuracy(xtr, ytr, xte, yte) == 1.0
    rng = np.random.default_rng(8)
    noise_acc = metrics.linear_probe_accuracy(
        rng.normal(size=(400, 10)),
        rng.integers(0, 2, 400),
        rng.normal(size=(400, 10)),
        rng.integers(0, 2, 400),
    )
    assert 0.35 < noise_acc < 0.65


def test_probe_input_errors() -> None:
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="2-D"):
        metrics.knn_probe_accuracy(np.zeros(4), y, x, y)
    with pytest.raises(ValueError, match="dimension"):
        metrics.knn_probe_accuracy(x, y, np.zeros((4, 2)), y)
    with pytest.raises(ValueError, match="train_labels has 3"):
        metrics.linear_probe_accuracy(x, y[:3], x, y)
    with pytest.raises(ValueError, match="metric"):
        metrics.knn_probe_accuracy(x, y, x, y, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        metrics.knn_probe_accuracy(np.full((4, 3), np.nan), y, x, y)
