"""Entry point of the ``common`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_common import augment, mappers, optimizers
from fw_common.learner import IConLearner


@hookimpl
def fw_optimizers():
    return {"adam": optimizers.adam, "adamw": optimizers.adamw, "sgd": optimizers.sgd}


@hookimpl
def fw_featurizers():
    return {
        "embedding": mappers.Embedding,
        "linear": mappers.Linear,
        "mlp": mappers.MLP,
        "orthonormal_projection": mappers.OrthonormalProjection,
    }


@hookimpl
def fw_augmentations():
    return dict(augment.OPS)


@hookimpl
def fw_learners():
    return {"icon": IConLearner}


@hookimpl
def fw_table_cells():
    from fw_table.table import RecipeTemplate

    # every p family without a more specific template runs on the generic I-Con learner
    generic = {
        "seed": 0,
        "data": {"name": "digits"},
        "learner": {
            "name": "icon",
            "p": "{p}",
            "q": "{q}",
            "mapper": {"name": "mlp", "dim": "{dim}", "hidden": [256]},
            "batch_size": 256,
            "optimizer": {"name": "adam", "lr": 1e-3},
        },
        "trainer": {"max_steps": 500, "log_every": 50},
    }
    return [RecipeTemplate(generic)]
