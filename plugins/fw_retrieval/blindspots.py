"""``fw blindspots``: where generated images under-sample the real ones (relative conditioner
density below a threshold), with the real images of each such region."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from fw.api import Command
from fw.errors import FwError


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``fw blindspots``."""
    p.add_argument("--real", required=True, help="real images: a folder or a .npz/.npy file")
    p.add_argument("--generated", required=True, help="generated images: a folder or a file")
    p.add_argument("--threshold", type=float, default=0.6, help="RCD below this (default 0.6)")
    p.add_argument("--alpha", type=float, default=0.01, help="binomial p-value below this")
    p.add_argument("--min-size", type=int, default=50, help="smallest node reported (rows)")
    p.add_argument("--leaf-size", type=int, default=50, help="tree leaf size (default 50)")
    p.add_argument("--show", type=int, default=8, help="real images drawn per blind spot")
    p.add_argument("--features", default="content", choices=("content", "style"))
    p.add_argument("--featurizer", help="registered featurizer name (default per --features)")
    p.add_argument("--featurizer-arg", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cache", default="~/.cache/fw/retrieval", help="feature cache folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the tree's random pivots")
    p.add_argument("--out", required=True, help="output folder")


def _load(path: Path, args: argparse.Namespace, model: Any) -> tuple[Any, Any]:
    from fw_retrieval import corpus as cp
    from fw_retrieval.command import _featurizer_args as featurizer_args

    if path.is_dir():
        if model is None:
            fargs = featurizer_args(args.featurizer_arg)
            model = cp.build_featurizer(args.featurizer, args.features, fargs)
        return cp.index_folder(
            path, model[0], model[1], Path(args.cache).expanduser(), args.image_size
        ), model
    if path.is_file():
        return cp.index_file(path), model
    raise FwError(f"{path} does not exist (a folder of images or a .npz/.npy feature file)")


def main(args: argparse.Namespace) -> int:
    """Build one tree over real + generated rows and report the blind spots."""
    from fw.files import locked, write_text
    from fw_retrieval.command import _picture, contact_sheet
    from fw_retrieval.rcd import blind_spots
    from fw_retrieval.tree import ConditionalTree

    real, model = _load(Path(args.real).expanduser(), args, None)
    gen, _ = _load(Path(args.generated).expanduser(), args, model)
    if real.features.shape[1] != gen.features.shape[1]:
        raise FwError(
            f"--real has {real.features.shape[1]}-d features, --generated "
            f"{gen.features.shape[1]}-d; featurize both the same way"
        )
    X = np.concatenate([real.features, gen.features]).astype(np.float32)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    generated = np.r_[np.zeros(len(real.features), bool), np.ones(len(gen.features), bool)]
    tree = ConditionalTree(X, leaf_size=args.leaf_size, seed=args.seed)
    spots = blind_spots(tree, generated, args.threshold, args.alpha, args.min_size)
    report = {
        "real": str(args.real),
        "generated": str(args.generated),
        "rows": {"real": int((~generated).sum()), "generated": int(generated.sum())},
        "threshold": args.threshold,
        "alpha": args.alpha,
        "nodes": tree.n_nodes,
        "blind_spots": [
            {
                "node": s.node,
                "depth": s.depth,
                "size": s.size,
                "rcd": s.rcd,
                "p_value": s.p_value,
                "real_rows": s.others.tolist(),
                **({"real_paths": [str(real.paths[i]) for i in s.others]} if real.paths else {}),
            }
            for s in spots
        ],
    }
    out = Path(args.out)
    with locked(out):
        write_text(out / "blind_spots.json", json.dumps(report, indent=2) + "\n")
        for rank, s in enumerate(spots[:6]):
            rows = s.others[: args.show]
            pictures = [_picture(real.paths[i], 128) if real.paths else None for i in rows]
            captions = [f"real #{i}" for i in rows]
            title = (
                f"blind spot {rank + 1}: node {s.node}, {s.size} rows, RCD {s.rcd:.2f}, "
                f"p = {s.p_value:.1e}"
            )
            path = out / f"blind_spot_{rank + 1}.png"
            contact_sheet(None, pictures, captions, title, path, with_query=False)
    print(f"{len(spots)} blind spots (RCD < {args.threshold}, p < {args.alpha}) among "
          f"{tree.n_nodes} nodes; wrote {out / 'blind_spots.json'}")  # fmt: skip
    return 0


COMMAND = Command(
    help="find where generated images under-sample real ones (relative conditioner density)",
    description="One conditional tree over real + generated features; nodes where the "
    "generated class has RCD < --threshold (and a binomial p < --alpha) are reported with "
    "their real images (blind_spots.json, blind_spot_<n>.png).",
    configure=configure,
    main=main,
)
