"""Conditional kNN benchmark: latency and recall@k against the condition's selectivity.

    python bench/cknn.py                          # 1,000,000 x 128 random-projection vectors
    python bench/cknn.py --n 200000 --queries 10  # smaller
    python bench/cknn.py --real fashion_mnist --real-limit 20000   # + MobileNetV2 features

Data: ``--n`` points of a mixture of ``--clusters`` Gaussians in ``--latent`` dimensions with
random sizes, mapped to ``--dim`` dimensions by a random Gaussian projection (plus a little
noise), L2-normalised (cosine). Two kinds of condition, each at every ``--selectivities``
fraction of the rows:

* ``clustered``: ``label in [...]`` over cluster ids (a condition that follows the geometry,
  like a culture or a medium does for art);
* ``random``: ``bucket in [...]`` over a column drawn uniformly at random (a worst case for
  pruning: the subset is spread over the whole tree).

``--real fashion_mnist`` adds Fashion-MNIST through ImageNet MobileNetV2 (64 px input, pooled
1280-d features, cached by `fw.lib.features`): conditions on the class (10 % each) and on a
random bucket for the rarer ones.

Rows per condition: the conditional tree (Algorithm 1; ``+ scan``: a subtree with at most
``--scan-below`` valid rows is scanned as one block), the batched brute force (one einsum for
all queries of the condition, per-query time = batch time / queries), masked brute force (the
reference), subset brute force, query-then-filter (50 first, x5), reconfigured (subset brute
force below 1 % of the rows), dedicated (one tree per condition; its build time is listed
apart), faiss flat and IVF (``nprobe`` of ``nlist`` lists, approximate) with an
``IDSelectorBitmap``. Latency is the median per query in ms after one untimed warm-up query
(conditions compiled and cached first; that time is listed as ``prepare``). Recall@k is the
overlap with masked brute force; ``exact`` says ids and distances were identical for every
query. ``nodes kept`` is the fraction of tree nodes the compiled condition keeps (the inverted
index; for ``random`` it is the exact set), ``visited`` the nodes the search entered per query.
Timings are measured, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for sub in ("framework", "plugins"):
    sys.path.insert(0, str(ROOT / sub))

import provenance  # noqa: E402  (bench/provenance.py)

from fw_retrieval.methods import (  # noqa: E402
    Corpus,
    Dedicated,
    FaissSelector,
    MaskedBruteForce,
    QueryThenFilter,
    Reconfigured,
    SubsetBruteForce,
    Tree,
    batched_search,
)
from fw_retrieval.predicate import Cmp, Columns  # noqa: E402


def synthetic(args: argparse.Namespace, rng: np.random.Generator):
    """Clustered latent data, randomly projected and L2-normalised; columns label, bucket."""
    sizes = rng.dirichlet(np.full(args.clusters, 0.7))
    label = rng.choice(args.clusters, args.n, p=sizes)
    means = rng.standard_normal((args.clusters, args.latent)) * 3
    z = means[label] + rng.standard_normal((args.n, args.latent)).astype(np.float32)
    proj = rng.standard_normal((args.latent, args.dim)).astype(np.float32) / np.sqrt(args.latent)
    X = z.astype(np.float32) @ proj
    X += 0.05 * rng.standard_normal(X.shape).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    bucket = rng.integers(0, 10_000, args.n)
    return X, {"label": label, "bucket": bucket}


def fashion(args: argparse.Namespace, rng: np.random.Generator):
    """Fashion-MNIST through ImageNet MobileNetV2 (cached); columns label, bucket."""
    from fw.lib.features import cached_features
    from fw.registry import get_registry

    registry = get_registry()
    data = registry.get("dataset", "fashion_mnist").factory(limit=args.real_limit)
    net = registry.get("featurizer", "mobilenet_v2").factory(image_size=64)
    cache = Path(os.path.expanduser("~/.cache/fw/features"))
    X = np.array(cached_features(data, net, cache, progress=False), dtype=np.float32)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    label = data.tensors["label"].numpy()
    return X, {"label": label, "bucket": rng.integers(0, 10_000, len(X))}


def conditions(cols, kind: str, fractions: list[float], rng: np.random.Generator):
    """(name, condition, achieved selectivity) per target fraction."""
    out = []
    n = len(cols["label"])
    for f in fractions:
        if kind == "random":
            values = rng.choice(10_000, max(1, round(f * 10_000)), replace=False)
            node = Cmp("bucket", tuple(int(v) for v in np.sort(values)))
            achieved = np.isin(cols["bucket"], values).mean()
        else:
            counts = np.bincount(cols["label"])
            chosen, total = [], 0
            for c in rng.permutation(len(counts)):
                if 0 < counts[c] and total + counts[c] <= max(f * n, counts[counts > 0].min()):
                    chosen.append(int(c))
                    total += counts[c]
            node = Cmp("label", tuple(sorted(chosen)))
            achieved = total / n
        out.append((f"{kind} {100 * f:g}%", node, float(achieved)))
    return out


def median_ms(times: list[float]) -> float:
    return 1000 * float(np.median(times))


def run_dataset(title: str, X: np.ndarray, cols, conds, args, rng, out: list[str]) -> None:
    n = len(X)
    t0 = time.perf_counter()
    corpus = Corpus(X, Columns(cols), "euclidean")
    tree = Tree(corpus, leaf_size=50, seed=args.seed, scan_below=0)  # Algorithm 1 as written
    t_tree = time.perf_counter() - t0
    scan = Tree(corpus, scan_below=args.scan_below, tree=tree.tree)  # the same tree
    t0 = time.perf_counter()
    flat = FaissSelector(corpus, "flat")
    t_flat = time.perf_counter() - t0
    t0 = time.perf_counter()
    ivf = FaissSelector(corpus, "ivf", nlist=args.nlist, nprobe=args.nprobe, seed=args.seed)
    t_ivf = time.perf_counter() - t0
    qtf = QueryThenFilter(corpus)
    methods = {
        "tree (Alg. 1)": tree,
        f"tree + scan<={args.scan_below}": scan,
        "masked brute force": MaskedBruteForce(corpus),
        "subset brute force": SubsetBruteForce(corpus),
        "query-then-filter": qtf,
        "reconfigured": Reconfigured(corpus, threshold=n // 100),
        "dedicated": Dedicated(corpus, leaf_size=50, seed=args.seed),
        "faiss flat+IDSelector": flat,
        f"faiss IVF{args.nlist}/{args.nprobe}+IDSel": ivf,
    }
    out.append(f"\n### {title}: {n} x {X.shape[1]}\n")
    out.append(
        f"Build: tree {t_tree:.1f} s ({tree.tree.n_nodes} nodes, with the inverted index), "
        f"faiss flat {t_flat:.1f} s, faiss IVF {t_ivf:.1f} s.\n"
    )
    out.append(
        "| condition | rows | method | ms/query | recall@k | exact | prepare ms | nodes kept "
        "(exact) | visited |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(out[-4:]), flush=True)
    queries = X[rng.choice(n, args.queries, replace=False)] + 0.01 * rng.standard_normal(
        (args.queries, X.shape[1])
    ).astype(np.float32)
    for name, node, _ in conds:
        t0 = time.perf_counter()
        mask = corpus.mask(node)
        t_mask = time.perf_counter() - t0
        rows = int(mask.sum())
        ref = [methods["masked brute force"].search(q, args.k, node) for q in queries]
        for label, m in methods.items():
            if label.startswith("dedicated") and rows > args.dedicated_max:
                continue
            prepare = t_mask
            if isinstance(m, Tree):
                t0 = time.perf_counter()
                compiled = m.tree.compile(node)
                prepare = time.perf_counter() - t0 + t_mask
                kept = compiled.nodes.mean()
                kept_exact = compiled.exact_nodes / m.tree.n_nodes
            elif isinstance(m, Dedicated):
                t0 = time.perf_counter()
                m.build(node)
                prepare = time.perf_counter() - t0 + t_mask
            m.search(queries[0], args.k, node)  # warm-up: selectors, caches
            m.stats = {} if isinstance(m, Tree) else None
            times, hits, same = [], 0.0, True
            for q, (r_ids, r_dist) in zip(queries, ref, strict=True):
                t0 = time.perf_counter()
                ids, dist = m.search(q, args.k, node)
                times.append(time.perf_counter() - t0)
                hits += len(set(ids.tolist()) & set(r_ids.tolist())) / max(1, len(r_ids))
                same &= np.array_equal(ids, r_ids) and np.array_equal(dist, r_dist)
            extra = ("", "")
            if isinstance(m, Tree):
                visited = m.stats["visited"] / len(queries) / m.tree.n_nodes
                extra = (f"{kept:.3f} ({kept_exact:.3f})", f"{visited:.4f}")
            row = (
                f"| {name} | {rows} | {label} | {median_ms(times):.2f} | "
                f"{hits / len(queries):.3f} | {'yes' if same else 'NO'} | {1000 * prepare:.1f} | "
                f"{extra[0]} | {extra[1]} |"
            )
            out.append(row)
            print(row, flush=True)
        t0 = time.perf_counter()
        b_ids, b_dist = batched_search(corpus, queries, [node], args.k)
        per = (time.perf_counter() - t0) / len(queries)
        same = all(
            np.array_equal(b_ids[i, 0, : len(r[0])], r[0])
            and np.array_equal(b_dist[i, 0, : len(r[0])], r[1])
            for i, r in enumerate(ref)
        )
        row = f"| {name} | {rows} | batched brute force (torch, CPU) | {1000 * per:.2f} | "
        row += f"{1.0 if same else float('nan'):.3f} | {'yes' if same else 'NO'} | | | |"
        out.append(row)
        print(row, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("-k", type=int, default=8)
    p.add_argument("--selectivities", default="0.5,0.1,0.01,0.001,0.0001")
    p.add_argument("--kinds", default="clustered,random")
    p.add_argument("--scan-below", type=int, default=256)
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--dedicated-max", type=int, default=10**9, help="skip bigger dedicated")
    p.add_argument("--real", choices=("none", "fashion_mnist"), default="none")
    p.add_argument("--real-limit", type=int, default=None)
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--machine", default=platform.node())
    p.add_argument("--out", help="also write the tables (markdown) here")
    args = p.parse_args()
    import faiss

    faiss.omp_set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(args.seed)
    fractions = [float(f) for f in args.selectivities.split(",")]
    commit = provenance.commit()
    out = [
        "# bench/cknn.py",
        "",
        f"Command: `{' '.join(['python', 'bench/cknn.py', *sys.argv[1:]])}` "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})  ",
        f"Commit: {commit}; machine: {args.machine}; date: "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; k = {args.k}, "
        f"{args.queries} queries per condition; 1-min load average at the start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs.",
    ]
    print("\n".join(out), flush=True)
    if not args.skip_synthetic:
        X, cols = synthetic(args, rng)
        conds = []
        for kind in args.kinds.split(","):
            conds += conditions(cols, kind, fractions, rng)
        title = f"random projection of a {args.latent}-d mixture"
        run_dataset(title, X, cols, conds, args, rng, out)
    if args.real == "fashion_mnist":
        X, cols = fashion(args, rng)
        conds = [(f"class {c}", Cmp("label", (c,)), 0.1) for c in (0,)]
        conds.append(("classes 0-4", Cmp("label", tuple(range(5))), 0.5))
        conds += conditions(cols, "random", [f for f in fractions if f < 0.1], rng)
        run_dataset("Fashion-MNIST, MobileNetV2 (64 px) features", X, cols, conds, args, rng, out)
    out.append(f"\n1-min load average at the end: {os.getloadavg()[0]:.1f}.")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(out) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
