"""Entry point of the ``vice`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_vice.learner import ViceLearner
from fw_vice.optim import lars


@hookimpl
def fw_learners():
    return {"vice": ViceLearner}


@hookimpl
def fw_optimizers():
    return {"lars": lars}
