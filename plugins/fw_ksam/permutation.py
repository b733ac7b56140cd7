"""Permutation-sampling estimators: the baselines the kernel regressions are compared with.

First order (Castro et al.): φᵢ = E_π[v(Pᵢ ∪ {i}) − v(Pᵢ)], Pᵢ the players before i in a random
order π. Second order, the Shapley–Taylor sampling estimator of Sundararajan et al. [292]:
φ²({i, j}) = E_π[δ_{ij} v(T)], T the players before the first of i, j in π (the
probability of a given T is (2/n)/C(n−1, |T|), which is the weight of the δ_S formula). One
permutation gives one sample of every pair from n(n−1)/2 + n − 1 new coalitions (prefixes and
prefixes plus one later player); v(∅) and v(N) are evaluated once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fw.api import Game


def permutation_shapley(game: Game, evaluations: int, seed: int = 0) -> tuple[Tensor, int]:
    """Monte-Carlo Shapley values within about ``evaluations`` model calls (and the calls used)."""
    n = game.n_players
    perms = max(1, (evaluations - 2) // max(n - 1, 1))
    gen = torch.Generator().manual_seed(seed)
    order = torch.rand(perms, n, generator=gen).argsort(1)
    rank = order.argsort(1)
    # prefix t of permutation k: players with rank < t, t = 0..n
    prefixes = rank.unsqueeze(1) < torch.arange(n + 1).reshape(1, -1, 1)  # [K, n+1, n]
    inner = game.value(prefixes[:, 1:n].reshape(-1, n)).double().reshape(perms, n - 1)
    ends = game.value(
        torch.stack([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
    )
    values = torch.cat(
        [ends[0].double().expand(perms, 1), inner, ends[1].double().expand(perms, 1)], 1
    )
    marginal = values[:, 1:] - values[:, :-1]  # [K, n]: marginal of the player at position t
    phi = torch.zeros(n, dtype=torch.float64)
    phi.index_add_(0, order.reshape(-1), marginal.reshape(-1))
    return (phi / perms).float(), perms * (n - 1) + 2


def permutation_shapley_taylor(game: Game, evaluations: int, seed: int = 0) -> tuple[Tensor, int]:
    """Monte-Carlo order-2 Shapley–Taylor pair indices ``[n, n]`` within about ``evaluations``."""
    n = game.n_players
    per_perm = n * (n - 1) // 2 + n - 1
    perms = max(1, (evaluations - 2) // per_perm)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(n, n, dtype=torch.float64)
    t_idx, q_idx = torch.triu_indices(n, n, offset=1)  # prefix length t, later position q > t
    empty_full = game.value(
        torch.stack([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
    ).double()
    for _ in range(perms):
        order = torch.randperm(n, generator=gen)
        rank = order.argsort()
        prefix = rank.unsqueeze(0) < torch.arange(n + 1).unsqueeze(1)  # [n+1, n]
        plus = prefix[t_idx].clone()  # P_t ∪ {π_q}, q > t
        plus[torch.arange(t_idx.numel()), order[q_idx]] = True
        v_prefix = torch.cat(
            [empty_full[:1], game.value(prefix[1:n]).double(), empty_full[1:]]
        )  # [n+1]
        v_plus = torch.zeros(n + 1, n, dtype=torch.float64)  # v(P_t ∪ π_q), q > t
        v_plus[t_idx, q_idx] = game.value(plus).double()
        for t in range(n):  # π_t is the first of the pair, π_q (q > t) the second
            q = torch.arange(t + 1, n)
            if q.numel() == 0:
                continue
            both = torch.where(q == t + 1, v_prefix[t + 2], v_plus[t + 1, q]) if t + 1 < n else None
            assert both is not None
            delta = both - v_prefix[t + 1] - v_plus[t, q] + v_prefix[t]
            a, b = order[t], order[q]
            total[a, b] += delta
            total[b, a] += delta
    return (total / perms).float(), perms * per_perm + 2


def per_pair_shapley_taylor(game: Game, evaluations: int, seed: int = 0) -> tuple[Tensor, int]:
    """[292] as a per-interaction estimator: each pair draws its own permutations, 4 calls each.

    The same unbiased E_π[δ_{ij} v(T)] as :func:`permutation_shapley_taylor`, but without
    sharing coalitions between pairs — how the thesis describes the baseline ("a separate
    estimate per interaction").
    """
    n = game.n_players
    i, j = torch.triu_indices(n, n, offset=1)
    pairs = i.numel()
    m = max(1, evaluations // (4 * pairs))
    gen = torch.Generator().manual_seed(seed)
    rank = torch.rand(pairs, m, n, generator=gen).argsort(2).argsort(2)  # [P, m, n]
    first = torch.minimum(
        rank.gather(2, i.reshape(-1, 1, 1).expand(-1, m, 1)),
        rank.gather(2, j.reshape(-1, 1, 1).expand(-1, m, 1)),
    )
    t = rank < first  # players before the first of the pair
    with_i, with_j = t.clone(), t.clone()
    with_i[torch.arange(pairs), :, i] = True
    with_j[torch.arange(pairs), :, j] = True
    with_ij = with_i.clone()
    with_ij[torch.arange(pairs), :, j] = True
    coalitions = torch.stack([with_ij, with_i, with_j, t], 2).reshape(-1, n)
    v = game.value(coalitions).double().reshape(pairs, m, 4)
    delta = (v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]).mean(1)
    out = torch.zeros(n, n, dtype=torch.float64)
    out[i, j] = delta
    out[j, i] = delta
    return out.float(), pairs * m * 4
