"""Oracles: I-Con with a method's (p, q) equals that method's own loss.

Every reference below is written out independently of the distributions it checks (loops or
the method's published code structure), in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fw import api
from fw.api import Neighborhood
from fw.lib.icon import icon_loss
from fw.recipe import build
from fw.registry import get_registry
from fw_icon.discrete import MODALITY, CrossModal, DataLabel, Identity, SameClass
from fw_icon.kernels import (
    CohesionVariance,
    CrossModalGaussian,
    PrototypeSoftmax,
    Triplet,
    cohesion_variance_loss,
)
from fw_icon.neighbors import UniformKNN
from fw_icon.prototypes import Harmonic, PrototypeTriplet
from fw_icon.wrappers import Debiased, Propagated, Union
from fw_icon.xsample import CorrespondingGaussian
from fw_kmeans.distributions import ClusterKernel
from fw_simclr.distributions import PositivePairs

DT = torch.float64


def cosine_q(z: torch.Tensor, tau: float) -> Neighborhood:
    """SimCLR's q written directly: softmax over k != i of cos / τ."""
    zn = F.normalize(z, dim=1)
    mask = ~torch.eye(len(z), dtype=torch.bool)
    return Neighborhood.from_logits(zn @ zn.T / tau, mask)


def registered_cosine_q(z: torch.Tensor, tau: float) -> Neighborhood | None:
    """The same q from the registered ``gaussian`` (sne plugin), when it is installed."""
    if "gaussian" not in get_registry().names("distribution"):
        return None
    q = build("distribution", {"name": "gaussian", "metric": "cosine", "temperature": tau})
    return q({api.FEATURES: z})


class CosineQ(api.NeighborhoodDistribution):
    """`cosine_q` as a distribution (to nest inside wrappers)."""

    role = "learned"

    def __init__(self, tau: float) -> None:
        self.tau = tau

    def log_prob(self, ctx: api.Context) -> Neighborhood:
        return cosine_q(ctx[api.FEATURES], self.tau)


# ----------------------------------------------------------------------------- SimCLR


def nt_xent_reference(z: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR Algorithm 1: views 2k-1, 2k are partners; L = 1/2N Σ_k [l(2k-1,2k) + l(2k,2k-1)]."""
    two_n = z.shape[0]

    def s(i: int, j: int) -> torch.Tensor:
        return torch.dot(z[i], z[j]) / (z[i].norm() * z[j].norm())

    def ell(i: int, j: int) -> torch.Tensor:
        denominator = sum(torch.exp(s(i, k) / tau) for k in range(two_n) if k != i)
        return -torch.log(torch.exp(s(i, j) / tau) / denominator)

    total = sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(two_n // 2))
    return total / two_n


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_simclr_equals_nt_xent(tau):
    n = 6
    z = torch.randn(2 * n, 5, dtype=DT, requires_grad=True)
    index = torch.arange(n).repeat_interleave(2)  # views 2k, 2k+1 share id k
    p = PositivePairs()({api.INDEX: index, api.FEATURES: z})
    expected = nt_xent_reference(z, tau)
    for q in (cosine_q(z, tau), registered_cosine_q(z, tau)):
        if q is None:
            continue
        assert icon_loss(p, q, mode="ce").item() == pytest.approx(expected.item(), abs=1e-6)
        # one-hot p: H(p) = 0, so KL = CE
        assert icon_loss(p, q).item() == pytest.approx(expected.item(), abs=1e-6)
    (g_ref,) = torch.autograd.grad(expected, z)
    (g_icon,) = torch.autograd.grad(icon_loss(p, cosine_q(z, tau)), z)
    torch.testing.assert_close(g_icon, g_ref, atol=1e-8, rtol=1e-6)


# ----------------------------------------------------------------------------- cross-entropy


def test_cross_entropy_with_learned_prototypes():
    n, d, c = 10, 4, 3
    f = torch.randn(n, d, dtype=DT, requires_grad=True)
    y = torch.randint(0, c, (n,))
    q_dist = PrototypeSoftmax(num_classes=c, dim=d, bias=True).double()
    with torch.no_grad():
        q_dist.bias.normal_()
    ctx = {api.FEATURES: f, api.LABELS: y}
    loss = icon_loss(DataLabel(num_classes=c)(ctx), q_dist(ctx))
    expected = F.cross_entropy(f @ q_dist.prototypes.T + q_dist.bias, y)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    grads = torch.autograd.grad(loss, [f, q_dist.prototypes, q_dist.bias])
    ref = torch.autograd.grad(expected, [f, q_dist.prototypes, q_dist.bias])
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)


def test_cross_entropy_with_identity_and_given_prototypes():
    n, c = 9, 4
    logits = torch.randn(n, c, dtype=DT)
    y = torch.randint(0, c, (n,))
    ctx = {api.FEATURES: logits, api.LABELS: y}
    p = DataLabel(num_classes=c)(ctx)
    q = PrototypeSoftmax(num_classes=c)(ctx)  # features are the class scores
    assert icon_loss(p, q).item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-10)
    # prototypes from the context (e.g. text embeddings), labelled by labels_col
    f, protos = torch.randn(n, 3, dtype=DT), torch.randn(c, 3, dtype=DT)
    ctx = {
        api.FEATURES: f,
        api.FEATURES_COL: protos,
        api.LABELS: y,
        api.LABELS_COL: torch.arange(c),
    }
    loss = icon_loss(DataLabel()(ctx), PrototypeSoftmax(temperature=0.5)(ctx))
    assert loss.item() == pytest.approx(F.cross_entropy(f @ protos.T / 0.5, y).item(), abs=1e-10)


@pytest.mark.parametrize("alpha", [0.1, 0.4])
def test_debiased_data_label_is_label_smoothing(alpha):
    n, c = 12, 5
    logits = torch.randn(n, c, dtype=DT)
    y = torch.randint(0, c, (n,))
    ctx = {api.FEATURES: logits, api.LABELS: y}
    p = Debiased(of=DataLabel(num_classes=c), alpha=alpha)(ctx)
    q = PrototypeSoftmax(num_classes=c)(ctx)
    expected = F.cross_entropy(logits, y, label_smoothing=alpha)
    assert icon_loss(p, q, mode="ce").item() == pytest.approx(expected.item(), abs=1e-10)


# ----------------------------------------------------------------------------- Harmonic loss


def harmonic_reference(f: torch.Tensor, protos: torch.Tensor, y: torch.Tensor, power: float):
    """Baek et al. 2025: mean_i −log(d_iy^(−n) / Σ_k d_ik^(−n)), d = plain Euclidean distance."""
    losses = []
    for i in range(f.shape[0]):
        d = [torch.sqrt(((f[i] - protos[k]) ** 2).sum()) for k in range(protos.shape[0])]
        weights = [dk ** (-power) for dk in d]
        losses.append(-torch.log(weights[int(y[i])] / sum(weights)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("n", [0.5, 1.0, 2.5])
def test_harmonic_loss_equals_baek_reference(n):
    """Harmonic q with degree n on squared distances is Baek's loss with exponent 2n."""
    f = torch.randn(10, 4, dtype=DT, requires_grad=True)
    y = torch.randint(0, 3, (10,))
    q_dist = Harmonic(n=n, num_classes=3, dim=4).double()
    ctx = {api.FEATURES: f, api.LABELS: y}
    loss = icon_loss(DataLabel(num_classes=3)(ctx), q_dist(ctx))
    expected = harmonic_reference(f, q_dist.prototypes, y, power=2 * n)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    grads = torch.autograd.grad(loss, [f, q_dist.prototypes])
    ref = torch.autograd.grad(expected, [f, q_dist.prototypes])
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r)


def test_harmonic_is_the_sigma_to_zero_limit_of_a_student_t():
    """Thm F.3.8: at width σ, harmonic q is the Student-t with 2n − 1 dof; σ → 0 gives d^(−n)."""
    n = 2.0
    f, protos = torch.randn(7, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    limit = Harmonic(n=n)({api.FEATURES: f, api.FEATURES_COL: protos})
    errors = []
    for sigma in (1.0, 0.1, 0.01):
        at_sigma = Harmonic(n=n, sigma=sigma)({api.FEATURES: f, api.FEATURES_COL: protos})
        # the same kernel through the sne plugin's Student-t on the points scaled by 1/σ
        if "student_t" in get_registry().names("distribution"):
            t = build("distribution", {"name": "student_t", "dof": 2 * n - 1})
            scaled = t({api.FEATURES: f / sigma, api.FEATURES_COL: protos / sigma})
            torch.testing.assert_close(at_sigma.prob, scaled.prob)
        errors.append((at_sigma.prob - limit.prob).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_harmonic_on_a_prototype_is_finite():
    """Log space: a feature exactly on its prototype gets all the mass, no NaN."""
    protos = torch.randn(3, 2, dtype=DT)
    f = torch.cat([protos[1:2], torch.randn(2, 2, dtype=DT)]).requires_grad_()
    y = torch.tensor([1, 0, 2])
    ctx = {api.FEATURES: f, api.FEATURES_COL: protos, api.LABELS: y}
    q = Harmonic(n=4.0)(ctx)
    assert q.prob[0, 1].item() == pytest.approx(1.0) and torch.isfinite(q.log_prob).all()
    loss = icon_loss(DataLabel(num_classes=3)(ctx), q)
    (g,) = torch.autograd.grad(loss, f)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


# ----------------------------------------------------------------------------- Error rate


@pytest.mark.parametrize("negative", ["hardest", "random", "all"])
def test_error_rate_bounds_and_sigma_to_zero_limit(negative):
    """σ²·L − σ² log|K_i| ≤ mean_i (d_iy − min_{k∈K_i} d_ik) ≤ σ²·L, tight as σ → 0."""
    n, c = 40, 5
    f, protos = torch.randn(n, 3, dtype=DT), torch.randn(c, 3, dtype=DT)
    y = torch.randint(0, c, (n,))
    ctx = {api.FEATURES: f, api.FEATURES_COL: protos, api.LABELS: y}
    p = DataLabel(num_classes=c)(ctx)
    sq = torch.cdist(f, protos).pow(2)
    for sigma in (1.0, 0.3, 0.05):
        torch.manual_seed(1)
        q = PrototypeTriplet(sigma=sigma, negative=negative)(ctx)
        hinge = torch.stack(
            [sq[i, y[i]] - min(sq[i, k] for k in range(c) if q.mask[i, k]) for i in range(n)]
        ).mean()
        scaled = sigma**2 * icon_loss(p, q)
        log_k = torch.log(q.mask.sum(1).to(DT)).max().item()
        assert scaled.item() - sigma**2 * log_k - 1e-12 <= hinge.item() <= scaled.item() + 1e-12
    if negative != "random":  # the limit's support is the nearest-prototype classifier's errors
        per_row = sq[torch.arange(n), y] - sq.min(dim=1).values
        wrong = sq.argmin(dim=1) != y
        assert torch.equal(per_row > 0, wrong)
        rows = sigma**2 * icon_loss(p, q, reduction="none")
        torch.testing.assert_close(rows[~wrong], torch.zeros_like(rows[~wrong]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- X-Sample


def test_xsample_equals_reference():
    """X-Sample CL: −Σ_j p(j|i) log q(j|i), p the softmax of g_i·g_j over j ≠ i (Thm F.3.5)."""
    n, tau = 8, 0.5
    g = torch.randn(n, 3, dtype=DT)
    z = torch.randn(n, 5, dtype=DT, requires_grad=True)
    zn = F.normalize(z, dim=1)
    expected = 0.0
    for i in range(n):
        others = [k for k in range(n) if k != i]
        p_norm = sum(torch.exp(g[i] @ g[k]) for k in others)
        q_norm = sum(torch.exp(zn[i] @ zn[k] / tau) for k in others)
        for j in others:
            expected = expected - torch.exp(g[i] @ g[j]) / p_norm * torch.log(
                torch.exp(zn[i] @ zn[j] / tau) / q_norm
            )
    expected = expected / n
    p = CorrespondingGaussian()({api.EMBEDDING: g, api.FEATURES: z})
    loss = icon_loss(p, cosine_q(z, tau), mode="ce")
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    (g_icon,) = torch.autograd.grad(loss, z)
    (g_ref,) = torch.autograd.grad(expected, z)
    torch.testing.assert_close(g_icon, g_ref)


# ----------------------------------------------------------------------------- SupCon


def supcon_reference(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Khosla et al. 2020 SupConLoss, "out" variant, contrast_mode='all', base_temperature=τ.

    ``features`` ``[bsz, n_views, d]`` L2-normalised; the structure of the authors' code.
    """
    bsz, n_views = features.shape[:2]
    contrast = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_dot_contrast = contrast @ contrast.T / tau
    logits = anchor_dot_contrast - anchor_dot_contrast.max(dim=1, keepdim=True).values.detach()
    mask = (labels.view(-1, 1) == labels.view(1, -1)).to(features.dtype)
    mask = mask.repeat(n_views, n_views)
    logits_mask = 1.0 - torch.eye(bsz * n_views, dtype=features.dtype)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -(tau / tau) * mean_log_prob_pos
    return loss.view(n_views, bsz).mean()


@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_supcon_equals_reference(tau):
    bsz, views = 8, 2
    feats = F.normalize(torch.randn(bsz, views, 6, dtype=DT), dim=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    z = torch.cat(torch.unbind(feats, dim=1), dim=0)  # view-major, as the reference
    ctx = {api.FEATURES: z, api.LABELS: labels.repeat(views)}
    p = SameClass()(ctx)
    expected = supcon_reference(feats, labels, tau)
    for q in (cosine_q(z, tau), registered_cosine_q(z, tau)):
        if q is None:
            continue
        assert icon_loss(p, q, mode="ce").item() == pytest.approx(expected.item(), abs=1e-6)
        # KL differs by the entropy of p, log(K_i - 1) per row
        entropy = torch.log((p.prob > 0).sum(1).to(DT)).mean()
        kl = icon_loss(p, q).item()
        assert kl == pytest.approx(expected.item() - entropy.item(), abs=1e-6)


# ----------------------------------------------------------------------------- CLIP


@pytest.mark.parametrize("tau", [0.07, 1.0])
def test_clip_equals_symmetric_cross_entropy(tau):
    n = 7
    za, zb = torch.randn(n, 5, dtype=DT), torch.randn(n, 5, dtype=DT)
    logits = F.normalize(za, dim=1) @ F.normalize(zb, dim=1).T / tau
    target = torch.arange(n)
    symmetric = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    # square layout, both directions, normalised over the other modality only
    ctx = {
        api.FEATURES: torch.cat([za, zb]),
        api.INDEX: torch.arange(n).repeat(2),
        MODALITY: torch.arange(2).repeat_interleave(n),
    }
    q = CrossModalGaussian(temperature=tau)
    assert icon_loss(CrossModal()(ctx), q(ctx)).item() == pytest.approx(symmetric.item(), abs=1e-10)
    # rectangular layout: one direction
    perm = torch.randperm(n)
    ctx = {
        api.FEATURES: za,
        api.FEATURES_COL: zb[perm],
        api.INDEX: torch.arange(n),
        api.INDEX_COL: perm,
    }
    one_way = F.cross_entropy(logits, target)
    assert icon_loss(CrossModal()(ctx), q(ctx)).item() == pytest.approx(one_way.item(), abs=1e-10)


# ----------------------------------------------------------------------------- k-Means


def test_cluster_kernel_kmeans_identity():
    """Σ_ij q(j|i)‖x_i − x_j‖² = 2 Σ_ic φ_ic‖x_i − μ_c‖² at weighted-mean centres (I-Con, Thm 8)."""
    n, dim, k = 15, 3, 4
    x = torch.randn(n, dim, dtype=DT)
    logits = torch.randn(n, k, dtype=DT)
    q = ClusterKernel()({api.FEATURES: logits})
    torch.testing.assert_close(q.prob.sum(1), torch.ones(n, dtype=DT))
    assert bool(q.mask.all())  # j = i included
    phi = logits.softmax(1)
    centres = (phi.T @ x) / phi.sum(0).unsqueeze(1)
    pairwise = (q.prob * torch.cdist(x, x).pow(2)).sum()
    prob_kmeans = (phi * torch.cdist(x, centres).pow(2)).sum()
    assert pairwise.item() == pytest.approx(2 * prob_kmeans.item(), rel=1e-10)


def test_cluster_kernel_formulas_and_gradient_through_sizes():
    n, k = 7, 3
    logits = torch.randn(n, k, dtype=DT, requires_grad=True)
    graph = torch.rand(n, n, dtype=DT)
    graph = graph + graph.T
    weights = torch.randn(n, n, dtype=DT)

    def reference(by: str, degree: bool) -> torch.Tensor:
        phi = logits.softmax(1)
        d = graph.sum(1) if degree else torch.ones(n, dtype=DT)
        q = torch.zeros(n, n, dtype=DT)
        for i in range(n):
            for j in range(n):
                if by == "cluster":
                    sizes = (phi * d.unsqueeze(1)).sum(0)  # gradient flows through the sizes
                    q[i, j] = (phi[i] * phi[j] * d[j] / sizes).sum()
                else:
                    norm = sum((phi[i] @ phi[m]) * d[m] for m in range(n))
                    q[i, j] = (phi[i] @ phi[j]) * d[j] / norm
        return q

    for by in ("cluster", "point"):
        for degree in (False, True):
            dist = ClusterKernel(by=by, degree_weighted=degree)
            q = dist({api.FEATURES: logits, api.GRAPH: graph})
            ref = reference(by, degree)
            torch.testing.assert_close(q.prob, ref)
            (g,) = torch.autograd.grad((q.prob * weights).sum(), logits)
            (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
            torch.testing.assert_close(g, g_ref)


def test_cluster_kernel_exclude_self_eps_and_columns():
    n, k = 6, 3
    logits = torch.randn(n, k, dtype=DT)
    full = ClusterKernel()({api.FEATURES: logits}).prob
    q = ClusterKernel(exclude_self=True)({api.FEATURES: logits})
    off = full.clone().fill_diagonal_(0.0)
    torch.testing.assert_close(q.prob, off / (1 - full.diagonal()).unsqueeze(1))
    assert not bool(q.mask.diagonal().any())
    with_eps = ClusterKernel(eps=1e-3)({api.FEATURES: logits}).prob
    torch.testing.assert_close(with_eps.sum(1), torch.ones(n, dtype=DT))
    # rectangular: teacher logits as columns, sizes over the columns
    teacher = torch.randn(4, k, dtype=DT)
    rect = ClusterKernel()({api.FEATURES: logits, api.FEATURES_COL: teacher}).prob
    phi, psi = logits.softmax(1), teacher.softmax(1)
    torch.testing.assert_close(rect, (phi / psi.sum(0)) @ psi.T)


def test_reverse_kl_identity():
    """Σ_i KL(q_i‖p_i) = 1/2σ² Σ_ij q‖x_i−x_j‖² − Σ_i H(q_i) + Σ_i log Z_i (I-Con, Thm 9)."""
    n, k, sigma = 12, 3, 0.8
    x = torch.randn(n, 2, dtype=DT)
    sq = torch.cdist(x, x).pow(2)
    all_pairs = torch.ones(n, n, dtype=torch.bool)
    p = Neighborhood.from_logits(-sq / (2 * sigma**2), all_pairs)  # over all k, incl. i
    log_z = torch.logsumexp(-sq / (2 * sigma**2), dim=1)
    logits = torch.randn(n, k, dtype=DT)
    q = ClusterKernel()({api.FEATURES: logits})
    lhs = icon_loss(p, q, direction="reverse", reduction="sum")
    entropy = -(q.prob * q.log_prob).sum()
    rhs = (q.prob * sq).sum() / (2 * sigma**2) - entropy + log_z.sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-10)
    # with the k-means identity: = (1/σ²) L_prob-kmeans − Σ H(q_i) + const (Thm 9)
    phi = logits.softmax(1)
    centres = (phi.T @ x) / phi.sum(0).unsqueeze(1)
    prob_kmeans = (phi * torch.cdist(x, centres).pow(2)).sum()
    expected = prob_kmeans / sigma**2 - entropy + log_z.sum()
    assert lhs.item() == pytest.approx(expected.item(), rel=1e-10)


# ----------------------------------------------------------------------------- limits


@pytest.mark.parametrize("sigma", [1.0, 0.3, 0.05])
def test_triplet_bounds(sigma):
    n = 10
    z = torch.randn(2 * n, 4, dtype=DT, requires_grad=True)
    ctx = {api.FEATURES: z, api.INDEX: torch.arange(n).repeat(2)}
    p = PositivePairs()(ctx)
    q = Triplet(sigma=sigma)(ctx)
    assert bool((q.mask.sum(1) == 2).all())  # one positive, one negative
    support = p.prob > 0
    negative = q.mask & ~support
    sq = torch.cdist(z, z).pow(2)
    d_pos, d_neg = sq[support], sq[negative]  # row-major: one of each per row
    hinge = torch.relu(d_pos - d_neg).mean()
    loss = icon_loss(p, q, mode="ce")
    scaled = sigma**2 * loss
    assert scaled.item() - sigma**2 * math.log(2) - 1e-12 <= hinge.item() <= scaled.item() + 1e-12
    rows = icon_loss(p, q, mode="ce", reduction="none")
    torch.testing.assert_close(rows, F.softplus((d_pos - d_neg) / sigma**2))
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_triplet_hardest_negative_and_labels():
    z = torch.randn(8, 3, dtype=DT)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    ctx = {api.FEATURES: z, api.LABELS: labels}
    q = Triplet(positives="labels", negative="hardest")(ctx)
    sq = torch.cdist(z, z).pow(2)
    for i in range(8):
        others = [j for j in range(8) if labels[j] != labels[i]]
        nearest = min(others, key=lambda j: sq[i, j].item())
        positives = {j for j in range(8) if j != i and labels[j] == labels[i]}
        assert set(q.mask[i].nonzero().flatten().tolist()) == positives | {nearest}


def test_cohesion_variance_is_the_sigma_to_infinity_limit():
    n = 10
    x = torch.randn(n, 3, dtype=DT, requires_grad=True)
    ctx = {api.FEATURES: x, api.INDEX: torch.arange(n // 2).repeat(2)}
    p = PositivePairs()(ctx)  # VICReg's p
    cv = CohesionVariance()
    assert cv.normalized is False
    loss = icon_loss(p, cv(ctx), mode="ce")
    direct = cohesion_variance_loss(p, x)
    assert loss.item() == pytest.approx(direct.item() + math.log(n), abs=1e-10)
    (g,) = torch.autograd.grad(loss, x)
    (g_direct,) = torch.autograd.grad(direct, x)
    torch.testing.assert_close(g, g_direct)
    # the literal normalised Gaussian exp(-d/σ²) converges to it: σ²(H(p, q_σ) − log n)
    errors = []
    for sigma in (10.0, 100.0, 1000.0):
        q_sigma = CohesionVariance(sigma=sigma)(ctx)
        scaled = sigma**2 * (icon_loss(p, q_sigma, mode="ce") - math.log(n))
        errors.append(abs(scaled.item() - direct.item()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-4


def test_pca_from_identity_and_cohesion_variance():
    """p = identity, q = σ→∞ Gaussian: the loss is −2 Var(f) + log n (I-Con, Cor. 1)."""
    x = torch.randn(9, 4, dtype=DT)
    ctx = {api.FEATURES: x}
    p = Identity()(ctx)
    variance = (x - x.mean(0)).pow(2).sum(1).mean()
    loss = icon_loss(p, CohesionVariance()(ctx))
    assert loss.item() == pytest.approx(-2 * variance.item() + math.log(9), abs=1e-10)


# ----------------------------------------------------------------------------- wrappers


def _contexts():
    n = 12
    z = torch.randn(n, 4, dtype=DT, requires_grad=True)
    index = torch.arange(n // 2).repeat(2)
    return {api.FEATURES: z, api.INDEX: index, api.LABELS: index % 3}


P_CASES = {
    "positive_pairs": PositivePairs,
    "same_class": SameClass,
    "knn": lambda: UniformKNN(k=3),
    "identity": Identity,
}


@pytest.mark.parametrize("name", sorted(P_CASES))
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_debiased_p_rows_sum_to_one(name, alpha):
    ctx = _contexts()
    inner = P_CASES[name]()
    base = inner(ctx)
    p = Debiased(of=inner, alpha=alpha)(ctx)
    torch.testing.assert_close(p.prob.sum(1), torch.ones(12, dtype=p.prob.dtype))
    torch.testing.assert_close(p.mask, base.mask)
    if alpha == 0.0:
        assert torch.equal(p.log_prob, base.log_prob)
    else:
        # every candidate gets at least α/N
        n_cand = base.mask.sum(1, keepdim=True).to(p.prob.dtype)
        floor = (alpha / n_cand).expand_as(p.prob)[p.mask]
        assert bool((p.prob[p.mask] >= floor * (1 - 1e-12)).all())


def test_debiased_q_rows_sum_to_one_and_keep_gradient():
    ctx = _contexts()
    logits = torch.randn(12, 3, dtype=DT, requires_grad=True)
    for inner in (ClusterKernel(), ClusterKernel(exclude_self=True)):
        q = Debiased(of=inner, alpha=0.4)({api.FEATURES: logits})
        torch.testing.assert_close(q.prob.sum(1), torch.ones(12, dtype=DT))
        loss = icon_loss(PositivePairs()(ctx), q)
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
        assert torch.equal(
            Debiased(of=inner, alpha=0.0)({api.FEATURES: logits}).log_prob,
            inner({api.FEATURES: logits}).log_prob,
        )


@pytest.mark.parametrize("mode", ["sum", "uniform"])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_propagated_rows_sum_to_one_without_self_mass(mode, steps):
    ctx = _contexts()
    knn = UniformKNN(k=2)
    p = Propagated(of=knn, steps=steps, mode=mode)(ctx)
    torch.testing.assert_close(p.prob.sum(1), torch.ones(12, dtype=p.prob.dtype))
    assert bool((p.prob.diagonal() == 0).all())
    base = knn(ctx).prob
    walks = sum(torch.linalg.matrix_power(base, s) for s in range(1, steps + 1))
    walks = walks.fill_diagonal_(0.0)
    if mode == "uniform":
        walks = (walks > 0).to(walks.dtype)
    torch.testing.assert_close(p.prob, walks / walks.sum(1, keepdim=True))


def test_union_mixture():
    ctx = _contexts()
    parts = [PositivePairs(), UniformKNN(k=2), Propagated(of=UniformKNN(k=2), steps=2)]
    p = Union(of=parts, weights=[2.0, 1.0, 1.0])(ctx)
    expected = (2 * parts[0](ctx).prob + parts[1](ctx).prob + parts[2](ctx).prob) / 4
    torch.testing.assert_close(p.prob, expected)
    # a part without mass in a row is left out of that row's normalisation
    lonely = {**ctx, api.INDEX: torch.arange(12)}  # nobody has a partner view
    skip = Union(of=[PositivePairs(on_missing="skip"), UniformKNN(k=2)])(lonely)
    torch.testing.assert_close(skip.prob, UniformKNN(k=2)(lonely).prob)


# ----------------------------------------------------------------------------- generic


def test_loss_is_zero_iff_q_equals_p():
    n = 8
    mask = ~torch.eye(n, dtype=torch.bool)
    logits = torch.randn(n, n, dtype=DT)
    p = Neighborhood.from_logits(logits, mask)
    q = Neighborhood.from_logits(logits.clone().requires_grad_(), mask)
    assert abs(icon_loss(p, q).item()) < 1e-12
    for _ in range(5):
        other = Neighborhood.from_logits(logits + 0.1 * torch.randn(n, n, dtype=DT), mask)
        assert icon_loss(p, other).item() > 0
    # sparse p (positive pairs): zero exactly when q puts all its mass on the positives
    ctx = _contexts()
    pp = PositivePairs()(ctx)
    assert abs(icon_loss(pp, Neighborhood(pp.log_prob.clone(), pp.mask)).item()) < 1e-12
    assert icon_loss(pp, cosine_q(ctx[api.FEATURES], 0.5)).item() > 0


NAN_CASES = {
    "simclr": (lambda: PositivePairs(), lambda z: cosine_q(z, 0.2)),
    "knn_cluster_excl": (lambda: UniformKNN(k=3), lambda z: ClusterKernel(exclude_self=True)),
    "union_debiased": (
        lambda: Debiased(of=Union(of=[PositivePairs(), UniformKNN(k=2)]), alpha=0.5),
        lambda z: Debiased(of=ClusterKernel(exclude_self=True), alpha=0.5),
    ),
    "triplet": (lambda: PositivePairs(), lambda z: Triplet()),
    "supcon_propagated_q": (
        lambda: SameClass(),
        lambda z: Propagated(of=CosineQ(0.2), steps=2),
    ),
    "union_of_qs": (
        lambda: PositivePairs(),
        lambda z: Union(of=[Triplet(), ClusterKernel(exclude_self=True)]),
    ),
    "cross_modal": (lambda: CrossModal(), lambda z: CrossModalGaussian(learn_temperature=True)),
    "harmonic": (lambda: DataLabel(num_classes=3), lambda z: Harmonic(num_classes=3, dim=4)),
    "error_rate": (
        lambda: DataLabel(num_classes=3),
        lambda z: PrototypeTriplet(num_classes=3, dim=4, sigma=0.1),
    ),
    "xsample": (lambda: CorrespondingGaussian(temperature=0.1), lambda z: cosine_q(z, 0.2)),
}


@pytest.mark.parametrize("case", sorted(NAN_CASES))
def test_no_nan_with_masked_entries(case):
    make_p, make_q = NAN_CASES[case]
    n = 12
    z = torch.randn(n, 4, dtype=DT, requires_grad=True)
    index = torch.arange(n // 2).repeat(2)
    ctx = {
        api.FEATURES: z,
        api.INDEX: index,
        api.LABELS: index % 3,
        MODALITY: torch.arange(2).repeat_interleave(n // 2),
        api.EMBEDDING: F.one_hot(index % 3).to(DT),
    }
    with torch.no_grad():
        p = make_p()(ctx)
    q_dist = make_q(z)
    q = q_dist(ctx) if not isinstance(q_dist, Neighborhood) else q_dist
    assert bool(torch.isneginf(q.log_prob[~q.mask]).all())
    for mode in ("kl", "ce"):
        loss = icon_loss(p, q, mode=mode)
        assert torch.isfinite(loss)
        (g,) = torch.autograd.grad(loss, z, retain_graph=True)
        assert torch.isfinite(g).all()
