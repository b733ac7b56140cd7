"""Entry point of the ``denseav`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_denseav import aggregators


@hookimpl
def fw_aggregators():
    return {
        "max_mean": aggregators.MaxMean,
        "mean_mean": aggregators.MeanMean,
        "max_max": aggregators.MaxMax,
    }
