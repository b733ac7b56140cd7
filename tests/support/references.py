"""Independent float64 references shared by several test modules."""

from __future__ import annotations

import numpy as np


def sinkhorn_reference(scores: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """SwAV's Algorithm 1 as printed (Caron et al. 2020), float64, no log space: Q is K × B."""
    q = np.exp(scores / eps).T
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T
