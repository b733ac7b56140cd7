"""pluggy hook specifications: a plugin implements some of these to contribute named factories."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import pluggy
from torch.utils.data import Dataset

from fw import api

hookspec = pluggy.HookspecMarker("fw")
#: marks a plugin's hook implementations (re-exported as ``fw.hookimpl``)
hookimpl = pluggy.HookimplMarker("fw")

Factories = Mapping[str, Callable[..., Any]]


@attrs.frozen
class Kind:
    """One component kind: its name, the hook that registers it, the type recipes annotate."""

    name: str
    hook: str
    base: type


def _kind(name: str, base: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a hookspec as the registration hook of component kind ``name``."""

    def mark(spec: Callable[..., Any]) -> Callable[..., Any]:
        spec.fw_kind = (name, base)  # type: ignore[attr-defined]
        return hookspec(spec)

    return mark


@_kind("distribution", api.NeighborhoodDistribution)
def fw_distributions() -> Factories:
    """Contribute NeighborhoodDistribution factories (supervisory p and learned q)."""


@_kind("featurizer", api.Featurizer)
def fw_featurizers() -> Factories:
    """Contribute Featurizer factories (backbones, embedding tables, mappers)."""


@_kind("upsampler", api.Upsampler)
def fw_upsamplers() -> Factories:
    """Contribute Upsampler factories (dense feature upsampling)."""


@_kind("downsampler", api.Downsampler)
def fw_downsamplers() -> Factories:
    """Contribute Downsampler factories (models of a backbone's pooling, for upsampler training)."""


@_kind("aggregator", api.Aggregator)
def fw_aggregators() -> Factories:
    """Contribute Aggregator factories (dense-to-global similarity pooling)."""


@_kind("explainer", api.Explainer)
def fw_explainers() -> Factories:
    """Contribute Explainer factories (attributions for similarity models)."""


@_kind("learner", api.Learner)
def fw_learners() -> Factories:
    """Contribute Learner factories (trainable methods)."""


@_kind("dataset", Dataset)
def fw_datasets() -> Factories:
    """Contribute dataset factories returning an `fw.data.ArrayDataset` or a torch Dataset."""


@_kind("augmentation", api.Augmentation)
def fw_augmentations() -> Factories:
    """Contribute Augmentation factories (batched random image transforms)."""


@_kind("optimizer", api.OptimizerFactory)
def fw_optimizers() -> Factories:
    """Contribute optimizer factories ``f(params, **cfg) -> torch.optim.Optimizer``."""


@hookspec
def fw_commands() -> Mapping[str, api.Command]:
    """Contribute `fw` sub-commands: ``{name: fw.api.Command}`` (the host's own too)."""


@hookspec
def fw_table_cells() -> list[Any]:
    """Declare the periodic-table cells this plugin's methods occupy (read by the table plugin)."""


#: Every component kind, in the order `fw plugins` lists them (the order of the hooks above).
KINDS: tuple[Kind, ...] = tuple(
    Kind(obj.fw_kind[0], name, obj.fw_kind[1])
    for name, obj in vars(sys.modules[__name__]).items()
    if callable(obj) and hasattr(obj, "fw_kind")
)
#: kind name -> hook name
KIND_HOOKS: dict[str, str] = {k.name: k.hook for k in KINDS}
