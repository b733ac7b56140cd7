"""t-SNE's transform of held-out points: fw's estimator beside openTSNE, on the same split.

Each method embeds the training points, then places the held-out points into that fixed map
(fw: `fw_estimators.TSNE.transform`; openTSNE: ``TSNEEmbedding.transform``, both with openTSNE's
transform defaults: perplexity 5, 25 neighbours, 250 steps). Printed per method and seed: the
accuracy of a 10-nearest-neighbour classifier fitted on the training map and applied to the
placed held-out points, the fit and transform wall times (one thread), and, as the ceiling,
the same classifier in the input space.

    python bench/tsne_transform.py --data digits --seeds 0,1,2
    python bench/tsne_transform.py --data fashion_mnist --train 5000 --test 1000 --seeds 0
    python bench/tsne_transform.py --data fashion_mnist --methods fw --repulsions exact,grid

``--repulsions`` transforms with each of fw's ``transform_repulsion`` values on the same map
(``exact`` sums; ``grid``: `fw_estimators.transform.GridRepulsion`).

Digits: a random 1,347 / 450 split per seed (fw's exact recipe); Fashion-MNIST: the first
``--train`` training images and the first ``--test`` test images, raw pixels (fw's scalable
method, ``method='fft'``). Records are appended to ``bench/results/tsne_transform.jsonl``
with the command, commit, machine and date; timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import provenance  # bench/provenance.py

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "tsne_transform.jsonl"


def load(data: str, n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, ...]:
    """``(x_train, y_train, x_test, y_test)`` float32 rows and labels."""
    from fw.recipe import build

    if data == "digits":
        ds = build("dataset", {"name": "digits"})
        x, y = ds.x.numpy(), ds.labels.numpy()
        order = np.random.default_rng(seed).permutation(len(x))
        tr, te = order[:1347], order[1347:]
        return x[tr], y[tr], x[te], y[te]
    train = build("dataset", {"name": data, "split": "train", "limit": n_train, "flatten": True})
    test = build("dataset", {"name": data, "split": "test", "limit": n_test, "flatten": True})
    return train.x.numpy(), train.labels.numpy(), test.x.numpy(), test.labels.numpy()


def knn_accuracy(train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray):
    """Accuracy of 10-NN fitted on ``train`` and scored on ``test``."""
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(10).fit(train, y_train).score(test, y_test))


def run_fw(
    x: np.ndarray, x_new: np.ndarray, seed: int, method: str, repulsions: list[str]
) -> list[tuple[str, np.ndarray, np.ndarray, float, float]]:
    """One fit, then one transform per ``transform_repulsion`` (same map)."""
    from fw_estimators import TSNE

    settings = {} if method == "exact" else {"max_iter": 750, "method": "fft"}
    est = TSNE(random_state=seed, **settings)
    t0 = time.perf_counter()
    est.fit(x)
    fit_s = time.perf_counter() - t0
    out = []
    for repulsion in repulsions:
        t1 = time.perf_counter()
        z = est.set_params(transform_repulsion=repulsion).transform(x_new)
        out.append((repulsion, est.embedding_, z, fit_s, time.perf_counter() - t1))
    return out


def run_opentsne(x: np.ndarray, x_new: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    from openTSNE import TSNE

    t0 = time.perf_counter()
    emb = TSNE(random_state=seed, n_jobs=1).fit(x)
    t1 = time.perf_counter()
    z = emb.transform(x_new)
    t2 = time.perf_counter()
    return np.asarray(emb), np.asarray(z), t1 - t0, t2 - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits", choices=("digits", "fashion_mnist"))
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--note", default="", help="e.g. 'contended 2-core machine'")
    parser.add_argument("--methods", default="fw,opentsne")
    parser.add_argument(
        "--repulsions", default="auto", help="fw's transform_repulsion values, one map"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    commit = provenance.commit()
    common = {
        "data": args.data,
        "command": "python bench/tsne_transform.py " + " ".join(os.sys.argv[1:]),
        "commit": commit,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "note": args.note,
    }
    method = "exact" if args.data == "digits" else "fft"
    for seed in (int(s) for s in args.seeds.split(",")):
        x, y, x_new, y_new = load(args.data, args.train, args.test, seed)
        ceiling = knn_accuracy(x, y, x_new, y_new)
        runs = []
        for name in args.methods.split(","):
            if name == "fw":
                found = run_fw(x, x_new, seed, method, args.repulsions.split(","))
                runs += [(f"fw[{r}]" if r != "auto" else "fw", *rest) for r, *rest in found]
            else:
                runs.append((name, *run_opentsne(x, x_new, seed)))
        for name, emb, z, fit_s, tr_s in runs:
            rec = {
                **common,
                "method": name,
                "seed": seed,
                "n_train": len(x),
                "n_test": len(x_new),
                "knn_accuracy": knn_accuracy(emb, y, z, y_new),
                "input_space_knn_accuracy": ceiling,
                "fit_s": fit_s,
                "transform_s": tr_s,
            }
            print(
                f"{name:9s} seed {seed}: kNN acc {rec['knn_accuracy']:.4f} (input space "
                f"{ceiling:.4f}); fit {fit_s:.1f} s, transform {tr_s:.1f} s"
            )
            with OUT.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
