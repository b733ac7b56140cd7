"""One table for the self-supervised family on Fashion-MNIST: SimCLR, MoCo v3, VICReg, BYOL,
SimSiam, SwAV and DINO beside a random-init encoder and a supervised ceiling.

Every method trains the same backbone (a small conv net, widths 16-32-64) with the same
augmentation policy (random-resized crop of scale 0.2-1, horizontal flip, brightness/contrast
jitter, Gaussian noise; two crops, no multi-crop), the same optimiser (Adam 2e-3, constant),
batch size and step budget, for each seed. Then the same protocol scores every backbone:
kNN (k = 20, cosine, weighted vote) and linear-probe (logistic regression) accuracy of the
un-augmented training images' features against the test images', and on the test features the
monitors of `fw.lib.monitors` — alignment of two augmented views (Wang & Isola 2020, α = 2),
uniformity (t = 2), effective rank (Roy & Vetterli 2007) and the normalised per-dimension std
(×√d) — with a collapse flag when they cross their thresholds. The random-init encoder is the
same backbone untrained; the supervised ceiling is the cross-entropy recipe (labels) with the
same backbone and augmentations. The summary reports mean ± std over seeds, whether each method
beats the random encoder's kNN probe by more than the seed spread, and the training wall time
(reported, never asserted).

    python bench/ssl_table.py                 # 10 000 train / 2 000 test, 1 000 steps, 3 seeds
    python bench/ssl_table.py --quick         # 1 000 / 300 images, 20 steps, 2 seeds: a few minutes
    python bench/ssl_table.py --only DINO BYOL --seeds 0 --out table.jsonl
    python bench/ssl_table.py --summary bench/results/ssl_table_1000.jsonl  # the table of a file
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import provenance  # bench/provenance.py
import torch

from fw.lib import metrics, monitors
from fw.recipe import build, recipe_from_dict
from fw.registry import get_registry
from fw.train import fit
from fw_common.augment import Augmenter
from fw_data.fashion_mnist import fashion_mnist

ROOT = Path(__file__).resolve().parents[1]

BACKBONE = {"name": "convnet", "widths": [16, 32, 64]}
HEAD = {"name": "mlp", "dim": 64, "hidden": [256]}
PREDICTOR = {"name": "mlp", "dim": 64, "hidden": [256]}
CROP_SCALE = [0.2, 1.0]
AUGMENT = [
    {"name": "horizontal_flip", "p": 0.5},
    {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "p": 0.8},
    {"name": "gaussian_noise", "std": 0.05, "p": 0.5},
]
CROP = {"name": "random_resized_crop", "scale": CROP_SCALE}
OPTIMIZER = {"name": "adam", "lr": 2.0e-3}

#: display name -> (learner recipe, paper)
METHODS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "random-init": (None, "untrained backbone"),
    "SimCLR": (
        {
            "name": "contrastive",
            "p": {"name": "positive_pairs"},
            "q": {"name": "gaussian", "metric": "cosine", "temperature": 0.2},
            "head": HEAD,
            "views": 2,
            "augment": [CROP, *AUGMENT],
            "mode": "kl",
        },
        "Chen et al. 2020",
    ),
    "MoCo v3": (
        {
            "name": "contrastive",
            "p": {"name": "positive_pairs"},
            "q": {"name": "gaussian", "metric": "cosine", "temperature": 0.2},
            "head": HEAD,
            "predictor": PREDICTOR,
            "ema_momentum": 0.99,
            "views": 2,
            "augment": [CROP, *AUGMENT],
            "mode": "kl",
        },
        "Chen, Xie & He 2021",
    ),
    "VICReg": (
        {
            "name": "vicreg",
            "head": HEAD,
            "global_scale": CROP_SCALE,
            "augment": AUGMENT,
        },
        "Bardes, Ponce & LeCun 2022",
    ),
    "BYOL": (
        {
            "name": "byol",
            "head": HEAD,
            "predictor": PREDICTOR,
            "momentum": 0.99,
            "global_scale": CROP_SCALE,
            "augment": AUGMENT,
        },
        "Grill et al. 2020",
    ),
    "SimSiam": (
        {
            "name": "simsiam",
            "head": HEAD,
            "predictor": {"name": "mlp", "dim": 64, "hidden": [32]},
            "global_scale": CROP_SCALE,
            "augment": AUGMENT,
        },
        "Chen & He 2021",
    ),
    "SwAV": (
        {
            "name": "swav",
            "head": HEAD,
            "prototypes": 100,
            "local_crops": 0,
            "global_scale": CROP_SCALE,
            "augment": AUGMENT,
        },
        "Caron et al. 2020",
    ),
    "DINO": (
        {
            "name": "dino",
            "head": {"name": "mlp", "dim": 64, "hidden": [256], "batch_norm": False},
            "prototypes": 256,
            "momentum": 0.99,
            "local_crops": 0,
            "global_scale": CROP_SCALE,
            "augment": AUGMENT,
        },
        "Caron et al. 2021",
    ),
    "supervised": (
        {
            "name": "contrastive",
            "p": {"name": "data_label", "num_classes": 10},
            "q": {"name": "prototype_softmax", "num_classes": 10, "dim": 64, "bias": True},
            "head": None,
            "views": 1,
            "augment": [CROP, *AUGMENT],
            "mode": "ce",
        },
        "cross-entropy with labels (ceiling)",
    ),
}


def learner_recipe(spec: dict[str, Any], steps: int, batch: int, n_train: int) -> dict[str, Any]:
    """The method's learner with the shared backbone, optimiser, batch and schedules."""
    out = copy.deepcopy(spec)
    out["backbone"] = dict(BACKBONE)
    out["optimizer"] = dict(OPTIMIZER)
    out["batch_size"] = batch
    out["linear_probe"] = False  # the bench scores every backbone itself, the same way
    if out["name"] == "contrastive":
        out["eval_clusters"] = 10
    else:
        out["lr_schedule"] = "constant"  # as the contrastive learner
        out["schedule_steps"] = steps
        out["probe_limit"] = n_train
    if out["name"] == "swav":
        out["freeze_prototypes_steps"] = max(1, steps // 10)
    if out["name"] == "dino":
        out["teacher_warmup_steps"] = max(1, steps // 3)
        out["freeze_prototypes_steps"] = max(1, steps // 20)
    return out


@torch.no_grad()
def features(
    backbone: torch.nn.Module, x: torch.Tensor, augmenter: Augmenter | None
) -> torch.Tensor:
    """Backbone features in eval mode (of an augmented view when ``augmenter`` is given)."""
    was = backbone.training
    backbone.eval()
    out = []
    for start in range(0, x.shape[0], 512):
        chunk = x[start : start + 512]
        if augmenter is not None:
            chunk = augmenter(chunk)
        out.append(backbone(chunk).float())
    backbone.train(was)
    return torch.cat(out)


def score(backbone: torch.nn.Module, train: Any, test: Any) -> dict[str, float]:
    """The one protocol: probes on un-augmented features, monitors on the test features."""
    xtr, ytr = train.tensors["x"], train.tensors["label"]
    xte, yte = test.tensors["x"], test.tensors["label"]
    ftr, fte = features(backbone, xtr, None), features(backbone, xte, None)
    view = Augmenter([CROP, *AUGMENT])
    a, b = features(backbone, xte, view), features(backbone, xte, view)
    values, reasons = monitors.collapse_report(fte, pair=None)
    out = {
        "knn": metrics.knn_probe_accuracy(ftr, ytr, fte, yte, k=20),
        "linear": metrics.linear_probe_accuracy(ftr, ytr, fte, yte, max_iter=1000),
        "alignment": float(monitors.alignment(a, b)),
        "uniformity": values["uniformity"],
        "effective_rank": values["effective_rank"],
        "dim_std_ratio": values["dim_std_ratio"],
        "collapsed": bool(reasons),
        "collapse_reasons": reasons,
    }
    return out


def run_one(
    name: str, seed: int, steps: int, batch: int, data: tuple[Any, Any], tmp: Path
) -> dict[str, Any]:
    """Train (unless random-init) and score one method with one seed."""
    registry = get_registry()
    spec, _ = METHODS[name]
    train, test = data
    torch.manual_seed(seed)
    seconds = 0.0
    if spec is None:
        backbone = build("featurizer", dict(BACKBONE), registry, "backbone")
        backbone.setup(train)
    else:
        raw = {
            "seed": seed,
            "data": {"name": "fashion_mnist", "split": "train", "limit": len(train)},
            "eval_data": {"name": "fashion_mnist", "split": "test", "limit": len(test)},
            "learner": learner_recipe(spec, steps, batch, len(train)),
            "trainer": {"max_steps": steps, "log_every": steps, "progress": False},
        }
        start = time.perf_counter()
        final, learner = fit(
            recipe_from_dict(raw, registry), tmp / f"{name}-{seed}", overwrite=True
        )
        seconds = float(final.get("train_seconds", time.perf_counter() - start))
        backbone = learner.backbone
    torch.manual_seed(10_000 + seed)  # the same evaluation views for every method
    out = score(backbone, train, test)
    out.update({"method": name, "seed": seed, "steps": steps, "train_seconds": seconds})
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def summarise(rows: list[dict[str, Any]]) -> str:
    """A text table of mean ± std per method, the collapse flags and the random-init check."""
    by: dict[str, list[dict[str, Any]]] = {}
    first: dict[tuple[str, int, int], dict[str, Any]] = {}
    differing: list[str] = []
    for r in rows:  # invocations appending to one file each measure random-init: count it once
        key = (r["method"], r["seed"], r["steps"])
        if key not in first:
            first[key] = r
            by.setdefault(r["method"], []).append(r)
        elif r["knn"] != first[key]["knn"] or r["linear"] != first[key]["linear"]:
            differing.append(f"{r['method']} seed {r['seed']} ({r['steps']} steps)")
    cols = ["knn", "linear", "alignment", "uniformity", "effective_rank", "dim_std_ratio"]
    head = f"{'method':<12} " + " ".join(f"{c:>16}" for c in cols) + f" {'train s':>9} collapse"
    lines = [head, "-" * len(head)]
    stats: dict[str, dict[str, tuple[float, float]]] = {}
    for name, rs in by.items():
        stats[name] = {c: _mean_std([r[c] for r in rs]) for c in cols}
        cells = " ".join(f"{m:>8.3f} ± {s:<5.3f}" for m, s in (stats[name][c] for c in cols))
        secs = _mean_std([r["train_seconds"] for r in rs])[0]
        collapsed = sum(r["collapsed"] for r in rs)
        flag = f"{collapsed}/{len(rs)} seeds" if collapsed else "no"
        lines.append(f"{name:<12} {cells} {secs:>9.1f} {flag}")
    if "random-init" in stats:
        rand_m, rand_s = stats["random-init"]["knn"]
        lines.append("")
        lines.append("kNN probe vs the random-init encoder (margin > both seed spreads?):")
        for name, st in stats.items():
            if name == "random-init":
                continue
            m, s = st["knn"]
            margin = m - rand_m
            if len(by[name]) < 2 or len(by["random-init"]) < 2:
                verdict = "one seed: no spread to compare with"
            elif margin > max(s, rand_s):
                verdict = "beats it"
            else:
                verdict = "does NOT beat it"
            lines.append(f"  {name:<12} {margin:+.3f} ({verdict})")
    if differing:
        lines.append("")
        lines.append(
            "note: these rows were measured again with other results; the first is counted: "
            + ", ".join(differing)
        )
    for name, rs in by.items():
        for r in rs:
            if r["collapsed"]:
                why = "; ".join(r["collapse_reasons"])
                lines.append(f"  collapsed: {name} seed {r['seed']}: {why}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 000 / 300 images, 20 steps, 2 seeds"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps (default 1 000)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train", type=int, default=None, help="training images (default 10 000)")
    parser.add_argument("--test", type=int, default=None, help="test images (default 2 000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--only", nargs="+", default=None, help=f"a subset of {list(METHODS)}")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--timing-note",
        default="contended: shared 2-core machine",
        help="how the wall times were taken (written with --out)",
    )
    parser.add_argument(
        "--summary", type=Path, metavar="JSONL", help="print the table of a file written by --out"
    )
    args = parser.parse_args(argv)
    if args.summary is not None:
        if not args.summary.is_file():
            parser.error(f"--summary: no file {args.summary}")
        lines = args.summary.read_text(encoding="utf-8").splitlines()
        print(summarise([r for r in map(json.loads, lines) if "header" not in r]))
        return 0
    steps = args.steps or (20 if args.quick else 1000)
    n_train = args.train or (1000 if args.quick else 10000)
    n_test = args.test or (300 if args.quick else 2000)
    seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
    names = args.only or list(METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if "random-init" not in names:
        names = ["random-init", *names]
    data = (
        fashion_mnist(split="train", limit=n_train),
        fashion_mnist(split="test", limit=n_test),
    )
    batch = min(args.batch, n_train)
    print(
        f"Fashion-MNIST {n_train} train / {n_test} test, {steps} steps of {batch}, seeds {seeds}, "
        f"backbone {BACKBONE}"
    )
    if args.out is not None:  # the header first, then each row as it is measured
        header = {
            "command": shlex.join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
            "commit": provenance.commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": torch.get_num_threads(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timing": args.timing_note,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"header": header}) + "\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            for seed in seeds:
                row = run_one(name, seed, steps, batch, data, Path(tmp))
                rows.append(row)
                print(
                    f"  {name:<12} seed {seed}: kNN {row['knn']:.3f} linear {row['linear']:.3f} "
                    f"align {row['alignment']:.3f} unif {row['uniformity']:.3f} "
                    f"erank {row['effective_rank']:.1f} ({row['train_seconds']:.0f} s)",
                    flush=True,
                )
                if args.out is not None:  # an interrupted run keeps what it measured
                    with args.out.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
    print()
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
