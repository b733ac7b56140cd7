"""The scikit-learn estimators: they are their recipes, take any array type, save as runs,
place new points as openTSNE does, and sit in a Pipeline + GridSearchCV."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

import fw
from fw_estimators import SNE, TSNE, ICon, IConClustering, KMeans
from fw_estimators.base import EstimatorError
from fw_estimators.transform import _kernel_grad, kl_of_new_points, new_point_affinities

from .conftest import RECIPES

FAST = {"max_iter": 120, "early_exaggeration_iter": 60}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def test_parameters_are_the_recipe_keys():
    raw = yaml.safe_load((RECIPES / "tsne_digits.yaml").read_text())
    params = TSNE().get_params()
    assert params["perplexity"] == raw["learner"]["p"]["perplexity"]
    assert params["early_exaggeration"] == raw["learner"]["exaggeration"]
    assert params["max_iter"] == raw["trainer"]["max_steps"]
    assert params["method"] == "exact"  # the tsne learner's own default (not in the file)
    recipe = TSNE(perplexity=7.0, early_exaggeration=4.0, method="fft").recipe({"name": "x"})
    expected = {**raw["learner"]["p"], "perplexity": 7.0, "scale": "sparse", "knn_index": "auto"}
    assert recipe["learner"]["p"] == expected
    assert recipe["learner"]["optimizer"]["early_exaggeration"] == 4.0
    assert recipe["learner"]["repulsion"] == "fft"
    with pytest.raises(TypeError, match="unknown parameters"):
        TSNE(perplexityy=3)
    with pytest.raises(EstimatorError, match="device='tpu'"):
        TSNE(device="tpu").recipe({"name": "x"})


def test_estimator_and_recipe_give_the_same_embedding(digits, tmp_path):
    x, _ = digits
    est = TSNE(random_state=0, **FAST).fit(x[:200])
    result = fw.run(
        RECIPES / "tsne_digits.yaml",
        [
            "data.limit=200",
            "trainer.max_steps=120",
            "learner.exaggeration_steps=60",
            "learner.optimizer.momentum_switch_step=60",
            "trainer.progress=false",
            "learner.plot=false",
        ],
        out=tmp_path / "run",
    )
    with torch.no_grad():
        z = result.learner.infer({"index": torch.arange(200)}).numpy()
    assert np.array_equal(est.embedding_, z)  # bit-identical on CPU


def test_kmeans_estimator_and_recipe_give_the_same_logits(digits, tmp_path):
    x, _ = digits
    est = KMeans(random_state=0, max_iter=20, n_init=2, batch_size=100).fit(x[:200])
    result = fw.run(
        RECIPES / "kmeans_digits.yaml",
        [
            "data.limit=200",
            "trainer.max_steps=20",
            "learner.restart_steps=20",
            "learner.restarts=2",
            "learner.batch_size=100",
            "trainer.progress=false",
        ],
        out=tmp_path / "run",
    )
    with torch.no_grad():
        logits = result.learner.eval().infer({"x": torch.from_numpy(x[:200])}).numpy()
    assert np.array_equal(est._logits(x[:200]), logits)


def test_numpy_pandas_and_torch_inputs_agree(digits):
    x = digits[0][:120]
    settings = {"max_iter": 40, "early_exaggeration_iter": 20, "perplexity": 10.0}
    a = TSNE(random_state=0, **settings).fit_transform(x)
    b = TSNE(random_state=0, **settings).fit_transform(pd.DataFrame(x))
    c = TSNE(random_state=0, **settings).fit_transform(torch.from_numpy(x))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert a.shape == (120, 2) and a.dtype == np.float32


def test_new_point_affinities_match_brute_force():
    rng = np.random.default_rng(0)
    train, new = rng.normal(size=(80, 5)), rng.normal(size=(7, 5))
    ids, p = new_point_affinities(new, train, perplexity=4.0, k=12)
    d = ((new[:, None, :] - train[None]) ** 2).sum(-1)
    assert np.array_equal(np.sort(ids.numpy(), 1), np.sort(np.argsort(d, 1)[:, :12], 1))
    entropy = -(p * p.log()).sum(1)
    assert torch.allclose(entropy, torch.full_like(entropy, math.log(4.0)), atol=1e-4)


@pytest.mark.parametrize("kernel", [("student_t", 1.0), ("student_t", 3.0), ("gaussian", 1.0)])
def test_new_point_gradient_is_that_of_their_kl(kernel):
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 50, (6, 5), generator=gen)
    p = torch.softmax(torch.randn(6, 5, generator=gen, dtype=torch.float64), 1)
    kl_of_new_points(y, ref, ids, p, kernel).sum().backward()
    ours = _kernel_grad(y.detach(), ref, ids, p, kernel, alpha=1.0)
    assert torch.allclose(ours, y.grad, atol=1e-10)


@pytest.fixture(scope="module")
def split_map(digits) -> tuple[TSNE, np.ndarray, np.ndarray]:
    """A t-SNE map of 300 random digits, and 150 held-out ones."""
    order = np.random.default_rng(0).permutation(len(digits[0]))
    train, test = order[:300], order[300:450]
    return TSNE(random_state=0, max_iter=500).fit(digits[0][train]), train, test


def test_transform_places_held_out_digits_like_opentsne(digits, split_map):
    from openTSNE import TSNE as OpenTSNE

    x, y = digits
    est, train, test = split_map
    z = est.set_params(transform_repulsion="exact").transform(x[test])
    ours = KNeighborsClassifier(10).fit(est.embedding_, y[train]).score(z, y[test])
    ref = OpenTSNE(random_state=0, n_jobs=1).fit(x[train])
    theirs = KNeighborsClassifier(10).fit(np.asarray(ref), y[train])
    theirs_acc = theirs.score(np.asarray(ref.transform(x[test])), y[test])
    assert ours >= 0.88 and ours >= theirs_acc - 0.04, (ours, theirs_acc)
    # a held-out point lands by its own class: its nearest training point in the map
    # has its label about as often as its nearest training point in the data
    data_1nn = KNeighborsClassifier(1).fit(x[train], y[train]).score(x[test], y[test])
    assert ours >= data_1nn - 0.08


def test_saved_run_loads_as_estimator_and_as_run(digits, tmp_path):
    x = digits[0][:150]
    est = TSNE(random_state=0, max_iter=60, early_exaggeration_iter=30, run_dir=tmp_path / "a")
    est.fit(x)
    back = TSNE.load(tmp_path / "a")
    assert np.array_equal(back.embedding_, est.embedding_)
    assert back.get_params()["max_iter"] == 60
    learner = fw.load_run(tmp_path / "a")
    with torch.no_grad():
        z = learner.infer({"index": torch.arange(150)}).numpy()
    assert np.array_equal(z, est.embedding_)
    mem = TSNE(random_state=0, max_iter=60, early_exaggeration_iter=30).fit(x)
    mem.save(tmp_path / "b")
    again = TSNE.load(tmp_path / "b")
    assert np.array_equal(again.embedding_, est.embedding_)
    assert np.array_equal(again.transform(x[:5]), est.transform(x[:5]))


def test_parametric_transform_is_the_mapper(digits):
    x = digits[0][:150]
    est = ICon(max_iter=30, random_state=0, mapper={"name": "mlp", "dim": 2, "hidden": [16]})
    z = est.fit_transform(x)
    assert est.parametric_
    assert np.allclose(est.transform(x), z, atol=1e-6)


def test_kmeans_as_icon_predicts_new_points(digits):
    x, y = digits
    est = KMeans(n_clusters=10, max_iter=60, n_init=1, hidden=(64,), random_state=0)
    labels = est.fit_predict(x[:300])
    assert labels.shape == (300,) and labels.min() >= 0 and labels.max() < 10
    assert np.array_equal(est.predict(x[:300]), labels)
    assert est.predict(x[300:310]).shape == (10,)


def test_pipeline_and_grid_search(digits):
    x, y = digits
    pipe = Pipeline(
        [
            ("embed", TSNE(random_state=0, max_iter=80, early_exaggeration_iter=40)),
            ("knn", KNeighborsClassifier(5)),
        ]
    )
    search = GridSearchCV(pipe, {"embed__perplexity": [5.0, 15.0]}, cv=2)
    search.fit(x[:160], y[:160])
    assert search.best_params_["embed__perplexity"] in (5.0, 15.0)
    assert search.best_score_ > 0.7  # held-out folds are placed by transform


def test_grid_repulsion_matches_the_exact_sums():
    from fw_estimators.transform import GridRepulsion

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 2, generator=gen, dtype=torch.float64) * 20
    ref = centres[torch.randint(0, 6, (2000,), generator=gen)]
    ref = ref + torch.randn(2000, 2, generator=gen, dtype=torch.float64) * 3
    y = torch.cat([ref[:200] + 0.3, torch.tensor([[500.0, 0.0]], dtype=torch.float64)])
    diff = y.unsqueeze(1) - ref.unsqueeze(0)  # float64 reference: the sums over all points
    w = 1.0 / (1.0 + diff.pow(2).sum(-1))
    exact = -2.0 * (w * w).unsqueeze(2).mul(diff).sum(1) / w.sum(1, keepdim=True)
    approx = GridRepulsion(ref, h=0.2).repulsion(y)
    miss = (approx - exact).norm(dim=1)
    scale = exact[:-1].norm(dim=1).median()  # small forces near cluster centres: absolute
    assert miss[:-1].median() < 0.02 * scale and miss[:-1].max() < 0.05 * scale  # h = 0.2
    assert miss[-1] < 1e-12 * exact[-1].norm()  # off the grid: the exact sums


def test_grid_transform_places_points_as_the_exact_one(digits, split_map):
    x, y = digits
    est, train, test = split_map
    exact = est.set_params(transform_repulsion="exact").transform(x[test])
    grid = est.set_params(transform_repulsion="grid").transform(x[test])
    assert np.median(np.linalg.norm(exact - grid, axis=1)) < 0.25
    knn = KNeighborsClassifier(10).fit(est.embedding_, y[train])
    assert abs(knn.score(exact, y[test]) - knn.score(grid, y[test])) <= 0.03


#: scikit-learn's checks that need no fit (the full suite, marked slow, is in
#: tests/test_estimators_checks.py)
NO_FIT_CHECKS = (
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_no_attributes_set_in_init",
    "check_estimator_repr",
    "check_estimator_cloneable",
    "check_mixin_order",
)


@pytest.mark.parametrize("check", NO_FIT_CHECKS)
@pytest.mark.parametrize("cls", [TSNE, SNE, ICon, IConClustering, KMeans], ids=lambda c: c.__name__)
def test_sklearn_checks_without_fitting(cls, check):
    import sklearn.utils.estimator_checks as checks

    getattr(checks, check)(cls.__name__, cls())
