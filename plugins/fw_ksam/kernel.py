"""Kernel-weighted least squares over coalitions: KSAM and KernelSHAP, first and second order.

First order (thesis §7.6, Lundberg & Lee): fit ``v(z) ≈ φ₀ + Σ φᵢ zᵢ`` under the Shapley kernel
π(S) = (n−1) / (C(n,|S|)·|S|·(n−|S|)); its infinite weights at |S| ∈ {0, n} are the
constraints φ₀ = v(∅) and Σφ = v(N) − v(∅).

Second order (thesis §7.7.2, Eq. 7.7): fit ``v(z) ≈ φ₀ + Σ φᵢ zᵢ + Σ_{i<j} φᵢⱼ zᵢ zⱼ`` under
Λ(S) = (n−1) / (C(n,|S|)·C(|S|,2)·(n−|S|)); its infinite weights at |S| ∈ {0, 1, n} are
φ₀ = v(∅), φᵢ = v({i}) − v(∅) and the efficiency constraint on the pair terms. With every
coalition enumerated the fit equals the Shapley values / Shapley–Taylor indices exactly.

Constraints are either exact (a KKT system, ``constraint="exact"``) or the thesis's large
weight (``constraint="penalty"``, 1e8 on the constrained coalitions). Coalitions are sampled
either from the kernel itself (``sampling="direct"``, Kernel-Direct: size s with probability ∝
the kernel's total mass at s, then a uniform subset of that size, all weights equal) or
uniformly (``"weighting"``, Kernel-Weighting: uniform coalitions weighted by the kernel).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import Tensor

from fw.api import Explainer, Game
from fw.errors import ShapeError, check_choice

Sampling = Literal["direct", "weighting"]
Constraint = Literal["exact", "penalty"]


def size_mass(n: int, order: int) -> Tensor:
    """Total kernel mass C(n,s)·kernel(s) of each size s = 0..n (zero where the weight is ∞)."""
    mass = torch.zeros(n + 1, dtype=torch.float64)
    for s in range(order, n):
        pairs = s if order == 1 else s * (s - 1) / 2
        mass[s] = (n - 1) / (pairs * (n - s))
    return mass


def coalition_weight(n: int, order: int) -> Tensor:
    """The kernel π (order 1) or Λ (order 2) of one coalition of each size (0 where infinite)."""
    binom = torch.tensor([math.comb(n, s) for s in range(n + 1)], dtype=torch.float64)
    return size_mass(n, order) / binom


def n_regular(n: int, order: int) -> int:
    """How many coalitions carry a finite kernel weight (sizes order..n−1)."""
    return sum(math.comb(n, s) for s in range(order, n))


def enumerate_sizes(n: int, low: int, high: int) -> Tensor:
    """Every coalition with low ≤ |S| ≤ high, bool ``[m, n]``."""
    rows = []
    for s in range(low, high + 1):
        for combo in _combinations(n, s):
            row = torch.zeros(n, dtype=torch.bool)
            row[list(combo)] = True
            rows.append(row)
    return torch.stack(rows) if rows else torch.zeros(0, n, dtype=torch.bool)


def _combinations(n: int, s: int):
    import itertools

    return itertools.combinations(range(n), s)


def sample_coalitions(
    n: int, order: int, samples: int, sampling: Sampling, paired: bool, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``samples`` coalitions with finite kernel weight, and their regression weights.

    When ``samples`` reaches the number of such coalitions, all of them are enumerated with
    their exact kernel weights instead (the fit is then exact).
    """
    weight = coalition_weight(n, order)
    if samples >= n_regular(n, order):
        z = enumerate_sizes(n, order, n - 1)
        return z, weight[z.sum(1)]
    if sampling == "direct":
        mass = size_mass(n, order)
        paired = paired and order == 1  # Λ is not symmetric in s: no pairing for order 2
        draws = samples // 2 if paired else samples
        sizes = torch.multinomial(mass, draws, replacement=True, generator=gen)
        ranks = torch.rand(draws, n, generator=gen).argsort(1).argsort(1)
        z = ranks < sizes.unsqueeze(1)
        if paired:  # π is symmetric under s -> n − s, so complements follow the same law
            z = torch.cat([z, ~z])
        return z, torch.ones(z.shape[0], dtype=torch.float64)
    check_choice(sampling, ("direct", "weighting"), "sampling")
    z = torch.rand(samples * 2, n, generator=gen) < 0.5
    size = z.sum(1)
    z = z[(size >= order) & (size <= n - 1)][:samples]
    return z, weight[z.sum(1)]


def pair_index(n: int) -> tuple[Tensor, Tensor]:
    """Row and column of every pair i < j, in ``torch.triu_indices`` order."""
    iu = torch.triu_indices(n, n, offset=1)
    return iu[0], iu[1]


Pairs = tuple[Tensor, Tensor]


def cross_pairs(split: tuple[int, int]) -> Pairs:
    """Every query × match pair (i < n_q <= j): the "jagged" projection."""
    nq, nr = split
    i = torch.arange(nq).repeat_interleave(nr)
    return i, nq + torch.arange(nr).repeat(nq)


def design(z: Tensor, order: int, pairs: Pairs | None = None) -> Tensor:
    """Regression features: ``zᵢ`` (order 1) or ``zᵢzⱼ`` over ``pairs`` (default all i < j)."""
    zf = z.double()
    if order == 1:
        return zf
    i, j = pairs if pairs is not None else pair_index(z.shape[1])
    return zf[:, i] * zf[:, j]


def constrained_lstsq(
    z: Tensor,
    order: int,
    target: Tensor,
    weight: Tensor,
    total: float,
    pairs: Pairs | None = None,
    chunk: int = 2048,
) -> Tensor:
    """argmin Σ w (target − F β)² subject to Σβ = total, F = ``design(z, order)``.

    Solved as a KKT system on normal equations accumulated in chunks (the order-2 design of
    many players does not fit in memory at once); min-norm when the samples underdetermine it.
    """
    n = z.shape[1]
    if order == 1:
        m = n
    else:
        m = n * (n - 1) // 2 if pairs is None else pairs[0].numel()
    a = torch.zeros(m, m, dtype=torch.float64)
    b = torch.zeros(m, dtype=torch.float64)
    for lo in range(0, z.shape[0], chunk):
        f = design(z[lo : lo + chunk], order, pairs)
        fw_ = f * weight[lo : lo + chunk].unsqueeze(1)
        a += fw_.T @ f
        b += fw_.T @ target[lo : lo + chunk]
    scale = a.diagonal().abs().max().clamp(min=1e-300)
    kkt = torch.zeros(m + 1, m + 1, dtype=torch.float64)
    kkt[:m, :m] = a / scale
    kkt[:m, m] = 1.0
    kkt[m, :m] = 1.0
    rhs = torch.cat([b / scale, torch.tensor([total], dtype=torch.float64)])
    sol = torch.linalg.lstsq(kkt, rhs.unsqueeze(1), driver="gelsd").solution[:, 0]
    return sol[:m]


def weighted_lstsq(features: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """argmin Σ w (target − F β)², min-norm (the penalty form of the constraints)."""
    root = weight.sqrt().unsqueeze(1)
    return torch.linalg.lstsq(features * root, (target * root[:, 0]).unsqueeze(1), driver="gelsd")[
        0
    ][:, 0]


def to_matrix(values: Tensor, n: int, pairs: Pairs | None = None) -> Tensor:
    """Pair terms (over ``pairs``, default all i < j) -> symmetric ``[n, n]``, zero elsewhere."""
    out = torch.zeros(n, n, dtype=values.dtype)
    i, j = pairs if pairs is not None else pair_index(n)
    out[i, j] = values
    out[j, i] = values
    return out


def kernel_explain(
    game: Game,
    order: int,
    samples: int,
    sampling: Sampling = "direct",
    constraint: Constraint = "exact",
    paired: bool = True,
    seed: int = 0,
    penalty: float = 1e8,
    cross_only: bool = False,
) -> tuple[Tensor, int]:
    """Kernel regression estimate and the number of model evaluations it used.

    ``cross_only`` (order 2, games over two inputs) fits only the query × match pairs: exact
    when within-image pairs interact not at all (GAP inner products, thesis Prop. 7.7.1), and
    4x cheaper to solve.
    """
    check_choice(sampling, ("direct", "weighting"), "sampling")
    check_choice(constraint, ("exact", "penalty"), "constraint")
    n = game.n_players
    pairs = None
    if cross_only and order == 2:
        if game.split is None:
            raise ShapeError("cross_only needs a game whose players span a query and a match")
        pairs = cross_pairs(game.split)
    if n < order + 1:
        raise ShapeError(f"a kernel fit of order {order} needs at least {order + 1} players")
    gen = torch.Generator().manual_seed(seed)
    z, w = sample_coalitions(n, order, samples, sampling, paired, gen)
    anchors = torch.zeros(2, n, dtype=torch.bool)
    anchors[1] = True
    if order == 2:
        anchors = torch.cat([anchors, torch.eye(n, dtype=torch.bool)])
    values = game.value(torch.cat([anchors, z])).double()
    v_anchor, v = values[: anchors.shape[0]], values[anchors.shape[0] :]
    v0, vn = float(v_anchor[0]), float(v_anchor[1])
    evaluations = values.numel()
    if constraint == "exact":
        if order == 1:
            return constrained_lstsq(z, 1, v - v0, w, vn - v0).float(), evaluations
        first = v_anchor[2:] - v0
        target = v - v0 - z.double() @ first
        fit = constrained_lstsq(z, 2, target, w, vn - v0 - float(first.sum()), pairs)
        return to_matrix(fit, n, pairs).float(), evaluations
    # penalty: the constrained coalitions join the fit with a huge weight, φ₀ is fitted too
    big = penalty * float(w.max()) if w.numel() else penalty
    zz = torch.cat([anchors, z])
    ww = torch.cat([torch.full((anchors.shape[0],), big, dtype=torch.float64), w])
    feats = [torch.ones(zz.shape[0], 1, dtype=torch.float64), zz.double()]
    if order == 2:
        feats.append(design(zz, 2, pairs))
    beta = weighted_lstsq(torch.cat(feats, 1), values, ww)
    if order == 1:
        return beta[1 : n + 1].float(), evaluations
    return to_matrix(beta[n + 1 :], n, pairs).float(), evaluations


class _KernelRegression(Explainer):
    """Shared state of the kernel-regression explainers: sampler settings and evaluation count."""

    orders: ClassVar[tuple[int, ...]] = (1, 2)
    example: ClassVar[dict] = {"samples": 64}
    constraint: ClassVar[Constraint]

    def __init__(
        self,
        samples: int,
        sampling: Sampling,
        paired: bool,
        seed: int,
        penalty: float = 1e8,
        cross_only: bool = False,
    ) -> None:
        check_choice(sampling, ("direct", "weighting"), "sampling")
        self.samples, self.sampling, self.paired, self.seed = samples, sampling, paired, seed
        self.penalty, self.cross_only = penalty, cross_only
        self.evaluations = 0

    def explain(self, game: Game, order: int = 1) -> Tensor:
        self.check_order(order)
        phi, self.evaluations = kernel_explain(
            game,
            order,
            self.samples,
            self.sampling,
            self.constraint,
            self.paired,
            self.seed,
            self.penalty,
            self.cross_only,
        )
        return phi


class KSAM(_KernelRegression):
    """Kernel SAM: kernel regression with exact efficiency constraints, orders 1 and 2.

    ``samples`` coalitions (besides ∅, N and, for order 2, the singletons) are drawn from the
    kernel (Kernel-Direct); ``paired`` makes half of them the complements of the other half
    (order 1 only: Λ is not symmetric under S -> N∖S). ``cross_only`` fits only query × match
    pairs of a two-image game (exact for GAP inner products; see :func:`kernel_explain`). A
    budget that covers all coalitions enumerates them and returns the exact Shapley /
    Shapley–Taylor values.
    """

    constraint: ClassVar[Constraint] = "exact"

    def __init__(
        self,
        samples: int = 2048,
        sampling: Sampling = "direct",
        paired: bool = True,
        cross_only: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(samples, sampling, paired, seed, cross_only=cross_only)


class KernelSHAP(_KernelRegression):
    """KernelSHAP as the thesis ran it: Shapley (or Λ) kernel, constraints as weight 1e8.

    Same coalition sampler as :class:`KSAM` (from the kernel, paired); the only difference is
    that the efficiency anchors are rows with weight ``penalty`` in an unconstrained fit with a
    free intercept, so efficiency holds to about 1/penalty rather than exactly.
    """

    constraint: ClassVar[Constraint] = "penalty"

    def __init__(
        self,
        samples: int = 2048,
        sampling: Sampling = "direct",
        paired: bool = True,
        penalty: float = 1e8,
        seed: int = 0,
    ) -> None:
        super().__init__(samples, sampling, paired, seed, penalty=penalty)
