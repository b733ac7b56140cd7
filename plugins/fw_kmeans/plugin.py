"""Entry point of the ``kmeans`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_kmeans.distributions import ClusterKernel


@hookimpl
def fw_distributions():
    return {"cluster": ClusterKernel}
