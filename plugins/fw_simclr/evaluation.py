"""How the view-based learner is scored: kNN and linear probes, its classifier, k-means, and
top-1 retrieval between modalities."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from fw.lib import metrics

if TYPE_CHECKING:
    from fw_simclr.learners import ContrastiveLearner

#: the family of a p whose learner is a classifier (scored by ``classifier_accuracy``)
DATA_LABEL_FAMILY = "Data-Label Pairs"


def evaluate(learner: ContrastiveLearner, data: Any) -> dict[str, float]:
    """Probes (kNN, linear, the classifier), k-means and cross-modal retrieval scores."""
    feats, labels = learner.embed(data)
    out: dict[str, float] = {}
    if labels is None:
        warnings.warn("evaluation data has no labels: nothing to score", stacklevel=2)
        return out
    train = learner._train_data
    test_idx = train_idx = None
    if train is None or train is data:
        test_idx, train_idx = learner.holdout_split(feats.shape[0])
        xtr, ytr = feats[train_idx], labels[train_idx]
        xte, yte = feats[test_idx], labels[test_idx]
        prefix = "holdout_"
    else:
        xtr, ytr = learner.embed(train)
        if ytr is None:
            raise ValueError("the probes need labels in the training data")
        xte, yte = feats, labels
        prefix = ""
    out.update(
        metrics.probe_accuracies(
            xtr, ytr, xte, yte, learner.knn_k, learner.linear_probe, learner.probe_max_iter, prefix
        )
    )
    if getattr(learner.p, "family", "") == DATA_LABEL_FAMILY:
        pred = learner.classify(xte)
        out[f"{prefix}classifier_accuracy"] = float((pred == yte).float().mean())
    out.update(kmeans_scores(feats, labels, learner.eval_clusters, learner.eval_seed))
    if learner.modalities is not None:
        out.update(cross_modal_scores(learner, data, train, test_idx, train_idx, prefix))
    return out


def cross_modal_scores(
    learner: ContrastiveLearner,
    data: Any,
    train: Any,
    test_idx: Tensor | None,
    train_idx: Tensor | None,
    prefix: str,
) -> dict[str, float]:
    """kNN probes of the other modalities and top-1 retrieval between all modalities."""
    keys = learner.input_keys
    out: dict[str, float] = {}
    for m in range(1, len(keys)):
        feats, labels = learner.embed(data, m)
        if test_idx is not None:
            xtr, ytr = feats[train_idx], labels[train_idx]
            xte, yte = feats[test_idx], labels[test_idx]
        else:
            (xtr, ytr), (xte, yte) = learner.embed(train, m), (feats, labels)
        out[f"{prefix}knn_probe_accuracy_{keys[m]}"] = metrics.knn_probe_accuracy(
            xtr, ytr, xte, yte, k=learner.knn_k
        )
    projections = []
    for m in range(len(keys)):
        z, _ = learner.embed(data, m, project=True)
        projections.append(z if test_idx is None else z[test_idx])
    scores = []
    for a in range(len(keys)):
        for b in range(len(keys)):
            if a != b:
                top1 = retrieval_top1(projections[a], projections[b], learner.retrieval_metric)
                out[f"{prefix}retrieval_top1_{keys[a]}_to_{keys[b]}"] = top1
                scores.append(top1)
    out[f"{prefix}retrieval_top1"] = sum(scores) / len(scores)
    return out


def kmeans_scores(
    feats: Tensor, labels: Tensor, n_clusters: int | None, seed: int
) -> dict[str, float]:
    """k-means (one cluster per class) on the features, scored against the labels."""
    from sklearn.cluster import KMeans

    y = labels.numpy()
    k = n_clusters or int(y.max()) + 1
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(feats.double().numpy())
    return {
        "kmeans_hungarian_accuracy": metrics.hungarian_accuracy(y, pred),
        "kmeans_nmi": metrics.nmi(y, pred),
        "kmeans_ari": metrics.ari(y, pred),
    }


def retrieval_top1(
    queries: Tensor, keys: Tensor, metric: Literal["cosine", "euclidean"] = "cosine"
) -> float:
    """Fraction of rows i whose most similar key is key i (paired items share a position)."""
    if metric == "cosine":
        score = F.normalize(queries, dim=1) @ F.normalize(keys, dim=1).T
    else:
        score = -torch.cdist(queries, keys)
    hits = score.argmax(dim=1) == torch.arange(queries.shape[0])
    return float(hits.float().mean())
