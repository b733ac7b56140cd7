"""The kmeans plugin: cluster kernel implementations, the clustering learner, its featurizers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fw import api
from fw.data import ArrayDataset
from fw.lib.icon import icon_loss
from fw.recipe import build, load_recipe, recipe_from_dict
from fw.train import train
from fw_common.mappers import OrthonormalProjection
from fw_kmeans.distributions import DEGREE, ClusterKernel, log_matmul_exp
from fw_kmeans.featurizers import SpectralEmbedding
from fw_kmeans.learners import ClusterLearner

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64


# ----------------------------------------------------------------------------- kernel


@pytest.mark.parametrize("by", ["cluster", "point"])
@pytest.mark.parametrize("degree", [False, True])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_matmul_and_logsumexp_kernels_agree(by, degree, exclude_self):
    n, k = 9, 4
    logits = (3 * torch.randn(n, k, dtype=DT)).requires_grad_()
    graph = torch.rand(n, n, dtype=DT)
    graph = graph + graph.T
    ctx = {api.FEATURES: logits, api.GRAPH: graph}
    weights = torch.randn(n, n, dtype=DT)
    out = {}
    for impl in ("matmul", "logsumexp"):
        q = ClusterKernel(by=by, degree_weighted=degree, exclude_self=exclude_self, impl=impl)(ctx)
        (grad,) = torch.autograd.grad((q.prob * weights).sum(), logits)
        out[impl] = (q.log_prob, grad)
    torch.testing.assert_close(out["matmul"][0], out["logsumexp"][0])
    torch.testing.assert_close(out["matmul"][1], out["logsumexp"][1])


def test_degree_key_equals_graph_row_sums():
    n, k = 8, 3
    logits = torch.randn(n, k, dtype=DT)
    graph = torch.rand(n, n, dtype=DT)
    kernel = ClusterKernel(degree_weighted=True)
    from_graph = kernel({api.FEATURES: logits, api.GRAPH: graph})
    from_degree = kernel({api.FEATURES: logits, DEGREE: graph.sum(1)})
    torch.testing.assert_close(from_graph.log_prob, from_degree.log_prob)
    with pytest.raises(KeyError, match="degree"):
        kernel({api.FEATURES: logits})
    with pytest.raises(ValueError, match="degree 0"):
        kernel({api.FEATURES: logits, DEGREE: torch.zeros(n, dtype=DT)})


def test_log_matmul_exp_is_finite_for_confident_logits():
    a = torch.tensor([[0.0, -600.0], [-600.0, 0.0]], dtype=torch.float32)
    out = log_matmul_exp(a, a)
    assert torch.isfinite(out).all()
    assert out[0, 1].item() == pytest.approx(math.log(2) - 600.0, abs=1e-3)


# ----------------------------------------------------------------------------- learner


def _blobs(n_per: int = 40, seed: int = 0) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    x = torch.cat([c + torch.randn(n_per, 2, generator=gen) for c in centres])
    y = torch.arange(3).repeat_interleave(n_per)
    return ArrayDataset({"x": x, "label": y}, name="blobs", classes=["a", "b", "c"])


def _learner(registry, **overrides) -> ClusterLearner:
    spec = {
        "name": "clusterer",
        "p": {"name": "gaussian", "sigma": 1.0},
        "q": {"name": "cluster"},
        "mapper": {"name": "embedding", "dim": 3, "init": "random", "init_std": 0.01},
        "batch_size": 30,
        **overrides,
    }
    raw = recipe_from_dict({"data": {"name": "digits"}, "learner": spec}, registry).raw
    return build("learner", raw["learner"], registry)


def test_dataset_scope_p_is_the_renormalised_restriction(registry):
    data = _blobs()
    learner = _learner(registry, p_scope="dataset")
    learner.setup(data)
    full = learner._full_p.prob
    ids = torch.tensor([3, 50, 7, 100, 81])
    p = learner.batch_p({"index": ids, "x": data.x[ids]})
    sub = full[ids][:, ids]
    torch.testing.assert_close(p.prob, (sub / sub.sum(1, keepdim=True)).float())
    # the whole set in order is the cached p itself
    every = learner.batch_p(data.full_batch())
    torch.testing.assert_close(every.prob, full)


def test_rows_without_neighbours_in_the_batch_add_nothing(registry):
    data = _blobs()
    learner = _learner(registry, p={"name": "knn", "k": 2}, p_scope="dataset")
    learner.setup(data)
    ids = torch.tensor([0, 45, 90])  # one point per blob: no kNN pair among them
    batch = {"index": ids, "x": data.x[ids]}
    p = learner.batch_p(batch)
    assert torch.isneginf(p.log_prob).all()
    loss = icon_loss(p, learner.learned(batch))
    assert loss.item() == 0.0


def test_degrees_need_a_dataset_p(registry):
    with pytest.raises(Exception, match="p_scope: dataset"):
        _learner(registry, q={"name": "cluster", "degree_weighted": True}, degrees="p")


def test_restarts_keep_the_lowest_loss_and_checkpoint_the_choice(registry):
    data = _blobs()
    learner = _learner(registry, restarts=3, restart_steps=5, p_scope="dataset")
    learner.setup(data)
    assert len({float(m.weight.detach().sum()) for m in learner.candidates}) == 3
    opt = learner.configure_optimizers()
    batch = data.full_batch()
    for step in range(5):
        out = learner(batch, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert int(learner.chosen) == -1
    learner(batch, 5)  # selection happens when step restart_steps starts
    losses = learner.restart_losses
    assert int(learner.chosen) == int(torch.argmin(losses))
    assert learner.state_dict()["chosen"].item() == int(learner.chosen)
    # after selection only the kept mapper receives gradients
    opt.zero_grad(set_to_none=True)
    learner(batch, 6)["loss"].backward()
    for r, mapper in enumerate(learner.candidates):
        assert (mapper.weight.grad is not None) == (r == int(learner.chosen))


def test_clusterer_separates_blobs_forward_and_reverse(registry):
    blobs = _blobs()
    for direction, q in (
        ("forward", {"name": "cluster"}),
        ("reverse", {"name": "cluster", "exclude_self": True}),
    ):
        learner = _learner(
            registry,
            q=q,
            direction=direction,
            p_scope="dataset",
            optimizer={"name": "adam", "lr": 0.1},
        )
        learner.setup(blobs)
        opt = learner.configure_optimizers()
        gen = torch.Generator().manual_seed(0)
        for step in range(150):
            ids = torch.randperm(len(blobs), generator=gen)[:30]
            out = learner({k: v[ids] for k, v in blobs.full_batch().items()}, step)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        metrics = learner.evaluate(blobs)
        assert metrics["cluster_hungarian_accuracy"] > 0.95, direction


def test_ncut_recipe_runs_with_degrees_from_p(registry, tmp_path):
    recipe = load_recipe(
        ROOT / "recipes" / "ncut_digits.yaml",
        [
            "data.limit=300",
            "learner.batch_size=150",
            "learner.restarts=2",
            "learner.restart_steps=5",
            "trainer.max_steps=10",
            "trainer.progress=false",
        ],
        registry,
    )
    final = train(recipe, tmp_path / "run", registry=registry)
    assert math.isfinite(final["final_loss"])
    assert 0.0 <= final["cluster_hungarian_accuracy"] <= 1.0
    assert final["restart_kept"] in (0.0, 1.0)


# ----------------------------------------------------------------------------- featurizers


def test_spectral_embedding_matches_scikit_learn():
    from sklearn.manifold import spectral_embedding
    from sklearn.neighbors import kneighbors_graph

    data = _blobs()
    feat = SpectralEmbedding(n_components=3, n_neighbors=8)
    feat.setup(data)
    conn = kneighbors_graph(data.x.double().numpy(), n_neighbors=8, include_self=True)
    ref = spectral_embedding(
        0.5 * (conn + conn.T), n_components=3, random_state=0, drop_first=False
    )
    ids = torch.tensor([5, 0, 77])
    np.testing.assert_allclose(feat(ids).numpy(), ref[[5, 0, 77]], rtol=1e-4, atol=1e-5)
    unit = SpectralEmbedding(n_components=3, n_neighbors=8, normalize_rows=True)
    unit.setup(data)
    torch.testing.assert_close(unit(ids).norm(dim=1), torch.ones(3))


def test_pca_recipe_finds_the_principal_subspace(registry):
    raw = load_recipe(ROOT / "recipes" / "pca_digits.yaml", [], registry).raw
    data = build("dataset", raw["data"], registry)
    learner = build("learner", raw["learner"], registry)
    learner.setup(data)
    opt = learner.configure_optimizers()
    batch = data.full_batch()
    for step in range(raw["trainer"]["max_steps"]):
        out = learner(batch, step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    learner_out = {"learner": learner}
    mapper = learner_out["learner"].mapper
    assert isinstance(mapper, OrthonormalProjection)
    w = mapper.layer.weight.detach().double()
    torch.testing.assert_close(w @ w.T, torch.eye(2, dtype=DT), atol=1e-5, rtol=0)
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    overlap = np.linalg.svd(w.numpy() @ vt[:2].T, compute_uv=False)  # cosines of angles
    assert overlap.min() > 0.98


# ----------------------------------------------------------------------------- targets


@pytest.mark.slow
@pytest.mark.parametrize(
    ("recipe", "reference"),
    [("kmeans_digits.yaml", "kmeans"), ("spectral_digits.yaml", "spectral")],
)
def test_clustering_recipes_beat_scikit_learn(registry, tmp_path, recipe, reference):
    """The digits recipes reach scikit-learn's KMeans / SpectralClustering accuracy."""
    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.datasets import load_digits

    from fw.lib import metrics

    bunch = load_digits()
    x, y = bunch.data / 16.0, bunch.target
    if reference == "kmeans":
        pred = KMeans(n_clusters=10, n_init=10, random_state=0).fit_predict(x)
    else:
        pred = SpectralClustering(
            n_clusters=10, affinity="nearest_neighbors", random_state=0
        ).fit_predict(x)
    baseline = metrics.hungarian_accuracy(y, pred)
    final = train(
        load_recipe(ROOT / "recipes" / recipe, ["trainer.progress=false"], registry),
        tmp_path / "run",
        registry=registry,
    )
    assert final["cluster_hungarian_accuracy"] >= baseline


def test_resume_after_the_restart_choice_equals_an_uninterrupted_run(registry, tmp_path):
    common = [
        "data.limit=300",
        "learner.restarts=2",
        "learner.restart_steps=4",
        "trainer.progress=false",
        "trainer.log_every=2",
    ]
    path = ROOT / "recipes" / "kmeans_digits.yaml"
    full = train(
        load_recipe(path, [*common, "trainer.max_steps=8"], registry),
        tmp_path / "full",
        registry=registry,
    )
    train(
        load_recipe(path, [*common, "trainer.max_steps=6"], registry),
        tmp_path / "cut",
        registry=registry,
    )
    resumed = train(
        load_recipe(path, [*common, "trainer.max_steps=8"], registry),
        tmp_path / "cut",
        resume=True,
        registry=registry,
    )
    full.pop("train_seconds")
    resumed.pop("train_seconds")
    assert resumed == pytest.approx(full)
    assert math.isfinite(full["restart_loss_kept"])
