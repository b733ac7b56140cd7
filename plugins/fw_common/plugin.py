"""Entry point of the ``common`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw.learner import IConLearner
from fw_common import mappers, optimizers


@hookimpl
def fw_optimizers():
    return {"adam": optimizers.adam, "adamw": optimizers.adamw, "sgd": optimizers.sgd}


@hookimpl
def fw_featurizers():
    return {"embedding": mappers.Embedding, "linear": mappers.Linear, "mlp": mappers.MLP}


@hookimpl
def fw_learners():
    return {"icon": IConLearner}
