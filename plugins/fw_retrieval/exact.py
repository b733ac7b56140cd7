"""The distance every retrieval method reports, the tie-break, and exact selection from fast scores.

Every method (tree, brute force, faiss, ...) ranks candidates by one *canonical* distance,
computed in float64 from the float32 rows and rounded to float32: Euclidean
``sqrt(sum((x - q)^2))`` or, for inner product, ``-sum(x * q)`` (smaller is nearer). Ties are
broken by the smaller row id. Fast float32 scores (matrix products, faiss) only choose
candidates: :func:`select` keeps every candidate within ``tol`` of the k-th fast score and
re-ranks those canonically, so the result equals a float64 brute-force ranking whenever the fast
scores are within ``tol / 2`` of the truth (:func:`fast_tolerance` bounds that error).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Metric = Literal["euclidean", "ip"]
METRICS: tuple[str, ...] = ("euclidean", "ip")


def canonical(rows: np.ndarray, q: np.ndarray, metric: Metric) -> np.ndarray:
    """Canonical distances ``[m]`` (float32) of float32 ``rows [m, D]`` to the query ``q [D]``."""
    r = np.asarray(rows, dtype=np.float64)
    q64 = np.asarray(q, dtype=np.float64)
    if metric == "euclidean":
        diff = r - q64
        return np.sqrt((diff * diff).sum(axis=1)).astype(np.float32)
    return (-(r * q64).sum(axis=1)).astype(np.float32)


def order(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of (dist, id) pairs: smaller distance first, then smaller id."""
    o = np.lexsort((ids, dist))[:k]
    return ids[o].astype(np.int64), dist[o].astype(np.float32)


def fast_scores(rows: np.ndarray, q: np.ndarray, metric: Metric, sq_norms=None) -> np.ndarray:
    """float32 scores that order like the canonical distances (squared L2, or ``-x.q``)."""
    dots = rows @ q.astype(np.float32)
    if metric == "ip":
        return -dots
    norms = sq_norms if sq_norms is not None else np.einsum("ij,ij->i", rows, rows)
    return norms - 2.0 * dots + float(np.dot(q, q))


def fast_tolerance(max_norm: float, q: np.ndarray, metric: Metric) -> float:
    """Twice a generous bound on the error of a float32 fast score, in the fast score's unit."""
    qn = float(np.linalg.norm(np.asarray(q, dtype=np.float64)))
    if metric == "ip":
        return 4e-5 * max_norm * qn + 1e-30
    return 4e-5 * (max_norm + qn) ** 2 + 1e-30


def select(
    ids: np.ndarray,
    fast: np.ndarray,
    k: int,
    rows_of,
    q: np.ndarray,
    metric: Metric,
    tol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` among candidates ``ids`` with fast scores ``fast``.

    The caller guarantees that every point not among ``ids`` has a fast score above the
    candidates' k-th plus ``tol`` (or that ``ids`` are all the valid points); ``rows_of(ids)``
    returns their float32 rows.
    """
    if len(ids) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    if len(ids) > k:
        kth = np.partition(fast, k - 1)[k - 1]
        keep = fast <= kth + tol
        ids, fast = ids[keep], fast[keep]
    return order(canonical(rows_of(ids), q, metric), ids, k)
