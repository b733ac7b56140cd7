"""The debiased InfoNCE clusterer: walks on a kNN table, sparse loss, recipes, chaining."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from fw import api
from fw.lib.icon import debias
from fw.recipe import build, load_recipe, recipe_from_dict
from fw_icon_clustering.walks import (
    KNNWalks,
    knn_table,
    sample_walk_neighbors,
    walk_targets,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ABLATIONS = sorted(RECIPES.glob("icon_clustering_digits*.yaml"))


def _digits(registry, limit=None):
    return build("dataset", {"name": "digits", "limit": limit}, registry)


def _learner(registry, data, **params):
    spec = {"name": "icon_clustering", **params}
    recipe = recipe_from_dict({"data": {"name": "digits"}, "learner": spec}, registry)
    learner = build("learner", recipe.raw["learner"], registry)
    learner.setup(data)
    return learner


def _p_spec(alpha=0.0, steps=1, mode="sum", symmetric=False, weights=None):
    union = {
        "name": "union",
        "of": [
            {"name": "positive_pairs", "on_missing": "skip"},
            {"name": "knn_walks", "steps": steps, "mode": mode, "symmetric": symmetric},
        ],
    }
    if weights is not None:
        union["weights"] = weights
    return {"name": "debiased", "of": union, "alpha": alpha} if alpha else union


def _q_spec(alpha=0.0, eps=0.0):
    q = {"name": "cluster", "eps": eps}
    return {"name": "debiased", "of": q, "alpha": alpha} if alpha else q


# ----------------------------------------------------------------------------- kNN and walks


def test_knn_table_matches_brute_force_and_never_lists_self():
    x = torch.randn(60, 5)
    x[7] = x[3]  # a duplicate: neither may list itself
    table = knn_table(x, 4, "euclidean")
    assert table.shape == (60, 4)
    assert not bool((table == torch.arange(60).unsqueeze(1)).any())
    d = torch.cdist(x, x).fill_diagonal_(float("inf"))
    for i in (0, 11, 42):
        assert set(table[i].tolist()) == set(d[i].topk(4, largest=False).indices.tolist())
    assert 7 in table[3].tolist() and 3 in table[7].tolist()


@pytest.mark.parametrize(("n", "k"), [(150, 1), (1797, 10), (5000, 28), (70000, 392)])
def test_a_knn_share_gives_the_same_share_of_the_data_at_any_size(n, k):
    from fw_icon_clustering.learner import IConClustering

    assert IConClustering(knn_k=0.0056).neighbors_per_point(n) == k
    assert IConClustering(knn_k=10).neighbors_per_point(n) == 10


def test_a_knn_share_sizes_the_table_from_the_data(registry):
    data = _digits(registry, limit=500)
    learner = _learner(registry, data, knn_k=0.02, knn_metric="euclidean")
    assert learner.neighbor_table.shape == (500, 10)
    expected = knn_table(data.tensors["x"].flatten(1).float(), 10, "euclidean")
    assert torch.equal(learner.neighbor_table, expected)


@pytest.mark.parametrize("bad", [0, 1.0, 0.0, -3, 1.5, True])
def test_knn_k_must_be_a_count_or_a_share(bad):
    from fw_icon_clustering.learner import IConClustering

    with pytest.raises(ValueError, match="knn_k must be a count >= 1 or a share"):
        IConClustering(knn_k=bad)


def test_walk_weights_are_the_rows_of_the_propagated_matrix():
    table = torch.tensor([[1, 2], [2, 3], [0, 3], [0, 1]])
    ids = torch.arange(4)
    ends, weights = walk_targets(table, ids, steps=2)
    dense = torch.zeros(4, 4).index_put_(
        (ids.repeat_interleave(ends.shape[1]), ends.flatten()), weights.flatten(), accumulate=True
    )
    adjacency = torch.zeros(4, 4).scatter_(1, table, 0.5)
    expected = (adjacency + adjacency @ adjacency).fill_diagonal_(0.0)
    torch.testing.assert_close(dense, expected)


def test_sampled_neighbours_are_reachable_and_never_the_anchor():
    table = knn_table(torch.randn(80, 3), 3, "cosine")
    ids = torch.arange(80)
    for steps in (1, 2, 3):
        nbr = sample_walk_neighbors(table, ids, 5, steps)
        ends, weights = walk_targets(table, ids, steps)
        reach = [set(e[w > 0].tolist()) for e, w in zip(ends, weights, strict=True)]
        assert not bool((nbr == ids.unsqueeze(1)).any())
        assert all(set(row.tolist()) <= reach[i] for i, row in enumerate(nbr))


def test_knn_walks_one_step_equals_knn_from_the_table(registry):
    table = knn_table(torch.randn(40, 4), 3, "cosine")
    ids = torch.randint(0, 40, (50,))
    ids[:40] = torch.randperm(40)
    ctx = {api.INDEX: ids, api.NEIGHBORS: table}
    ours = KNNWalks(steps=1, mode="uniform")(ctx)
    theirs = build(
        "distribution", {"name": "knn", "k": 3, "source": "table", "on_missing": "skip"}, registry
    )(ctx)
    torch.testing.assert_close(ours.prob[ours.prob.sum(1) > 0], theirs.prob[ours.prob.sum(1) > 0])


# ----------------------------------------------------------------------------- p and q


def test_debiasing_with_alpha_zero_changes_nothing(registry):
    data = _digits(registry, 200)
    batch = {k: v[:48] for k, v in data.full_batch().items()}
    losses = []
    for p_alpha_wrapped, fused in itertools.product((False, True), (False, True)):
        p = _p_spec(steps=2)
        q = _q_spec()
        if p_alpha_wrapped:
            p = {"name": "debiased", "of": p, "alpha": 0.0}
            q = {"name": "debiased", "of": q, "alpha": 0.0}
        learner = _learner(registry, data, p=p, q=q, batch_size=48, fused=fused)
        torch.manual_seed(0)
        learner.heads.load_state_dict(_fixed_heads(learner))
        torch.manual_seed(1)
        losses.append(float(learner.training_step(batch, 0)["loss"].detach()))
    assert losses == pytest.approx([losses[0]] * 4, rel=1e-5)
    nb = api.Neighborhood.from_logits(torch.randn(5, 6), torch.rand(5, 6) > 0.2)
    assert debias(nb, 0.0) is nb


def _fixed_heads(learner):
    gen = torch.Generator().manual_seed(123)
    return {k: torch.randn(v.shape, generator=gen) for k, v in learner.heads.state_dict().items()}


@pytest.mark.parametrize(
    ("views", "neighbors", "walk_steps", "p_steps", "mode", "symmetric", "alpha"),
    [
        (2, 0, 1, 1, "sum", False, 0.0),
        (1, 2, 1, 1, "sum", False, 0.0),
        (2, 2, 1, 1, "uniform", True, 0.0),
        (2, 2, 2, 2, "sum", False, 0.6),
        (3, 1, 3, 3, "sum", True, 0.8),
        (1, 3, 2, 2, "uniform", False, 1.0),
    ],
)
def test_p_rows_stay_normalised(
    registry, views, neighbors, walk_steps, p_steps, mode, symmetric, alpha
):
    data = _digits(registry, 300)
    learner = _learner(
        registry,
        data,
        p=_p_spec(alpha, p_steps, mode, symmetric),
        views=views,
        neighbors=neighbors,
        walk_steps=walk_steps,
        batch_size=32,
    )
    batch = {k: v[:32] for k, v in data.full_batch().items()}
    ids, _, feats = learner._points(batch)
    assert ids.shape == (32 * (views + neighbors),)
    ctx = {api.FEATURES: feats, api.INDEX: ids, api.NEIGHBORS: learner.neighbor_table}
    p = learner.p(ctx)
    sums = p.prob.sum(dim=1)
    inner = learner.p.of(ctx).prob.sum(dim=1) if alpha else sums
    has_mass = inner > 0
    torch.testing.assert_close(sums[has_mass], torch.ones(int(has_mass.sum())))
    assert bool(has_mass[: 32 * views].all()) or views == 1  # every view has a partner
    assert not bool(torch.diagonal(p.prob).any())
    if symmetric or neighbors == 0:
        assert bool(has_mass.all())


def test_loss_of_a_fixed_batch_equals_kl_built_by_hand(registry):
    data = _digits(registry, 300)
    alpha_p, alpha_q = 0.6, 0.7
    for fused in (True, False):
        learner = _learner(
            registry,
            data,
            p=_p_spec(alpha_p, steps=2, symmetric=True, weights=[1.0, 2.0]),
            q=_q_spec(alpha_q),
            views=2,
            neighbors=2,
            walk_steps=2,
            batch_size=16,
            fused=fused,
            input_norm="standardize",
        )
        learner.heads.load_state_dict(_fixed_heads(learner))
        batch = {k: v[:16] for k, v in data.full_batch().items()}
        torch.manual_seed(5)
        ids, head_in, _ = learner._points(batch)
        torch.manual_seed(5)
        loss = float(learner.training_step(batch, 0)["loss"].detach())

        n, table = len(ids), learner.neighbor_table
        # p by hand: uniform over the other views, walk weights of P + P² (made symmetric)
        # on the 3-NN table, mixed 1:2 over the parts a row has, then uniform mixing
        walk = torch.zeros(len(data), len(data))
        walk.scatter_(1, table, 1.0 / 3)
        walk = walk + walk @ walk
        pos = torch.zeros(n, n)
        nbr = torch.zeros(n, n)
        for i, j in itertools.product(range(n), range(n)):
            if i != j:
                pos[i, j] = float(ids[i] == ids[j])
                a, b = int(ids[i]), int(ids[j])
                nbr[i, j] = 0.0 if a == b else float(walk[a, b] + walk[b, a])
        parts = [(pos, 1.0), (nbr, 2.0)]
        num = sum(w * m / m.sum(1, keepdim=True).clamp_min(1e-30) for m, w in parts)
        den = sum(w * (m.sum(1, keepdim=True) > 0).float() for m, w in parts)
        p = num / den
        p_tilde = (1 - alpha_p) * p + alpha_p / (n - 1)
        p_tilde.fill_diagonal_(0.0)
        # q by hand: φ = softmax(head(standardised x)), q(j|i) = Σ_c φ_ic φ_jc / Σ_k φ_kc
        x = (head_in - learner.feat_mean) / learner.feat_std
        phi = learner.heads[0](x).softmax(dim=1).detach().double()
        q = torch.zeros(n, n, dtype=torch.float64)
        for i, j in itertools.product(range(n), range(n)):
            q[i, j] = sum(phi[i, c] * phi[j, c] / phi[:, c].sum() for c in range(phi.shape[1]))
        q_tilde = (1 - alpha_q) * q + alpha_q / n
        p_tilde = p_tilde.double()
        kl = (
            sum(
                float(p_tilde[i, j] * math.log(p_tilde[i, j] / q_tilde[i, j]))
                for i, j in itertools.product(range(n), range(n))
                if p_tilde[i, j] > 0
            )
            / n
        )
        assert loss == pytest.approx(kl, rel=1e-4), f"fused={fused}"


@pytest.mark.parametrize(
    ("alpha_p", "alpha_q", "steps", "mode", "ema", "eps", "sharpness"),
    [
        (0.0, 0.0, 1, "kl", None, 0.0, 1.0),
        (0.6, 0.0, 2, "kl", None, 0.0, 1.0),
        (0.0, 0.7, 2, "ce", 0.9, 0.1, 1.0),
        (0.6, 0.6, 3, "kl", 0.9, 0.0, 1.0),
        (1.0, 0.5, 1, "kl", None, 0.0, 1.0),
        (0.6, 0.6, 1, "kl", None, 0.0, 200.0),  # logits spread over hundreds of nats
    ],
)
def test_fused_loss_and_gradient_equal_the_generic_path(
    registry, alpha_p, alpha_q, steps, mode, ema, eps, sharpness
):
    data = _digits(registry, 300)
    batch = {k: v[:64] for k, v in data.full_batch().items()}
    results = []
    for fused in (True, False):
        learner = _learner(
            registry,
            data,
            p=_p_spec(alpha_p, steps, symmetric=steps > 1, weights=[2.0, 1.0]),
            q=_q_spec(alpha_q, eps),
            batch_size=64,
            mode=mode,
            ema=ema,
            heads=2,
            overcluster=[7],
            fused=fused,
            noise=0.1,
        )
        assert (learner._p_spec is not None) is fused
        heads = _fixed_heads(learner)
        learner.heads.load_state_dict({k: v * sharpness for k, v in heads.items()})
        if learner.teacher is not None:
            learner.teacher.load_state_dict(learner.heads.state_dict())
        torch.manual_seed(2)
        loss = learner.training_step(batch, 1)["loss"]
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in learner.heads.parameters()])
        results.append((float(loss.detach()), grad))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5, abs=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)


def test_debiased_kernel_logs_match_autograd_on_the_dense_formula():
    from fw_icon_clustering.fused import DebiasedKernelLogs

    gen = torch.Generator().manual_seed(0)
    phi = torch.rand(7, 3, generator=gen, dtype=torch.float64).requires_grad_()
    col = torch.rand(7, 3, generator=gen, dtype=torch.float64).requires_grad_()
    rows = torch.tensor([0, 0, 2, 5, 5, 6])
    cols = torch.tensor([1, 4, 2, 0, 0, 3])  # a repeated entry and a diagonal one
    alpha = 0.3
    off, sup = DebiasedKernelLogs.apply(phi, col, rows, cols, alpha)
    log_q = torch.log((1 - alpha) * phi @ col.T + alpha / 7)
    ref_off = torch.stack([sum(log_q[i, j] for j in range(7) if j != i) for i in range(7)])
    torch.testing.assert_close(off, ref_off)
    torch.testing.assert_close(sup, log_q[rows, cols])
    w_off = torch.rand(7, generator=gen, dtype=torch.float64)
    w_sup = torch.rand(6, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad((off * w_off).sum() + (sup * w_sup).sum(), (phi, col))
    ref = torch.autograd.grad(
        (ref_off * w_off).sum() + (log_q[rows, cols] * w_sup).sum(), (phi, col)
    )
    for got, want in zip(grads, ref, strict=True):
        torch.testing.assert_close(got, want)


def test_unrecognised_compositions_take_the_generic_path(registry):
    data = _digits(registry, 100)
    knn = {"name": "knn", "k": 3, "source": "table", "on_missing": "skip"}
    learner = _learner(registry, data, p=knn, q=_q_spec(), batch_size=32)
    assert learner._p_spec is None
    batch = {k: v[:32] for k, v in data.full_batch().items()}
    assert torch.isfinite(learner.training_step(batch, 0)["loss"])


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda p: p.stem)
def test_every_digits_recipe_trains_20_steps_without_nan(path, registry, tmp_path):
    from fw.train import train

    overrides = ["trainer.max_steps=20", "trainer.progress=false", "trainer.log_every=5"]
    raw = load_recipe(path, registry=registry).raw
    if raw["data"]["name"] == "chained":  # a short t-SNE is enough to exercise the chain
        overrides += [
            f"data.cache_dir={tmp_path / 'chain'}",
            "data.overrides=[trainer.max_steps=30, trainer.progress=false]",
        ]
    recipe = load_recipe(path, overrides, registry)
    final = train(recipe, tmp_path / path.stem, registry=registry)
    lines = (tmp_path / path.stem / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 4
    assert all(math.isfinite(v) for k, v in final.items() if k.startswith("final_loss"))
    assert 0.0 <= final["cluster_hungarian_accuracy"] <= 1.0


def test_chained_dataset_is_cached_and_leaves_the_rng_alone(registry, tmp_path):
    spec = {
        "name": "chained",
        "recipe": str(RECIPES / "tsne_digits.yaml"),
        "key": "z",
        "overrides": ["trainer.max_steps=5", "trainer.progress=false", "data.limit=150"],
        "cache_dir": str(tmp_path),
    }
    torch.manual_seed(0)
    first = build("dataset", spec, registry)
    after_first = torch.rand(3)
    torch.manual_seed(0)
    second = build("dataset", spec, registry)  # from the cache
    after_second = torch.rand(3)
    torch.testing.assert_close(first.tensors["z"], second.tensors["z"])
    torch.testing.assert_close(after_first, after_second)
    assert first.tensors["z"].shape == (150, 2)
    assert torch.equal(first.x, _digits(registry, 150).x)
    assert len(list(tmp_path.glob("tsne_digits-*/output-z.pt"))) == 1
    stage = json.loads(next(tmp_path.glob("tsne_digits-*/metrics.json")).read_text())
    assert stage["steps"] == 5 and not any("accuracy" in k for k in stage)  # not evaluated
    # settings that cannot change the output reuse the cache; a real change trains anew
    quiet = {**spec, "overrides": [*spec["overrides"], "trainer.log_every=2", "trainer.threads=1"]}
    build("dataset", quiet, registry)
    assert len(list(tmp_path.glob("tsne_digits-*/output-z.pt"))) == 1
    longer = {**spec, "overrides": ["trainer.max_steps=6", *spec["overrides"][1:]]}
    build("dataset", longer, registry)
    assert len(list(tmp_path.glob("tsne_digits-*/output-z.pt"))) == 2


def test_chained_run_takes_the_outer_seed_unless_pinned(registry, tmp_path):
    spec = {
        "name": "chained",
        "recipe": str(RECIPES / "tsne_digits.yaml"),
        "overrides": ["trainer.max_steps=3", "trainer.progress=false", "data.limit=60"],
        "cache_dir": str(tmp_path),
    }
    for outer in (3, 4):
        torch.manual_seed(outer)
        build("dataset", spec, registry)
    build("dataset", {**spec, "seed": "recipe"}, registry)
    seeds = sorted(
        load_recipe(run / "recipe.yaml", registry=registry).seed
        for run in tmp_path.glob("tsne_digits-*")
    )
    assert seeds == [0, 3, 4]  # tsne_digits.yaml's own seed is 0


def test_chained_data_replaces_the_chained_recipes_dataset(registry, tmp_path):
    spec = {
        "name": "chained",
        "recipe": str(RECIPES / "tsne_digits.yaml"),
        "data": {"name": "digits", "limit": 120},
        "overrides": ["trainer.max_steps=3", "trainer.progress=false"],
        "cache_dir": str(tmp_path),
    }
    data = build("dataset", spec, registry)
    assert data.tensors["z"].shape == (120, 2)
    assert torch.equal(data.x, _digits(registry, 120).x)
    (run,) = tmp_path.glob("tsne_digits-*")
    assert load_recipe(run / "recipe.yaml", registry=registry).raw["data"]["limit"] == 120


def test_default_recipe_runs_on_other_data_with_steps_from_its_size(registry, tmp_path):
    pytest.importorskip("openTSNE")  # its t-SNE stage uses the FFT repulsion
    from fw.train import train

    overrides = [
        "data.data={name: mnist5k, flatten: true, limit: 300}",
        f"data.cache_dir={tmp_path / 'chain'}",
        "data.overrides=[trainer.max_steps=30, trainer.progress=false]",
        "learner.heads=2",
        "trainer.progress=false",
    ]
    recipe = load_recipe(RECIPES / "icon_clustering.yaml", overrides, registry)
    final = train(recipe, tmp_path / "run", registry=registry)
    assert final["steps"] == 101.0  # ceil(85.5 passes · 300 images / 256 per batch)
    assert 0.0 <= final["cluster_hungarian_accuracy"] <= 1.0


@pytest.mark.parametrize("size", ["s", "b", "l"])
def test_imagenet_recipes_name_the_missing_folder(size, registry, tmp_path):
    from fw.errors import DataError
    from fw.train import train

    path = RECIPES / f"icon_clustering_imagenet_dinov2_{size}14.yaml"
    recipe = load_recipe(path, [], registry)
    assert recipe.raw["data"]["of"]["name"] == "image_folder"
    assert recipe.raw["data"]["featurizer"]["name"] == f"dinov2_vit{size}14"
    with pytest.raises(DataError, match="does not exist"):
        train(recipe, tmp_path / "run", registry=registry)
