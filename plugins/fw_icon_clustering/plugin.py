"""Entry point of the ``icon_clustering`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_icon_clustering.chain import chained, featurized
from fw_icon_clustering.learner import IConClustering
from fw_icon_clustering.walks import KNNWalks


@hookimpl
def fw_learners():
    return {"icon_clustering": IConClustering}


@hookimpl
def fw_distributions():
    return {"knn_walks": KNNWalks}


@hookimpl
def fw_datasets():
    return {"chained": chained, "featurized": featurized}
