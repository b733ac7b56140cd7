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
from fw.features import cache_entry, cached_features, knn, load_cached


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


def _clustered(n: int, d: int, centres: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(centres, d)) * 2
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
    with pytest.raises(ValueError, match="index"):
        knn(x, 2, index="hnsw")  # type: ignore[arg-type]
