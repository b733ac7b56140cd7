"""SNE and t-SNE as I-Con: kernels, perplexity calibration, the joint KL and t-SNE's optimiser.

scikit-learn's exact t-SNE is the reference: its joint P, its KL divergence and gradient
(``_kl_divergence``), and its gradient descent (``_gradient_descent``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import squareform
from sklearn.datasets import load_digits
from sklearn.manifold._t_sne import _gradient_descent, _joint_probabilities, _kl_divergence
from sklearn.metrics import pairwise_distances

from fw import api
from fw.errors import RecipeError
from fw.lib.icon import icon_loss
from fw.recipe import build, load_recipe, recipe_from_dict
from fw.registry import get_registry
from fw_sne.distributions import Gaussian, StudentT
from fw_sne.fused import radial_kl
from fw_sne.learners import SNE, TSNE
from fw_sne.optim import TSNEGradientDescent, tsne_gd
from fw_table.table import P_FAMILIES, Q_FAMILIES
from tests.support.training import train_full_batch

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """300 digits scaled to [0, 1] (float64)."""
    return load_digits().data[:300] / 16.0


def ctx(x: np.ndarray | torch.Tensor, **extra) -> dict:
    feats = torch.as_tensor(x, dtype=DT) if isinstance(x, np.ndarray) else x
    return {api.FEATURES: feats, **extra}


def sklearn_joint_p(x: np.ndarray, perplexity: float) -> np.ndarray:
    """scikit-learn's condensed joint P of exact t-SNE."""
    return _joint_probabilities(pairwise_distances(x, squared=True), perplexity, 0)


def joint_neighborhood(p_square: np.ndarray) -> api.Neighborhood:
    """A square joint P as the single-row neighbourhood t-SNE's I-Con form uses."""
    n = p_square.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool).reshape(1, -1)
    logp = torch.log(torch.as_tensor(p_square, dtype=DT)).reshape(1, -1)
    return api.Neighborhood(logp.masked_fill(~mask, -math.inf), mask)


# ------------------------------------------------------------------ perplexity and joint P


def test_joint_p_matches_sklearn(digits):
    ours = Gaussian(perplexity=30.0, normalization="joint")(ctx(digits))
    n = digits.shape[0]
    assert ours.log_prob.shape == (1, n * n)
    ours_sq = ours.prob.reshape(n, n).numpy()
    np.testing.assert_allclose(ours_sq, ours_sq.T, rtol=0, atol=1e-18)
    ref = sklearn_joint_p(digits, 30.0)
    np.testing.assert_allclose(squareform(ours_sq, checks=False), ref, rtol=1e-5, atol=1e-15)
    assert float(ours.prob.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("perplexity", [5.0, 30.0])
def test_conditional_rows_sum_to_one_at_target_perplexity(digits, perplexity):
    nb = Gaussian(perplexity=perplexity)(ctx(digits))
    n = digits.shape[0]
    assert nb.log_prob.shape == (n, n)
    assert not nb.mask.diagonal().any() and torch.isneginf(nb.log_prob.diagonal()).all()
    torch.testing.assert_close(nb.prob.sum(dim=1), torch.ones(n, dtype=DT))
    entropy_bits = -(nb.prob * nb.log_prob.masked_fill(~nb.mask, 0.0)).sum(dim=1) / math.log(2)
    torch.testing.assert_close(
        2**entropy_bits, torch.full((n,), perplexity, dtype=DT), rtol=1e-4, atol=0
    )


def test_perplexity_over_rectangular_columns(digits):
    rows, cols = torch.as_tensor(digits[:40]), torch.as_tensor(digits[40:200])
    nb = Gaussian(perplexity=10.0)(ctx(rows, features_col=cols))
    assert nb.log_prob.shape == (40, 160) and nb.mask.all()
    entropy = -(nb.prob * nb.log_prob).sum(dim=1)
    torch.testing.assert_close(entropy.exp(), torch.full((40,), 10.0, dtype=DT), rtol=1e-4, atol=0)


# ------------------------------------------------------------------ the t-SNE loss is I-Con


def test_icon_loss_equals_sklearn_tsne_kl_and_gradient(digits):
    n = digits.shape[0]
    p_condensed = sklearn_joint_p(digits, 30.0)
    p = joint_neighborhood(squareform(p_condensed))
    y = np.random.default_rng(0).normal(size=(n, 2)) * 3.0
    z = torch.tensor(y, dtype=DT, requires_grad=True)
    q = StudentT(dof=1.0, normalization="joint")(ctx(z))
    loss = icon_loss(p, q)
    loss.backward()
    kl, grad = _kl_divergence(y.ravel(), p_condensed, 1, n, 2)
    assert float(loss.detach()) == pytest.approx(kl, rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(z.grad.numpy().ravel(), grad, rtol=1e-5, atol=1e-9)


def test_early_exaggeration_gradient_equals_sklearn_with_scaled_p(digits):
    """sklearn multiplies P by α; I-Con's exaggeration weights the attraction by α."""
    n = digits.shape[0]
    p_condensed = sklearn_joint_p(digits, 30.0)
    p = joint_neighborhood(squareform(p_condensed))
    y = np.random.default_rng(1).normal(size=(n, 2)) * 1e-2
    z = torch.tensor(y, dtype=DT, requires_grad=True)
    q = StudentT(normalization="joint")(ctx(z))
    icon_loss(p, q, exaggeration=12.0).backward()
    _, grad = _kl_divergence(y.ravel(), p_condensed * 12.0, 1, n, 2)
    np.testing.assert_allclose(z.grad.numpy().ravel(), grad, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize(
    ("p_norm", "q", "alpha"),
    [
        ("joint", StudentT(dof=1.0, normalization="joint"), 12.0),
        ("joint", StudentT(dof=2.5, normalization="joint"), 1.0),
        ("joint", Gaussian(sigma=1.5, normalization="joint"), 4.0),
        ("conditional", Gaussian(sigma=2**-0.5), 1.0),
        ("conditional", StudentT(dof=0.5), 3.0),
    ],
)
def test_fused_loss_equals_generic_icon_loss(digits, p_norm, q, alpha):
    x = digits[:80]
    n = x.shape[0]
    p = Gaussian(perplexity=10.0, normalization=p_norm)(ctx(x))
    z = torch.randn(n, 2, dtype=DT, requires_grad=True)
    generic = icon_loss(p, q(ctx(z)), exaggeration=alpha)
    (g_generic,) = torch.autograd.grad(generic, z)
    prob = p.prob.reshape(n, n)
    support = prob > 0
    p_log_p = float((prob[support] * p.log_prob.reshape(n, n)[support]).sum())
    joint = p_norm == "joint"
    fused = radial_kl(z, prob, p_log_p if joint else p_log_p / n, q, joint, alpha)
    (g_fused,) = torch.autograd.grad(fused, z)
    torch.testing.assert_close(fused, generic, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_fused, g_generic, rtol=1e-8, atol=1e-12)


# ------------------------------------------------------------------ kernels by hand


def _hand_conditional(logits: np.ndarray) -> np.ndarray:
    logits = logits.copy()
    np.fill_diagonal(logits, -np.inf)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


def test_student_t_with_dof_matches_formula():
    z = np.random.default_rng(2).normal(size=(25, 3))
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    nu = 2.5
    w = (1.0 + d / nu) ** (-(nu + 1.0) / 2.0)
    np.fill_diagonal(w, 0.0)
    cond = StudentT(dof=nu)(ctx(z))
    np.testing.assert_allclose(cond.prob.numpy(), w / w.sum(1, keepdims=True), rtol=1e-12)
    joint = StudentT(dof=nu, normalization="joint")(ctx(z))
    assert joint.log_norm is not None
    np.testing.assert_allclose(joint.prob.reshape(25, 25).numpy(), w / w.sum(), rtol=1e-12)
    rect = StudentT(dof=nu)(ctx(z[:5], features_col=torch.as_tensor(z[5:])))
    w_rect = (1.0 + d[:5, 5:] / nu) ** (-(nu + 1.0) / 2.0)
    np.testing.assert_allclose(rect.prob.numpy(), w_rect / w_rect.sum(1, keepdims=True), rtol=1e-12)


def test_sne_loss_matches_handwritten_cost():
    x = np.random.default_rng(3).normal(size=(30, 6))
    y = np.random.default_rng(4).normal(size=(30, 2))
    sigma = 1.7
    dx = ((x[:, None] - x[None]) ** 2).sum(-1)
    dy = ((y[:, None] - y[None]) ** 2).sum(-1)
    p = _hand_conditional(-dx / (2 * sigma**2))
    q = _hand_conditional(-dy)  # SNE's q: exp(-||y_i - y_j||²)
    off = ~np.eye(30, dtype=bool)
    cost = (p[off] * np.log(p[off] / q[off])).sum() / 30  # mean over anchors
    ours = icon_loss(Gaussian(sigma=sigma)(ctx(x)), Gaussian(sigma=2**-0.5)(ctx(y)))
    assert float(ours) == pytest.approx(cost, rel=1e-12)


def test_cosine_gaussian_is_a_temperature_softmax():
    f = torch.randn(12, 4, dtype=DT)
    nb = Gaussian(metric="cosine", temperature=0.5)(ctx(f))
    u = torch.nn.functional.normalize(f, dim=1)
    ref = _hand_conditional((u @ u.T / 0.5).numpy())
    np.testing.assert_allclose(nb.prob.numpy(), ref, rtol=1e-12)


def test_gaussian_keeps_gradient_as_q():
    z = torch.randn(10, 2, dtype=DT, requires_grad=True)
    for dist in (Gaussian(sigma=1.0), Gaussian(perplexity=3.0), Gaussian(metric="cosine")):
        nb = dist(ctx(z))
        assert nb.log_prob.requires_grad
        (grad,) = torch.autograd.grad(icon_loss(StudentT()(ctx(z.detach())), nb), z)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------------------ t-SNE's optimiser


def _objective(n: int, seed: int):
    rng = np.random.default_rng(seed)
    p = sklearn_joint_p(rng.normal(size=(n, 4)), 5.0)
    return p, rng.normal(size=(n, 2)) * 1e-2


def _run_ours(y0: np.ndarray, p: np.ndarray, steps: int, **opt) -> np.ndarray:
    n = y0.shape[0]
    y = torch.nn.Parameter(torch.tensor(y0, dtype=DT))
    optimizer = tsne_gd([y], **opt)
    for _ in range(steps):
        _, grad = _kl_divergence(y.detach().numpy().ravel().copy(), p, 1, n, 2)
        y.grad = torch.as_tensor(grad.reshape(n, 2))
        optimizer.step()
    return y.detach().numpy()


def test_tsne_gd_matches_sklearn_gradient_descent():
    p, y0 = _objective(20, 5)
    ref, _, _ = _gradient_descent(
        _kl_divergence,
        y0.ravel().copy(),
        0,
        7,
        momentum=0.5,
        learning_rate=80.0,
        min_gain=0.01,
        args=[p, 1, 20, 2],
    )
    ours = _run_ours(y0, p, 7, lr=80.0, momentum=0.5, momentum_switch_step=100)
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-12, atol=1e-15)


def test_tsne_gd_momentum_switch_restarts_like_sklearn():
    """sklearn runs two `_gradient_descent` calls: gains and update restart at the switch."""
    p, y0 = _objective(15, 6)
    args = [p, 1, 15, 2]
    mid, _, it = _gradient_descent(
        _kl_divergence, y0.ravel().copy(), 0, 4, momentum=0.5, learning_rate=50.0, args=args
    )
    ref, _, _ = _gradient_descent(
        _kl_divergence, mid, it + 1, 9, momentum=0.8, learning_rate=50.0, args=args
    )
    ours = _run_ours(y0, p, 9, lr="auto", momentum=0.5, final_momentum=0.8, momentum_switch_step=4)
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-12, atol=1e-15)


def test_tsne_gd_auto_learning_rate():
    assert TSNEGradientDescent.resolve_lr("auto", 1797, 12.0) == 50.0
    assert TSNEGradientDescent.resolve_lr("auto", 9600, 12.0) == pytest.approx(200.0)
    assert TSNEGradientDescent.resolve_lr(7.5, 10, 12.0) == 7.5


# ------------------------------------------------------------------ parameters and recipes


@pytest.mark.parametrize(
    ("factory", "kwargs", "match"),
    [
        (Gaussian, {"sigma": 1.0, "perplexity": 30.0}, "exactly one"),
        (Gaussian, {}, "exactly one"),
        (Gaussian, {"perplexity": -5.0}, "perplexity must be > 1"),
        (Gaussian, {"sigma": 0.0}, "sigma must be > 0"),
        (Gaussian, {"metric": "cosine", "sigma": 1.0}, "cosine"),
        (Gaussian, {"sigma": 1.0, "temperature": 0.1}, "temperature"),
        (Gaussian, {"sigma": 1.0, "normalization": "rows"}, "normalization"),
        (StudentT, {"dof": 0.0}, "dof must be > 0"),
        (tsne_gd, {"params": [torch.nn.Parameter(torch.zeros(3, 2))], "lr": -1.0}, "lr"),
        (tsne_gd, {"params": [torch.nn.Parameter(torch.zeros(3, 2))], "momentum": 1.5}, "momentum"),
    ],
)
def test_bad_parameters_raise_clear_errors(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_perplexity_larger_than_candidates_and_joint_rectangular_raise():
    x = torch.randn(10, 3, dtype=DT)
    with pytest.raises(ValueError, match="perplexity"):
        Gaussian(perplexity=30.0)(ctx(x))
    with pytest.raises(ValueError, match="joint"):
        StudentT(normalization="joint")(ctx(x, features_col=x[:4]))


def test_plugin_registers_its_components():
    registry = get_registry()
    expected = {
        ("distribution", "gaussian"): Gaussian,
        ("distribution", "student_t"): StudentT,
        ("learner", "sne"): SNE,
        ("learner", "tsne"): TSNE,
        ("optimizer", "tsne_gd"): tsne_gd,
    }
    for (kind, name), factory in expected.items():
        entry = registry.get(kind, name)
        assert entry.factory is factory and entry.plugin == "sne"
    assert Gaussian.family in P_FAMILIES and Gaussian.family in Q_FAMILIES
    assert StudentT.family in P_FAMILIES and StudentT.family in Q_FAMILIES


def test_sne_and_tsne_table_cells_run_their_recipes():
    from fw_sne.cells import CELLS
    from fw_table.table import status

    registry = get_registry(plugins=["common", "data", "sne"], autoload=False)
    cells = {c.method: c for c in CELLS}
    for method in ("SNE", "t-SNE"):
        state = status(cells[method], registry)
        assert state.runnable and state.how == "recipe", state


@pytest.mark.parametrize("name", ["tsne_digits", "sne_digits"])
def test_recipes_validate_and_build(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    learner = build("learner", recipe.raw["learner"])
    assert isinstance(learner, TSNE if name == "tsne_digits" else SNE)
    spec = recipe.raw["learner"]
    for key in ("p", "q", "mapper", "optimizer", "exaggeration", "exaggeration_steps"):
        assert key in spec  # everything t-SNE depends on is spelled out in the recipe
    assert spec["mapper"]["init"] == "pca"


def test_recipe_rejects_both_sigma_and_perplexity():
    raw = {
        "data": {"name": "digits"},
        "learner": {"name": "tsne", "p": {"name": "gaussian", "sigma": 1.0, "perplexity": 5}},
    }
    recipe = recipe_from_dict(raw)
    with pytest.raises(RecipeError, match="learner.p: .*exactly one"):
        build("learner", recipe.raw["learner"])


def test_tsne_learner_fused_and_generic_paths_agree():
    data = build("dataset", {"name": "digits", "limit": 150})
    fused = train_full_batch(TSNE(fused=True, exaggeration_steps=5), data, 12)
    generic = train_full_batch(TSNE(fused=False, exaggeration_steps=5), data, 12)
    np.testing.assert_allclose(fused, generic, rtol=1e-4)
    assert fused[-1] < fused[5]  # the KL falls once exaggeration is off


def test_sne_learner_trains():
    data = build("dataset", {"name": "digits", "limit": 150})
    losses = train_full_batch(SNE(), data, 40)
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_tsne_recipe_reaches_sklearn_quality_on_digits():
    recipe = load_recipe(ROOT / "recipes" / "tsne_digits.yaml")
    data = build("dataset", recipe.raw["data"])
    learner = build("learner", recipe.raw["learner"])
    learner.plot = False
    train_full_batch(learner, data, recipe.trainer.max_steps)
    metrics = learner.evaluate(data)
    assert metrics["kmeans_hungarian_accuracy"] >= 0.93
    assert metrics["trustworthiness"] >= 0.98
