"""Error against exact values vs number of model evaluations: KSAM, KernelSHAP, permutations.

The thesis (§7.7.2) claims the second-order kernel "often requires 10x fewer function evaluations
to achieve the same estimation accuracy" than the Shapley–Taylor sampling estimator [292]
(Fig. 7.5: 15-input random 3-layer ReLU networks with Glorot init and 20 hidden units; Fig. E.4:
random Boolean functions). This runs, on the same games and in one run:

- ``ksam``: Kernel-Direct sampling (coalition sizes from the kernel), exact constraints, paired;
- ``ksam-unpaired``: the same without complements (the thesis's Kernel-Direct);
- ``ksam-weighting``: uniform coalitions weighted by the kernel (the thesis's Kernel-Weighting);
- ``kernel_shap``: the kernel fit with the thesis's 1e8 constraint weights;
- ``permutation``: Castro et al. (order 1) / Sundararajan et al. [292] (order 2), one
  permutation giving a sample of every pair from n(n−1)/2 + n − 1 shared coalitions;
- ``per-pair`` (order 2): [292] run separately for every pair, 4 calls per sample, as the
  thesis describes the baseline ("a separate estimate per interaction").

Error is the mean squared error against the exact values (Shapley values, or the Shapley–Taylor
pair indices), found by enumerating all 2^15 coalitions. "Evaluations for equal error" reads, at
each KSAM budget, how many evaluations permutation sampling needs to reach the same mean error
(log-log interpolation of its curve; "> x" when it never gets there within the largest budget).

    python bench/ksam_convergence.py [--games 4] [--seeds 3] [--players 15]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from fw.api import Game
from fw_ksam.exact import (
    all_coalitions,
    moebius,
    shapley_from_dividends,
    shapley_taylor_from_dividends,
)
from fw_ksam.kernel import kernel_explain
from fw_ksam.permutation import (
    per_pair_shapley_taylor,
    permutation_shapley,
    permutation_shapley_taylor,
)


class ReluNetGame(Game):
    """v(S) = f(x_S), f a random 3-layer ReLU net (Glorot weights), absent inputs set to 0."""

    def __init__(self, n: int, seed: int, hidden: int = 20) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.n_players = n
        self.batch_size = 4096
        self.x = torch.randn(n, generator=gen, dtype=torch.float64)
        dims = [n, hidden, hidden, 1]
        self.layers = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            w = torch.randn(b, a, generator=gen, dtype=torch.float64) * math.sqrt(2 / (a + b))
            bias = torch.randn(b, generator=gen, dtype=torch.float64) * 0.1
            self.layers.append((w, bias))

    def soft_value(self, weights: torch.Tensor) -> torch.Tensor:
        h = weights.double() * self.x
        for k, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if k < len(self.layers) - 1:
                h = torch.relu(h)
        return h[:, 0]


class TableGame(Game):
    """A game given by its value table (bitmask order); hard coalitions only."""

    def __init__(self, values: torch.Tensor, n: int) -> None:
        self.n_players, self.values, self.batch_size = n, values, 1 << 16
        self.bits = 2 ** torch.arange(n)

    def soft_value(self, weights: torch.Tensor) -> torch.Tensor:
        index = ((weights > 0.5).long() * self.bits).sum(1)
        return self.values[index]


def boolean_game(n: int, seed: int) -> TableGame:
    """Fig. E.4: v(S) = Σ_{T⊆S} c_T, every product of variables with a U(0, 10) coefficient."""
    gen = torch.Generator().manual_seed(seed)
    dividends = torch.rand(2**n, generator=gen, dtype=torch.float64) * 10
    dividends[0] = 0.0
    values = dividends.clone()
    for i in range(n):  # zeta transform: v(S) = Σ_{T⊆S} d(T)
        view = values.view(-1, 2, 2**i)
        view[:, 1] += view[:, 0]
    return TableGame(values, n)


def exact(game: Game) -> tuple[torch.Tensor, torch.Tensor]:
    n = game.n_players
    d = moebius(game.value(all_coalitions(n)).double())
    return shapley_from_dividends(d, n), shapley_taylor_from_dividends(d, n)[1]


def mse(estimate: torch.Tensor, truth: torch.Tensor, order: int) -> float:
    if order == 2:
        i, j = torch.triu_indices(truth.shape[0], truth.shape[0], offset=1)
        estimate, truth = estimate[i, j], truth[i, j]
    return float((estimate.double() - truth).pow(2).mean())


METHODS = {
    "ksam": dict(sampling="direct", constraint="exact", paired=True),
    "ksam-unpaired": dict(sampling="direct", constraint="exact", paired=False),  # = ksam, order 2
    "ksam-weighting": dict(sampling="weighting", constraint="exact", paired=False),
    "kernel_shap": dict(sampling="direct", constraint="penalty", paired=True),
}


def run_method(name: str, game: Game, order: int, budget: int, seed: int):
    if name == "per-pair":
        return per_pair_shapley_taylor(game, budget, seed)
    if name == "permutation":
        fn = permutation_shapley if order == 1 else permutation_shapley_taylor
        return fn(game, budget, seed)
    n = game.n_players
    anchors = 2 if order == 1 else n + 2
    phi, used = kernel_explain(game, order, max(budget - anchors, 1), seed=seed, **METHODS[name])
    return phi, used


def equal_error_ratio(budgets_k, err_k, budgets_p, err_p) -> list[str]:
    """At each KSAM budget: permutation evaluations for the same error / KSAM's evaluations."""
    lp, le = np.log(budgets_p), np.log(err_p)
    out = []
    for b, e in zip(budgets_k, err_k, strict=True):
        if e >= err_p[0]:
            out.append("<= %.2g" % (budgets_p[0] / b))
            continue
        if e < err_p[-1]:
            out.append("> %.3g" % (budgets_p[-1] / b))
            continue
        # first crossing of the (monotone on average) permutation curve, log-log interpolation
        k = int(np.nonzero(err_p <= e)[0][0])
        t = (np.log(e) - le[k - 1]) / (le[k] - le[k - 1])
        out.append("%.3g" % (math.exp(lp[k - 1] + t * (lp[k] - lp[k - 1])) / b))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=15)
    parser.add_argument("--games", type=int, default=4, help="games per family")
    parser.add_argument("--seeds", type=int, default=3, help="sampling seeds per game")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.players
    families = {
        "relu-net": [ReluNetGame(n, s) for s in range(args.games)],
        "boolean": [boolean_game(n, 100 + s) for s in range(args.games)],
    }
    budgets = {
        1: [128, 256, 512, 1024, 2048, 4096, 8192, 16384],
        2: [512, 1024, 2048, 4096, 8192, 16384, 32768],
    }
    perm_budgets = {
        1: budgets[1] + [32768, 65536, 131072],
        2: budgets[2] + [65536, 131072, 262144, 524288],
    }
    start = time.time()
    for family, games in families.items():
        truths = [exact(g) for g in games]
        for order in (1, 2):
            print(
                f"\n== {family}, n={n}, order {order} "
                f"({'Shapley' if order == 1 else 'Shapley-Taylor pairs'}), MSE vs exact, "
                f"{len(games)} games x {args.seeds} seeds: geometric mean [min, max] =="
            )
            curves: dict[str, tuple[list[int], list[float]]] = {}
            baselines = ["permutation"] + (["per-pair"] if order == 2 else [])
            for name in [*METHODS, *baselines]:
                bs = perm_budgets[order] if name in baselines else budgets[order]
                means, used_all = [], []
                for b in bs:
                    errs, used = [], []
                    for g, truth in zip(games, truths, strict=True):
                        for s in range(args.seeds):
                            phi, u = run_method(name, g, order, b, seed=1000 * s + 7)
                            errs.append(mse(phi, truth[order - 1], order))
                            used.append(u)
                    errs = np.array(errs)
                    gm = float(np.exp(np.log(np.maximum(errs, 1e-300)).mean()))
                    means.append(gm)
                    used_all.append(float(np.mean(used)))
                    print(
                        f"{name:>15}  evals {np.mean(used):>9.0f}  MSE {gm:.3e}  "
                        f"[{errs.min():.2e}, {errs.max():.2e}]",
                        flush=True,
                    )
                curves[name] = (used_all, means)
            for base in baselines:
                ref_b, ref_e = curves[base]
                print(
                    f"-- {base} evaluations / method evaluations for equal MSE ({family}, "
                    f"order {order}); budget:ratio --"
                )
                for name in METHODS:
                    b, e = curves[name]
                    ratios = equal_error_ratio(b, e, np.array(ref_b), np.array(ref_e))
                    cells = "  ".join(f"{int(bb)}:{r}" for bb, r in zip(b, ratios, strict=True))
                    print(f"{name:>15}  {cells}")
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
