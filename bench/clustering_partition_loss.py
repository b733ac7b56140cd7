"""Which partition does the clusterer's own I-Con loss prefer: its trained head's, or KMeans'?

For one finished run of an ``icon_clustering`` recipe (its directory: ``recipe.yaml`` and
``checkpoints/last.ckpt``), this rebuilds the learner on the run's data and scores, on the same
random batches (anchors, views and sampled neighbours drawn identically for every partition):

- the selected head's soft assignments (its logits);
- the head's argmax partition and KMeans' partition of the head inputs (10 restarts), each as
  hard assignments ``scale · one_hot``.

A head that beats KMeans on accuracy but loses on loss would be an optimisation failure; a head
with the lower loss and the lower accuracy means the objective itself prefers the worse
partition, which more steps cannot mend. Printed: accuracy, and mean ± s.e. of the loss.

    python bench/clustering_partition_loss.py RUN_DIR [--batches 300] [--scales 5,20]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def batch_losses(learner, inputs: Tensor, logits: Tensor, batches: int, seed: int) -> np.ndarray:
    """The recipe's loss of fixed logits on ``batches`` batches drawn from ``seed``."""
    from fw_icon_clustering.fused import sparse_icon_loss, sparse_p

    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batches):
        anchors = torch.randperm(len(inputs), generator=gen)[: learner.batch_size]
        torch.manual_seed(seed * 1_000_003 + b)  # the same views and neighbours per partition
        ids, head_in, knn_feats = learner._points(
            {"index": anchors, learner.input_key: inputs[anchors]}
        )
        ctx = learner.p_context(ids, knn_feats)
        entries = sparse_p(learner._p_spec, ctx, len(ids), head_in.dtype)
        loss = sparse_icon_loss(
            learner._p_spec, learner._q_spec, ctx, logits[ids], None, learner.mode, entries
        )
        out.append(float(loss))
    return np.array(out)


def sem(values: np.ndarray) -> float:
    """Standard error of the mean."""
    return float(values.std(ddof=1) / len(values) ** 0.5)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished icon_clustering run directory")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--scales", default="5,20", help="one-hot logit scales of hard partitions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from sklearn.cluster import KMeans

    from fw.lib import metrics
    from fw.recipe import build, load_recipe

    recipe = load_recipe(args.run / "recipe.yaml")
    data = build("dataset", recipe.raw["data"])
    learner = build("learner", recipe.raw["learner"])
    learner.setup(data)
    state = torch.load(
        args.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    learner.load_state_dict(state["learner"])
    learner.eval()
    if learner._p_spec is None or learner._q_spec is None:
        raise SystemExit("this diagnostic scores the fused loss; the run's p/q are not fused")

    inputs = data.tensors[learner.input_key]
    feats = learner._normalize(learner.frozen_features(inputs))
    y = data.labels.numpy()
    soft = learner.heads[learner.selected_head](feats)
    head = soft.argmax(1)
    km = KMeans(learner.clusters, n_init=10, random_state=args.seed).fit(feats.numpy())
    kmeans = torch.from_numpy(km.labels_).long()
    print(f"run {args.run}: {len(y)} points, head {learner.selected_head}, {args.batches} batches")
    print(
        f"Hungarian accuracy: head {metrics.hungarian_accuracy(y, head.numpy()):.4f}, "
        f"KMeans on the head inputs {metrics.hungarian_accuracy(y, kmeans.numpy()):.4f}"
    )
    rows = [("head, soft", soft)]
    for scale in (float(s) for s in args.scales.split(",")):
        onehot = torch.nn.functional.one_hot
        rows.append((f"head, hard ×{scale:g}", onehot(head, learner.clusters).float() * scale))
        rows.append((f"KMeans, hard ×{scale:g}", onehot(kmeans, learner.clusters).float() * scale))
    base = None
    for name, logits in rows:
        losses = batch_losses(learner, inputs, logits, args.batches, args.seed)
        extra = ""
        if name.startswith("head, hard"):
            base = losses
        elif base is not None and name.startswith("KMeans"):
            diff = losses - base
            extra = f"   paired Δ vs head {diff.mean():+.4f} ± {sem(diff):.4f}"
        print(f"{name:<18} loss {losses.mean():.4f} ± {sem(losses):.4f}{extra}")


if __name__ == "__main__":
    main()
