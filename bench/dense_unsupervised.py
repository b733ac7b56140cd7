"""Raw k-means, STEGO and ViCE on TexMosaic-12 val under both protocols: one table from one run.

Every method is scored the same way, on its own dense embeddings upsampled bilinearly to 224 px:
cosine k-means (faiss) on ``FIT_PIXELS`` random pixels of each of the first ``FIT_IMAGES``
training images, then one confusion matrix over all val pixels per head:

- **Hungarian C12**: K = 12 = the number of classes, one-to-one matching (STEGO's protocol);
- **greedy C12 / C48 / C96**: K clusters, each mapped to its majority class (ViCE's "★");
- **linear**: a linear classifier fitted on the same training pixels with their labels.

Rows: raw k-means on the frozen ImageNet MobileNetV2 s16 map (STEGO's TexMosaic layer; k-means
seed = run seed), STEGO trained from ``recipes/stego_texmosaic.yaml`` as it is, ViCE trained
from ``recipes/vice_texmosaic.yaml`` (its optimizer chosen on dev, docs/vice.md), both with
the run seed (their clusters use k-means seed 0). Columns: mIoU and accuracy over the whole
image, the boundary band (9 px) and the interior, mean ± std over seeds; then the paired Δ per
seed of every protocol and the wall time of each method's training.

    python bench/dense_unsupervised.py              # 3 seeds, full TexMosaic-12
    python bench/dense_unsupervised.py --quick      # tiny data and steps: checks the script

Writes the table to stdout, ``--out`` (JSON) and ``--picture`` (image, ground truth, STEGO,
ViCE on the same val images, seed of the first run).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fw import hookimpl
from fw.lib.features import spherical_kmeans
from fw.lib.metrics import majority_assignment
from fw.recipe import read_recipe_file, recipe_from_dict
from fw.registry import get_registry
from fw.train import fit
from fw_backbones.taps import mobilenet_v2_tap
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores
from fw_stego.texmosaic import texmosaic12
from fw_vice.learner import pixel_probe
from fw_vice.picture import save_picture

ROOT = Path(__file__).resolve().parents[1]
N_CLASSES = 12
OVERCLUSTERS = (48, 96)
FIT_IMAGES, FIT_PIXELS = 200, 500
PARTS = ("all", "band", "interior")
PROTOCOLS = ("hungarian_c12", "greedy_c12", "greedy_c48", "greedy_c96", "linear")
_DATA: dict[str, Any] = {}


def bench_texmosaic12(split: str = "train") -> Any:
    """The TexMosaic-12 split generated once by this script (recipes read it by name)."""
    return _DATA[split]


@hookimpl
def fw_datasets():
    return {"bench_texmosaic12": bench_texmosaic12}


def embed_all(embed, x: torch.Tensor, batch: int = 16) -> list[torch.Tensor]:
    """Embeddings ``[b, D, h, w]`` (float32, CPU) of uint8 images, batch by batch."""
    with torch.no_grad():
        return [embed(x[s : s + batch]).float().cpu() for s in range(0, x.shape[0], batch)]


def up(z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.normalize(F.interpolate(z, size=size, mode="bilinear", align_corners=False), dim=1)


def score_method(embed, train, val, seed: int, fit_images: int) -> dict[str, dict[str, float]]:
    """Every protocol's scores of one embedding function (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    tx, tl = train.tensors["x"][:fit_images], train.tensors["label"][:fit_images].long()
    for s, z in zip(range(0, tx.shape[0], 16), embed_all(embed, tx), strict=True):
        z = up(z, tl.shape[-2:])
        b, d = z.shape[:2]
        flat = z.permute(0, 2, 3, 1).reshape(b, -1, d)
        pick = torch.stack(
            [torch.randperm(flat.shape[1], generator=g)[:FIT_PIXELS] for _ in range(b)]
        )
        xs.append(torch.gather(flat, 1, pick[..., None].expand(-1, -1, d)).reshape(-1, d))
        ys.append(torch.gather(tl[s : s + b].reshape(b, -1), 1, pick).reshape(-1))
    fx, fy = torch.cat(xs), torch.cat(ys)
    heads = {
        k: F.normalize(spherical_kmeans(fx, k, seed), dim=1) for k in (N_CLASSES, *OVERCLUSTERS)
    }
    probe = pixel_probe(fx, fy, N_CLASSES, 300, seed)
    conf = {
        (h, p): Confusion(N_CLASSES, h if isinstance(h, int) else None)
        for h in (*heads, "linear")
        for p in PARTS
    }
    vx, vl = val.tensors["x"], val.tensors["label"].long()
    preds: dict[Any, list[torch.Tensor]] = defaultdict(list)
    for s, z in zip(range(0, vx.shape[0], 16), embed_all(embed, vx), strict=True):
        label = vl[s : s + z.shape[0]]
        z = up(z, label.shape[-2:])
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        band = boundary_band(label, 9)
        with torch.no_grad():
            got = {k: (flat @ c.T).argmax(1).view(label.shape) for k, c in heads.items()}
            got["linear"] = probe(flat).argmax(1).view(label.shape)
        for h, pred in got.items():
            conf[h, "all"].update(label, pred)
            conf[h, "band"].update(label, pred, band)
            conf[h, "interior"].update(label, pred, ~band)
            if s == 0:
                preds[h].append(pred[:4])
    matchings = {
        "hungarian_c12": (N_CLASSES, hungarian_assignment(conf[N_CLASSES, "all"].counts)),
        **{f"greedy_c{k}": (k, majority_assignment(conf[k, "all"].counts)) for k in heads},
        "linear": ("linear", None),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (head, assignment) in matchings.items():
        row = {}
        for p in PARTS:
            got = scores(conf[head, p].counts, assignment)
            row[f"miou_{p}"], row[f"acc_{p}"] = got["miou"], got["accuracy"]
        out[name] = row
    out["_shown"] = {  # type: ignore[assignment]
        "hungarian": (preds[N_CLASSES][0], matchings["hungarian_c12"][1]),
        "greedy": (preds[OVERCLUSTERS[-1]][0], matchings[f"greedy_c{OVERCLUSTERS[-1]}"][1]),
    }
    return out


def recipe(name: str, seed: int, quick: bool, registry) -> Any:
    raw, _ = read_recipe_file(ROOT / "recipes" / name)
    raw["seed"] = seed
    raw["data"] = {"name": "bench_texmosaic12", "split": "train"}
    raw["eval_data"] = {"name": "bench_texmosaic12", "split": "val"}
    raw.setdefault("trainer", {})["progress"] = False
    if quick:
        raw["trainer"]["max_steps"] = 2
        learner = raw["learner"]
        if learner["name"] == "stego":
            learner.update(knn_store=4, num_neighbors=2, batch_size=4)
        else:
            learner.update(fit_images=8, schedule_steps=2, warmup_steps=0, queue_length=8)
    return recipe_from_dict(raw, registry)


def train_method(name: str, seed: int, quick: bool, registry, tmp: Path):
    """Train a recipe on the shared data; return (learner, wall seconds of fit)."""
    start = time.perf_counter()
    _, learner = fit(recipe(name, seed, quick, registry), tmp / f"{name}-{seed}", registry=registry)
    return learner, time.perf_counter() - start


def fmt(values: list[float]) -> str:
    a = 100 * np.asarray(values)
    return f"{a.mean():5.1f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:4.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 steps per method")
    parser.add_argument("--out", default="bench_dense_unsupervised.json")
    parser.add_argument("--picture", default="bench_dense_unsupervised.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: python {shlex.join(sys.argv)}")
    sizes = {"train": 16, "val": 8} if args.quick else {"train": None, "val": None}
    for split, n in sizes.items():
        _DATA[split] = texmosaic12(split, "full", n=n, progress=False)
    train, val = _DATA["train"], _DATA["val"]
    fit_images = 8 if args.quick else FIT_IMAGES
    print(f"data: {len(train)} train, {len(val)} val (TexMosaic-12, RGB, replicate 0)", flush=True)
    registry = get_registry(modules=[sys.modules[__name__]])
    raw = mobilenet_v2_tap("s16")
    results: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    walls: dict[str, list[float]] = defaultdict(list)
    shown: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            got = score_method(raw, train, val, seed, fit_images)
            shown.setdefault("raw", got.pop("_shown"))
            for proto, row in got.items():
                results["raw k-means (MobileNetV2 s16)"][proto].append(row)
            for method, name in (
                ("STEGO", "stego_texmosaic.yaml"),
                ("ViCE", "vice_texmosaic.yaml"),
            ):
                learner, wall = train_method(name, seed, args.quick, registry, Path(tmp))
                walls[method].append(wall)
                embed = learner.codes if method == "STEGO" else learner.embed
                got = score_method(embed, train, val, 0, fit_images)
                shown.setdefault(method, got.pop("_shown"))
                for proto, row in got.items():
                    results[method][proto].append(row)
                print(f"{method} seed {seed}: training {wall:.0f} s", flush=True)
    print_table(results, walls, args.seeds)
    Path(args.out).write_text(json.dumps({"results": results, "walls": walls}, indent=1))
    images = val.tensors["x"][:4].float() / 255
    rows = []
    for i in range(min(4, len(val))):
        preds = {
            f"{m}_{p}": shown[m][p][0][i]
            for m in ("STEGO", "ViCE")
            for p in ("hungarian", "greedy")
        }
        rows.append((images[i], val.tensors["label"][i].long(), preds))
    panels = [
        ("STEGO_hungarian", shown["STEGO"]["hungarian"][1], "STEGO, C12 Hungarian"),
        ("ViCE_hungarian", shown["ViCE"]["hungarian"][1], "ViCE, C12 Hungarian"),
        ("STEGO_greedy", shown["STEGO"]["greedy"][1], f"STEGO, C{OVERCLUSTERS[-1]} greedy"),
        ("ViCE_greedy", shown["ViCE"]["greedy"][1], f"ViCE, C{OVERCLUSTERS[-1]} greedy"),
    ]
    save_picture(rows, panels, N_CLASSES, Path(args.picture), getattr(val, "classes", None))
    print(f"picture: {args.picture}")


def print_table(results, walls, seeds) -> None:
    header = f"{'method':32} {'protocol':14}" + "".join(
        f" {m + '_' + p:>15}" for p in PARTS for m in ("miou", "acc")
    )
    print("\nmIoU / accuracy ×100, mean ± std over seeds", seeds)
    print(header)
    print("-" * len(header))
    for method, protos in results.items():
        for proto in PROTOCOLS:
            rows = protos[proto]
            cells = "".join(
                f" {fmt([r[f'{m}_{p}'] for r in rows]):>15}" for p in PARTS for m in ("miou", "acc")
            )
            print(f"{method:32} {proto:14}{cells}")
    print("\npaired Δ mIoU (all pixels) per seed, ×100:")
    names = list(results)
    pairs = [("ViCE", "STEGO"), ("ViCE", names[0]), ("STEGO", names[0])]
    for a, b in pairs:
        for proto in PROTOCOLS:
            d = [
                100 * (x["miou_all"] - y["miou_all"])
                for x, y in zip(results[a][proto], results[b][proto], strict=True)
            ]
            mean = float(np.mean(d))
            print(
                f"{a} − {b:30} {proto:14} per seed {' / '.join(f'{v:+.1f}' for v in d)}; "
                f"mean {mean:+.1f}; same sign on every seed: {all(v * mean > 0 for v in d)}"
            )
    print("\ntraining wall time per seed (s; contended machines make these indicative only):")
    for method, w in walls.items():
        print(f"{method}: {' / '.join(f'{v:.0f}' for v in w)}")


if __name__ == "__main__":
    main()
