"""Relative conditioner density over a conditional tree's nodes, and generator blind spots.

Hamilton, PhD thesis (MIT 2024), ch. 3.12, Eq. 3.2 (also Hamilton et al., "Conditional Image
Retrieval", arXiv 2007.07177, Sec. 3.12)::

    RCD(n, c) = (|n ∩ S_c| / |n|) * (|X| / |S_c|)

with |n| the rows below node n. Build one tree over real rows and generated rows, then nodes with
``RCD(n, generated) < 0.6`` that are significant (a one-sided binomial test of the generated
count in n against ``|n| |S_c| / |X|``, p < 0.01; the thesis does not name its test) are regions
the generator under-samples: blind spots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fw.errors import ShapeError
from fw_retrieval.tree import ConditionalTree


def relative_conditioner_density(tree: ConditionalTree, member: np.ndarray) -> np.ndarray:
    """RCD of every node of ``tree`` for the class whose rows are ``member`` (bool [n])."""
    member = np.asarray(member, dtype=bool)
    if member.shape != (tree.n,):
        raise ShapeError(f"member must be bool [{tree.n}], got shape {member.shape}")
    total = int(member.sum())
    if total == 0:
        raise ShapeError("the class has no rows: RCD divides by |S_c|")
    inside = tree.counts(member[tree.perm])
    size = tree.end - tree.start
    return (inside / size) * (tree.n / total)


def row_rcd(tree: ConditionalTree, member: np.ndarray, up: int = 0) -> np.ndarray:
    """Per original row, the RCD of its leaf (``up=0``) or of the node ``up`` levels above it
    (the thesis colours points by the RCD of the node that holds them)."""
    rcd = relative_conditioner_density(tree, member)
    node = tree.leaf_of.copy()
    for _ in range(up):
        node = np.where(tree.parent[node] >= 0, tree.parent[node], node)
    out = np.empty(tree.n)
    out[tree.perm] = rcd[node]
    return out


def under_representation_p(tree: ConditionalTree, member: np.ndarray) -> np.ndarray:
    """One-sided binomial p-value per node that the class is this rare there by chance."""
    from scipy.stats import binom

    member = np.asarray(member, dtype=bool)
    inside = tree.counts(member[tree.perm])
    size = tree.end - tree.start
    return binom.cdf(inside, size, member.mean())


@dataclass
class BlindSpot:
    """A node where the class is under-represented."""

    node: int
    depth: int
    size: int
    rcd: float
    p_value: float
    others: np.ndarray  # ids of the rows below it not in the class (e.g. the real images)


def blind_spots(
    tree: ConditionalTree,
    member: np.ndarray,
    threshold: float = 0.6,
    alpha: float = 0.01,
    min_size: int = 1,
) -> list[BlindSpot]:
    """Nodes with RCD < ``threshold`` and p < ``alpha``, largest first, none inside another."""
    member = np.asarray(member, dtype=bool)
    rcd = relative_conditioner_density(tree, member)
    p = under_representation_p(tree, member)
    size = tree.end - tree.start
    hit = (rcd < threshold) & (p < alpha) & (size >= min_size)
    out: list[BlindSpot] = []
    covered = np.zeros(tree.n, bool)  # tree positions already inside a reported node
    for node in np.flatnonzero(hit)[np.argsort(-size[hit], kind="stable")]:
        s, e = int(tree.start[node]), int(tree.end[node])
        if covered[s:e].any():
            continue
        covered[s:e] = True
        rows = tree.perm[s:e]
        out.append(
            BlindSpot(
                int(node),
                int(tree.depth[node]),
                e - s,
                float(rcd[node]),
                float(p[node]),
                np.sort(rows[~member[rows]]),
            )
        )
    return out


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to ``a`` and ``b`` (the FID formula, Heusel
    et al. 2017, Eq. 6): ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``."""
    from scipy.linalg import sqrtm

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = sqrtm(sa @ sb).real
    return float(mu @ mu + np.trace(sa + sb - 2 * root))


def toy_generators(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D samples with mean 0 and covariance I, so each is at Fréchet distance 0 from N(0, I)
    in expectation: ``normal``; ``uniform`` (the square [-√3, √3]²: no tails); ``bimodal``
    (x = ±√0.91 + N(0, 0.3²), y ~ N(0, 1): a gap at x = 0)."""
    rng = np.random.default_rng(seed)
    half = np.sqrt(3.0)
    x = rng.choice([-1.0, 1.0], n) * np.sqrt(0.91) + 0.3 * rng.standard_normal(n)
    return {
        "normal": rng.standard_normal((n, 2)),
        "uniform": rng.uniform(-half, half, (n, 2)),
        "bimodal": np.stack([x, rng.standard_normal(n)], axis=1),
    }
