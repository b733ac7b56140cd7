"""Entry point of the ``kmeans`` plugin: cluster kernels, the clustering learner, the table."""

from __future__ import annotations

from fw import hookimpl
from fw_kmeans.distributions import ClusterKernel
from fw_kmeans.featurizers import SpectralEmbedding
from fw_kmeans.learners import ClusterLearner


@hookimpl
def fw_distributions():
    return {"cluster": ClusterKernel}


@hookimpl
def fw_learners():
    return {"clusterer": ClusterLearner}


@hookimpl
def fw_featurizers():
    return {
        "spectral_embedding": SpectralEmbedding,
    }


@hookimpl
def fw_table_cells():
    from fw_kmeans.cells import CELLS

    return CELLS
