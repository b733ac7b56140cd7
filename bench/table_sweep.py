"""Train every runnable cell of the periodic table on digits, beside scikit-learn.

For each runnable cell (its recipe file, or the generic recipe of its p × q) this trains on
scikit-learn's 1797 digits through `fw.train.train` and reports the Hungarian accuracy and NMI
of the learned representation — the argmax cluster for cluster-kernel q, else k-means with ten
clusters on it (the learner's own evaluation) — with the wall time. scikit-learn's KMeans,
SpectralClustering (nearest-neighbour affinity) and TSNE + KMeans run on the same data in the
same process for reference. Cells on the digits' two halves (CLIP and its column) also print
their hold-out cross-modal retrieval top-1, and supervised cells their hold-out classifier
accuracy. The results go to a JSON file and a heatmap PNG of the table (accuracy per cell).
Timings are reported, never asserted.

    python bench/table_sweep.py                   # every cell with its recipe's own steps
    python bench/table_sweep.py --quick           # 100 steps per cell, no TSNE reference
    python bench/table_sweep.py --steps 300 --only K-Means "Normalized Cuts"
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from fw.lib import metrics
from fw.recipe import recipe_from_dict
from fw.registry import get_registry
from fw.train import train
from fw_table.picture import periodic_table
from fw_table.table import (
    Cell,
    build_table,
    cell_recipe_dict,
    find_cell,
    smoke_recipe,
    status,
)

ROOT = Path(__file__).resolve().parents[1]


def sklearn_references(tsne: bool, seed: int = 0) -> list[dict]:
    """KMeans, SpectralClustering and (optionally) TSNE + KMeans on the digits (x / 16)."""
    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.datasets import load_digits
    from sklearn.manifold import TSNE

    bunch = load_digits()
    x, y = bunch.data / 16.0, bunch.target
    runs = [
        ("sklearn KMeans (n_init=10)", lambda: KMeans(10, n_init=10, random_state=seed).fit(x)),
        (
            "sklearn SpectralClustering (kNN)",
            lambda: SpectralClustering(10, affinity="nearest_neighbors", random_state=seed).fit(x),
        ),
    ]
    if tsne:

        def tsne_kmeans():
            emb = TSNE(2, random_state=seed).fit_transform(x)
            return KMeans(10, n_init=10, random_state=seed).fit(emb)

        runs.append(("sklearn TSNE + KMeans", tsne_kmeans))
    out = []
    for name, fit in runs:
        start = time.perf_counter()
        pred = fit().labels_
        seconds = time.perf_counter() - start
        out.append(
            {
                "name": name,
                "accuracy": metrics.hungarian_accuracy(y, pred),
                "nmi": metrics.nmi(y, pred),
                "seconds": seconds,
            }
        )
    return out


def runs_of(table, registry, only: list[str] | None) -> list[tuple[str, list[Cell]]]:
    """Distinct runnable recipes (cells that share a recipe file share its run)."""
    wanted = {id(find_cell(table, name)) for name in only} if only else None
    runs: dict[str, list[Cell]] = {}
    for cell in table.methods():
        if wanted is not None and id(cell) not in wanted:
            continue
        if not status(cell, registry).runnable:
            continue
        key = cell.recipe or f"{cell.p_name},{cell.q_name},{cell.p_params},{cell.q_params}"
        runs.setdefault(key, []).append(cell)
    return list(runs.items())


def score(final: dict[str, float]) -> tuple[float, float, str]:
    """(accuracy, NMI, how): argmax clusters when the learner reports them, else k-means."""
    for prefix, how in (("cluster", "argmax"), ("kmeans", "k-means")):
        if f"{prefix}_hungarian_accuracy" in final:
            return final[f"{prefix}_hungarian_accuracy"], final[f"{prefix}_nmi"], how
    return math.nan, math.nan, "-"


#: Metrics printed after a cell's clustering scores when its learner reports them.
EXTRA = {"holdout_retrieval_top1": "retrieval@1", "holdout_classifier_accuracy": "classifier"}


def extras(final: dict[str, float]) -> dict[str, float]:
    """The `EXTRA` metrics a run reported (retrieval, classifier accuracy), by short name."""
    return {short: final[key] for key, short in EXTRA.items() if key in final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="steps per cell (default: each recipe's own)")
    parser.add_argument(
        "--quick", action="store_true", help="100 steps per cell and no TSNE reference"
    )
    parser.add_argument("--limit", type=int, help="train on the first LIMIT digits only")
    parser.add_argument("--only", nargs="+", metavar="METHOD", help="only these cells")
    parser.add_argument("--out", default="runs/table_sweep", help="directory for the JSON and PNG")
    args = parser.parse_args()
    steps = args.steps if args.steps is not None else (100 if args.quick else None)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    registry = get_registry()
    table = build_table(registry)
    print("scikit-learn references (same data, same process):")
    refs = sklearn_references(tsne=not args.quick)
    for ref in refs:
        print(
            f"  {ref['name']:<36} acc {ref['accuracy']:.4f}  NMI {ref['nmi']:.4f}  "
            f"{ref['seconds']:7.1f}s"
        )

    results = []
    print(f"\n{'cell':<44} {'p × q':<34} {'acc':>6} {'NMI':>6} {'how':>7} {'steps':>6} {'time':>8}")
    for key, cells in runs_of(table, registry, args.only):
        names = " / ".join(c.method for c in cells)
        first = cells[0]
        pq = f"{first.p_family} × {first.q_family}"
        raw = smoke_recipe(
            cell_recipe_dict(first, registry), "digits", steps=steps, limit=args.limit
        )
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as run_dir:
                final = train(recipe_from_dict(raw, registry), run_dir, registry=registry)
            acc, nmi, how = score(final)
            extra = extras(final)
            error = ""
        except Exception as exc:  # a broken cell is reported, the sweep goes on
            acc, nmi, how, error = math.nan, math.nan, "-", f"{type(exc).__name__}: {exc}"
            extra = {}
            traceback.print_exc()
        seconds = time.perf_counter() - start
        n_steps = int(raw["trainer"]["max_steps"])
        print(
            f"{names[:44]:<44} {pq[:34]:<34} {acc:6.3f} {nmi:6.3f} {how:>7} {n_steps:6d} "
            f"{seconds:7.1f}s"
            + "".join(f"  {name} {value:.3f}" for name, value in extra.items())
            + (f"  ERROR {error.splitlines()[0][:60]}" if error else "")
        )
        results.append(
            {
                "methods": [c.method for c in cells],
                "source": key,
                "p_family": first.p_family,
                "q_family": first.q_family,
                "accuracy": acc,
                "nmi": nmi,
                "scored_by": how,
                "steps": n_steps,
                "seconds": seconds,
                "error": error,
                **extra,
            }
        )

    values = {
        m: r["accuracy"] for r in results for m in r["methods"] if not np.isnan(r["accuracy"])
    }
    ref_text = ", ".join(f"{r['name'].replace('sklearn ', '')} {r['accuracy']:.2f}" for r in refs)
    png = periodic_table(
        table,
        out_dir / "table_sweep.png",
        values=values,
        value_label="Hungarian accuracy on digits (argmax cluster, or k-means on the embedding)",
        title=f"I-Con table on digits — scikit-learn: {ref_text}",
    )
    (out_dir / "table_sweep.json").write_text(
        json.dumps({"references": refs, "cells": results}, indent=2) + "\n"
    )
    print(f"\nwrote {png} and {out_dir / 'table_sweep.json'}")


if __name__ == "__main__":
    main()
