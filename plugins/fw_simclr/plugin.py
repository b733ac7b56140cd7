"""Entry point of the ``simclr`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_simclr.distributions import PositivePairs
from fw_simclr.featurizers import ConvNet, ResNet18
from fw_simclr.learners import ContrastiveLearner


@hookimpl
def fw_distributions():
    return {"positive_pairs": PositivePairs}


@hookimpl
def fw_featurizers():
    return {"cifar_resnet18": ResNet18, "convnet": ConvNet}


@hookimpl
def fw_learners():
    return {"contrastive": ContrastiveLearner}


@hookimpl
def fw_table_cells():
    from fw_simclr.cells import CELLS, TEMPLATES

    return CELLS + TEMPLATES
