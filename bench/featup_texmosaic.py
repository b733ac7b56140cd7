"""FeatUp upsamplers on TexMosaic-12 (docs/benchmarks.md): one table from one run.

Heads are fixed at low resolution on one tap's train features: the cosine k-means centroids of
3 seeds (un-normalised scores ⟨f, c_k⟩, Hungarian matching over all eval pixels) and the
supervised linear probe of 3 seeds (identity matching). Then only the upsampler changes:
low-res (nearest), bilinear, bicubic, FeatUp's JBU stack at its random init and the JBU stack
trained label-free on TexMosaic train images (``recipes/featup_jbu_texmosaic.yaml``; none of its
hyper-parameters is chosen with labels). mIoU and accuracy whole-image, in the boundary band and
in the interior, mean ± std over the seeds, and per-seed paired Δ.

Every upsampler but implicit applies the same spatial weights to every channel, so the score
maps are upsampled instead of the C channels (the exactness trick); the JBU's final
``0.1·Conv1x1`` residual is folded into the heads (:meth:`JBUStack.fold_head`) and its constant
added after upsampling. The run checks the trick against the explicit C-channel path on a few
images. Implicit FeatUp is fitted per image (minutes each on one CPU core), so it runs on a
documented subset of evenly spaced eval images, where every other upsampler is scored too with
the matching of the full-set low-res row (same seed): the subset rows are paired among
themselves, not with the full-set rows.

    fw run recipes/featup_jbu_texmosaic.yaml --out runs/featup_jbu_texmosaic
    python bench/featup_texmosaic.py --jbu runs/featup_jbu_texmosaic
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from stego_texmosaic import (
    PARTS,
    Table,
    all_taps,
    baseline_rows,
    flat,
    match_all,
    part_confusions,
    scored,
    spherical_kmeans,
    train_linear_probe,
    update_parts,
)
from torch import Tensor

from fw_backbones.taps import mobilenet_v2_tap
from fw_featup.implicit import ImplicitUpsampler
from fw_featup.upsamplers import JBUStack
from fw_stego.scoring import Confusion, boundary_band
from fw_stego.texmosaic import texmosaic12

LOWRES, JBU_INIT, JBU_TRAINED, IMPLICIT = "low-res", "JBU init", "JBU trained", "implicit"


class Head:
    """A linear scoring head ``A·f + a`` (``A [K, C]``) fixed at low resolution."""

    def __init__(self, kind: str, seed: int, weight: Tensor, bias: Tensor | None = None) -> None:
        self.kind, self.seed = kind, seed  # kind: "cluster" (Hungarian) or "probe" (identity)
        self.weight = weight.float()
        self.bias = torch.zeros(weight.shape[0]) if bias is None else bias.float()

    def score(self, maps: Tensor) -> Tensor:
        return torch.einsum("nchw,kc->nkhw", maps.float(), self.weight) + self.bias.view(
            1, -1, 1, 1
        )


def fit_heads(train_maps: Tensor, train_label: Tensor, seeds: list[int]) -> list[Head]:
    """Cosine k-means centroids and the supervised linear probe, one of each per seed."""
    heads = [Head("cluster", s, spherical_kmeans(flat(train_maps), s)) for s in seeds]
    for s in seeds:
        conv = train_linear_probe(train_maps, train_label, s)
        heads.append(Head("probe", s, conv.weight.detach()[:, :, 0, 0], conv.bias.detach()))
    return heads


#: an upsampler of score maps: (low-res maps [n, K', h, w], images [n, 3, H, W] in [0, 1]) -> HR
ScoreUpsampler = Callable[[Tensor, Tensor], Tensor]


def interpolation(mode: str) -> ScoreUpsampler:
    def up(maps: Tensor, images: Tensor) -> Tensor:
        kw = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(maps, size=images.shape[-2:], mode=mode, **kw)

    return up


def interpolated_scores(mode: str, heads: list[Head], maps: Tensor, images: Tensor) -> list[Tensor]:
    """Each head's low-res score maps interpolated (the trick; these weights sum to 1, so the
    bias commutes too)."""
    low = torch.cat([h.score(maps) for h in heads], dim=1)
    up = interpolation(mode)(low, images)
    return list(up.split([h.weight.shape[0] for h in heads], dim=1))


def jbu_scores(stack: JBUStack, heads: list[Head], maps: Tensor, images: Tensor) -> list[Tensor]:
    """Each head's HR scores ``A·stack(F) + a`` through the exactness trick: the folded heads
    score the low-res maps, the stages upsample all heads' maps at once, the folded constant is
    added after upsampling."""
    folded = [stack.fold_head(h.weight, h.bias) for h in heads]
    weight = torch.cat([w for w, _ in folded])
    bias = torch.cat([b for _, b in folded])
    low = torch.einsum("nchw,kc->nkhw", maps.float(), weight)
    with torch.no_grad():
        up = stack.upsample_scores(low, images) + bias.view(1, -1, 1, 1)
    return list(up.split([h.weight.shape[0] for h in heads], dim=1))


def explicit_scores(
    upsampler: Callable[[Tensor, Tensor], Tensor], heads: list[Head], maps: Tensor, images: Tensor
) -> list[Tensor]:
    """Each head's HR scores from the upsampled C-channel features (no trick)."""
    with torch.no_grad():
        hr = upsampler(maps.float(), images)
    return [h.score(hr) for h in heads]


class Scorer:
    """Confusions per (row, head, part), on the whole eval set and on a subset of it."""

    def __init__(self, heads: list[Head]) -> None:
        self.heads = heads
        self.conf: dict[str, list[dict[str, Confusion]]] = {}

    def update(self, row: str, hr_scores: list[Tensor], label: Tensor, band: Tensor) -> None:
        confs = self.conf.setdefault(row, [part_confusions() for _ in self.heads])
        for conf, sc in zip(confs, hr_scores, strict=True):
            update_parts(conf, label, sc.argmax(1), band)

    def results(
        self, assignments: dict[int, np.ndarray] | None = None
    ) -> dict[str, list[dict[str, float]]]:
        """Scores per row and head: clusters matched by their own Hungarian (or by the fixed
        ``assignments[head index]``), probes by identity; band and interior reuse the match."""
        out: dict[str, list[dict[str, float]]] = {}
        for row, confs in self.conf.items():
            got = []
            for i, (head, conf) in enumerate(zip(self.heads, confs, strict=True)):
                if head.kind == "cluster" and assignments is not None:
                    got.append(scored(conf, assignments[i]))
                else:
                    got.append(match_all(conf, head.kind == "cluster"))
            out[row] = got
        return out


def hungarian_of(scorer: Scorer, row: str) -> dict[int, np.ndarray]:
    """The full-set matching of ``row`` for each cluster head."""
    from fw_stego.scoring import hungarian_assignment

    return {
        i: hungarian_assignment(conf["all"].counts)
        for i, (head, conf) in enumerate(zip(scorer.heads, scorer.conf[row], strict=True))
        if head.kind == "cluster"
    }


def paired_deltas(results: dict[str, list[dict[str, float]]], heads: list[Head], pairs) -> str:
    """Per-seed Δ (×100) of mIoU all/band/interior for ``pairs`` of rows, per head kind."""
    lines = []
    for kind in ("cluster", "probe"):
        idx = [i for i, h in enumerate(heads) if h.kind == kind]
        if not idx:
            continue
        seeds = [heads[i].seed for i in idx]
        for a, b in pairs:
            if a not in results or b not in results:
                continue
            cells = []
            for part in PARTS:
                d = np.array(
                    [
                        100 * (results[a][i][f"miou_{part}"] - results[b][i][f"miou_{part}"])
                        for i in idx
                    ]
                )
                same = "all >0" if (d > 0).all() else "all <0" if (d < 0).all() else "mixed"
                per = " ".join(f"{v:+.2f}" for v in d)
                sd = d.std(ddof=1) if len(d) > 1 else 0.0
                cells.append(f"{part} [{per}] {d.mean():+.2f} ± {sd:.2f} ({same})")
            lines.append(f"{kind:7s} {a} − {b}, seeds {seeds}: " + "; ".join(cells))
    return "\n".join(lines)


def to_table(results: dict[str, list[dict[str, float]]], heads: list[Head], table: Table, tag=""):
    for row, got in results.items():
        for kind, name in (("cluster", "k-means"), ("probe", "probe")):
            for head, g in zip(heads, got, strict=True):
                if head.kind == kind:
                    table.add(f"{tag}{name}, {row}", g)


def subset_indices(n_eval: int, n: int) -> list[int]:
    """``n`` evenly spaced eval items (both layout halves when n ≥ 2)."""
    return [] if n <= 0 else sorted({int(i) for i in np.linspace(0, n_eval - 1, n).round()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jbu", help="run dir (or upsampler.pt) of the trained jbu_stack")
    parser.add_argument("--tap", default="s16")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", choices=["val", "dev"], default="val")
    parser.add_argument("--tier", choices=["full", "fast"], default="full")
    parser.add_argument("--n-train", type=int, help="override the tier's train size (even)")
    parser.add_argument("--n-eval", type=int, help="override the tier's eval size (even)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the baseline rows")
    parser.add_argument("--implicit-images", type=int, default=4)
    parser.add_argument("--implicit-steps", type=int, default=40)
    parser.add_argument("--implicit-views", type=int, default=2, help="jitters per step")
    parser.add_argument("--implicit-pool", type=int, default=10, help="jittered views featurized")
    parser.add_argument("--check-images", type=int, default=2, help="trick vs explicit path")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--out", default="bench_featup_texmosaic.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = texmosaic12("train", args.tier, n=args.n_train, progress=False)
    if args.split == "dev":
        evalset = texmosaic12("dev", "full", n=args.n_eval, progress=False)
    else:
        evalset = texmosaic12("val", args.tier, n=args.n_eval, progress=False)
    label = evalset.tensors["label"].long()
    band = boundary_band(label, 9)
    print(f"data: {len(train)} train, {len(evalset)} {args.split}, band {band.float().mean():.1%}")
    table = Table()
    if args.no_baselines:
        net = mobilenet_v2_tap(args.tap)
        tr, va = all_taps(train.x, net)[args.tap], all_taps(evalset.x, net)[args.tap]
    else:
        taps = tuple(dict.fromkeys(("s16", "s32a", args.tap)))
        trs, vas = baseline_rows(train, evalset, label, band, args.seeds, table, t0, taps)
        tr, va = trs[args.tap], vas[args.tap]
    heads = fit_heads(tr, train.tensors["label"], args.seeds)
    print(f"heads: {time.perf_counter() - t0:.0f} s", flush=True)

    jbus: dict[str, JBUStack] = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        jbus[JBU_INIT] = JBUStack(dim=tr.shape[1]).eval()
    if args.jbu:
        jbus[JBU_TRAINED] = JBUStack(weights=args.jbu).eval()
        if jbus[JBU_TRAINED].feature_norm:
            raise SystemExit("this bench scores raw features: train the JBU without channel_norm")
    interps = {LOWRES: "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}
    subset = subset_indices(len(evalset), args.implicit_images)
    full, sub = Scorer(heads), Scorer(heads)
    times: dict[str, float] = {}
    for s in range(0, len(evalset), args.batch):
        idx = list(range(s, min(s + args.batch, len(evalset))))
        images = evalset.x[idx].float() / 255.0
        maps = va[idx].float()
        keep = [j for j, i in enumerate(idx) if i in subset]
        upsamplers = {
            **{row: partial(interpolated_scores, mode) for row, mode in interps.items()},
            **{row: partial(jbu_scores, stack) for row, stack in jbus.items()},
        }
        for row, upsample in upsamplers.items():
            t = time.perf_counter()
            hr = upsample(heads, maps, images)
            times[row] = times.get(row, 0.0) + time.perf_counter() - t
            full.update(row, hr, label[idx], band[idx])
            if keep:
                sub.update(row, [h[keep] for h in hr], label[idx][keep], band[idx][keep])
    print(f"upsampled: {time.perf_counter() - t0:.0f} s", flush=True)

    # the exactness trick against the explicit C-channel path, on the first images
    check = []
    for row, stack in jbus.items():
        n = min(args.check_images, len(evalset))
        images, maps = evalset.x[:n].float() / 255.0, va[:n].float()
        fast = jbu_scores(stack, heads, maps, images)
        slow = explicit_scores(stack, heads, maps, images)
        diff = max(float((a - b).abs().max()) for a, b in zip(fast, slow, strict=True))
        agree = np.mean(
            [
                float((a.argmax(1) == b.argmax(1)).float().mean())
                for a, b in zip(fast, slow, strict=True)
            ]
        )
        check.append(f"{row}: max |Δscore| {diff:.2e}, argmax agreement {agree:.6f} on {n} images")

    implicit_s = 0.0
    if subset:
        net = mobilenet_v2_tap(args.tap)
        implicit = ImplicitUpsampler(
            steps=args.implicit_steps,
            n_jitters=args.implicit_views,
            pool=args.implicit_pool,
            pca_views=args.implicit_pool,
            pca_dim=min(128, tr.shape[1]),
            progress=False,
        )
        for i in subset:
            t = time.perf_counter()
            image = evalset.x[i : i + 1].float() / 255.0
            torch.manual_seed(i)
            with torch.enable_grad():
                implicit.fit(image, net)
            hr = explicit_scores(implicit, heads, va[i : i + 1], image)
            sub.update(IMPLICIT, hr, label[i : i + 1], band[i : i + 1])
            implicit_s += time.perf_counter() - t
            print(f"implicit item {i}: {time.perf_counter() - t:.0f} s", flush=True)

    res_full = full.results()
    res_sub = sub.results(hungarian_of(full, LOWRES))
    to_table(res_full, heads, table, f"{args.tap} ")
    to_table(res_sub, heads, table, f"[{len(subset)} img] {args.tap} ")
    wall = time.perf_counter() - t0
    trained = JBU_TRAINED
    jbu_row = trained if args.jbu else JBU_INIT
    pairs = [
        ("bilinear", LOWRES),
        (jbu_row, "bilinear"),
        (jbu_row, LOWRES),
        (trained, JBU_INIT),
        (JBU_INIT, "bilinear"),
        ("bicubic", "bilinear"),
    ]
    sub_pairs = [*pairs[:3], (IMPLICIT, "bilinear"), (IMPLICIT, jbu_row)]
    print(
        f"\nTexMosaic-12 {args.tier} {args.split} ({len(evalset)} images), tap {args.tap}, "
        f"seeds {args.seeds}, {wall:.0f} s (scores ×100)"
    )
    print(f"JBU weights: {args.jbu or 'none (untrained row only)'}")
    metrics = Path(args.jbu or "/nonexistent") / "metrics.json"
    if metrics.is_file():
        print(f"its label-free held-out figures (metrics.json): {metrics.read_text().strip()}")
    print(table.render())
    print("\npaired Δ mIoU (×100), full set:")
    print(paired_deltas(res_full, heads, pairs))
    if subset:
        print(
            f"\npaired Δ mIoU (×100), subset {subset} (implicit: {args.implicit_steps} steps × "
            f"{args.implicit_views} views from a pool of {args.implicit_pool}; cluster rows use "
            "the full-set low-res matching):"
        )
        print(paired_deltas(res_sub, heads, sub_pairs))
    print("\nexactness trick vs explicit C-channel path:\n" + "\n".join(check))
    upsampling = ", ".join(f"{k} {v:.1f}" for k, v in times.items())
    print(f"\nwall s: upsampling+scoring ({len(evalset)} images, {len(heads)} heads): {upsampling}")
    if subset:
        print(f"implicit fit+scoring: {implicit_s:.0f} s for {len(subset)} images")
    Path(args.out).write_text(json.dumps({"full": res_full, "subset": res_sub}, indent=1))


if __name__ == "__main__":
    main()
