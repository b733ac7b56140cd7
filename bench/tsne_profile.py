"""Where fw's scalable t-SNE spends its time and memory, stage by stage, beside openTSNE's.

One process per library (so each peak RSS is its own), one thread, on the first N Fashion-MNIST
images (all 70,000 by default). fw, through `recipes/tsne_fashion_mnist.yaml`'s components:

- loading the data; the neighbour search (`fw_sne.scale.knn_sq_distances`, recall logged for
  approximate indices); the perplexity calibration; the whole ``learner.setup`` (search again,
  calibration, symmetrisation into the joint P, PCA initialisation);
- one optimisation step (median of ``--steps`` after five warm-up steps), and within it the
  attraction (`fw_sne.scale.attraction`, forward and backward) and the FFT repulsion
  (`fw_sne.scale.fft_log_norm`) timed alone on the same embedding;
- openTSNE's compiled attraction (``estimate_positive_gradient_nn``) on the same pairs.

openTSNE: its affinity (``PerplexityBasedNN``, neighbours ``auto``), its PCA initialisation
and its 750 optimisation steps (250 exaggerated), as ``bench/tsne_scale.py`` runs it.

    OMP_NUM_THREADS=1 python bench/tsne_profile.py                 # both, N = 70,000
    OMP_NUM_THREADS=1 python bench/tsne_profile.py --n 20000 --only fw
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def memory_mib() -> str:
    """Current and peak resident memory of this process."""
    fields = dict(
        line.split(":", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("VmRSS", "VmHWM"))
    )
    now, peak = (int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM"))
    return f"RSS {now:>5} MiB, peak {peak:>5} MiB"


class Stages:
    """Prints each stage's wall time and the memory after it."""

    def __init__(self, who: str) -> None:
        self.who, self.last = who, time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        print(f"{self.who:<9} {what:<52} {now - self.last:8.2f} s   {memory_mib()}", flush=True)
        self.last = now

    def note(self, what: str, ms: float) -> None:
        print(f"{self.who:<9} {what:<52} {ms:8.2f} ms", flush=True)


def timed_ms(fn, reps: int) -> float:
    """Median wall time of ``fn()`` in ms over ``reps`` calls."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def overrides(n: int) -> list[str]:
    return [] if n == 70000 else ["data.split=train", f"data.limit={n}"]


def profile_fw(n: int, steps: int, knn_index: str, full: bool) -> None:
    from fw.recipe import build, load_recipe
    from fw_sne import calibration, scale

    stages = Stages("fw")
    path = ROOT / "recipes" / "tsne_fashion_mnist.yaml"
    recipe = load_recipe(path, [*overrides(n), f"learner.p.knn_index={knn_index}"])
    data = build("dataset", recipe.raw["data"])
    stages.done(f"load {n} images")
    report: dict[str, float] = {}
    ids, d, valid = scale.knn_sq_distances(data.x.flatten(1), 90, knn_index, report)
    recall = f", recall@90 {report['knn_recall']:.4f}" if report else ""
    index = scale.resolve_knn_index(knn_index, n)
    stages.done(f"neighbours ({index}{recall})")
    calibration.perplexity_precisions(d, valid, 30.0)
    stages.done("perplexity calibration")
    del ids, d, valid
    torch.manual_seed(0)
    learner = build("learner", recipe.raw["learner"])
    learner.setup(data)
    stages.done("learner.setup (neighbours, calibration, joint P, PCA)")
    optimizer = learner.configure_optimizers()
    batch = data.full_batch()

    def step(s: int) -> None:
        out = learner(batch, s)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()

    rows, cols, prob, _, lengths = learner._sparse

    def kernels(when: str) -> None:
        z = learner.mapper.weight.detach().clone().requires_grad_(True)

        def attract() -> None:
            scale.attraction(z, "student_t", 1.0, rows, cols, prob, 1, lengths).backward()

        stages.note(f"  attraction over {rows.numel()} pairs, {when}", timed_ms(attract, steps))
        repulse = lambda: scale.fft_log_norm(z).backward()  # noqa: E731
        stages.note(f"  FFT repulsion, {when}", timed_ms(repulse, steps))

    times = []
    for s in range(750 if full else 5):
        start = time.perf_counter()
        step(s)
        times.append(time.perf_counter() - start)
        if s in (4, 249, 749):
            kernels(f"at step {s + 1}")
    if full:
        for lo in range(0, 750, 150):
            block = statistics.median(times[lo : lo + 150]) * 1e3
            stages.note(f"one step, median of steps {lo + 1}-{lo + 150}", block)
        stages.note("750 optimisation steps in all (sum of the steps)", sum(times) * 1e3)
    else:
        stages.note(f"one step (median of {steps})", timed_ms(lambda: step(5), steps))
    z = learner.mapper.weight.detach()
    try:
        import scipy.sparse as sp
        from openTSNE import _tsne
    except ImportError:
        return
    both = (torch.cat([rows, cols]).long().numpy(), torch.cat([cols, rows]).long().numpy())
    pmat = sp.csr_matrix((torch.cat([prob, prob]).double().numpy() / 2, both), shape=(n, n))
    y = z.detach().double().numpy().copy()
    grad = np.zeros_like(y)

    def positive() -> None:
        grad[:] = 0.0
        _tsne.estimate_positive_gradient_nn(
            pmat.indices, pmat.indptr, pmat.data, y, y, grad, 1.0, 1, False
        )

    stages.note("  openTSNE's compiled attraction, same pairs", timed_ms(positive, steps))


def profile_opentsne(n: int) -> None:
    from openTSNE import TSNEEmbedding, affinity, initialization

    from fw.recipe import build

    stages = Stages("openTSNE")
    spec = {"name": "fashion_mnist", "split": "all"}
    if n != 70000:
        spec = {"name": "fashion_mnist", "split": "train", "limit": n}
    x = build("dataset", spec).x.flatten(1).float().numpy()
    stages.done(f"load {n} images")
    aff = affinity.PerplexityBasedNN(x, perplexity=30, method="auto", n_jobs=1, random_state=0)
    stages.done(f"affinity ({type(aff.knn_index).__name__} neighbours, calibration, joint P)")
    init = initialization.pca(x, random_state=0)
    stages.done("PCA initialisation")
    emb = TSNEEmbedding(init, aff, negative_gradient_method="fft", n_jobs=1, random_state=0)
    emb = emb.optimize(n_iter=250, exaggeration=12, momentum=0.5)
    emb.optimize(n_iter=500, momentum=0.8)
    stages.done("750 optimisation steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=70000)
    parser.add_argument("--steps", type=int, default=10, help="timed repetitions per kernel")
    parser.add_argument("--knn-index", default="auto", help="fw's learner.p.knn_index")
    parser.add_argument("--only", choices=("fw", "opentsne"))
    parser.add_argument("--full", action="store_true", help="fw: all 750 steps, timed by phase")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only == "fw":
        profile_fw(args.n, args.steps, args.knn_index, args.full)
    elif args.only == "opentsne":
        profile_opentsne(args.n)
    else:  # each library in its own process, one after the other
        for who in ("fw", "opentsne"):
            cmd = [sys.executable, __file__, "--n", str(args.n), "--steps", str(args.steps)]
            cmd += ["--knn-index", args.knn_index, "--only", who] + ["--full"] * args.full
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
