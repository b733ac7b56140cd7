"""pluggy hook specifications: a plugin implements some of these to contribute named factories.

Every hook returns a mapping ``{name: factory}``. A factory is a class or function whose
keyword parameters (with type hints and defaults) are the recipe parameters of that component;
`fw.recipe` checks recipes against those signatures. Implement a hook with ``@fw.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("fw")

Factories = Mapping[str, Callable[..., Any]]


@hookspec
def fw_distributions() -> Factories:
    """Contribute NeighborhoodDistribution factories (supervisory p and learned q)."""


@hookspec
def fw_featurizers() -> Factories:
    """Contribute Featurizer factories (backbones, embedding tables, MLP mappers)."""


@hookspec
def fw_upsamplers() -> Factories:
    """Contribute Upsampler factories (dense feature upsampling)."""


@hookspec
def fw_aggregators() -> Factories:
    """Contribute Aggregator factories (dense-to-global similarity pooling)."""


@hookspec
def fw_explainers() -> Factories:
    """Contribute Explainer factories (attributions for similarity models)."""


@hookspec
def fw_learners() -> Factories:
    """Contribute Learner factories (trainable methods)."""


@hookspec
def fw_datasets() -> Factories:
    """Contribute dataset factories returning an `fw.data.ArrayDataset` or a torch Dataset."""


@hookspec
def fw_optimizers() -> Factories:
    """Contribute optimizer factories ``f(params, **cfg) -> torch.optim.Optimizer``."""


@hookspec
def fw_table_cells() -> list[Any]:
    """Declare which periodic-table cells this plugin's methods occupy (`fw.table.Cell`)."""


#: hook name for each component kind.
KIND_HOOKS: dict[str, str] = {
    "distribution": "fw_distributions",
    "featurizer": "fw_featurizers",
    "upsampler": "fw_upsamplers",
    "aggregator": "fw_aggregators",
    "explainer": "fw_explainers",
    "learner": "fw_learners",
    "dataset": "fw_datasets",
    "optimizer": "fw_optimizers",
}
