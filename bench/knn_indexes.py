"""The neighbour search of t-SNE's sparse p: exact (flat) beside faiss IVF, IVF-SQ8 and HNSW.

On the first N Fashion-MNIST images (raw pixels, 784-D), k = 90 (t-SNE's 3 × perplexity 30),
squared Euclidean distances, one thread: the wall time of `fw.lib.features.knn` with each
index and its recall@90 against exact search on 1,000 sampled rows
(`fw.lib.features.knn_recall`). Timings are printed, never asserted; records are appended to
``bench/results/knn_indexes.jsonl`` with the command, commit, machine and date.

    python bench/knn_indexes.py --n 20000
    python bench/knn_indexes.py --n 20000 --indexes flat,hnsw --note "quiet machine"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import provenance  # bench/provenance.py

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "knn_indexes.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--k", type=int, default=90)
    parser.add_argument("--indexes", default="flat,ivf,ivf_sq8,hnsw")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    import faiss

    from fw.lib.features import knn, knn_recall
    from fw.recipe import build

    faiss.omp_set_num_threads(1)
    spec = {"name": "fashion_mnist", "split": "all", "limit": args.n, "flatten": True}
    x = np.ascontiguousarray(build("dataset", spec).x.numpy(), dtype=np.float32)
    commit = provenance.commit()
    for index in args.indexes.split(","):
        t0 = time.perf_counter()
        ids, _ = knn(x, args.k, metric="l2", index=index)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        recall = knn_recall(x, ids, metric="l2", sample=1000)
        rec = {
            "n": args.n,
            "k": args.k,
            "index": index,
            "seconds": seconds,
            "recall": recall,
            "command": "python bench/knn_indexes.py " + " ".join(sys.argv[1:]),
            "commit": commit,
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "note": args.note,
        }
        print(f"{index:8s} N={args.n}: {seconds:7.1f} s, recall@{args.k} {recall:.4f}")
        with OUT.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
