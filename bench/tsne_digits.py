"""t-SNE on digits: fw's recipe (exact I-Con t-SNE) beside scikit-learn's exact and Barnes-Hut.

Prints wall time, k-means Hungarian accuracy / NMI / ARI (same scoring for all three:
`fw.lib.evaluation.evaluate_embedding`), trustworthiness and the final KL, then the ratios.
Timings are reported, never asserted.

    python bench/tsne_digits.py               # the full recipe (1000 steps)
    python bench/tsne_digits.py --steps 300   # a quicker look
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from fw.lib.evaluation import evaluate_embedding
from fw.recipe import build, load_recipe

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("kmeans_hungarian_accuracy", "kmeans_nmi", "kmeans_ari", "trustworthiness")


def run_fw(recipe_path: Path, steps: int | None) -> dict[str, float]:
    """Build the recipe and run its learner's steps (the loop of `fw.train`, minus logging).

    Timed like scikit-learn's ``fit_transform``: calibration of p, PCA initialisation and the
    optimisation; evaluation is not timed.
    """
    overrides = [] if steps is None else [f"trainer.max_steps={steps}"]
    recipe = load_recipe(recipe_path, overrides)
    torch.manual_seed(recipe.seed)
    data = build("dataset", recipe.raw["data"])
    learner = build("learner", recipe.raw["learner"])
    start, cpu = time.perf_counter(), time.process_time()
    learner.setup(data)
    optimizer = learner.configure_optimizers()
    batch = data.full_batch()
    setup = time.perf_counter() - start
    for step in range(recipe.trainer.max_steps):
        out = learner(batch, step)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    learner.plot = False
    scores = learner.evaluate(data)
    return {
        **{k: scores[k] for k in SCORES},
        "kl": float(out["loss"].detach()),
        "seconds": wall,
        "cpu_seconds": cpu,
        "setup_seconds": setup,
        "steps": float(recipe.trainer.max_steps),
    }


def run_sklearn(x: np.ndarray, data, method: str, steps: int, seed: int) -> dict[str, float]:
    """scikit-learn's TSNE with its defaults (perplexity 30, PCA init, lr auto)."""
    from sklearn.manifold import TSNE

    model = TSNE(n_components=2, method=method, max_iter=steps, random_state=seed)
    start, cpu = time.perf_counter(), time.process_time()
    emb = model.fit_transform(x)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    scores = evaluate_embedding(torch.from_numpy(emb), data, seed=0)
    return {
        **{k: scores[k] for k in SCORES},
        "kl": float(model.kl_divergence_),
        "seconds": wall,
        "cpu_seconds": cpu,
        "steps": float(model.n_iter_ + 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "tsne_digits.yaml")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="override the recipe's trainer.max_steps (sklearn: at least 250)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = load_recipe(args.recipe)
    steps = args.steps if args.steps is not None else recipe.trainer.max_steps
    data = build("dataset", recipe.raw["data"])
    x = data.x.flatten(1).double().numpy()

    rows = {"fw t-SNE (exact)": run_fw(args.recipe, args.steps)}
    if not args.skip_sklearn:
        sk_steps = max(steps, 250)
        rows["sklearn exact"] = run_sklearn(x, data, "exact", sk_steps, recipe.seed)
        rows["sklearn barnes_hut"] = run_sklearn(x, data, "barnes_hut", sk_steps, recipe.seed)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"digits: {x.shape[0]} points, {x.shape[1]} dims; torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    header = f"{'method':<20}{'steps':>7}{'seconds':>9}{'cpu s':>8}{'acc':>8}{'nmi':>8}{'ari':>8}"
    print(header + f"{'trust':>8}{'KL':>8}")
    for name, r in rows.items():
        print(
            f"{name:<20}{r['steps']:>7.0f}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.1f}"
            f"{r['kmeans_hungarian_accuracy']:>8.4f}{r['kmeans_nmi']:>8.4f}"
            f"{r['kmeans_ari']:>8.4f}{r['trustworthiness']:>8.4f}{r['kl']:>8.4f}"
        )
    ours = rows["fw t-SNE (exact)"]
    print(f"(fw: {ours['setup_seconds']:.2f} s of setup: perplexity calibration, PCA, p cache)")
    for name, r in rows.items():
        if r is ours:
            continue
        diff = {k: ours[k] - r[k] for k in SCORES}
        print(
            f"fw / {name}: time x{ours['seconds'] / r['seconds']:.2f}, "
            f"accuracy {diff['kmeans_hungarian_accuracy']:+.4f}, "
            f"NMI {diff['kmeans_nmi']:+.4f}, trustworthiness {diff['trustworthiness']:+.4f}"
        )


if __name__ == "__main__":
    main()
