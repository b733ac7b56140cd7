"""Figures of docs/retrieval.md: a `fw retrieve` contact sheet and RCD on the 2-D toy.

    python bench/retrieval_figures.py --out bench/results

1. ``retrieval_contact_sheet.png``: ``--images`` Fashion-MNIST test images (from
   /usr/share/datasets/fashion-mnist) written as PNG files into class sub-folders with a
   ``metadata.csv`` (a ``half`` column: ``first`` / ``second`` half of the test set), then
   ``fw retrieve`` with ImageNet MobileNetV2 features (64 px) for the nearest sandals to an
   ankle boot from the second half.
2. ``retrieval_rcd_toy.png``: real N(0, I) (4000 points) against three generators with mean 0
   and covariance I (equal Fréchet distance): each real point coloured by the RCD of the
   generated class at its leaf of a conditional tree over real + generated points (thesis
   Fig. 3.8a), blind spots (RCD < 0.6, p < 0.01) outlined.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for sub in ("framework", "plugins"):
    sys.path.insert(0, str(ROOT / sub))


def contact_sheet(out: Path, n_images: int) -> None:
    from PIL import Image

    from fw.cli import main
    from fw.registry import get_registry

    data = get_registry().get("dataset", "fashion_mnist").factory(split="test", limit=n_images)
    x = (data.tensors["x"][:, 0].numpy() * 255).astype(np.uint8)
    y = data.tensors["label"].numpy()
    names = [c.replace("/", "-").replace(" ", "_") for c in data.classes]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fashion"
        lines = ["file,half"]
        for i, (img, lab) in enumerate(zip(x, y, strict=True)):
            rel = Path(names[lab]) / f"{i:05d}.png"
            (root / rel.parent).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).resize((64, 64), Image.BICUBIC).save(root / rel)
            lines.append(f"{rel.as_posix()},{'first' if i < n_images // 2 else 'second'}")
        (root / "metadata.csv").write_text("\n".join(lines) + "\n")
        boots = [i for i in range(n_images // 2, n_images) if names[y[i]] == "Ankle_boot"]
        query = root / names[y[boots[0]]] / f"{boots[0]:05d}.png"
        where = 'label == "Sandal" and half == "first"'
        argv = ["retrieve", "--index", str(root), "--query", str(query), "--where", where]
        argv += ["-k", "8", "--image-size", "64", "--out", str(Path(tmp) / "sheet")]
        if main(argv) != 0:
            raise SystemExit("fw retrieve failed")
        (out / "retrieval_contact_sheet.png").write_bytes(
            (Path(tmp) / "sheet" / "contact_sheet.png").read_bytes()
        )
    print(f"wrote {out / 'retrieval_contact_sheet.png'} (query {query.name}, where {where})")


def rcd_toy(out: Path) -> None:
    from fw.lib.plots import pyplot, save_figure
    from fw_retrieval.rcd import blind_spots, frechet_distance, row_rcd, toy_generators
    from fw_retrieval.tree import ConditionalTree

    n = 4000
    real = np.random.default_rng(1).standard_normal((n, 2))
    gens = toy_generators(n, seed=2)
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11, 7))
    for j, (name, g) in enumerate(gens.items()):
        X = np.concatenate([real, g]).astype(np.float32)
        generated = np.r_[np.zeros(n, bool), np.ones(n, bool)]
        tree = ConditionalTree(X, leaf_size=50, seed=0)
        r = row_rcd(tree, generated)[:n]
        spots = blind_spots(tree, generated, min_size=50)
        fd = frechet_distance(real, g)
        axes[0, j].scatter(g[:, 0], g[:, 1], s=1, c="k", alpha=0.3)
        axes[0, j].set_title(f"generated: {name}\nFréchet distance to real {fd:.4f}", fontsize=9)
        sc = axes[1, j].scatter(
            real[:, 0], real[:, 1], s=2, c=np.log2(np.maximum(r, 1 / 16)), cmap="coolwarm_r",
            vmin=-3, vmax=3,
        )  # fmt: skip
        if spots:
            rows = np.concatenate([s.others for s in spots])
            axes[1, j].scatter(real[rows, 0], real[rows, 1], s=6, facecolors="none",
                               edgecolors="k", linewidths=0.3)  # fmt: skip
        axes[1, j].set_title(f"real, coloured by RCD; {len(spots)} blind spots", fontsize=9)
        for ax in axes[:, j]:
            ax.set_xlim(-4, 4)
            ax.set_ylim(-4, 4)
            ax.set_aspect("equal")
    fig.colorbar(sc, ax=axes[1, 2], label="log2 RCD(leaf, generated)", shrink=0.8)
    save_figure(fig, out / "retrieval_rcd_toy.png")
    print(f"wrote {out / 'retrieval_rcd_toy.png'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench/results")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--skip-sheet", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rcd_toy(out)
    if not args.skip_sheet:
        contact_sheet(out, args.images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
