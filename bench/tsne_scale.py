"""t-SNE at scale: fw (sparse p, FFT repulsion) beside scikit-learn Barnes–Hut, openTSNE, TorchDR.

For N ∈ {1797 (digits), 10000, 70000 (Fashion-MNIST, raw pixels)}, and any N above 100,000
(a generated 10-component Gaussian mixture in 50 dimensions, e.g. ``--sizes 1000000``), each
method runs in its own process (so its peak RSS is its own) on the same data with the same
settings: perplexity 30, PCA initialisation, early exaggeration 12 for 250 steps, 750 steps in
all, one thread. Printed per (N, method), mean ± std over the seeds:

- wall time of the fit (affinities + optimisation; loading the data and scoring not included);
- peak RSS of the process (VmHWM, so it includes the Python runtime and the data);
- KL(P || Q) of the final embedding, all methods scored with the same P (fw's sparse joint p on
  the k = 90 exact neighbours) and the exact normaliser Z = Σ_{i≠j} (1 + d_ij)⁻¹ (summed in
  blocks, O(N) memory); not computed for the mixture (NaN), where both are out of reach;
- trustworthiness (scikit-learn, 5 neighbours) on a fixed 5,000-point subsample;
- k-means (10 clusters, 10 restarts) Hungarian accuracy against the labels.

At N = 1797 fw also runs its exact dense recipe (``tsne_digits.yaml``). Timings are printed,
never asserted. The fits append to a JSONL file so an interrupted run keeps what it measured:

    python bench/tsne_scale.py                                              # everything
    python bench/tsne_scale.py --sizes 1797 --methods fw,opentsne --seeds 0,1,2
    python bench/tsne_scale.py --table-only                                 # print the file
    python bench/tsne_scale.py --sizes 70000 --methods opentsne_exact_knn   # only when asked
    python bench/tsne_scale.py --sizes 70000 --methods fw --set learner.p.knn_index=ivf

``--set`` overrides fw's scale recipe (a variant: its records carry ``variant`` and the table
prints it as a row of its own).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import provenance  # bench/provenance.py
import torch

ROOT = Path(__file__).resolve().parents[1]
STEPS, EXAGGERATION_STEPS, PERPLEXITY = 750, 250, 30.0
METHODS = ("fw_exact", "fw", "sklearn_bh", "opentsne", "torchdr", "opentsne_exact_knn")
#: run only when asked: openTSNE with exact neighbours (its default at N ≥ 1000 is Annoy)
EXTRA_METHODS = ("opentsne_exact_knn",)
SUBSAMPLE = 5000


#: sizes above this are a generated mixture (no image set that large ships offline)
MIXTURE_FROM = 100_000
MIXTURE_DIM, MIXTURE_CLASSES = 50, 10


def mixture_file(n: int) -> Path:
    """``n`` points of a 10-component Gaussian mixture in 50 dimensions, as an .npz (cached).

    Centres from N(0, 4²·I), unit-variance components, equal weights, generator seed 0.
    """
    path = ROOT / "bench" / "results" / f"tsne_scale-mixture-{n}.npz"
    if not path.is_file():
        rng = np.random.default_rng(0)
        centres = rng.normal(0.0, 4.0, size=(MIXTURE_CLASSES, MIXTURE_DIM))
        labels = rng.integers(0, MIXTURE_CLASSES, size=n)
        x = np.empty((n, MIXTURE_DIM), dtype=np.float32)
        for lo in range(0, n, 100_000):  # float64 noise a block at a time
            hi = min(n, lo + 100_000)
            x[lo:hi] = centres[labels[lo:hi]] + rng.normal(size=(hi - lo, MIXTURE_DIM))
        np.savez(path, x=x, label=labels)
    return path


def load(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[n, D]`` float32 and labels: digits (n = 1797), the first n Fashion-MNIST images,
    or above `MIXTURE_FROM` points the generated mixture."""
    from fw.recipe import build

    spec = {"name": "digits"} if n == 1797 else {"name": "fashion_mnist", "split": "all"}
    if n > MIXTURE_FROM:
        spec = {"name": "arrays", "path": str(mixture_file(n))}
    elif n not in (1797, 70000):
        spec = {"name": "fashion_mnist", "split": "train", "limit": n}
    data = build("dataset", spec)
    return data.x.flatten(1).float().numpy(), data.labels.numpy()


def recipe_overrides(n: int) -> tuple[Path, list[str]]:
    """fw's scale recipe pointed at the data of size n."""
    path = ROOT / "recipes" / "tsne_fashion_mnist.yaml"
    if n == 1797:
        return path, ["data={name: digits}"]
    if n == 70000:
        return path, []
    if n > MIXTURE_FROM:
        return path, [f"data={{name: arrays, path: {mixture_file(n)}}}"]
    return path, ["data.split=train", f"data.limit={n}"]


def fit_fw(n: int, seed: int, exact: bool, extra: list[str]) -> tuple[np.ndarray, float, dict]:
    """Build the recipe and run its learner's steps (fw.train's loop minus logging); also
    the recall of approximate neighbours, if any."""
    from fw.recipe import build, load_recipe

    if exact:
        recipe = load_recipe(ROOT / "recipes" / "tsne_digits.yaml", [f"seed={seed}"])
    else:
        path, over = recipe_overrides(n)
        recipe = load_recipe(path, [*over, *extra, f"seed={seed}", f"learner.mapper.seed={seed}"])
    torch.manual_seed(recipe.seed)
    data = build("dataset", recipe.raw["data"])
    learner = build("learner", recipe.raw["learner"])
    start = time.perf_counter()
    learner.setup(data)
    optimizer = learner.configure_optimizers()
    batch = data.full_batch()
    for step in range(recipe.trainer.max_steps):
        out = learner(batch, step)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
    wall = time.perf_counter() - start
    with torch.no_grad():
        emb = learner.infer(batch).double().numpy()
    return emb, wall, dict(getattr(learner.p, "knn_report", {}))


def fit_other(method: str, x: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """scikit-learn Barnes–Hut, openTSNE (FFT) or TorchDR (InfoTSNE) with the shared settings."""
    start = time.perf_counter()
    if method == "sklearn_bh":
        from sklearn.manifold import TSNE

        emb = TSNE(
            perplexity=PERPLEXITY,
            init="pca",
            learning_rate="auto",
            max_iter=STEPS,
            method="barnes_hut",
            n_jobs=1,
            random_state=seed,
        ).fit_transform(x)
    elif method in ("opentsne", "opentsne_exact_knn"):
        from openTSNE import TSNE

        emb = np.asarray(
            TSNE(
                perplexity=PERPLEXITY,
                n_iter=STEPS - EXAGGERATION_STEPS,
                early_exaggeration_iter=EXAGGERATION_STEPS,
                initialization="pca",
                n_jobs=1,
                random_state=seed,
                negative_gradient_method="fft",
                neighbors="exact" if method == "opentsne_exact_knn" else "auto",
            ).fit(x)
        )
    elif method == "torchdr":
        import torchdr

        emb = torchdr.InfoTSNE(
            perplexity=PERPLEXITY,
            max_iter=STEPS,
            device="cpu",
            random_state=seed,
            early_exaggeration_iter=EXAGGERATION_STEPS,
        ).fit_transform(torch.from_numpy(x))
        emb = emb.detach().numpy() if torch.is_tensor(emb) else np.asarray(emb)
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.asarray(emb, dtype=np.float64), time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM), which, unlike ``ru_maxrss``, restarts at ``exec``.

    ``ru_maxrss`` survives fork + exec on Linux, so a child would report its parent's peak
    (the parent holds the data and the scoring buffers) whenever that is the larger.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(method: str, n: int, seed: int, out: Path, extra: list[str]) -> None:
    """Fit one method in this process and write its embedding, time and peak RSS."""
    torch.set_num_threads(1)
    if method in ("fw", "fw_exact"):  # the recipe loads its own data: one copy, as for the others
        emb, wall, report = fit_fw(n, seed, exact=method == "fw_exact", extra=extra)
    else:
        (emb, wall), report = fit_other(method, load(n)[0], seed), {}
    np.save(out, emb)
    rss_mib = peak_rss_mib()
    out.with_suffix(".json").write_text(
        json.dumps({"wall_s": wall, "peak_rss_mib": rss_mib, **report})
    )


@torch.no_grad()
def scoring_p(x: np.ndarray, cache: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fw's sparse joint P as (rows, cols, p) pair lists, computed once per N and kept on disk."""
    from fw_sne.distributions import Gaussian
    from fw_sne.scale import pair_ids

    if cache.is_file():
        return torch.load(cache)
    n = x.shape[0]
    gaussian = Gaussian(
        perplexity=PERPLEXITY, normalization="joint", scale="sparse", knn_index="flat"
    )
    p = gaussian({"features": torch.from_numpy(x)})  # exact neighbours: one P scores every fit
    rows, cols = pair_ids(p, n)
    out = (rows.reshape(-1), cols.reshape(-1), p.log_prob.double().reshape(-1).exp())
    torch.save(out, cache)
    return out


@torch.no_grad()
def exact_kl(p: tuple[torch.Tensor, torch.Tensor, torch.Tensor], emb: np.ndarray) -> float:
    """KL(P || Q) with fw's sparse joint P and Z summed exactly over all pairs, in blocks."""
    rows, cols, prob = p
    z = torch.from_numpy(emb)
    n = z.shape[0]
    d = (z[rows] - z[cols]).pow(2).sum(1)
    attract = float((prob * torch.log1p(d)).sum())
    total = 0.0
    sq = z.pow(2).sum(1)
    for lo in range(0, n, 512):
        blk = z[lo : lo + 512]
        dist = (sq[lo : lo + 512, None] + sq[None, :] - 2 * blk @ z.T).clamp_min_(0)
        total += float(dist.add_(1.0).reciprocal_().sum()) - blk.shape[0]  # drop i = j
    return float((prob * prob.log()).sum()) + attract + np.log(total)


def score(x: np.ndarray, y: np.ndarray, emb: np.ndarray, p_cache: Path) -> dict[str, float]:
    """KL, trustworthiness on a fixed 5k subsample, k-means Hungarian accuracy."""
    from sklearn.cluster import KMeans
    from sklearn.manifold import trustworthiness

    from fw.lib.metrics import hungarian_accuracy

    sub = np.random.default_rng(0).permutation(len(x))[:SUBSAMPLE]
    pred = KMeans(n_clusters=10, n_init=10, random_state=0).fit_predict(emb)
    # above MIXTURE_FROM the exact P (O(N² D) search) and Z (N² pairs) are out of reach
    kl = exact_kl(scoring_p(x, p_cache), emb) if len(x) <= MIXTURE_FROM else float("nan")
    return {
        "kl": kl,
        "trustworthiness": float(trustworthiness(x[sub], emb[sub], n_neighbors=5)),
        "kmeans_accuracy": float(hungarian_accuracy(y, pred)),
    }


def score_and_append(out: Path, rec: dict, x: np.ndarray, y: np.ndarray, emb: np.ndarray) -> None:
    """Add the scores of ``emb`` to the record, append it to ``out`` and print it."""
    rec.update(score(x, y, emb, out.parent / f"tsne_scale-p-{len(x)}.pt"))
    with out.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def available(method: str) -> str | None:
    """None if the method can run here, else why not."""
    module = {"opentsne": "openTSNE", "opentsne_exact_knn": "openTSNE", "torchdr": "torchdr"}.get(
        method
    )
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError:
        return f"{module} is not installed (pip install 'fw[bench]')"
    return None


def print_table(path: Path) -> None:
    """mean ± std over seeds per (N, method)."""
    rows: dict[tuple[int, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        rows.setdefault((rec["n"], rec["method"], rec.get("variant", "")), []).append(rec)
    keys = ("wall_s", "peak_rss_mib", "kl", "trustworthiness", "kmeans_accuracy")
    print(f"{'N':>6} {'method':<11} {'seeds':>5} " + " ".join(f"{k:>20}" for k in keys))
    for (n, method, variant), recs in sorted(
        rows.items(), key=lambda kv: (kv[0][0], METHODS.index(kv[0][1]), kv[0][2])
    ):
        cells = []
        for k in keys:
            vals = np.array([r[k] for r in recs], dtype=float)
            std = f" ± {vals.std(ddof=1):.3g}" if len(vals) > 1 else ""
            cells.append(f"{vals.mean():.4g}{std}".rjust(20))
        print(f"{n:>6} {method:<11} {len(recs):>5} " + " ".join(cells))
        if variant:
            print(f"{'':>6} └ variant: {variant}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1797,10000,70000")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m not in EXTRA_METHODS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tsne_scale.jsonl")
    parser.add_argument("--table-only", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of fw's scale recipe (repeatable); its records are a variant",
    )
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "N", "SEED", "NPY"))
    args = parser.parse_args()
    if args.child:
        method, n, seed, npy = args.child
        child(method, int(n), int(seed), Path(npy), args.set)
        return
    variant = " ".join(args.set)
    if not args.table_only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        for n in (int(s) for s in args.sizes.split(",")):
            x, y = load(n)
            for seed in (int(s) for s in args.seeds.split(",")):
                for method in args.methods.split(","):
                    if method == "fw_exact" and n != 1797:
                        continue
                    why = available(method)
                    if why:
                        print(f"N={n} {method}: skipped, {why}", flush=True)
                        continue
                    if variant and method != "fw":
                        print(f"N={n} {method}: skipped, --set only applies to fw", flush=True)
                        continue
                    tag = f"-{hashlib.sha1(variant.encode()).hexdigest()[:8]}" if variant else ""
                    npy = args.out.parent / f"tsne_scale-{method}{tag}-{n}-{seed}.npy"
                    sets = [f"--set={s}" for s in args.set]
                    cmd = [sys.executable, __file__, "--child", method, str(n), str(seed), str(npy)]
                    cmd += sets
                    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"N={n} {method} seed {seed}: failed\n{proc.stderr[-2000:]}")
                        continue
                    rec = {"n": n, "method": method, "seed": seed, "commit": provenance.commit()}
                    if variant:
                        rec["variant"] = variant
                    rec.update(json.loads(npy.with_suffix(".json").read_text()))
                    score_and_append(args.out, rec, x, y, np.load(npy))
    print_table(args.out)


if __name__ == "__main__":
    main()
