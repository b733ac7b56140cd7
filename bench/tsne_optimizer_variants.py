"""fw's scale t-SNE with the optimiser details of openTSNE swapped in, one at a time, scored as
``bench/tsne_scale.py`` scores (KL with the shared sparse P, trustworthiness on 5k, k-means).

An exploration of where fw's 70k map differs from openTSNE's (trustworthiness) and scikit-learn's
(k-means accuracy); nothing here changes fw. Each variant patches fw's classes in this process:

- ``float64``: the embedding is a float64 parameter (fw keeps float32, as scikit-learn does;
  openTSNE works in float64);
- ``max_step_norm``: each point's update is clipped to Euclidean length 5 (openTSNE ≥ 1.0);
- ``opentsne_rules``: openTSNE 1.0's ``gradient_descent`` as a whole: gains + 0.2 where
  sign(update) ≠ sign(grad), else gains · 0.8 + min_gain (no clamp); the step clipped to 5; gains
  and update carried over from the exaggeration phase; the embedding re-centred every step.

    python bench/tsne_optimizer_variants.py opentsne_rules --n 70000   # appends to --out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tsne_scale  # noqa: E402  (the bench's loading, fitting and scoring)

MAX_STEP_NORM = 5.0
RESULTS = Path(__file__).resolve().parent / "results"


def clip_rows(update: torch.Tensor) -> None:
    """Scale each row of ``update`` down to norm ``MAX_STEP_NORM`` where it is longer."""
    norm = torch.linalg.vector_norm(update, dim=1, keepdim=True)
    update.mul_((MAX_STEP_NORM / norm).clamp(max=1.0))


def patch_float64() -> None:
    from fw_common import mappers

    setup = mappers.Embedding.setup

    def setup64(self, data) -> None:
        setup(self, data)
        self.weight = nn.Parameter(self.weight.detach().double())

    mappers.Embedding.setup = setup64


def patch_optimizer(opentsne_rules: bool) -> None:
    """Clip every step (``max_step_norm``), plus openTSNE's gains and re-centring if asked."""
    from fw_sne.optim import TSNEGradientDescent as Opt

    def apply_update(param: torch.Tensor, update: torch.Tensor) -> None:
        clip_rows(update)
        param.add_(update)
        if opentsne_rules:
            param.sub_(param.mean(dim=0, keepdim=True))

    def update_gains(gains, update, grad, min_gain) -> None:
        flipped = torch.sign(update) != torch.sign(grad)
        gains.copy_(torch.where(flipped, gains + 0.2, gains * 0.8 + min_gain))

    Opt.apply_update = staticmethod(apply_update)
    if opentsne_rules:
        Opt.update_gains = staticmethod(update_gains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=["float64", "max_step_norm", "opentsne_rules"])
    parser.add_argument("--n", type=int, default=70000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "tsne_scale_explore.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.variant == "float64":
        patch_float64()
    else:
        patch_optimizer(opentsne_rules=args.variant == "opentsne_rules")
    x, y = tsne_scale.load(args.n)
    # openTSNE carries gains and update over the phase switch: the optimiser's own option
    extra = ["learner.optimizer.reset_at_switch=false"] if args.variant == "opentsne_rules" else []
    emb, wall = tsne_scale.fit_fw(args.n, args.seed, exact=False, extra=extra)
    rec = {"n": args.n, "method": "fw", "seed": args.seed, "variant": args.variant}
    rec.update(wall_s=wall, peak_rss_mib=tsne_scale.peak_rss_mib())
    tsne_scale.score_and_append(args.out, rec, x, y, emb)


if __name__ == "__main__":
    main()
