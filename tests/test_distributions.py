"""Catalog distributions: a registry-wide smoke test, then each one against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fw import api
from fw.lib.icon import icon_loss
from fw.recipe import build, recipe_from_dict
from fw.registry import get_registry
from fw_common.learner import context_from_batch
from fw_icon.discrete import MODALITY, CrossModal, DataLabel, Identity, SameClass
from fw_icon.kernels import CrossModalGaussian, PrototypeSoftmax
from fw_icon.neighbors import GraphKernel, UniformKNN
from fw_icon.prototypes import Harmonic, PrototypeTriplet
from fw_icon.wrappers import Debiased, Propagated, Union
from fw_icon.xsample import CorrespondingGaussian
from fw_kmeans.distributions import ClusterKernel
from fw_simclr.distributions import PositivePairs
from fw_table.table import P_FAMILIES, Q_FAMILIES

DT = torch.float64
N_IDS, VIEWS, DIM = 8, 2, 5
N = N_IDS * VIEWS

#: minimal parameters of registered distributions that have required ones (others: defaults)
PARAMS: dict[str, dict] = {
    "gaussian": {"sigma": 1.0},
    "knn": {"k": 3},
    "data_label": {"num_classes": 3},
    "prototype_softmax": {"num_classes": 3, "dim": DIM},
    "harmonic": {"num_classes": 3, "dim": DIM},
    "prototype_triplet": {"num_classes": 3, "dim": DIM},
    "debiased": {"of": {"name": "cluster"}, "alpha": 0.3},
    "propagated": {"of": {"name": "knn", "k": 3}},
    "union": {"of": [{"name": "positive_pairs"}, {"name": "knn", "k": 3}]},
}

# the table's own families, and new ones a plugin opens by declaring a cell in them
FAMILIES = set(P_FAMILIES) | set(Q_FAMILIES)
FAMILIES |= {
    family
    for _, cells in get_registry().hook_results("fw_table_cells")
    for cell in cells or []
    for family in (getattr(cell, "p_family", None), getattr(cell, "q_family", None))
    if family
}


def smoke_context() -> dict:
    """Two views of 8 samples, 3 classes, two modalities, a graph, a kNN table, a side embedding."""
    index = torch.arange(N_IDS).repeat(VIEWS)
    graph = torch.rand(N, N, dtype=DT)
    return {
        api.FEATURES: torch.randn(N, DIM, dtype=DT, requires_grad=True),
        api.INDEX: index,
        api.LABELS: index % 3,
        api.GRAPH: graph + graph.T,
        MODALITY: torch.arange(VIEWS).repeat_interleave(N_IDS),
        # a global kNN table in dataset-id space: each id's next three ids, cyclically
        api.NEIGHBORS: (torch.arange(N_IDS)[:, None] + torch.arange(1, 4)[None, :]) % N_IDS,
        # a side embedding g per sample, shared by its views (X-Sample's captions)
        api.EMBEDDING: torch.randn(N_IDS, 4, dtype=DT).repeat(VIEWS, 1),
    }


@pytest.mark.parametrize("name", get_registry().names("distribution"))
def test_every_registered_distribution(name):
    registry = get_registry()
    entry = registry.get("distribution", name)
    dist = build("distribution", {"name": name, **PARAMS.get(name, {})}, registry)
    if isinstance(dist, nn.Module):
        dist = dist.double()
    assert isinstance(dist, api.NeighborhoodDistribution)
    assert dist.role in ("supervisory", "learned", "either")
    assert dist.family in FAMILIES, f"{name}: family {dist.family!r} is not a table family"
    if entry.factory.family:  # wrappers have none of their own and take their inner one's
        assert entry.factory.family in FAMILIES
    ctx = smoke_context()
    learned = dist.role != "supervisory"
    with torch.set_grad_enabled(learned):
        nb = dist(ctx)
    assert nb.mask.any(dim=1).all()
    assert torch.isneginf(nb.log_prob[~nb.mask]).all()
    assert not torch.isnan(nb.log_prob).any()
    if getattr(dist, "normalized", True):
        sums = nb.prob.sum(dim=1)
        torch.testing.assert_close(sums, torch.ones_like(sums))
    if learned:
        target = api.Neighborhood.from_logits(torch.zeros_like(nb.log_prob.detach()), nb.mask)
        loss = icon_loss(target, nb)
        loss.backward()
        grad = ctx[api.FEATURES].grad
        assert grad is not None and torch.isfinite(grad).all()


def test_registered_names_families_and_roles():
    registry = get_registry()
    expected = {
        "positive_pairs": ("Uniform over Positive Pairs", "supervisory"),
        "cluster": ("Uniform on Clusters", "learned"),
        "identity": ("Identity", "supervisory"),
        "knn": ("Uniform over K-Neighbors", "supervisory"),
        "graph": ("Graph Kernel Weights", "supervisory"),
        "cross_modal": ("Cross-Modal Pairs", "supervisory"),
        "cross_modal_gaussian": ("Gaussian", "either"),
        "same_class": ("Uniform over Classes", "supervisory"),
        "data_label": ("Data-Label Pairs", "supervisory"),
        "prototype_softmax": ("Gaussian", "learned"),
        "harmonic": ("Student-T", "learned"),
        "prototype_triplet": ("Gaussian σ→0", "learned"),
        "corresponding_gaussian": ("Gaussian", "supervisory"),
        "cohesion_variance": ("Gaussian σ→∞", "learned"),
        "triplet": ("Gaussian σ→0", "learned"),
    }
    for name, (family, role) in expected.items():
        factory = registry.get("distribution", name).factory
        assert (factory.family, factory.role) == (family, role), name
    for name in ("debiased", "propagated", "union"):
        assert registry.get("distribution", name).plugin == "icon"


# ----------------------------------------------------------------------------- recipes


def test_nested_and_listed_components_in_a_recipe():
    raw = {
        "data": {"name": "digits", "limit": 50},
        "learner": {
            "name": "icon",
            "p": {
                "name": "debiased",
                "alpha": 0.4,
                "of": {
                    "name": "union",
                    "of": [
                        {"name": "positive_pairs"},
                        {"name": "knn", "k": 3},
                        {"name": "propagated", "of": {"name": "knn", "k": 3}, "steps": 2},
                    ],
                    "weights": [2, 1, 1],
                },
            },
            "q": {"name": "debiased", "of": {"name": "prototype_softmax", "num_classes": 4}},
            "mapper": {"name": "linear", "dim": 4},
        },
    }
    recipe = recipe_from_dict(raw)
    union_spec = recipe.raw["learner"]["p"]["of"]
    assert [part["name"] for part in union_spec["of"]] == ["positive_pairs", "knn", "propagated"]
    assert union_spec["of"][1]["metric"] == "cosine"  # defaults are filled in list items too
    learner = build("learner", recipe.raw["learner"])
    assert isinstance(learner.p, Debiased) and isinstance(learner.p.of, Union)
    assert [type(part) for part in learner.p.of.of] == [PositivePairs, UniformKNN, Propagated]
    assert learner.p.family == "Uniform over Positive Pairs" and learner.p.role == "supervisory"
    assert learner.q.role == "learned"


def test_bad_list_items_point_at_the_item():
    from fw.errors import RecipeError

    raw = {
        "data": {"name": "digits"},
        "learner": {
            "name": "icon",
            "p": {"name": "union", "of": [{"name": "positive_pairs"}, {"name": "knn", "kk": 3}]},
            "q": {"name": "cluster"},
            "mapper": {"name": "linear", "dim": 4},
        },
    }
    with pytest.raises(RecipeError, match=r"learner\.p\.of\.1\.kk"):
        recipe_from_dict(raw)


def test_wrappers_register_learned_parts():
    inner = PrototypeSoftmax(num_classes=3, dim=4)
    assert len(list(Debiased(of=inner).parameters())) == 1
    assert len(list(Union(of=[inner, ClusterKernel()]).parameters())) == 1
    with pytest.raises(TypeError, match="wraps distributions"):
        Union(of=[{"name": "knn"}])


# ----------------------------------------------------------------------------- discrete p


def test_positive_pairs_square_and_rectangular():
    index = torch.tensor([0, 1, 2, 0, 1, 2, 0])  # id 0 has three views
    p = PositivePairs()({api.INDEX: index})
    assert not p.mask.diagonal().any() and p.mask.sum() == 7 * 6
    torch.testing.assert_close(p.prob[0], torch.tensor([0, 0, 0, 0.5, 0, 0, 0.5]))
    torch.testing.assert_close(p.prob[1], torch.tensor([0, 0, 0, 0, 1.0, 0, 0]))
    rect_ctx = {api.INDEX: torch.tensor([0, 1]), api.INDEX_COL: torch.tensor([1, 0, 1])}
    rect = PositivePairs()(rect_ctx)
    torch.testing.assert_close(rect.prob, torch.tensor([[0, 1.0, 0], [0.5, 0, 0.5]]))
    assert rect.mask.all()
    with pytest.raises(ValueError, match="no neighbour"):
        PositivePairs()({api.INDEX: torch.tensor([0, 1, 1])})
    skipped = PositivePairs(on_missing="skip")({api.INDEX: torch.tensor([0, 1, 1])})
    assert skipped.prob[0].sum() == 0 and skipped.prob[1].sum() == 1
    with pytest.raises(KeyError, match="index"):
        PositivePairs()({api.FEATURES: torch.randn(3, 2)})


def test_same_class_normalises_by_classmates():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    p = SameClass()({api.LABELS: labels})
    for i in range(9):
        mates = [j for j in range(9) if j != i and labels[j] == labels[i]]
        expected = torch.zeros(9)
        expected[mates] = 1.0 / len(mates)
        torch.testing.assert_close(p.prob[i], expected)
    rect = SameClass()({api.LABELS: labels[:2], api.LABELS_COL: torch.tensor([0, 1, 0])})
    torch.testing.assert_close(rect.prob, torch.tensor([[0.5, 0, 0.5], [0.5, 0, 0.5]]))


def test_data_label_and_identity():
    y = torch.tensor([2, 0, 1, 2])
    p = DataLabel(num_classes=3)({api.LABELS: y})
    torch.testing.assert_close(p.prob, F.one_hot(y, 3).float())
    assert p.mask.all()
    with pytest.raises(ValueError, match="0..2"):
        DataLabel(num_classes=3)({api.LABELS: torch.tensor([3])})
    with pytest.raises(KeyError, match="num_classes"):
        DataLabel()({api.LABELS: y})
    ident = Identity()({api.FEATURES: torch.randn(4, 2)})
    torch.testing.assert_close(ident.prob, torch.eye(4))
    assert ident.mask.all()


def test_cross_modal_candidates_are_the_other_modality():
    index = torch.tensor([0, 1, 2, 0, 1, 2])
    modality = torch.tensor([0, 0, 0, 1, 1, 1])
    z = torch.randn(6, 3, dtype=DT)
    ctx = {api.FEATURES: z, api.INDEX: index, MODALITY: modality}
    p = CrossModal()(ctx)
    other = modality.unsqueeze(1) != modality.unsqueeze(0)
    assert torch.equal(p.mask, other)
    torch.testing.assert_close(p.prob, torch.eye(6, dtype=DT).roll(3, dims=1))
    q = CrossModalGaussian(metric="euclidean", sigma=0.5)(ctx)
    logits = -torch.cdist(z, z).pow(2) / (2 * 0.25)
    expected = logits.masked_fill(~other, float("-inf")).softmax(1)
    torch.testing.assert_close(q.prob, expected)
    with pytest.raises(KeyError, match="modality"):
        CrossModal()({api.FEATURES: z, api.INDEX: index})


def test_corresponding_gaussian_square_rectangular_and_cosine():
    g = torch.randn(5, 3, dtype=DT)
    p = CorrespondingGaussian(temperature=0.5)({api.EMBEDDING: g, api.INDEX: torch.arange(5)})
    for i in range(5):
        weights = torch.tensor([0.0 if j == i else math.exp(g[i] @ g[j] / 0.5) for j in range(5)])
        torch.testing.assert_close(p.prob[i], weights / weights.sum(), check_dtype=False)
    assert not p.mask.diagonal().any()
    g_col = torch.randn(4, 3, dtype=DT)
    rect = CorrespondingGaussian(metric="cosine")(
        {api.EMBEDDING: g, api.EMBEDDING_COL: g_col, api.INDEX_COL: torch.arange(4)}
    )
    cos = F.normalize(g, dim=1) @ F.normalize(g_col, dim=1).T
    torch.testing.assert_close(rect.prob, cos.softmax(dim=1))
    with pytest.raises(KeyError, match="embedding_col"):
        CorrespondingGaussian()(
            {api.EMBEDDING: g, api.INDEX: torch.arange(5), api.INDEX_COL: torch.arange(4)}
        )


def test_the_generic_learner_passes_the_side_embedding():
    batch = {"index": torch.arange(3), "x": torch.randn(3, 2), "embedding": torch.eye(3)}
    ctx = context_from_batch(batch, torch.randn(3, 2))
    assert torch.equal(ctx[api.EMBEDDING], batch["embedding"])
    assert api.EMBEDDING not in context_from_batch({"index": torch.arange(3)}, torch.randn(3, 2))


# ----------------------------------------------------------------------------- prototype q


def test_prototype_triplet_candidates_are_the_class_and_one_negative():
    f = torch.randn(12, 3, dtype=DT)
    protos = torch.randn(4, 3, dtype=DT)
    y = torch.arange(12) % 4
    ctx = {api.FEATURES: f, api.FEATURES_COL: protos, api.LABELS: y}
    q = PrototypeTriplet(negative="hardest")(ctx)
    d = torch.cdist(f, protos).pow(2)
    for i in range(12):
        wrong = [c for c in range(4) if c != y[i]]
        nearest = min(wrong, key=lambda c: d[i, c].item())
        assert set(q.mask[i].nonzero().flatten().tolist()) == {int(y[i]), nearest}
    random = PrototypeTriplet(negative="random")(ctx)
    assert bool((random.mask.sum(1) == 2).all()) and bool(random.mask[torch.arange(12), y].all())
    # without labels (inference) every class is a candidate: argmax = nearest prototype
    free = PrototypeTriplet()({api.FEATURES: f, api.FEATURES_COL: protos})
    assert free.mask.all() and torch.equal(free.log_prob.argmax(1), d.argmin(1))
    with pytest.raises(ValueError, match="negative"):
        PrototypeTriplet(negative="soft")


def test_harmonic_prototype_sources_and_errors():
    scores = torch.rand(6, 3, dtype=DT) + 0.1
    identity = Harmonic(n=1.0, num_classes=3)({api.FEATURES: scores})
    d = (scores.unsqueeze(1) - torch.eye(3, dtype=DT).unsqueeze(0)).pow(2).sum(2)
    torch.testing.assert_close(identity.prob, (1 / d) / (1 / d).sum(1, keepdim=True))
    learned = Harmonic(num_classes=3, dim=5)
    assert learned.prototypes.shape == (3, 5) and len(list(learned.parameters())) == 1
    with pytest.raises(ValueError, match="n > 1/2"):
        Harmonic(n=0.5, sigma=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        Harmonic(dim=4)
    with pytest.raises(KeyError, match="features_col"):
        Harmonic()({api.FEATURES: scores})


# ----------------------------------------------------------------------------- kNN


def brute_knn(x: torch.Tensor, y: torch.Tensor, k: int, metric: str, square: bool) -> torch.Tensor:
    if metric == "cosine":
        score = F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    else:
        score = -torch.cdist(x, y)
    if square:
        score = score.fill_diagonal_(float("-inf"))
    top = score.topk(k, dim=1).indices
    return torch.zeros(score.shape, dtype=torch.bool).scatter_(1, top, True)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_in_batch_matches_brute_force(metric):
    x = torch.randn(20, 6)
    p = UniformKNN(k=4, metric=metric)({api.FEATURES: x})
    support = brute_knn(x, x, 4, metric, square=True)
    assert torch.equal(p.prob > 0, support)
    torch.testing.assert_close(p.prob[support], torch.full((80,), 0.25))
    assert not p.mask.diagonal().any()
    sym = UniformKNN(k=4, metric=metric, symmetric=True)({api.FEATURES: x})
    assert torch.equal(sym.prob > 0, support | support.T)
    torch.testing.assert_close(sym.prob.sum(1), torch.ones(20))
    y = torch.randn(9, 6)
    rect = UniformKNN(k=3, metric=metric)({api.FEATURES: x, api.FEATURES_COL: y})
    assert torch.equal(rect.prob > 0, brute_knn(x, y, 3, metric, square=False))
    assert rect.mask.all()
    rect_ctx = {api.FEATURES: x, api.FEATURES_COL: y}
    rect_sym = UniformKNN(k=3, metric=metric, symmetric=True)(rect_ctx)
    back = brute_knn(y, x, 3, metric, square=False)
    assert torch.equal(rect_sym.prob > 0, brute_knn(x, y, 3, metric, square=False) | back.T)


def test_knn_with_duplicate_points_never_picks_itself():
    x = torch.randn(6, 3).repeat(2, 1)  # every point has an exact twin
    p = UniformKNN(k=3)({api.FEATURES: x})
    assert (p.prob.diagonal() == 0).all() and ((p.prob > 0).sum(1) == 3).all()
    with pytest.raises(ValueError, match="k=12"):
        UniformKNN(k=12)({api.FEATURES: x})


def test_knn_from_a_global_table():
    table = torch.tensor([[0, 1, 2], [1, 3, 0], [2, 0, 5], [3, 1, 4], [4, 5, 3], [5, 4, 2]])
    index = torch.tensor([0, 1, 3, 0, 5, 4])  # id 0 twice (two views)
    ctx = {api.INDEX: index, api.NEIGHBORS: table}
    p = UniformKNN(k=2)(ctx)  # own id listed first in the table: skipped
    support = torch.zeros(6, 6, dtype=torch.bool)
    for i, sample in enumerate(index.tolist()):
        nbrs = [t for t in table[sample].tolist() if t != sample][:2]
        for j, other in enumerate(index.tolist()):
            support[i, j] = other in nbrs and i != j
    assert torch.equal(p.prob > 0, support)
    torch.testing.assert_close(p.prob.sum(1), torch.ones(6))
    sym = UniformKNN(k=2, symmetric=True)(ctx)
    assert torch.equal(sym.prob > 0, support | support.T)
    with pytest.raises(ValueError, match="no neighbour"):
        UniformKNN(k=1)({**ctx, api.INDEX: torch.tensor([0, 2, 4])})


# ----------------------------------------------------------------------------- graph


def test_graph_kernels():
    w = torch.rand(5, 5, dtype=DT)
    w = w + w.T
    off = w.clone().fill_diagonal_(0.0)
    ctx = {api.GRAPH: w}
    p = GraphKernel()(ctx)
    torch.testing.assert_close(p.prob, off / off.sum(1, keepdim=True))
    degree = off.sum(1)
    p_deg = GraphKernel(degree_normalized=True)(ctx)
    expected = off / degree.unsqueeze(0)
    torch.testing.assert_close(p_deg.prob, expected / expected.sum(1, keepdim=True))
    p_exp = GraphKernel(kernel="exp", degree_normalized=True)(ctx)
    expected = torch.exp(off / degree.unsqueeze(0)).masked_fill(torch.eye(5, dtype=torch.bool), 0)
    torch.testing.assert_close(p_exp.prob, expected / expected.sum(1, keepdim=True))
    sparse = w * (torch.rand(5, 5, dtype=DT) > 0.5)
    sparse = sparse + sparse.T + torch.diag(torch.ones(4, dtype=DT), 1) * 0.1
    sparse = sparse + sparse.T
    p_sparse = GraphKernel()({api.GRAPH: sparse})
    off = sparse.clone().fill_diagonal_(0.0)
    torch.testing.assert_close(p_sparse.prob, off / off.sum(1, keepdim=True))


def test_graph_rbf_from_features():
    x = torch.randn(10, 3, dtype=DT)
    sigma = 0.7
    p = GraphKernel(sigma=sigma)({api.FEATURES: x})
    logits = -torch.cdist(x, x).pow(2) / (2 * sigma**2)
    expected = logits.fill_diagonal_(float("-inf")).softmax(1)
    torch.testing.assert_close(p.prob, expected)
    knn = GraphKernel(sigma=sigma, k=2)({api.FEATURES: x})
    support = brute_knn(x, x, 2, "euclidean", square=True)
    assert torch.equal(knn.prob > 0, support | support.T)
    with pytest.raises(ValueError, match="degree 0"):
        GraphKernel()({api.GRAPH: torch.eye(3)})
