"""The I-Con loss and its transforms against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from fw.api import Neighborhood
from fw.errors import ShapeError
from fw.lib.icon import debias, icon_loss, propagate


def _random_nb(n: int, m: int, generator: torch.Generator, square: bool = True) -> Neighborhood:
    logits = torch.randn(n, m, generator=generator, dtype=torch.float64)
    mask = torch.ones(n, m, dtype=torch.bool)
    if square:
        mask &= ~torch.eye(n, m, dtype=torch.bool)
    return Neighborhood.from_logits(logits, mask)


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(3)


def test_kl_matches_direct_sum(gen):
    p, q = _random_nb(6, 6, gen), _random_nb(6, 6, gen)
    P, Q = p.prob, q.prob
    expected = 0.0
    for i in range(6):
        for j in range(6):
            if P[i, j] > 0:
                expected += float(P[i, j]) * math.log(float(P[i, j]) / float(Q[i, j]))
    assert icon_loss(p, q).item() == pytest.approx(expected / 6, rel=1e-10)
    assert icon_loss(p, q, reduction="sum").item() == pytest.approx(expected, rel=1e-10)


def test_loss_zero_iff_equal(gen):
    p = _random_nb(5, 5, gen)
    assert icon_loss(p, p).item() == pytest.approx(0.0, abs=1e-12)
    assert icon_loss(p, _random_nb(5, 5, gen)).item() > 1e-3


def test_ce_differs_from_kl_by_entropy(gen):
    p, q = _random_nb(4, 7, gen, square=False), _random_nb(4, 7, gen, square=False)
    entropy = -(p.prob * p.log_prob).sum(1).mean()
    assert icon_loss(p, q, mode="ce").item() == pytest.approx(
        (icon_loss(p, q) + entropy).item(), rel=1e-10
    )


def test_one_hot_p_and_masked_q_have_no_nan_in_value_or_gradient():
    n = 4
    logits = torch.randn(n, n, requires_grad=True)
    mask = ~torch.eye(n, dtype=torch.bool)
    q = Neighborhood.from_logits(logits, mask)
    target = torch.tensor([1, 0, 3, 2])
    p_mask = mask.clone()
    p_log = torch.full((n, n), float("-inf"))
    p_log[torch.arange(n), target] = 0.0
    p = Neighborhood(p_log, p_mask)
    loss = icon_loss(p, q)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    ref = torch.nn.functional.cross_entropy(logits.masked_fill(~mask, float("-inf")), target)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_reverse_is_kl_q_p(gen):
    p, q = _random_nb(5, 5, gen), _random_nb(5, 5, gen)
    assert icon_loss(p, q, direction="reverse").item() == pytest.approx(
        icon_loss(q, p).item(), rel=1e-10
    )


def test_exaggeration_gradient_is_alpha_p_minus_q():
    """d/dlogits of the exaggerated loss is -(α·p - q) per row (van der Maaten 2014)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    q = Neighborhood.from_logits(logits, mask)
    p = _random_nb(3, 5, g, square=False)
    icon_loss(p, q, exaggeration=4.0, reduction="sum").backward()
    expected = -(4.0 * p.prob - q.prob.detach())
    torch.testing.assert_close(logits.grad, expected)


def test_shape_mismatch_is_a_clear_error(gen):
    with pytest.raises(ShapeError, match="same"):
        icon_loss(_random_nb(3, 3, gen), _random_nb(4, 4, gen))


def test_debias_alpha_zero_is_identity_and_rows_stay_normalised(gen):
    p = _random_nb(6, 6, gen)
    assert debias(p, 0.0) is p
    for alpha in (0.2, 0.7, 1.0):
        d = debias(p, alpha)
        torch.testing.assert_close(d.prob.sum(1), torch.ones(6, dtype=torch.float64))
        n_cand = 5  # the diagonal is not a candidate
        torch.testing.assert_close(d.prob, (1 - alpha) * p.prob + alpha / n_cand * p.mask)


def test_propagate_sums_walks_removes_self_and_renormalises(gen):
    p = _random_nb(5, 5, gen)
    walked = propagate(p, steps=2)
    P = p.prob
    expected = P + P @ P
    expected.fill_diagonal_(0)
    expected = expected / expected.sum(1, keepdim=True)
    torch.testing.assert_close(walked.prob, expected)
    uniform = propagate(p, steps=2, mode="uniform")
    assert torch.allclose(uniform.prob.sum(1), torch.ones(5, dtype=torch.float64))
    assert (uniform.prob.diagonal() == 0).all()
