"""The default clusterer's cost against N and K, beside openTSNE + KMeans on the same data.

Data: a K-component Gaussian mixture in 16 dimensions (unit-variance components, centres drawn
from N(0, 4²·I), equal weights), N points, written to an .npz and read through the `arrays`
dataset. For each (N, K) the recipe `recipes/icon_clustering.yaml` runs with
``learner.clusters=K`` and an empty stage cache, so the total includes its t-SNE stage; the
table gives the stage's seconds, the median clusterer step time over the first and last tenth,
the total wall time and the Hungarian accuracy, with openTSNE (default settings) + scikit-learn
KMeans (n_init=10) on the same data in the same process. ``--profile`` prints where one
whole clusterer step's time goes (cProfile of step 50, cumulative).

    OMP_NUM_THREADS=1 python bench/clusterer_cost.py --sizes 1797 5000 20000 --clusters 10 26
    OMP_NUM_THREADS=1 python bench/clusterer_cost.py --sizes 20000 --clusters 26 --seeds 0 1 2
    OMP_NUM_THREADS=1 python bench/clusterer_cost.py --sizes 5000 --clusters 26 --profile
    OMP_NUM_THREADS=1 python bench/clusterer_cost.py --before --plot curves.png   # flush off too
    python bench/clusterer_cost.py --plot curves.png --json rows.jsonl --plot-only  # every row

``--label`` names the fw rows (e.g. the commit measured), so rows of several invocations, each
appended to one ``--json`` file, are told apart in its table and plot.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from step_cost import durations, step_starts, tenths  # bench/ is the script directory

from fw.lib import metrics
from fw.recipe import load_recipe
from fw.registry import get_registry
from fw.train import train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "icon_clustering.yaml"


def mixture(n: int, k: int, seed: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of a ``k``-component Gaussian mixture in ``dim`` dimensions, with labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 4.0, size=(k, dim))
    labels = rng.integers(0, k, size=n)
    x = centres[labels] + rng.normal(size=(n, dim))
    return x.astype(np.float32), labels.astype(np.int64)


def run_fw(
    path: Path, k: int, seed: int, cache: Path, profile: bool, flush: bool, label: str
) -> dict:
    """The default clusterer on one file: stage seconds, step tenths, total, accuracy."""
    registry = get_registry()
    overrides = [
        f"trainer.flush_denormal={str(flush).lower()}",
        f"data.data={{name: arrays, path: {path}}}",
        f"data.cache_dir={cache}",
        "data.overrides=[trainer.progress=false]",
        f"learner.clusters={k}",
        f"seed={seed}",
        "trainer.progress=false",
        "trainer.threads=1",
    ]
    recipe = load_recipe(RECIPE, overrides, registry)
    learner_cls = registry.get("learner", recipe.raw["learner"]["name"]).factory
    profiler = cProfile.Profile()

    def profile_step_50(step: int, starts: list[float]) -> None:
        if profile and step in (50, 51):  # step 50 whole: forward, backward, optimizer, batch
            (profiler.enable if step == 50 else profiler.disable)()

    begin = time.perf_counter()
    with step_starts(learner_cls, profile_step_50) as starts, tempfile.TemporaryDirectory() as tmp:
        final = train(recipe, Path(tmp) / "run", registry=registry)
    total = time.perf_counter() - begin
    first, _, last = tenths(durations(starts))
    row = {
        "method": ("fw" if flush else "fw, subnormals kept") + (f" ({label})" if label else ""),
        "total_s": total,
        "stage_s": starts[0] - begin if starts else float("nan"),
        "steps": len(starts),
        "first_step_ms": 1e3 * first,
        "last_step_ms": 1e3 * last,
        "accuracy": final.get("cluster_hungarian_accuracy", float("nan")),
    }
    if profile:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
        stats.print_stats(30)
        row["profile"] = text.getvalue()
    return row


def run_opentsne_kmeans(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> dict:
    """openTSNE (default settings) then KMeans (n_init=10) on the embedding."""
    from openTSNE import TSNE
    from sklearn.cluster import KMeans

    begin = time.perf_counter()
    emb = np.asarray(TSNE(n_jobs=1, random_state=seed).fit(x))
    pred = KMeans(k, n_init=10, random_state=seed).fit_predict(emb)
    return {
        "method": "openTSNE + KMeans",
        "total_s": time.perf_counter() - begin,
        "accuracy": metrics.hungarian_accuracy(y, pred),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1797, 5000, 20000])
    parser.add_argument("--clusters", type=int, nargs="+", default=[10, 26])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--no-baseline", action="store_true", help="skip openTSNE + KMeans")
    parser.add_argument("--profile", action="store_true", help="profile one clusterer step")
    parser.add_argument("--json", type=Path, help="append one JSON line per row")
    parser.add_argument(
        "--before", action="store_true", help="also run with trainer.flush_denormal=false"
    )
    parser.add_argument("--plot", type=Path, help="write the step-time curves to this PNG")
    parser.add_argument("--label", default="", help="appended to the fw rows' method name")
    parser.add_argument(
        "--plot-only", action="store_true", help="plot every row of --json and run nothing"
    )
    args = parser.parse_args()
    if args.plot_only:
        plot(read_rows(args.json), args.plot)
        return 0
    torch.set_num_threads(1)
    table: list[dict] = []
    print(
        f"{'N':>7} {'K':>4} {'seed':>4} {'method':<20} {'total_s':>8} {'stage_s':>8} "
        f"{'first_ms':>9} {'last_ms':>9} {'accuracy':>9}"
    )
    for n in args.sizes:
        for k in args.clusters:
            for seed in args.seeds:
                x, y = mixture(n, k, seed)
                rows = []
                for flush in (True, False) if args.before else (True,):
                    with tempfile.TemporaryDirectory() as tmp:  # a fresh stage cache per run
                        path = Path(tmp) / "mixture.npz"
                        np.savez(path, x=x, label=y)
                        cache = Path(tmp) / "cache"
                        rows.append(run_fw(path, k, seed, cache, args.profile, flush, args.label))
                if not args.no_baseline:
                    rows.append(run_opentsne_kmeans(x, y, k, seed))
                for row in rows:
                    row.update(n=n, k=k, seed=seed)
                    table.append(row)
                    profile = row.pop("profile", None)
                    if args.json:
                        with args.json.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
                    print(
                        f"{n:>7} {k:>4} {seed:>4} {row['method']:<20} {row['total_s']:>8.1f} "
                        f"{row.get('stage_s', float('nan')):>8.1f} "
                        f"{row.get('first_step_ms', float('nan')):>9.1f} "
                        f"{row.get('last_step_ms', float('nan')):>9.1f} {row['accuracy']:>9.4f}",
                        flush=True,
                    )
                    if profile:
                        print(profile)
    if args.plot:
        plot(read_rows(args.json) if args.json else table, args.plot)
    return 0


def read_rows(path: Path) -> list[dict]:
    """Every row a ``--json`` file holds (those of earlier invocations included)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def plot(rows: list[dict], path: Path) -> None:
    """Last-tenth step time and total time against N, and step time against K; a line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    def mean_of(key: str, method: str, n: int, k: int) -> float:
        return statistics.mean(
            r[key] for r in rows if (r["method"], r["n"], r["k"]) == (method, n, k) and key in r
        )

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = (
        ("last_step_ms", "n", axes[0], "step time, last tenth (ms)"),
        ("total_s", "n", axes[1], "total time (s)"),
        ("last_step_ms", "k", axes[2], "step time, last tenth (ms)"),
    )
    for key, along, ax, label in panels:
        other = "k" if along == "n" else "n"
        lines = sorted({(r["method"], r[other]) for r in rows if key in r})
        for method, fixed in lines:
            xs = sorted({r[along] for r in rows if (r["method"], r[other]) == (method, fixed)})
            if along == "k" and len(xs) < 2:
                continue  # a K curve needs several K at one N
            pairs = [(x, fixed) if along == "n" else (fixed, x) for x in xs]
            ys = [mean_of(key, method, n, k) for n, k in pairs]
            ax.plot(xs, ys, marker="o", label=f"{method}, {other.upper()}={fixed}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sorted({r[along] for r in rows}))
        low, high = ax.get_ylim()
        subs = (1, 2, 5) if high / low > 10 else (1, 1.2, 1.5, 2, 3, 4, 5, 6, 8)
        ax.yaxis.set_major_locator(LogLocator(subs=subs))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(along.upper())
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
