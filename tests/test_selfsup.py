"""Oracles for the self-supervised family: each loss against a hand-written reference of its
paper's formula, the EMA and temperature schedules, DINO's centring, Sinkhorn–Knopp's marginals,
and the alignment / uniformity / collapse monitors against direct loops."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fw.lib import monitors
from fw.lib.prototypes import PrototypeLayer, sinkhorn_knopp
from fw_selfsup import losses
from tests.support.references import sinkhorn_reference


def _softmax(row: list[float], t: float) -> list[float]:
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    s = sum(e)
    return [v / s for v in e]


# ----------------------------------------------------------------------------- Sinkhorn


def test_sinkhorn_matches_the_papers_algorithm_in_float64():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(32, 8, generator=g, dtype=torch.float64), dim=1)
    scores = scores @ F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1).T
    for iters in (1, 3, 10):
        ours = sinkhorn_knopp(scores, epsilon=0.05, iterations=iters).numpy()
        ref = sinkhorn_reference(scores.numpy(), 0.05, iters)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)


def test_sinkhorn_marginals_are_uniform_to_1e6():
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(40, 5, generator=g, dtype=torch.float64) * 0.3
    q = sinkhorn_knopp(scores, epsilon=0.05, iterations=500)
    np.testing.assert_allclose(q.sum(dim=1).numpy(), np.ones(40), atol=1e-6)  # each sample: 1
    np.testing.assert_allclose(q.sum(dim=0).numpy(), np.full(5, 40 / 5), atol=1e-6)  # B/K each


def test_sinkhorn_is_stable_at_tiny_epsilon_and_float32():
    scores = torch.tensor([[1.0, -1.0, 0.0], [0.9, 0.8, -1.0], [-1.0, 1.0, 1.0]])
    q = sinkhorn_knopp(scores, epsilon=1e-4, iterations=3)  # exp(1e4) would overflow
    assert q.dtype == torch.float32 and bool(torch.isfinite(q).all())
    np.testing.assert_allclose(q.sum(dim=1).numpy(), np.ones(3), atol=1e-6)


def test_prototype_layer_scores_are_cosines_and_freezing_stops_gradients():
    layer = PrototypeLayer(4, 3, weight_norm=False)
    with torch.no_grad():
        layer.weight.mul_(3.0)
    layer.normalize_()
    assert torch.allclose(layer.weight.norm(dim=1), torch.ones(3))
    z = torch.randn(5, 4, requires_grad=True)
    want = F.normalize(z, dim=1) @ layer.weight.T
    assert torch.allclose(layer(z), want, atol=1e-6)
    layer.frozen = True
    layer(z).sum().backward()
    assert layer.weight.grad is None and z.grad is not None


# ----------------------------------------------------------------------------- DINO


def test_dino_loss_is_the_papers_centred_cross_entropy():
    g = torch.Generator().manual_seed(2)
    b, k, tau_s, tau_t = 3, 5, 0.1, 0.04
    student = [torch.randn(b, k, generator=g) for _ in range(4)]  # 2 global + 2 local
    teacher = [torch.randn(b, k, generator=g) for _ in range(2)]
    center = torch.randn(k, generator=g) * 0.1
    ours = losses.dino_loss(student, teacher, center, tau_s, tau_t)
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            for row in range(b):
                p_t = _softmax([float(t[row, j] - center[j]) for j in range(k)], tau_t)
                p_s = _softmax([float(s[row, j]) for j in range(k)], tau_s)
                total += -sum(p_t[j] * math.log(p_s[j]) for j in range(k)) / b
            terms += 1
    assert terms == 2 * 4 - 2
    assert float(ours) == pytest.approx(total / terms, rel=1e-5)


def test_dino_gradient_reaches_the_student_only():
    t = torch.randn(4, 6, requires_grad=True)
    s = [torch.randn(4, 6, requires_grad=True) for _ in range(2)]
    losses.dino_loss(s, [t, t], torch.zeros(6)).backward()
    assert t.grad is None and all(x.grad is not None for x in s)


def test_dino_centre_update_is_the_ema_of_the_batch_mean():
    c = torch.tensor([0.5, -0.5, 1.0])
    t1, t2 = torch.randn(4, 3), torch.randn(4, 3)
    new = losses.dino_center(c, [t1, t2], momentum=0.9)
    for j in range(3):
        mean = sum(float(t[r, j]) for t in (t1, t2) for r in range(4)) / 8
        assert float(new[j]) == pytest.approx(0.9 * float(c[j]) + 0.1 * mean, rel=1e-6)


def test_teacher_momentum_follows_the_cosine_schedule_to_one():
    total = 100
    assert losses.cosine_schedule(0, total, 0.996, 1.0) == pytest.approx(0.996)
    assert losses.cosine_schedule(50, total, 0.996, 1.0) == pytest.approx(0.998)
    assert losses.cosine_schedule(total, total, 0.996, 1.0) == 1.0
    for k in (1, 17, 63, 99):  # BYOL's form: 1 − (1 − τ_base)(cos(πk/K) + 1)/2
        byol = 1 - (1 - 0.996) * (math.cos(math.pi * k / total) + 1) / 2
        assert losses.cosine_schedule(k, total, 0.996, 1.0) == pytest.approx(byol, abs=1e-12)


def test_teacher_temperature_warms_up_linearly():
    assert losses.linear_warmup(0, 30, 0.04, 0.07) == pytest.approx(0.04)
    assert losses.linear_warmup(15, 30, 0.04, 0.07) == pytest.approx(0.055)
    assert losses.linear_warmup(30, 30, 0.04, 0.07) == pytest.approx(0.07)
    assert losses.linear_warmup(500, 30, 0.04, 0.07) == pytest.approx(0.07)


def test_dino_learner_updates_its_teacher_by_the_schedule():
    from fw.data import ArrayDataset
    from fw_common.mappers import MLP
    from fw_selfsup.learners import DINO

    torch.manual_seed(0)
    data = ArrayDataset({"x": torch.rand(32, 1, 8, 8), "label": torch.arange(32) % 4})
    learner = DINO(
        MLP(8, [16]),
        MLP(8, [16], batch_norm=False),
        prototypes=16,
        local_crops=0,
        momentum=0.9,
        schedule_steps=10,
    )
    learner.setup(data)
    batch = {"x": data.tensors["x"][:8], "index": torch.arange(8)}
    with torch.no_grad():  # move the student away from the teacher
        for w in learner.student_parameters():
            w.add_(torch.randn_like(w))
    for step, m in ((1, 0.9), (6, 1 - 0.1 * (math.cos(math.pi * 5 / 10) + 1) / 2)):
        before = [w.clone() for w in learner.teacher.parameters()]
        student = [w.clone() for w in learner.student_module().parameters()]
        out = learner.training_step(batch, step)
        after = list(learner.teacher.parameters())
        for t0, s, t1 in zip(before, student, after, strict=True):
            assert torch.allclose(t1, m * t0 + (1 - m) * s, atol=1e-6)
        center = learner.center.clone()
        assert math.isfinite(float(out["loss"].detach()))
    assert not torch.equal(center, torch.zeros_like(center))


# ----------------------------------------------------------------------------- SwAV


def test_swav_loss_is_the_swapped_prediction_with_sinkhorn_codes():
    g = torch.Generator().manual_seed(3)
    b, k, tau = 6, 4, 0.1
    scores = [torch.tanh(torch.randn(b, k, generator=g)) for _ in range(3)]  # 2 global + 1 local
    ours = losses.swav_loss(scores, (0, 1), tau, epsilon=0.05, iterations=3)
    total = 0.0
    for s in (0, 1):
        q = sinkhorn_reference(scores[s].double().numpy(), 0.05, 3)
        sub = 0.0
        for t in range(3):
            if t == s:
                continue
            for row in range(b):
                p = _softmax([float(scores[t][row, j]) for j in range(k)], tau)
                sub += -sum(q[row, j] * math.log(p[j]) for j in range(k)) / b
        total += sub / 2
    assert float(ours) == pytest.approx(total / 2, rel=1e-5)


def test_swav_queue_joins_sinkhorn_and_is_dropped_after():
    g = torch.Generator().manual_seed(4)
    scores = [torch.tanh(torch.randn(4, 3, generator=g)) for _ in range(2)]
    queue = [torch.tanh(torch.randn(8, 3, generator=g)) for _ in range(2)]
    ours = losses.swav_loss(scores, (0, 1), 0.1, 0.05, 3, queue_scores=queue)
    total = 0.0
    for s, other in ((0, 1), (1, 0)):
        full = torch.cat([scores[s], queue[s]]).double().numpy()
        q = sinkhorn_reference(full, 0.05, 3)[:4]
        logp = F.log_softmax(scores[other] / 0.1, dim=1).double().numpy()
        total += float(-(q * logp).sum(axis=1).mean())
    assert float(ours) == pytest.approx(total / 2, rel=1e-5)


# ----------------------------------------------------------------------------- BYOL, SimSiam


def test_byol_loss_is_the_symmetrised_normalised_mse():
    g = torch.Generator().manual_seed(5)
    p1, p2, z1, z2 = (torch.randn(3, 4, generator=g) for _ in range(4))

    def nmse(p, z):
        out = 0.0
        for r in range(3):
            pn = math.sqrt(sum(float(v) ** 2 for v in p[r]))
            zn = math.sqrt(sum(float(v) ** 2 for v in z[r]))
            out += sum((float(p[r, j]) / pn - float(z[r, j]) / zn) ** 2 for j in range(4))
        return out / 3

    want = nmse(p1, z2) + nmse(p2, z1)
    assert float(losses.byol_loss(p1, p2, z1, z2)) == pytest.approx(want, rel=1e-5)


def test_simsiam_loss_is_the_negative_cosine_with_stop_gradient():
    g = torch.Generator().manual_seed(6)
    p1, p2 = (torch.randn(3, 4, generator=g, requires_grad=True) for _ in range(2))
    z1, z2 = (torch.randn(3, 4, generator=g, requires_grad=True) for _ in range(2))

    def neg_cos(p, z):
        p, z = p.detach(), z.detach()
        out = 0.0
        for r in range(3):
            dot = sum(float(p[r, j]) * float(z[r, j]) for j in range(4))
            pn = math.sqrt(sum(float(v) ** 2 for v in p[r]))
            zn = math.sqrt(sum(float(v) ** 2 for v in z[r]))
            out += -dot / (pn * zn)
        return out / 3

    loss = losses.simsiam_loss(p1, p2, z1, z2)
    assert float(loss.detach()) == pytest.approx(
        0.5 * neg_cos(p1, z2) + 0.5 * neg_cos(p2, z1), rel=1e-5
    )
    loss.backward()
    assert z1.grad is None and z2.grad is None  # stop-gradient on the projections
    assert p1.grad is not None and p2.grad is not None


# ----------------------------------------------------------------------------- VICReg


def _vicreg_reference(z1, z2, lam, mu, nu, gamma, eps):
    """Bardes, Ponce & LeCun 2022, Eqs. 1-6, with the authors' code's normalisations, as loops."""
    n, d = len(z1), len(z1[0])

    def stats(z):
        mean = [sum(z[b][j] for b in range(n)) / n for j in range(d)]
        cov = [
            [sum((z[b][i] - mean[i]) * (z[b][j] - mean[j]) for b in range(n)) / (n - 1)
             for j in range(d)]
            for i in range(d)
        ]  # fmt: skip
        v = sum(max(0.0, gamma - math.sqrt(cov[j][j] + eps)) for j in range(d)) / d
        c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return v, c

    s = sum((z1[b][j] - z2[b][j]) ** 2 for b in range(n) for j in range(d)) / (n * d)
    (v1, c1), (v2, c2) = stats(z1), stats(z2)
    return lam * s + mu * (v1 + v2) / 2 + nu * (c1 + c2), (s, (v1 + v2) / 2, c1 + c2)


@pytest.mark.parametrize("scale", [0.3, 2.0])  # below and above the hinge γ = 1
def test_vicreg_loss_is_the_papers_three_terms(scale):
    g = torch.Generator().manual_seed(7)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64) * scale
    z2 = z1 + 0.2 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    want, (s, v, c) = _vicreg_reference(z1.tolist(), z2.tolist(), 25.0, 25.0, 1.0, 1.0, 1e-4)
    terms = losses.vicreg_terms(z1, z2)
    assert float(terms["invariance"]) == pytest.approx(s, rel=1e-12)
    assert float(terms["variance"]) == pytest.approx(v, rel=1e-12, abs=1e-15)
    assert float(terms["covariance"]) == pytest.approx(c, rel=1e-12)
    assert float(losses.vicreg_loss(z1, z2)) == pytest.approx(want, rel=1e-12)
    other, _ = _vicreg_reference(z1.tolist(), z2.tolist(), 1.0, 2.0, 3.0, 0.5, 1e-3)
    ours = losses.vicreg_loss(
        z1, z2, invariance=1.0, variance=2.0, covariance=3.0, gamma=0.5, eps=1e-3
    )
    assert float(ours) == pytest.approx(other, rel=1e-12)


def test_vicreg_gradient_matches_finite_differences_and_decorrelates():
    g = torch.Generator().manual_seed(8)
    z1 = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: losses.vicreg_loss(a, b), (z1, z2))
    # perfectly correlated dimensions pay the covariance term; independent ones (nearly) do not
    base = torch.randn(4096, 1, generator=g, dtype=torch.float64)
    assert float(losses.vicreg_covariance(base.repeat(1, 3))) > 1.0
    assert float(losses.vicreg_covariance(torch.randn(4096, 3, generator=g))) < 1e-3


def test_vicreg_rejects_mismatched_views():
    with pytest.raises(ValueError, match=r"two \[B, d\] embeddings"):
        losses.vicreg_terms(torch.zeros(4, 3), torch.zeros(4, 2))


# ----------------------------------------------------------------------------- monitors


def test_alignment_and_uniformity_match_direct_loops():
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    xn, yn = F.normalize(x, dim=1), F.normalize(y, dim=1)
    for alpha in (1.0, 2.0):
        want = sum(float((xn[i] - yn[i]).norm()) ** alpha for i in range(5)) / 5
        assert float(monitors.alignment(x, y, alpha)) == pytest.approx(want, rel=1e-5)
    for t in (1.0, 2.0):
        terms = [
            math.exp(-t * float((xn[i] - xn[j]).norm()) ** 2)
            for i in range(5)
            for j in range(i + 1, 5)
        ]
        want = math.log(sum(terms) / len(terms))
        assert float(monitors.uniformity(x, t)) == pytest.approx(want, rel=1e-5)


def test_effective_rank_and_dimension_std_match_their_definitions():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(20, 6, generator=g)
    s = np.linalg.svd(x.double().numpy(), compute_uv=False)
    p = s / s.sum()
    assert monitors.effective_rank(x) == pytest.approx(float(np.exp(-(p * np.log(p)).sum())))
    rank_one = torch.outer(torch.randn(20, generator=g), torch.randn(6, generator=g))
    assert monitors.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-6)
    xn = x.double().numpy() / np.linalg.norm(x.double().numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(monitors.dimension_std(x).numpy(), xn.std(axis=0, ddof=1), rtol=1e-5)


def test_collapse_is_reported_and_warned():
    g = torch.Generator().manual_seed(9)
    healthy = torch.randn(64, 16, generator=g)
    _, reasons = monitors.collapse_report(healthy)
    assert reasons == []
    collapsed = torch.ones(64, 16) + 1e-4 * torch.randn(64, 16, generator=g)
    values, reasons = monitors.collapse_report(collapsed)
    assert values["dim_std_ratio"] < monitors.STD_COLLAPSE and len(reasons) == 2

    from fw_common.mappers import MLP
    from fw_selfsup.learners import CollapseWarning, SimSiam

    learner = SimSiam(MLP(4, [8]), MLP(4, [8]), MLP(4, [8]), monitor_every=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner.monitor(collapsed, collapsed, step=10)
        learner.monitor(collapsed, collapsed, step=20)  # warned once
    hits = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert len(hits) == 1 and "collapsed at step 10" in str(hits[0].message)
