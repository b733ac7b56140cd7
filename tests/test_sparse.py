"""fw.sparse: a sparse neighbourhood gives the I-Con loss of its dense form."""

from __future__ import annotations

import math

import pytest
import torch

from fw.api import Neighborhood
from fw.errors import FwError, ShapeError
from fw.lib.icon import icon_loss
from fw.lib.sparse import SparseNeighborhood


def _loop_kl(
    p: torch.Tensor,
    log_q: torch.Tensor,
    mode: str = "kl",
    alpha: float = 1.0,
    log_norm: torch.Tensor | None = None,
) -> float:
    """Hand-written mean_i Σ_j p (log p − log q), skipping p = 0, with exaggerated rows."""
    total = 0.0
    n, m = p.shape
    for i in range(n):
        row = 0.0
        for j in range(m):
            pij = float(p[i, j])
            if pij == 0.0:
                continue
            row += -alpha * pij * float(log_q[i, j])
            if mode == "kl":
                row += pij * math.log(pij)
        if alpha != 1.0:
            row -= (alpha - 1.0) * float(log_norm[i])
        total += row
    return total / n


def _dense_pair(n: int = 7, m: int = 9, seed: int = 0) -> tuple[Neighborhood, Neighborhood]:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(n, m, dtype=torch.bool)
    mask[0, :3] = False  # a row with excluded candidates
    weights = torch.rand(n, m, generator=gen, dtype=torch.float64)
    weights[weights < 0.4] = 0.0  # p = 0 on many allowed candidates (0·log 0 = 0)
    weights[:, 0] = weights[:, 0] + 0.0
    weights[1] = 0.0
    weights[1, 5] = 1.0  # a one-hot row
    p = Neighborhood.from_weights(weights + (weights.sum(1, keepdim=True) == 0) * 1.0, mask)
    q = Neighborhood.from_logits(torch.randn(n, m, generator=gen, dtype=torch.float64), mask)
    return p, q


def test_round_trip_dense_sparse_dense():
    p, _ = _dense_pair()
    sp = SparseNeighborhood.from_dense(p)
    assert sp.shape == tuple(p.log_prob.shape)
    back = sp.to_dense()
    assert torch.equal(back.prob, p.prob)
    # the sparse rows list only columns with mass
    assert bool((sp.prob[sp.mask] > 0).all())
    assert torch.allclose(sp.prob.sum(1), torch.ones(sp.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("mode", ["kl", "ce"])
@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_sparse_loss_equals_dense_loss_and_loop(mode, alpha):
    p, q = _dense_pair()
    sp = SparseNeighborhood.from_dense(p)
    dense = icon_loss(p, q, mode=mode, exaggeration=alpha)
    sparse_dense_q = icon_loss(sp, q, mode=mode, exaggeration=alpha)
    q_at = SparseNeighborhood(sp.index, sp.gather(q), sp.mask, sp.num_cols, q.log_norm)
    sparse_sparse_q = icon_loss(sp, q_at, mode=mode, exaggeration=alpha)
    ref = _loop_kl(p.prob, q.log_prob, mode, alpha, q.log_norm)
    assert float(dense) == pytest.approx(ref, rel=1e-12)
    assert float(sparse_dense_q) == pytest.approx(ref, rel=1e-12)
    assert float(sparse_sparse_q) == pytest.approx(ref, rel=1e-12)


def test_sparse_loss_has_the_dense_gradient():
    p, _ = _dense_pair()
    sp = SparseNeighborhood.from_dense(p)
    logits = torch.randn(7, 9, dtype=torch.float64, requires_grad=True)
    grads = []
    for target in (p, sp):
        logits.grad = None
        q = Neighborhood.from_logits(logits, p.mask)
        icon_loss(target, q, exaggeration=3.0).backward()
        grads.append(logits.grad.clone())
    assert torch.isfinite(grads[0]).all()
    assert torch.allclose(grads[0], grads[1], atol=1e-14)


def test_p_mass_where_q_is_masked_is_infinite_in_both_forms():
    p, q = _dense_pair()
    mask = q.mask.clone()
    col = int(torch.nonzero(p.prob[2] > 0)[0])
    mask[2, col] = False
    q = Neighborhood.from_logits(torch.zeros(7, 9, dtype=torch.float64), mask)
    sp = SparseNeighborhood.from_dense(p)
    assert math.isinf(float(icon_loss(p, q))) and math.isinf(float(icon_loss(sp, q)))


def test_from_dense_top_k_renormalises_and_padding_contributes_nothing():
    p, q = _dense_pair()
    sp = SparseNeighborhood.from_dense(p, k=2)
    assert sp.log_prob.shape == (7, 2)
    assert torch.allclose(sp.prob.sum(1), torch.ones(7, dtype=torch.float64))
    # the one-hot row keeps one real column and one padding entry
    assert int(sp.mask[1].sum()) == 1
    kept = sp.to_dense().prob
    ref = _loop_kl(kept, q.log_prob)
    assert float(icon_loss(sp, q)) == pytest.approx(ref, rel=1e-12)


def test_mismatched_pairs_and_reverse_direction_raise_fw_errors():
    p, q = _dense_pair()
    sp = SparseNeighborhood.from_dense(p)
    other = SparseNeighborhood(sp.index.flip(1), sp.log_prob, sp.mask, sp.num_cols)
    with pytest.raises(ShapeError, match="same column ids"):
        icon_loss(sp, other)
    with pytest.raises(ShapeError, match="direction 'reverse'"):
        icon_loss(sp, q, direction="reverse")
    with pytest.raises(ShapeError, match="cover the sparse p's pairs"):
        icon_loss(sp, Neighborhood.from_logits(torch.zeros(7, 5), torch.ones(7, 5, dtype=bool)))
    with pytest.raises(FwError, match="index must be an integer tensor"):
        SparseNeighborhood(sp.index.double(), sp.log_prob, sp.mask, sp.num_cols)
