"""fw.features: the on-disk feature cache and the faiss kNN table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fw.api import Featurizer
from fw.data import ArrayDataset
from fw.errors import ShapeError
from fw.lib.features import cache_entry, cached_features, knn, load_cached


class CountingLinear(Featurizer):
    """A linear featurizer that counts the rows it saw and can fail after some batches."""

    def __init__(self, in_dim: int = 6, dim: int = 4, seed: int = 0, fail_after: int = -1):
        super().__init__()
        torch.manual_seed(seed)
        self.layer = nn.Linear(in_dim, dim)
        self.dim = dim
        self.rows_seen = 0
        self.batches = 0
        self.fail_after = fail_after
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        if self.batches == self.fail_after:
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-run
        self.batches += 1
        self.rows_seen += x.shape[0]
        self.modes.append(self.training)
        return self.layer(x)


@pytest.fixture
def data() -> ArrayDataset:
    gen = torch.Generator().manual_seed(1)
    return ArrayDataset({"x": torch.randn(50, 6, generator=gen)}, name="toy")


def _expected(f: CountingLinear, data: ArrayDataset) -> np.ndarray:
    with torch.no_grad():
        return f.layer(data.x).numpy()


def test_miss_then_hit_returns_a_readonly_memmap(data, tmp_path):
    f = CountingLinear()
    feats = cached_features(data, f, tmp_path, batch_size=16, progress=False)
    assert isinstance(feats, np.memmap) and feats.dtype == np.float32
    assert feats.shape == (50, 4) and not feats.flags.writeable
    np.testing.assert_allclose(feats, _expected(f, data), rtol=1e-6, atol=1e-6)
    assert f.rows_seen == 50 and f.modes == [False] * 4  # eval mode while computing
    assert f.training  # ...and its mode restored afterwards
    again = cached_features(data, f, tmp_path, batch_size=16, progress=False)
    assert f.rows_seen == 50  # a hit computes nothing
    np.testing.assert_array_equal(again, feats)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".npy")
    side = json.loads((tmp_path / files[0]).read_text())
    assert side["complete"] and side["shape"] == [50, 4] and side["dataset"]["name"] == "toy"


def test_key_changes_with_featurizer_transform_and_data(data, tmp_path):
    path, _ = cache_entry(data, CountingLinear(seed=0), tmp_path)
    assert cache_entry(data, CountingLinear(seed=0), tmp_path)[0] == path  # same weights
    assert cache_entry(data, CountingLinear(seed=1), tmp_path)[0] != path  # other weights
    assert cache_entry(data, CountingLinear(), tmp_path, transform_key="x2")[0] != path
    other = ArrayDataset({"x": data.x.clone()}, name="toy")
    other.tensors["x"][0, 0] += 1.0  # first item differs
    assert cache_entry(other, CountingLinear(), tmp_path)[0] != path
    assert cache_entry(data.subset(torch.arange(49)), CountingLinear(), tmp_path)[0] != path


def test_transform_is_applied_and_needs_a_stable_key(data, tmp_path):
    f = CountingLinear()
    with pytest.raises(ValueError, match="transform_key"):
        cached_features(data, f, tmp_path, transform=lambda x: 2 * x, progress=False)
    feats = cached_features(
        data, f, tmp_path, transform=lambda x: 2 * x, transform_key="double", progress=False
    )
    with torch.no_grad():
        np.testing.assert_allclose(feats, f.layer(2 * data.x).numpy(), rtol=1e-5, atol=1e-6)
    plain = cached_features(data, f, tmp_path, progress=False)
    assert not np.allclose(plain, feats)


def test_interrupt_leaves_no_valid_cache_and_the_next_run_resumes(data, tmp_path):
    f = CountingLinear(fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        cached_features(data, f, tmp_path, batch_size=10, progress=False)
    path, _ = cache_entry(data, f, tmp_path)
    assert load_cached(path) is None and not path.exists()
    assert path.with_name(path.name + ".partial").exists()
    assert json.loads(path.with_suffix(".progress.json").read_text())["rows"] == 20
    f.fail_after, f.rows_seen = -1, 0
    feats = cached_features(data, f, tmp_path, batch_size=10, progress=False)
    assert f.rows_seen == 30  # only the rows the interrupted run had not finished
    np.testing.assert_allclose(feats, _expected(f, data), rtol=1e-6, atol=1e-6)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]
    assert json.loads(path.with_suffix(".json").read_text())["resumed_from"] == 20


def test_a_npy_without_its_sidecar_is_not_a_cache(data, tmp_path):
    f = CountingLinear()
    feats = np.array(cached_features(data, f, tmp_path, progress=False))
    path, _ = cache_entry(data, f, tmp_path)
    path.with_suffix(".json").unlink()
    assert load_cached(path) is None
    again = cached_features(data, f, tmp_path, progress=False)
    assert f.rows_seen == 100
    np.testing.assert_array_equal(again, feats)


def test_dense_outputs_are_refused(tmp_path):
    class Dense(Featurizer):
        dim, dense = 3, True

        def forward(self, x: Tensor) -> Tensor:
            return x.unsqueeze(-1).unsqueeze(-1).expand(-1, -1, 2, 2)

    data = ArrayDataset({"x": torch.randn(4, 3)}, name="d")
    with pytest.raises(ShapeError, match=r"\[B, D\]"):
        cached_features(data, Dense(), tmp_path, progress=False)


# ----------------------------------------------------------------------------- knn


def _brute_force(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        score = x @ x.T
    else:
        score = -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(score, -np.inf)
    idx = np.argsort(-score, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(score, idx, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_flat_knn_equals_brute_force_on_a_memmap(tmp_path, metric):
    x = np.random.default_rng(0).normal(size=(400, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    idx, scores = knn(mm, 7, metric=metric, index="flat", batch=64)
    ref_idx, ref_scores = _brute_force(x, 7, metric)
    assert idx.shape == (400, 7) and idx.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    expected = ref_scores if metric == "cosine" else -ref_scores  # l2: squared distances
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert not (idx == np.arange(400)[:, None]).any()


def _clustered(n: int, d: int, centres: int, seed: int = 0, spread: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * spread
    return (means[rng.integers(centres, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = [len(set(a) & set(e)) for a, e in zip(approx.tolist(), exact.tolist(), strict=True)]
    return float(np.mean(hits)) / exact.shape[1]


def test_ivf_recall_against_exact_on_clustered_data():
    x = _clustered(6000, 32, 60)
    exact, _ = knn(x, 10, index="flat")
    approx, scores = knn(x, 10, index="auto", ivf_threshold=5000)  # auto -> IVF here
    assert _recall(approx, exact) >= 0.9
    assert not (approx == np.arange(len(x))[:, None]).any()
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_knn_checks_its_arguments():
    x = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="k must be"):
        knn(x, 5)
    for name in ["hnsw32", "sq8", "IVF_SQ8", "ivf_pq", ""]:
        with pytest.raises(ValueError, match="index must be"):
            knn(x, 2, index=name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rerank"):
        knn(x, 2, index="ivf_sq8", rerank=0)


# ----------------------------------------------------------------------------- compressed IVF


def _exact_knn(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact k-NN in float64 numpy (self excluded), 1000 query rows at a time."""
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sq = (x**2).sum(1)
    idx = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), 1000):
        e = min(len(x), s + 1000)
        score = x[s:e] @ x.T  # higher is better; l2: the negated squared distance
        if metric == "l2":
            score = 2 * score - sq[s:e, None] - sq[None, :]
        score[np.arange(e - s), np.arange(s, e)] = -np.inf
        top = np.argpartition(-score, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(score, top, 1), axis=1, kind="stable")
        idx[s:e] = np.take_along_axis(top, order, 1)
    return idx, _pair_scores(x, idx, metric)


def _pair_scores(x: np.ndarray, ids: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 score of row i against each of ``ids[i]``, as knn() reports it."""
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if metric == "l2":
        return ((x[:, None, :] - x[ids]) ** 2).sum(-1)
    return np.einsum("id,ijd->ij", x, x[ids])


def _open_memmap(path, x: np.ndarray) -> np.memmap:
    """``x`` written to ``path`` as a .npy memmap, opened again read-only."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=x.shape)
    out[:] = x
    out.flush()
    del out
    return np.load(path, mmap_mode="r")


@pytest.fixture(scope="module")
def clustered_mm(tmp_path_factory) -> np.memmap:
    """5000 x 32 clustered rows (100 centres), memory-mapped read-only."""
    return _open_memmap(tmp_path_factory.mktemp("knn") / "x.npy", _clustered(5000, 32, 100))


@pytest.fixture(scope="module")
def exact_of(clustered_mm):
    """Exact 10-NN (ids, scores) of ``clustered_mm`` per metric, computed once each."""
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(metric: str) -> tuple[np.ndarray, np.ndarray]:
        if metric not in cache:
            cache[metric] = _exact_knn(np.asarray(clustered_mm), 10, metric)
        return cache[metric]

    return get


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_ivf_sq8_recall_and_exact_scores_on_a_memmap(clustered_mm, exact_of, metric):
    x = np.asarray(clustered_mm)
    idx, scores = knn(clustered_mm, 10, metric=metric, index="ivf_sq8")
    assert idx.shape == scores.shape == (5000, 10)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert (idx >= 0).all() and not (idx == np.arange(5000)[:, None]).any()
    ref_idx, ref_scores = exact_of(metric)
    assert _recall(idx, ref_idx) >= 0.95
    # the scores are re-computed from the rows, not the 8-bit codes' approximations
    np.testing.assert_allclose(scores, _pair_scores(x, idx, metric), rtol=1e-5, atol=1e-5)
    step = np.diff(scores, axis=1)
    assert (step >= 0).all() if metric == "l2" else (step <= 0).all()  # best first
    np.testing.assert_allclose(scores[:, 0], ref_scores[:, 0], rtol=1e-5, atol=1e-5)


def test_ivf_sq8_reranking_recovers_the_exact_neighbours(tmp_path):
    # overlapping clusters, every list probed: only the 8-bit codes stand between the index and
    # the exact answer, and re-ranking 4k candidates (not k) by exact scores closes that gap
    mm = _open_memmap(tmp_path / "x.npy", _clustered(5000, 32, 50, spread=0.7))
    ref, _ = _exact_knn(np.asarray(mm), 10, "l2")
    recall = {
        rerank: _recall(knn(mm, 10, "l2", "ivf_sq8", nlist=64, nprobe=64, rerank=rerank)[0], ref)
        for rerank in (1, 4)
    }
    assert recall[4] >= 0.999 and recall[4] > recall[1]


def test_ivf_sq8_marks_what_the_probed_lists_lack():
    x = _clustered(2000, 16, 20)
    # 50 lists of ~40 rows, one probed: fewer rows than the 4 * 10 + 1 candidates
    idx, scores = knn(x, 10, index="ivf_sq8", nlist=50, nprobe=1)
    missing = idx == -1
    assert missing.any() and (~missing).any(axis=1).all()
    assert (scores[missing] == -np.finfo(np.float32).max).all()
    assert (np.diff(missing.astype(int), axis=1) >= 0).all()  # missing ones come last
    found = np.where(missing, 0, idx)
    np.testing.assert_allclose(
        scores[~missing], _pair_scores(x, found, "cosine")[~missing], rtol=1e-5, atol=1e-5
    )


def test_auto_is_flat_below_the_threshold_and_ivf_sq8_from_it(clustered_mm):
    flat = knn(clustered_mm, 5, index="flat")
    sq8 = knn(clustered_mm, 5, index="ivf_sq8")
    for got, want in [
        (knn(clustered_mm, 5, index="auto", ivf_threshold=5001), flat),
        (knn(clustered_mm, 5, index="auto", ivf_threshold=5000), sq8),
    ]:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
