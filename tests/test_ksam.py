"""KSAM explainers against exact enumeration and the closed forms of Hamilton, PhD thesis, Ch. 7."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fw.api import Game
from fw.errors import ShapeError
from fw_ksam.exact import Exact, all_coalitions, moebius
from fw_ksam.games import SimilarityGame, cross_block, empty_and_full, grid_players
from fw_ksam.ig import IGSAM
from fw_ksam.kernel import KSAM, KernelSHAP
from fw_ksam.lime import LIME
from fw_ksam.sam import SAM, GradCAM
from fw_ksam.sbsm import SBSM


class NetGame(Game):
    """A random nonlinear game: a small tanh network of the masked input (multilinear-free)."""

    def __init__(self, n: int, seed: int, dummies: tuple[int, ...] = ()) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_players = n
        self.x = torch.randn(n, generator=g, dtype=torch.float64)
        self.w1 = torch.randn(n, 6, generator=g, dtype=torch.float64)
        self.w1[list(dummies)] = 0.0
        self.w2 = torch.randn(6, generator=g, dtype=torch.float64)

    def soft_value(self, weights: torch.Tensor) -> torch.Tensor:
        h = torch.tanh((weights.double() * self.x) @ self.w1 + 0.3)
        return (h @ self.w2 + (h**2).sum(1)).to(weights.dtype)


def value_of(game: Game, members: tuple[int, ...]) -> float:
    w = torch.zeros(1, game.n_players, dtype=torch.bool)
    w[0, list(members)] = True
    return float(game.value(w)[0])


def shapley_by_definition(game: Game) -> torch.Tensor:
    """Eq. 7.1 as a loop over coalitions."""
    n = game.n_players
    out = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for s in range(n):
            for S in itertools.combinations(others, s):
                weight = math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                out[i] += weight * (value_of(game, (*S, i)) - value_of(game, S))
    return out


def shapley_taylor_by_definition(game: Game) -> torch.Tensor:
    """φ²(S) = (2/n) Σ_{T⊆N∖S} δ_S v(T) / C(n−1, |T|) (Sundararajan et al.)."""
    n = game.n_players
    out = torch.zeros(n, n, dtype=torch.float64)
    for i, j in itertools.combinations(range(n), 2):
        rest = [k for k in range(n) if k not in (i, j)]
        total = 0.0
        for t in range(len(rest) + 1):
            for T in itertools.combinations(rest, t):
                delta = (
                    value_of(game, (*T, i, j))
                    - value_of(game, (*T, i))
                    - value_of(game, (*T, j))
                    + value_of(game, T)
                )
                total += delta / math.comb(n - 1, t)
        out[i, j] = out[j, i] = 2 / n * total
    return out


def gap_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.mean((2, 3)) * b.mean((2, 3))).sum(1)


def gap_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.mean((2, 3)), b.mean((2, 3)), dim=1)


def gap_game(seed: int, players: str = "match", size=(3, 3), similarity=gap_dot):
    g = torch.Generator().manual_seed(seed)
    x, y, a, b = (torch.randn(4, *size, generator=g) for _ in range(4))
    labels = grid_players(size)
    return SimilarityGame(
        similarity, x, y, labels, labels, background_x=a, background_y=b, players=players
    )


# ------------------------------------------------------------------ the exact oracle


def test_exact_matches_the_definitions():
    game = NetGame(5, seed=0)
    phi = Exact().explain(game)
    assert torch.allclose(phi, shapley_by_definition(game), atol=1e-6)
    st = Exact().explain(game, order=2)
    assert torch.allclose(st, shapley_taylor_by_definition(game), atol=1e-6)


def test_dividends_follow_the_recursion_and_rebuild_the_game():
    game = NetGame(4, seed=1)
    values = game.value(all_coalitions(4)).double()
    d = moebius(values)
    # Eq. 7.4 on the normalised game v − v(∅): d(S) = v(S) − Σ_{T⊊S} d(T)
    for mask in range(1, 16):
        subsets = [t for t in range(1, 16) if t & mask == t and t != mask]
        expected = values[mask] - values[0] - sum(float(d[t]) for t in subsets)
        assert float(d[mask]) == pytest.approx(float(expected), abs=1e-6)
    # and v(S) = Σ_{T⊆S} d(T) for every S
    for mask in range(16):
        assert float(sum(d[t] for t in range(16) if t & mask == t)) == pytest.approx(
            float(values[mask]), abs=1e-6
        )


def test_exact_efficiency_of_both_orders():
    game = NetGame(6, seed=2)
    v0, vn = empty_and_full(game)
    assert float(Exact().explain(game).sum()) == pytest.approx(vn - v0, abs=1e-6)
    singles = torch.tensor([value_of(game, (i,)) - v0 for i in range(6)])
    pairs = Exact().explain(game, order=2).triu(1).sum()
    assert float(singles.sum() + pairs) == pytest.approx(vn - v0, abs=1e-5)


# ------------------------------------------------------------------ kernel regressions


@pytest.mark.parametrize("seed,n", [(0, 5), (1, 6), (2, 7)])
def test_ksam_with_all_coalitions_is_exact_shapley(seed, n):
    game = NetGame(n, seed)
    exact = Exact().explain(game)
    assert (KSAM(samples=10**6).explain(game).double() - exact).abs().max() < 1e-6
    assert (KernelSHAP(samples=10**6).explain(game).double() - exact).abs().max() < 1e-5


@pytest.mark.parametrize("seed,n", [(3, 5), (4, 6)])
def test_second_order_ksam_with_all_coalitions_is_shapley_taylor(seed, n):
    game = NetGame(n, seed)
    exact = Exact().explain(game, order=2)
    assert (KSAM(samples=10**6).explain(game, 2).double() - exact).abs().max() < 1e-6
    assert (KernelSHAP(samples=10**6).explain(game, 2).double() - exact).abs().max() < 1e-5


def test_sampled_ksam_is_efficient_and_converges():
    game = NetGame(10, seed=5)
    v0, vn = empty_and_full(game)
    exact = Exact().explain(game)
    errors = []
    for samples in (64, 1000):
        phi = KSAM(samples=samples, seed=1).explain(game)
        assert float(phi.sum()) == pytest.approx(vn - v0, abs=1e-5)
        errors.append(float((phi.double() - exact).pow(2).mean()))
    assert errors[1] < errors[0] / 4
    pairs = KSAM(samples=300, seed=1).explain(game, 2)
    singles = torch.tensor([value_of(game, (i,)) - v0 for i in range(10)])
    assert float(singles.sum() + pairs.triu(1).sum()) == pytest.approx(vn - v0, abs=1e-5)


def test_dummy_players_get_zero():
    game = NetGame(7, seed=6, dummies=(2, 5))
    assert Exact().explain(game)[[2, 5]].abs().max() < 1e-9
    assert KSAM(samples=10**6).explain(game)[[2, 5]].abs().max() < 1e-6
    assert IGSAM(steps=16).explain(game)[[2, 5]].abs().max() < 1e-9
    st = KSAM(samples=10**6).explain(game, 2)
    assert st[[2, 5]].abs().max() < 1e-6


# ------------------------------------------------------------------ closed forms (GAP models)


@pytest.mark.parametrize("seed", [0, 1])
def test_sam_is_the_enumerated_shapley_value_of_gap_models(seed):
    game = gap_game(seed)
    sam = SAM().explain(game)
    assert torch.allclose(sam.double(), Exact().explain(game), atol=1e-5)
    # the closed form of Prop. 7.6.1 written out
    expected = torch.einsum("c,chw->hw", game.x.mean((1, 2)), game.y - game.background_y) / 9
    assert torch.allclose(sam, expected.reshape(-1), atol=1e-6)
    query = gap_game(seed, players="query")
    assert torch.allclose(SAM().explain(query).double(), Exact().explain(query), atol=1e-5)


def test_sam_grouped_players_are_exact_too():
    g = torch.Generator().manual_seed(3)
    x, y, b = (torch.randn(3, 4, 4, generator=g) for _ in range(3))
    game = SimilarityGame(gap_dot, x, y, grid_players((4, 4), (2, 2)), background_y=b)
    assert torch.allclose(SAM().explain(game).double(), Exact().explain(game), atol=1e-5)


def test_second_order_sam_is_the_shapley_taylor_index_and_ksam_finds_it():
    game = gap_game(2, players="both", size=(2, 2))
    exact = Exact().explain(game, order=2)
    sam = SAM().explain(game, order=2)
    assert torch.allclose(sam.double(), exact, atol=1e-5)
    assert sam[:4, :4].abs().max() == 0 and sam[4:, 4:].abs().max() == 0
    dx = (game.x - game.background_x).reshape(4, -1)
    dy = (game.y - game.background_y).reshape(4, -1)
    assert torch.allclose(cross_block(game, sam), dx.T @ dy / 16, atol=1e-6)
    ksam = KSAM(samples=10**6).explain(game, order=2)
    assert torch.allclose(ksam.double(), exact, atol=1e-5)
    cross = KSAM(samples=10**6, cross_only=True).explain(game, order=2)
    assert torch.allclose(cross.double(), exact, atol=1e-5)
    sampled = KSAM(samples=60, cross_only=True).explain(game, order=2)  # 16 terms, no noise
    assert torch.allclose(sampled.double(), exact, atol=1e-4)


def test_second_order_igsam_is_a_quarter_of_second_order_sam():
    game = gap_game(4, players="both", size=(2, 3))
    ig = IGSAM(hessian_steps=4).explain(game, order=2)
    assert torch.allclose(ig, SAM().explain(game, order=2) / 4, atol=1e-5)


def test_igsam_is_exact_for_linear_games_and_nearly_efficient_otherwise():
    game = gap_game(5)
    assert torch.allclose(IGSAM(steps=4).explain(game), SAM().explain(game), atol=1e-5)
    cos = gap_game(5, similarity=gap_cos)
    v0, vn = empty_and_full(cos)
    assert float(IGSAM(steps=64).explain(cos).sum()) == pytest.approx(vn - v0, abs=2e-3)


def test_gradcam_equals_sam_with_zero_background_when_gradients_are_spatially_invariant():
    game = gap_game(6)
    zero = SimilarityGame(gap_dot, game.x, game.y, game.labels_y)
    assert torch.allclose(GradCAM().explain(zero), SAM().explain(zero), atol=1e-6)


def test_gradcam_violates_dummy_on_the_half_blind_model_but_ksam_and_igsam_do_not():
    """Thesis Fig. E.2: d(x, y) = cos(GAP(x), GAP(y ⊙ M)) with M = 0 on the left half."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(6, 2, 4, generator=g), torch.randn(6, 2, 4, generator=g)
    blind = torch.ones(1, 1, 2, 4)
    blind[..., :2] = 0.0

    def half_blind(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return gap_cos(a, b * blind)

    game = SimilarityGame(half_blind, x, y, grid_players((2, 4)))
    left = grid_players((2, 4))[:, :2].reshape(-1)
    gradcam = GradCAM().explain(game)
    assert gradcam[left].abs().min() > 1e-3  # credit on players the model cannot see
    assert Exact().explain(game)[left].abs().max() < 1e-7
    assert KSAM(samples=10**6).explain(game)[left].abs().max() < 1e-6
    assert IGSAM(steps=16).explain(game)[left].abs().max() == 0


# ------------------------------------------------------------------ baselines


def test_lime_recovers_an_additive_game_and_sbsm_finds_the_important_window():
    g = torch.Generator().manual_seed(8)
    coef = torch.randn(6, generator=g)

    class Additive(Game):
        n_players = 6

        def soft_value(self, weights):
            return weights @ coef

    phi = LIME(samples=400, alpha=1e-6).explain(Additive())
    assert torch.allclose(phi, coef, atol=1e-4)
    x = torch.zeros(1, 8, 8)
    y = torch.zeros(1, 8, 8)
    y[0, 5, 5] = 1.0
    game = SimilarityGame(lambda a, b: b[:, 0, 5, 5], x, y, grid_players((8, 8)))
    sal = SBSM(window=3, stride=1).explain(game).reshape(8, 8)
    assert sal[5, 5] == sal.max() and sal[0, 0] == 0


def test_second_order_baselines_fill_the_cross_block():
    game = gap_game(9, players="both", size=(2, 2))
    for explainer in (LIME(samples=200), SBSM(window=1, stride=1, samples=200)):
        out = explainer.explain(game, order=2)
        assert out.shape == (8, 8) and torch.allclose(out, out.T)
        assert cross_block(game, out).abs().sum() > 0


def test_unsupported_orders_and_games_are_clear_errors():
    with pytest.raises(ShapeError, match="order 2"):
        GradCAM().explain(gap_game(0), order=2)
    with pytest.raises(ShapeError, match="SimilarityGame"):
        SAM().explain(NetGame(3, 0))
    with pytest.raises(ShapeError, match="max_players"):
        Exact(max_players=4).explain(NetGame(5, 0))


def test_every_explainer_is_registered_with_orders_and_runs_its_example(registry):
    names = {"exact", "ksam", "kernel_shap", "sam", "igsam", "gradcam", "lime", "sbsm"}
    assert names <= set(registry.names("explainer"))
    for name in names:
        factory = registry.get("explainer", name).factory
        explainer = factory(**factory.example)
        for order in factory.orders:
            game = gap_game(0, players="match" if order == 1 else "both", size=(2, 2))
            out = explainer.explain(game, order=order)
            assert out.shape == ((4,) if order == 1 else (8, 8))
            assert torch.isfinite(out).all()


# ------------------------------------------------------------------ permutation baselines


def test_permutation_estimators_are_exact_where_they_have_no_variance_and_converge():
    from fw_ksam.permutation import (
        per_pair_shapley_taylor,
        permutation_shapley,
        permutation_shapley_taylor,
    )

    g = torch.Generator().manual_seed(10)
    coef = torch.randn(5, 5, generator=g, dtype=torch.float64).triu(1)
    lin = torch.randn(5, generator=g, dtype=torch.float64)

    class Quadratic(Game):  # v = Σ lᵢzᵢ + Σ_{i<j} cᵢⱼzᵢzⱼ: δ_ij v(T) = cᵢⱼ for every T
        n_players = 5

        def soft_value(self, w):
            w = w.double()
            return (w @ lin + ((w @ coef) * w).sum(1)).float()

    game = Quadratic()
    st = Exact().explain(game, 2)
    assert torch.allclose(permutation_shapley_taylor(game, 50)[0].double(), st, atol=1e-5)
    assert torch.allclose(per_pair_shapley_taylor(game, 50)[0].double(), st, atol=1e-5)
    net = NetGame(5, seed=11)
    exact1, exact2 = Exact().explain(net), Exact().explain(net, 2)
    phi, used = permutation_shapley(net, 10000, seed=0)
    assert used <= 10000 and (phi.double() - exact1).abs().max() < 0.1
    pairs, used = permutation_shapley_taylor(net, 10000, seed=0)
    assert used <= 10000 and (pairs.double() - exact2).abs().max() < 0.2


def test_normalized_sam_is_the_shapley_value_of_the_cosine_with_frozen_norms():
    game = gap_game(12, similarity=gap_cos)
    scale = float(game.x.mean((1, 2)).norm() * game.y.mean((1, 2)).norm())

    def frozen(a, b):  # cos(GAP a, GAP b) with the norms of the full inputs held fixed
        return gap_dot(a, b) / scale

    linear = SimilarityGame(frozen, game.x, game.y, game.labels_y, background_y=game.background_y)
    assert torch.allclose(
        SAM(normalize=True).explain(game).double(), Exact().explain(linear), atol=1e-6
    )


def test_similarity_game_masks_players_with_the_background():
    def gap(x, y):
        return (x.mean((2, 3)) * y.mean((2, 3))).sum(1)

    x, y = torch.randn(3, 4, 4), torch.randn(3, 4, 4)
    bg = torch.randn(3, 4, 4)
    labels = grid_players((4, 4), (2, 2))
    game = SimilarityGame(gap, x, y, labels, background_y=bg)
    coalition = torch.tensor([[True, False, False, True]])
    keep = coalition[0][labels]
    expected = gap(x[None], torch.where(keep, y, bg)[None])
    assert game.n_players == 4 and torch.allclose(game.value(coalition), expected)
    both = SimilarityGame(gap, x, y, labels, players_x=labels, players="both")
    phi = torch.arange(64.0).reshape(8, 8)
    assert both.split == (4, 4) and torch.equal(cross_block(both, phi), phi[:4, 4:])
