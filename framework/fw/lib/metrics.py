"""Scores for learned representations: clustering agreement, dense (segmentation) mIoU, probes.

Every function accepts numpy arrays, torch tensors or lists and returns plain Python numbers.
Clustering labels may be any integers (they are only compared for equality); `confusion_matrix`
and `unsupervised_miou` index by label and so need non-negative ids.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "ari",
    "confusion_matrix",
    "hungarian_accuracy",
    "knn_probe_accuracy",
    "linear_probe_accuracy",
    "majority_assignment",
    "nmi",
    "unsupervised_miou",
]


def _to_numpy(a: Any, name: str) -> np.ndarray:
    """Convert a tensor, array or sequence to a numpy array (tensors are detached, moved to CPU)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} cannot be read as an array: {err}") from err


def _labels(a: Any, name: str, flat: bool = False) -> np.ndarray:
    """Integer labels as an int64 array; 1-D unless ``flat`` (then any shape is flattened)."""
    arr = _to_numpy(a, name)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold integer labels, got non-integral {arr.dtype}")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    if not flat and arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _label_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D label vectors of equal, non-zero length."""
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty")
    return t, p


def _features(a: Any, name: str) -> np.ndarray:
    """Finite 2-D float32 C-contiguous features ``[n, d]`` (what faiss wants)."""
    arr = _to_numpy(a, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _probe_inputs(
    train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(xtr, ytr, xte, yte)`` for the probes."""
    xtr = _features(train_feats, "train_feats")
    xte = _features(test_feats, "test_feats")
    ytr = _labels(train_labels, "train_labels")
    yte = _labels(test_labels, "test_labels")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train_feats and test_feats differ in dimension: {xtr.shape[1]} vs {xte.shape[1]}"
        )
    if ytr.shape[0] != xtr.shape[0]:
        raise ValueError(f"train_labels has {ytr.shape[0]} entries for {xtr.shape[0]} train_feats")
    if yte.shape[0] != xte.shape[0]:
        raise ValueError(f"test_labels has {yte.shape[0]} entries for {xte.shape[0]} test_feats")
    return xtr, ytr, xte, yte


def _contingency(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Counts ``[n_distinct_pred, n_distinct_true]`` of each (cluster, class) pair."""
    _, ti = np.unique(t, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    nt, npred = int(ti.max()) + 1, int(pi.max()) + 1
    return np.bincount(pi * nt + ti, minlength=npred * nt).reshape(npred, nt)


def hungarian_accuracy(y_true: Any, y_pred: Any) -> float:
    """Accuracy under the best one-to-one cluster-to-class map (unmatched clusters are errors)."""
    t, p = _label_pair(y_true, y_pred)
    table = _contingency(t, p)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / t.size)


def confusion_matrix(
    y_true: Any, y_pred: Any, n_true: int | None = None, n_pred: int | None = None
) -> np.ndarray:
    """Counts ``[n_true, n_pred]`` (int64): entry ``[i, j]`` = items of class i predicted as j."""
    t, p = _label_pair(y_true, y_pred)
    if t.min() < 0 or p.min() < 0:
        raise ValueError("confusion_matrix needs non-negative labels")
    n_true = int(t.max()) + 1 if n_true is None else int(n_true)
    n_pred = int(p.max()) + 1 if n_pred is None else int(n_pred)
    if t.max() >= n_true:
        raise ValueError(f"y_true has label {int(t.max())}, outside [0, n_true={n_true})")
    if p.max() >= n_pred:
        raise ValueError(f"y_pred has label {int(p.max())}, outside [0, n_pred={n_pred})")
    return np.bincount(t * n_pred + p, minlength=n_true * n_pred).reshape(n_true, n_pred)


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information (arithmetic-mean normalisation, scikit-learn's default)."""
    from sklearn.metrics import normalized_mutual_info_score

    t, p = _label_pair(y_true, y_pred)
    return float(normalized_mutual_info_score(t, p))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (scikit-learn)."""
    from sklearn.metrics import adjusted_rand_score

    t, p = _label_pair(y_true, y_pred)
    return float(adjusted_rand_score(t, p))


def majority_assignment(counts: Any) -> np.ndarray:
    """Greedy many-to-one matching: ``assignment[k]`` = the majority class of cluster ``k``.

    ``counts`` ``[n_classes, n_clusters]`` (class, cluster) pixel counts. Each cluster goes to the
    class most of its pixels carry (ties: the lowest class id; an empty cluster gets -1), so
    several clusters may share a class: the over-clustering protocol of ViCE (Karlsson et al.,
    §4, Table 1 "★") and PiCIE. It maximises the matched pixels over all many-to-one maps.
    """
    table = np.asarray(_to_numpy(counts, "counts"), dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 1:
        raise ValueError(f"counts must be [n_classes, n_clusters], got shape {table.shape}")
    out = table.argmax(axis=0).astype(np.int64)
    out[table.sum(axis=0) <= 0] = -1
    return out


def unsupervised_miou(
    y_true: Any,
    y_pred: Any,
    n_classes: int,
    ignore_index: int = -1,
    n_clusters: int | None = None,
) -> dict[str, Any]:
    """STEGO's cluster-probe score: Hungarian-matched mIoU and pixel accuracy of label maps.

    ``y_true`` and ``y_pred`` are label maps of the same (any) shape. Pixels whose ground truth
    equals ``ignore_index`` or lies outside ``[0, n_classes)`` are left out (as in STEGO); the
    predictions of the remaining pixels must lie in ``[0, n_clusters)`` (default ``n_classes``).
    One global confusion matrix is matched to maximise the matched pixels; pixels of an
    unmatched cluster count as errors. ``per_class_iou`` holds NaN for classes absent from both
    ground truth and matched prediction; ``miou`` averages the others. ``assignment[k]`` is the
    class cluster ``k`` was matched to (-1 if none). Scores are fractions, not percentages.
    """
    t = _labels(y_true, "y_true", flat=True)
    p = _labels(y_pred, "y_pred", flat=True)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    n_classes = int(n_classes)
    n_clusters = n_classes if n_clusters is None else int(n_clusters)
    if n_classes < 1 or n_clusters < 1:
        raise ValueError(f"n_classes and n_clusters must be >= 1, got {n_classes}, {n_clusters}")
    t, p = t.ravel(), p.ravel()
    keep = (t != ignore_index) & (t >= 0) & (t < n_classes)
    t, p = t[keep], p[keep]
    if t.size == 0:
        raise ValueError("no pixel left to score: every ground-truth label is ignored")
    if p.min() < 0 or p.max() >= n_clusters:
        bad = int(p.min()) if p.min() < 0 else int(p.max())
        raise ValueError(f"y_pred has cluster id {bad}, outside [0, n_clusters={n_clusters})")
    # conf[c, k]: pixels of class c that fell into cluster k
    conf = np.bincount(t * n_clusters + p, minlength=n_classes * n_clusters)
    conf = conf.reshape(n_classes, n_clusters).astype(np.float64)
    clusters, classes = linear_sum_assignment(conf.T, maximize=True)
    assignment = [-1] * n_clusters
    tp = np.zeros(n_classes)
    predicted = np.zeros(n_classes)  # pixels predicted as each class after matching
    for k, c in zip(clusters, classes, strict=True):
        assignment[int(k)] = int(c)
        tp[c] = conf[c, k]
        predicted[c] = conf[:, k].sum()
    actual = conf.sum(axis=1)
    union = actual + predicted - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
    valid = ~np.isnan(iou)
    return {
        "miou": float(iou[valid].mean()),  # at least one class has a pixel, so never empty
        "accuracy": float(tp.sum() / t.size),
        "per_class_iou": [float(v) for v in iou],
        "assignment": assignment,
    }


def knn_probe_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    k: int = 20,
    metric: Literal["cosine", "euclidean"] = "cosine",
    temperature: float = 0.07,
    weighted: bool = True,
) -> float:
    """Test accuracy of a k-nearest-neighbour vote over the train set (faiss, exact search).

    ``cosine`` searches inner products of L2-normalised features; ``euclidean`` searches L2
    distances. With ``weighted`` each neighbour votes ``exp(sim / temperature)`` (the
    InstDisc/DINO protocol; sim is the cosine, or minus the Euclidean distance); otherwise
    each votes 1. Ties go to the smallest label. ``k`` is capped at the train-set size.
    """
    import faiss

    xtr, ytr, xte, yte = _probe_inputs(train_feats, train_labels, test_feats, test_labels)
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if weighted and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(int(k), xtr.shape[0])
    if metric == "cosine":
        xtr = xtr / np.maximum(np.linalg.norm(xtr, axis=1, keepdims=True), 1e-12)
        xte = xte / np.maximum(np.linalg.norm(xte, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(xtr.shape[1])
    elif metric == "euclidean":
        index = faiss.IndexFlatL2(xtr.shape[1])
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    index.add(np.ascontiguousarray(xtr, dtype=np.float32))
    scores, nn = index.search(np.ascontiguousarray(xte, dtype=np.float32), k)
    if metric == "euclidean":
        scores = -np.sqrt(np.maximum(scores, 0.0))  # faiss returns squared distances
    classes, ytr_id = np.unique(ytr, return_inverse=True)
    neigh = ytr_id[nn]  # [n_test, k] class ids of the neighbours
    if weighted:
        s = scores.astype(np.float64) / temperature
        w = np.exp(s - s.max(axis=1, keepdims=True))  # a per-row factor leaves the vote unchanged
    else:
        w = np.ones_like(scores, dtype=np.float64)
    votes = np.zeros((xte.shape[0], classes.size))
    np.add.at(votes, (np.arange(xte.shape[0])[:, None], neigh), w)
    pred = classes[votes.argmax(axis=1)]
    return float((pred == yte).mean())


def linear_probe_accuracy(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    max_iter: int = 1000,
    C: float = 1.0,
) -> float:
    """Test accuracy of logistic regression fit on standardised train features (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr, xte, yte = _probe_inputs(train_feats, train_labels, test_feats, test_labels)
    if np.unique(ytr).size < 2:
        raise ValueError("linear_probe_accuracy needs at least two classes in train_labels")
    scaler = StandardScaler().fit(xtr.astype(np.float64))
    clf = LogisticRegression(max_iter=int(max_iter), C=float(C))
    clf.fit(scaler.transform(xtr.astype(np.float64)), ytr)
    pred = clf.predict(scaler.transform(xte.astype(np.float64)))
    return float((pred == yte).mean())


def probe_accuracies(
    xtr: Any, ytr: Any, xte: Any, yte: Any, k: int, linear: bool, max_iter: int, prefix: str = ""
) -> dict[str, float]:
    """``<prefix>knn_probe_accuracy`` and, when ``linear``, ``<prefix>linear_probe_accuracy``."""
    out = {f"{prefix}knn_probe_accuracy": knn_probe_accuracy(xtr, ytr, xte, yte, k=k)}
    if linear:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs convergence chatter
            out[f"{prefix}linear_probe_accuracy"] = linear_probe_accuracy(
                xtr, ytr, xte, yte, max_iter=max_iter
            )
    return out
