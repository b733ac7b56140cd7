"""STEGO on TexMosaic-12 (docs/benchmarks.md): one table from one run.

Rows (mIoU and pixel accuracy, whole image / boundary band / interior, mean ± std over seeds):
RGB-pixel k-means; random-init network k-means (s16, s32a); raw-feature cosine k-means on every
tap (low-res and bilinear); the GT-region pooling oracle on the STEGO taps; the supervised
linear probe on s16 and s32a (the ceiling); STEGO heads on s16 and s32a (cosine k-means, K = 12,
seed 0, on train codes; codes upsampled bilinearly) and their online linear probes.

(λ, b) are chosen on **dev** among the presets of ``PRESETS`` with ``--select`` (one seed, fewer
steps), then frozen in ``PRESET_BY_TAP`` below before the val table is run.

    python bench/stego_texmosaic.py --select      # dev, picks presets
    python bench/stego_texmosaic.py               # the val table
    python bench/stego_texmosaic.py --select-then-run   # both at once

``--gray`` runs the grey variant (same labels, the colour cue removed; the frozen (λ, b) stay
those chosen on RGB dev unless ``--select`` is rerun with ``--gray``). ``--replicate 1`` draws
fresh data; with ``--headline`` only the rows that the STEGO claim needs are
computed (raw k-means on the STEGO taps and the STEGO heads), for that confirmation.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fw.lib.batches import BatchStream
from fw_backbones.taps import TAPS, mobilenet_v2_tap
from fw_stego.learner import StegoLearner
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores
from fw_stego.texmosaic import texmosaic12

K = 12
PARTS = ("all", "band", "interior")
#: (λ_rand, λ_knn, λ_self, b_rand, b_knn, b_self) of Hamilton, PhD thesis, Table B.3 and the
#: authors' released STEGO configs
PRESETS: dict[str, tuple[float, ...]] = {
    "cityscapes_B3": (0.91, 0.58, 1.00, 0.31, 0.18, 0.46),
    "cocostuff_B3": (0.15, 1.00, 0.10, 1.00, 0.20, 0.12),
    "potsdam_vits_code": (0.63, 0.25, 0.67, 0.46, 0.02, 0.08),
    "coco_vits_1_31_code": (0.63, 0.25, 0.67, 0.66, 0.02, 0.08),
    "coco_vits_10_3_code": (0.63, 0.25, 0.67, 0.16, 0.02, 0.08),
    "coco_moco_10_3_code": (0.63, 0.25, 0.67, 0.26, 0.36, 0.32),
    "iaroa_vits_code": (0.63, 0.25, 0.67, 0.46, 0.12, 0.18),
    "coco_older_code": (0.72, 0.80, 0.29, 0.86, 0.04, 0.34),
    "cityscapes_older_code": (0.72, 0.18, 0.46, 0.25, 0.20, 0.25),
}
#: frozen after `--select` on dev (RGB, replicate 0, seed 0, 200 steps), before the val rows
#: were run; None = not chosen
PRESET_BY_TAP: dict[str, str | None] = {"s16": "potsdam_vits_code", "s32a": "cityscapes_older_code"}
STEGO_TAPS = ("s16", "s32a")
#: the seven taps of docs/benchmarks.md (s16d is SpokenObjects' dilated variant)
TEXMOSAIC_TAPS = ("s4", "s8", "s16a", "s16", "s32a", "s32", "s32c")


def all_taps(x: torch.Tensor, net: torch.nn.Module, batch: int = 25) -> dict[str, torch.Tensor]:
    """Every tap's maps (fp16) of uint8 images ``[N, 3, 224, 224]`` in one pass per batch."""
    out = defaultdict(list)
    index = {TAPS[name][0]: name for name in TEXMOSAIC_TAPS}
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            h = net.normalize(x[s : s + batch])
            for i, layer in enumerate(net.trunk):
                h = layer(h)
                if i in index:
                    out[index[i]].append(h.half())
    return {k: torch.cat(v) for k, v in out.items()}


def spherical_kmeans(vectors: torch.Tensor, seed: int, euclidean: bool = False) -> torch.Tensor:
    """faiss k-means (K = 12, 30 iterations) on ≤ 100k rows sampled with ``default_rng(seed)``."""
    import faiss

    x = vectors.float()
    if not euclidean:
        x = F.normalize(x, dim=1)
    x = x.numpy()
    rng = np.random.default_rng(seed)
    if x.shape[0] > 100_000:
        x = x[rng.choice(x.shape[0], 100_000, replace=False)]
    km = faiss.Kmeans(x.shape[1], K, niter=30, nredo=1, spherical=not euclidean, seed=seed)
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return torch.from_numpy(km.centroids.copy())


def flat(maps: torch.Tensor) -> torch.Tensor:
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


class Table:
    """Accumulates per-seed scores of each row and prints mean ± std."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, float]]] = defaultdict(list)

    def add(self, row: str, got: dict[str, float]) -> None:
        self.rows[row].append(got)

    def render(self) -> str:
        cols = [f"{m}_{p}" for p in ("all", "band", "interior") for m in ("miou", "acc")]
        head = f"{'row':52s} {'n':>2s} " + " ".join(f"{c:>15s}" for c in cols)
        lines = [head, "-" * len(head)]
        for row, runs in self.rows.items():
            cells = []
            for c in cols:
                v = 100 * np.array([r[c] for r in runs])
                cells.append(f"{v.mean():6.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:4.1f}")
            lines.append(f"{row:52s} {len(runs):2d} " + " ".join(f"{c:>15s}" for c in cells))
        return "\n".join(lines)


def score_maps(
    score: torch.Tensor, label: torch.Tensor, band: torch.Tensor, mode: str, matched: bool = True
) -> dict[str, float]:
    """Scores of per-class/cluster score maps ``[N, K, h, w]`` upsampled by ``mode`` to 224."""
    conf = part_confusions()
    for s in range(0, score.shape[0], 20):
        sc = score[s : s + 20].float()
        up = F.interpolate(sc, size=label.shape[-2:], mode=mode)
        pred = up.argmax(1)
        lab, bd = label[s : s + 20].long(), band[s : s + 20]
        update_parts(conf, lab, pred, bd)
    return match_all(conf, matched)


def part_confusions() -> dict[str, Confusion]:
    """One confusion matrix per scored part: the whole image, the boundary band, the interior."""
    return {p: Confusion(K) for p in PARTS}


def update_parts(conf: dict[str, Confusion], label, pred, band) -> None:
    """Count ``pred`` against ``label`` everywhere, inside ``band`` and outside it."""
    conf["all"].update(label, pred)
    conf["band"].update(label, pred, band)
    conf["interior"].update(label, pred, ~band)


def scored(conf: dict[str, Confusion], assignment) -> dict[str, float]:
    """mIoU and accuracy of every part under one ``assignment`` (None: identity)."""
    out = {}
    for part, c in conf.items():
        got = scores(c.counts, assignment)
        out[f"miou_{part}"], out[f"acc_{part}"] = got["miou"], got["accuracy"]
    return out


def match_all(conf: dict[str, Confusion], matched: bool) -> dict[str, float]:
    """Scores with the whole image's Hungarian matching (band/interior reuse it) or identity."""
    return scored(conf, hungarian_assignment(conf["all"].counts) if matched else None)


def cluster_scores(train_maps, val_maps, label, band, seed, modes=("nearest", "bilinear")):
    centroids = spherical_kmeans(flat(train_maps), seed)
    score = torch.einsum("nchw,kc->nkhw", val_maps.float(), centroids)  # un-normalised f
    return centroids, {m: score_maps(score, label, band, m) for m in modes}


def region_oracle(val_maps, centroids, label, band) -> dict[str, float]:
    """Per image and GT class, the argmax of the mean bilinear score map over its pixels."""
    conf = part_confusions()
    for i in range(val_maps.shape[0]):
        score = torch.einsum("chw,kc->khw", val_maps[i].float(), centroids)
        up = F.interpolate(score[None], size=label.shape[-2:], mode="bilinear")[0]
        lab = label[i].long()
        pred = torch.zeros_like(lab)
        for c in lab.unique():
            m = lab == c
            pred[m] = up[:, m].mean(1).argmax()
        update_parts(conf, lab, pred, band[i])
    return match_all(conf, True)


def majority_cells(label: torch.Tensor, grid: int) -> torch.Tensor:
    """Majority GT label of each cell of a ``grid × grid`` partition ``[N, grid, grid]``."""
    n, h, _ = label.shape
    cell = h // grid
    onehot = F.one_hot(label.long(), K).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(onehot, cell).argmax(1)


def train_linear_probe(train_maps, train_label, seed) -> torch.nn.Conv2d:
    """1×1 conv + bias, CE on majority cell labels, Adam 5e-3, 300 full-batch steps."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(train_maps.shape[1], K, 1)
    opt = torch.optim.Adam(conv.parameters(), lr=5e-3)
    x = train_maps.float()
    target = majority_cells(train_label, x.shape[-1])
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(conv(x), target).backward()
        opt.step()
    return conv


def linear_probe(train_maps, train_label, val_maps, label, band, seed) -> dict[str, float]:
    """The linear probe's scores (logits upsampled bilinearly, identity matching)."""
    conv = train_linear_probe(train_maps, train_label, seed)
    with torch.no_grad():
        logits = conv(val_maps.float())
    return score_maps(logits, label, band, "bilinear", matched=False)


def pixel_kmeans(train_x, val_x, label, band, seed) -> dict[str, float]:
    centroids = spherical_kmeans(flat(train_x.float() / 255), seed, euclidean=True)
    conf = part_confusions()
    for i in range(val_x.shape[0]):
        px = flat(val_x[i : i + 1].float() / 255)
        pred = torch.cdist(px, centroids).argmin(1).reshape(label.shape[-2:])
        update_parts(conf, label[i], pred, band[i])
    return match_all(conf, True)


def baseline_rows(
    train, val, label, band, seeds, table: Table, t0: float, taps=STEGO_TAPS, gray=False, only=None
):
    """Every baseline row into ``table``: pixel k-means, the random-init net on the
    headline taps, raw k-means of all seven taps (low-res and bilinear), the GT-region pooling
    oracle and the supervised linear probe on ``taps``; with ``only`` (the --headline mode) just
    raw k-means on those taps. Returns the ImageNet taps' train and val maps (fp16), which the
    methods reuse."""
    full = only is None
    for seed in seeds if full else ():
        name = "gray-pixel" if gray else "RGB-pixel"
        table.add(f"{name} k-means (Euclidean)", pixel_kmeans(train.x, val.x, label, band, seed))
    net = mobilenet_v2_tap("s32c")
    tr, va = all_taps(train.x, net), all_taps(val.x, net)
    print(f"features: {time.perf_counter() - t0:.0f} s")
    for seed in seeds if full else ():
        rnd = mobilenet_v2_tap("s32c", weights=None, init_seed=seed)
        rtr, rva = all_taps(train.x, rnd), all_taps(val.x, rnd)
        for tap in STEGO_TAPS:
            _, got = cluster_scores(rtr[tap], rva[tap], label, band, seed, ("bilinear",))
            table.add(f"random-init net {tap} k-means, bilinear", got["bilinear"])
        del rtr, rva
    for tap in TEXMOSAIC_TAPS if full else only:
        for seed in seeds:
            centroids, got = cluster_scores(tr[tap], va[tap], label, band, seed)
            table.add(f"raw {tap} k-means, low-res", got["nearest"])
            table.add(f"raw {tap} k-means, bilinear", got["bilinear"])
            if tap in taps and full:
                table.add(
                    f"raw {tap} GT-region pooling oracle",
                    region_oracle(va[tap], centroids, label, band),
                )
        print(f"{tap}: {time.perf_counter() - t0:.0f} s", flush=True)
    for tap in taps if full else ():
        for seed in seeds:
            got = linear_probe(tr[tap], train.tensors["label"], va[tap], label, band, seed)
            table.add(f"supervised linear probe {tap} (ceiling)", got)
    return tr, va


def train_stego(train, maps, tap: str, preset: str, seed: int, steps: int) -> StegoLearner:
    """One STEGO head (reference loss, 70-d, dropout 0.1, batch 16, Adam 5e-4) on a tap's
    precomputed train ``maps``."""
    lr_, lk, ls, br, bk, bs = PRESETS[preset]
    torch.manual_seed(seed)
    learner = StegoLearner(
        mobilenet_v2_tap(tap),
        n_classes=K,
        rand_weight=lr_,
        knn_weight=lk,
        self_weight=ls,
        rand_shift=br,
        knn_shift=bk,
        self_shift=bs,
        batch_size=16,
        cache_features=True,
        cluster_eval="kmeans",
        probe_label_size=56,
    )
    learner.use_maps(train, maps)
    learner.setup(train)
    optim = learner.configure_optimizers()
    stream = BatchStream(train, 16, seed)
    learner.train()
    for step in range(steps):
        out = learner.training_step(stream.batch(step), step)
        for o in optim.optimizers:
            o.zero_grad(set_to_none=True)
        out["loss"].backward()
        for o in optim.optimizers:
            o.step()
    learner.eval()
    return learner


def head_codes(learner, maps) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [learner.head(maps[s : s + 100].float()) for s in range(0, len(maps), 100)]
        )


def stego_rows(learner, train_maps, val_maps, label, band):
    """(cluster scores via cosine k-means seed 0 on train codes, online linear-probe scores)."""
    codes_tr, codes_va = head_codes(learner, train_maps), head_codes(learner, val_maps)
    centroids = spherical_kmeans(flat(codes_tr), 0)
    score = torch.einsum("nchw,kc->nkhw", F.normalize(codes_va, dim=1), centroids)
    with torch.no_grad():
        logits = learner.linear_probe(codes_va)
    return (
        score_maps(score, label, band, "bilinear"),
        score_maps(logits, label, band, "bilinear", matched=False),
    )


def paired_deltas(table: Table, taps, seeds) -> str:
    """Per seed: STEGO head (training seed s) minus raw k-means of its layer (k-means seed s)."""
    lines = []
    for tap in taps:
        stego = [r for r in table.rows if r.startswith(f"STEGO {tap} ") and "k-means" in r]
        raw = table.rows.get(f"raw {tap} k-means, bilinear")
        if not stego or not raw:
            continue
        for metric in ("miou_all", "acc_all"):
            a = 100 * np.array([r[metric] for r in table.rows[stego[0]]])
            b = 100 * np.array([r[metric] for r in raw])
            d = a - b
            spread = max(a.std(ddof=1), b.std(ddof=1)) if len(d) > 1 else float("nan")
            lines.append(
                f"{tap} {metric}: STEGO {' / '.join(f'{v:.1f}' for v in a)}; raw "
                f"{' / '.join(f'{v:.1f}' for v in b)}; Δ per seed {seeds}: "
                f"{' / '.join(f'{v:+.1f}' for v in d)}; Δ {d.mean():+.1f} ± "
                f"{d.std(ddof=1) if len(d) > 1 else 0.0:.1f}; sign holds on every seed: "
                f"{bool((d > 0).all())}; mean Δ > larger seed std ({spread:.1f}): "
                f"{bool(a.mean() - b.mean() > spread)}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--select", action="store_true", help="choose (λ, b) on dev")
    parser.add_argument(
        "--select-then-run", action="store_true", help="choose on dev, then run val with it"
    )
    parser.add_argument(
        "--presets-from", help="a --select result (JSON): take each tap's best dev preset"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--stego-taps", nargs="+", default=list(STEGO_TAPS), help="taps to train STEGO heads on"
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--select-steps", type=int, default=300)
    parser.add_argument("--tier", choices=["full", "fast"], default="full")
    parser.add_argument("--gray", action="store_true", help="the grey variant")
    parser.add_argument("--replicate", type=int, default=0, help="data replicate (1 = fresh data)")
    parser.add_argument(
        "--headline", action="store_true", help="only raw k-means on the STEGO taps + STEGO heads"
    )
    parser.add_argument("--out", default="bench_stego_texmosaic.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: python {shlex.join(sys.argv)}")
    print(
        f"# tier {args.tier}, replicate {args.replicate}, {'gray' if args.gray else 'RGB'}, "
        f"torch threads 1, backbone fw_backbones.taps.mobilenet_v2_tap",
        flush=True,
    )
    data = {"gray": args.gray, "replicate": args.replicate, "progress": False}
    train = texmosaic12("train", args.tier, **data)
    if args.select or args.select_then_run:
        chosen = select(train, args)
        if not args.select_then_run:
            return
        PRESET_BY_TAP.update(chosen)  # frozen from dev alone, before val is generated
    elif args.presets_from:
        PRESET_BY_TAP.update(best_on_dev(json.loads(Path(args.presets_from).read_text())))
    print(f"(λ, b) presets: {PRESET_BY_TAP}", flush=True)
    val = texmosaic12("val", args.tier, **data)
    label = val.tensors["label"].long()
    band = boundary_band(label, 9)
    print(f"data: {len(train)} train, {len(val)} val, band {band.float().mean():.1%}")
    table = Table()
    only = args.stego_taps if args.headline else None
    tr, va = baseline_rows(
        train, val, label, band, args.seeds, table, t0, gray=args.gray, only=only
    )
    for tap in args.stego_taps:
        preset = PRESET_BY_TAP[tap]
        if preset is None:
            raise SystemExit(f"choose (λ, b) for {tap} on dev first: --select")
        for seed in args.seeds:
            learner = train_stego(train, tr[tap], tap, preset, seed, args.steps)
            cluster, linear = stego_rows(learner, tr[tap], va[tap], label, band)
            table.add(f"STEGO {tap} [{preset}] k-means on codes, bilinear", cluster)
            table.add(f"STEGO {tap} [{preset}] online linear probe", linear)
            print(f"STEGO {tap} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"\n(partial table, up to STEGO {tap})\n{table.render()}\n", flush=True)
        Path(args.out).write_text(json.dumps(table.rows, indent=1))
    print(
        f"\nTexMosaic-12 {args.tier}{' gray' if args.gray else ''} val, replicate "
        f"{args.replicate}, seeds {args.seeds}, {args.steps} STEGO steps, "
        f"{time.perf_counter() - t0:.0f} s (scores ×100, mean ± std with ddof 1)"
    )
    print(table.render())
    print("\nSTEGO head vs raw k-means (bilinear) of its own layer, ×100:")
    print(paired_deltas(table, args.stego_taps, args.seeds))
    Path(args.out).write_text(json.dumps(table.rows, indent=1))


def best_on_dev(results: dict) -> dict[str, str]:
    """Each tap's preset with the highest dev cluster mIoU."""
    best: dict[str, str] = {}
    for key, got in results.items():
        tap, preset = key.split("/")
        score = got["cluster"]["miou_all"]
        if tap not in best or score > results[f"{tap}/{best[tap]}"]["cluster"]["miou_all"]:
            best[tap] = preset
    return best


def select(train, args) -> dict[str, str]:
    """Train every preset once (seed 0) per tap and score it on dev (cluster mIoU)."""
    dev = texmosaic12("dev", "full", gray=args.gray, replicate=args.replicate, progress=False)
    label = dev.tensors["label"].long()
    band = boundary_band(label, 9)
    net = mobilenet_v2_tap("s32c")
    tr, dv = all_taps(train.x, net), all_taps(dev.x, net)
    results, chosen = {}, {}
    for tap in args.stego_taps:
        for preset in PRESETS:
            t = time.perf_counter()
            learner = train_stego(train, tr[tap], tap, preset, 0, args.select_steps)
            cluster, linear = stego_rows(learner, tr[tap], dv[tap], label, band)
            results[f"{tap}/{preset}"] = {"cluster": cluster, "linear": linear}
            print(
                f"dev {tap} {preset:24s} cluster mIoU {100 * cluster['miou_all']:5.1f} "
                f"acc {100 * cluster['acc_all']:5.1f}  linear mIoU {100 * linear['miou_all']:5.1f}"
                f"  ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
        chosen[tap] = best_on_dev(results)[tap]
        print(f"dev choice for {tap}: {chosen[tap]}", flush=True)
    Path(args.out.replace(".json", "_select.json")).write_text(json.dumps(results, indent=1))
    return chosen


if __name__ == "__main__":
    main()
