"""t-SNE at scale: sparse kNN p, estimated log Z (sampled or FFT), against exact references.

References: scikit-learn's Barnes–Hut joint P (``_joint_probabilities_nn``) on the same
neighbours, exact sums over all pairs written out here, and fw's exact dense t-SNE path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.manifold._t_sne import _joint_probabilities_nn
from sklearn.neighbors import NearestNeighbors

from fw import api
from fw.lib.icon import icon_loss
from fw.lib.sparse import SparseNeighborhood
from fw.recipe import build, load_recipe
from fw_sne import compiled
from fw_sne.distributions import Gaussian, ScaleError, StudentT
from fw_sne.learners import SNE, TSNE
from fw_sne.scale import (
    HNSW_FROM,
    attraction,
    fft_log_norm,
    kernel_logits,
    pair_ids,
    resolve_knn_index,
    row_lengths,
    sampled_log_norm,
    sparse_q,
)
from tests.support.training import train_full_batch

ROOT = Path(__file__).resolve().parents[1]
DT = torch.float64


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """300 digits scaled to [0, 1] (float64)."""
    return load_digits().data[:300] / 16.0


def _exact_log_z(z: torch.Tensor, kind: str, param: float, joint: bool) -> torch.Tensor:
    """log Σ_{j≠i} w_ij by a loop over rows (joint: over all ordered pairs)."""
    rows = []
    for i in range(z.shape[0]):
        d = (z[i] - z).pow(2).sum(1)
        logits = kernel_logits(kind, param, d)
        logits = torch.cat([logits[:i], logits[i + 1 :]])
        rows.append(torch.logsumexp(logits, 0))
    out = torch.stack(rows)
    return torch.logsumexp(out, 0).reshape(1) if joint else out


def test_sparse_joint_p_matches_sklearn_barnes_hut_p(digits):
    k = 90
    # integer pixels tie at the k-th neighbour; a tiny jitter makes both kNN sets the same
    x = digits + 1e-4 * np.random.default_rng(0).standard_normal(digits.shape)
    nn = NearestNeighbors(n_neighbors=k).fit(x)
    dist = nn.kneighbors_graph(mode="distance")
    dist.data **= 2  # scikit-learn's Barnes–Hut t-SNE calibrates on squared distances
    ref = _joint_probabilities_nn(dist, 30.0, 0).toarray()
    sp = Gaussian(perplexity=30, normalization="joint", scale="sparse")
    sp = sp({api.FEATURES: torch.tensor(x)})
    assert sp.log_prob.shape[0] == 1 and sp.num_cols == 300 * 300
    ours = sp.to_dense().prob.reshape(300, 300).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-12)  # faiss: float32 distances
    np.testing.assert_allclose(ours.sum(), 1.0, atol=1e-12)


def test_sparse_conditional_rows_reach_the_perplexity(digits):
    sp = Gaussian(perplexity=10, scale="sparse", neighbors=40)({api.FEATURES: torch.tensor(digits)})
    assert sp.log_prob.shape == (300, 40) and sp.num_cols == 300
    prob = sp.prob
    entropy = -(prob * sp.log_prob).sum(1)
    np.testing.assert_allclose(entropy.exp().numpy(), 10.0, rtol=1e-4)
    assert not bool((sp.index == torch.arange(300).unsqueeze(1)).any())  # never i itself


@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("kind,param", [("student_t", 1.0), ("gaussian", 1.0)])
def test_sampled_log_z_is_exact_with_all_negatives_and_unbiased_with_few(kind, param, joint):
    z = torch.randn(60, 2, dtype=DT)
    exact = _exact_log_z(z, kind, param, joint)
    full = sampled_log_norm(z, kind, param, 59, joint)
    torch.testing.assert_close(full, exact)
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([sampled_log_norm(z, kind, param, 8, joint, gen).exp() for _ in range(400)])
    rel = (draws.mean(0) - exact.exp()).abs() / exact.exp()
    assert float(rel.max()) < 0.05  # Ẑ is unbiased: its mean over draws nears Z


def test_fft_log_z_and_gradient_match_exact_sums():
    pytest.importorskip("openTSNE")
    z = (torch.randn(400, 2, dtype=DT) * 3).requires_grad_()
    fft = fft_log_norm(z)
    fft.backward()
    grad_fft = z.grad.clone()
    z.grad = None
    exact = _exact_log_z(z, "student_t", 1.0, joint=True)
    exact.backward()
    assert float(fft.detach()) == pytest.approx(float(exact.detach()), abs=1e-3)
    cos = torch.nn.functional.cosine_similarity(grad_fft.flatten(), z.grad.flatten(), dim=0)
    assert float(cos) > 0.999
    assert float((grad_fft - z.grad).norm() / z.grad.norm()) < 0.05


@pytest.mark.parametrize("kind,param", [("student_t", 1.0), ("student_t", 3.0), ("gaussian", 0.5)])
def test_fused_attraction_equals_autograd_sum(kind, param):
    n, nnz = 50, 400
    z = torch.randn(n, 2, dtype=DT, requires_grad=True)
    rows, cols = torch.randint(0, n, (nnz,)), torch.randint(0, n, (nnz,))
    p = torch.rand(nnz, dtype=DT)
    attraction(z, kind, param, rows, cols, p, 3).backward()
    fused = z.grad.clone()
    z.grad = None
    d = (z[rows] - z[cols]).pow(2).sum(1)
    ref = -(p * kernel_logits(kind, param, d)).sum() / 3
    ref.backward()
    assert float(attraction(z, kind, param, rows, cols, p, 3)) == pytest.approx(float(ref))
    torch.testing.assert_close(fused, z.grad)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kind,param", [("student_t", 1.0), ("student_t", 3.0), ("gaussian", 0.5)])
def test_sorted_pairs_take_the_streaming_path_with_the_same_bits(kind, param, dim, monkeypatch):
    """Row-sorted pairs with int32 ids: the segment sum in torch and numba's loop (its 2-D
    branch and its general one) give the scatter path's bits, and all three follow a float64
    loop written out here."""
    n, nnz = 60, 900
    gen = torch.Generator().manual_seed(3)
    rows = torch.randint(0, n, (nnz,), generator=gen).sort().values
    rows[:5] = 0  # a repeated row, and rows 1.. may be missing (empty segments)
    cols = torch.randint(0, n, (nnz,), generator=gen)
    p = torch.rand(nnz, generator=gen)
    lengths = row_lengths(rows, n)
    assert lengths is not None and int(lengths.sum()) == nnz
    assert row_lengths(rows.flip(0), n) is None  # unsorted: no streaming path

    def run(r, c, ls):
        z = (torch.randn(n, dim, generator=torch.Generator().manual_seed(0)) * 3).requires_grad_()
        value = attraction(z, kind, param, r, c, p, 2, ls)
        value.backward()
        return value.detach(), z.grad

    scatter = run(rows, cols, None)
    paths = {"compiled": run(rows.int(), cols.int(), lengths)} if compiled.has_numba() else {}
    monkeypatch.setattr(compiled, "available", lambda z: False)
    paths["torch"] = run(rows.int(), cols.int(), lengths)
    for value, grad in paths.values():
        assert torch.equal(value, scatter[0]) and torch.equal(grad, scatter[1])
    reference = torch.zeros(n, dim, dtype=DT)  # a hand-written loop over the pairs, float64
    zd = torch.randn(n, dim, generator=torch.Generator().manual_seed(0)).double() * 3
    for e in range(nnz):
        i, j = int(rows[e]), int(cols[e])
        d = float((zd[i] - zd[j]).pow(2).sum())
        h = (param + 1) / param / (1 + d / param) if kind == "student_t" else 2 * param
        reference[i] += p[e].double() * h * (zd[i] - zd[j]) / 2
        reference[j] -= p[e].double() * h * (zd[i] - zd[j]) / 2
    torch.testing.assert_close(scatter[1].double(), reference, rtol=1e-4, atol=1e-6)


def test_auto_neighbours_are_exact_below_the_hnsw_threshold():
    assert resolve_knn_index("auto", HNSW_FROM - 1) == "flat"
    assert resolve_knn_index("auto", HNSW_FROM) == "hnsw"
    assert resolve_knn_index("ivf", 10) == "ivf"


@pytest.mark.parametrize("normalization", ["joint", "conditional"])
def test_sparse_and_sampled_loss_converges_to_exact_loss(digits, normalization):
    """As k → N and m → N the estimated I-Con loss tends to the exact dense one."""
    x = torch.tensor(digits[:120])
    n = x.shape[0]
    z = torch.randn(n, 2, dtype=DT)
    joint = normalization == "joint"
    dense_p = Gaussian(perplexity=10, normalization=normalization)({api.FEATURES: x})
    q_dense = StudentT(normalization=normalization)({api.FEATURES: z})
    exact = float(icon_loss(dense_p, q_dense))
    gen = torch.Generator().manual_seed(0)
    errors = []
    for frac in (0.25, 0.5, 1.0):
        k = m = max(31, int(frac * (n - 1)))
        sp = Gaussian(perplexity=10, normalization=normalization, scale="sparse", neighbors=k)(
            {api.FEATURES: x}
        )
        rows, cols = pair_ids(sp, n)
        losses = [
            float(icon_loss(sp, sparse_q(z, "student_t", 1.0, sp, rows, cols, "sampled", m, gen)))
            for _ in range(30)
        ]
        errors.append(abs(float(np.mean(losses)) - exact))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-9
    assert joint == (sp.log_prob.shape[0] == 1)


def test_sparse_learner_with_every_pair_follows_the_exact_learner():
    """k = m = N − 1: sparse p + sampled repulsion trains exactly like the dense fused path."""
    data = build("dataset", {"name": "digits", "limit": 100})
    exact = train_full_batch(TSNE(exaggeration_steps=5), data, 10)
    sparse_p = Gaussian(perplexity=30, normalization="joint", scale="sparse", neighbors=99)
    sparse = train_full_batch(
        TSNE(p=sparse_p, repulsion="sampled", negatives=99, exaggeration_steps=5), data, 10
    )
    np.testing.assert_allclose(sparse, exact, rtol=1e-4)
    fft = train_full_batch(TSNE(p=sparse_p, repulsion="fft", exaggeration_steps=5), data, 10)
    np.testing.assert_allclose(fft, exact, rtol=2e-2)


def test_learner_step_equals_icon_loss_on_sparse_q(digits):
    """The learner's fused sparse step is `icon_loss` on `sparse_q` (value and gradient)."""
    data = build("dataset", {"name": "digits", "limit": 100})
    sp = Gaussian(perplexity=10, normalization="conditional", scale="sparse")
    q = Gaussian(sigma=0.7)
    learner = SNE(p=sp, q=q, repulsion="sampled", negatives=99)
    learner.setup(data)
    batch = data.full_batch()
    out = learner.training_step(batch, 0)  # step 0: exaggeration 1 in SNE's defaults
    out["loss"].backward()
    fused_grad = learner.mapper.weight.grad.clone()
    learner.mapper.weight.grad = None
    z = learner.mapper(batch["index"])
    p = learner._p_cache
    rows, cols = pair_ids(p, 100)
    ref = icon_loss(p, sparse_q(z, "gaussian", 1 / (2 * 0.7**2), p, rows, cols, "sampled", 99))
    ref.backward()
    assert float(out["loss"]) == pytest.approx(float(ref), rel=1e-5)
    assert float(out["kl"]) == pytest.approx(float(ref), rel=1e-5)
    torch.testing.assert_close(fused_grad, learner.mapper.weight.grad, rtol=1e-4, atol=1e-7)


def test_bad_scale_settings_raise_errors_naming_the_key():
    data = build("dataset", {"name": "digits", "limit": 60})
    with pytest.raises(ScaleError, match="perplexity"):
        Gaussian(sigma=1.0, scale="sparse")
    with pytest.raises(ScaleError, match="neighbors"):
        Gaussian(perplexity=5, neighbors=10)
    with pytest.raises(ScaleError, match="learner.p.scale"):
        TSNE(repulsion="sampled").setup(data)
    sparse = Gaussian(perplexity=5, normalization="joint", scale="sparse")
    with pytest.raises(ScaleError, match="repulsion 'fft'"):
        learner = TSNE(p=sparse, q=Gaussian(sigma=1.0, normalization="joint"), repulsion="fft")
        learner.setup(data)
        learner.training_step(data.full_batch(), 0)
    with pytest.raises(ScaleError, match="normalization"):
        TSNE(p=sparse, q=StudentT(normalization="conditional"), repulsion="sampled").setup(data)
    with pytest.raises(ScaleError, match="'neighbors'"):
        Gaussian(perplexity=30, scale="sparse", neighbors=20)({api.FEATURES: torch.rand(60, 3)})


def test_cli_reports_a_bad_scale_setting_without_traceback(tmp_path, capsys):
    from fw.cli import main

    argv = ["run", str(ROOT / "recipes" / "tsne_digits.yaml"), "--out", str(tmp_path / "r")]
    overrides = ["learner.repulsion=sampled", "data.limit=80", "trainer.progress=false"]
    assert main(argv + overrides) == 2
    err = capsys.readouterr().err
    assert "learner.p.scale" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["tsne_fashion_mnist", "tsne_fashion_mnist_5k"])
def test_scale_recipes_validate_and_build(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    learner = build("learner", recipe.raw["learner"])
    assert isinstance(learner, TSNE) and learner.repulsion == "fft"
    assert learner.p.scale == "sparse"
    assert isinstance(SparseNeighborhood, type)


@pytest.mark.slow
def test_fashion_mnist_5k_recipe_separates_classes(tmp_path):
    pytest.importorskip("openTSNE")
    recipe = load_recipe(ROOT / "recipes" / "tsne_fashion_mnist_5k.yaml")
    try:
        data = build("dataset", recipe.raw["data"])
    except Exception as exc:  # noqa: BLE001 - the dataset package is optional
        pytest.skip(f"Fashion-MNIST not installed: {exc}")
    learner = build("learner", recipe.raw["learner"])
    learner.plot = False
    losses = train_full_batch(learner, data, recipe.trainer.max_steps)
    metrics = learner.evaluate(data)
    assert losses[-1] < losses[300]
    assert metrics["trustworthiness"] >= 0.95
    assert metrics["kmeans_hungarian_accuracy"] >= 0.5
    assert math.isfinite(losses[-1])


@pytest.mark.parametrize("cell,repulsion", [("SNE", "sampled"), ("t-SNE", "fft")])
def test_table_builds_the_sparse_variant_of_kernel_cells(cell, repulsion):
    import yaml

    from fw.recipe import recipe_from_dict
    from fw.registry import get_registry
    from fw_table.table import scaled_recipe

    registry = get_registry()
    raw = yaml.safe_load(scaled_recipe(cell, "sparse", registry))
    raw["learner"]["exaggeration_steps"] = 10  # compare losses without exaggeration
    recipe = recipe_from_dict(raw, registry)
    learner = build("learner", recipe.raw["learner"])
    assert learner.p.scale == "sparse" and learner.repulsion == repulsion
    data = build("dataset", recipe.raw["data"])
    losses = train_full_batch(learner, data, 40)
    assert isinstance(learner._p_cache, SparseNeighborhood)
    assert losses[-1] < losses[10]


def test_table_refuses_a_scale_a_cell_does_not_have():
    from fw.errors import FwError
    from fw.registry import get_registry
    from fw_table.table import scaled_recipe

    with pytest.raises(FwError, match="no 'sparse' variant; cells with one: SNE, t-SNE"):
        scaled_recipe("Dual t-SNE", "sparse", get_registry())


def test_tsne_gd_final_lr_switches_the_rate_after_exaggeration():
    """Hand-computed updates: lr before the switch, final_lr ('auto' = N/4) after it."""
    from fw_sne.optim import tsne_gd

    n = 400
    x = torch.nn.Parameter(torch.zeros(n, 2, dtype=DT))
    opt = tsne_gd(
        [x], lr=10.0, momentum=0.0, final_momentum=0.0, momentum_switch_step=2, final_lr="auto"
    )
    steps = []
    for _ in range(4):
        before = x.detach().clone()
        x.grad = torch.ones_like(x)
        opt.step()
        steps.append(float((x.detach() - before)[0, 0]))
    # gains start at 1: the first update is 0 (same sign) so ×0.8; then the update (< 0)
    # opposes the gradient (> 0) so +0.2 -> 1.0. The switch resets gains and the update.
    assert steps[0] == pytest.approx(-0.8 * 10.0)
    assert steps[1] == pytest.approx(-1.0 * 10.0)
    assert steps[2] == pytest.approx(-0.8 * n / 4)
    assert steps[3] == pytest.approx(-1.0 * n / 4)


def test_sampled_repulsion_resumes_with_the_negatives_it_would_have_drawn(
    registry, tmp_path, interrupt_at, monkeypatch
):
    """Ctrl-C then --resume of a sampled-repulsion run equals the uninterrupted run."""
    from fw.errors import Interrupted
    from fw.train import train

    overrides = [
        "data.limit=150",
        "learner.p.scale=sparse",
        "learner.p.neighbors=40",
        "learner.p.perplexity=10",
        "learner.repulsion=sampled",
        "learner.negatives=16",
        "learner.exaggeration_steps=5",
        "learner.optimizer.momentum_switch_step=5",
        "learner.plot=false",
        "trainer.max_steps=12",
        "trainer.log_every=4",
        "trainer.checkpoint_every=1",
        "trainer.progress=false",
    ]

    def run(out, resume=False):
        recipe = load_recipe(ROOT / "recipes" / "tsne_digits.yaml", overrides, registry)
        train(recipe, out, resume=resume, registry=registry)
        return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]

    full = run(tmp_path / "full")
    interrupt_at(7, TSNE)
    with pytest.raises(Interrupted, match="--resume"):
        run(tmp_path / "cut")
    monkeypatch.undo()
    resumed = run(tmp_path / "cut", resume=True)

    def losses(records):
        return [(r["step"], r["loss"]) for r in records if r["split"] == "train"]

    assert losses(resumed) == losses(full)
    assert len(losses(full)) == 3


def test_symmetry_check_looks_transposed_pairs_up_in_sorted_lists():
    from fw_sne.learners import _is_symmetric

    n = 40
    gen = torch.Generator().manual_seed(0)
    dense = torch.rand(n, n, generator=gen) * (torch.rand(n, n, generator=gen) < 0.2)
    dense = dense + dense.T
    rows, cols = dense.nonzero(as_tuple=True)  # sorted by i·N + j
    prob = dense[rows, cols]
    assert _is_symmetric(rows, cols, prob, n, chunk=7)
    shuffle = torch.randperm(rows.numel(), generator=gen)  # unsorted: the sorting path
    assert _is_symmetric(rows[shuffle], cols[shuffle], prob[shuffle], n)
    bent = prob.clone()
    bent[3] += 1e-6
    assert not _is_symmetric(rows, cols, bent, n, chunk=7)
    assert not _is_symmetric(rows[shuffle], cols[shuffle], bent[shuffle], n)
    one_way = (rows != 0) | (cols < rows)  # drop row 0's pairs, keep their transposes
    assert not _is_symmetric(rows[one_way], cols[one_way], prob[one_way], n, chunk=7)
