"""Entry point of the ``stego`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_stego.datasets import cityscapes27, cocostuff27, potsdam3
from fw_stego.learner import StegoLearner
from fw_stego.texmosaic import texmosaic12


@hookimpl
def fw_learners():
    return {"stego": StegoLearner}


@hookimpl
def fw_datasets():
    return {
        "texmosaic12": texmosaic12,
        "cocostuff27": cocostuff27,
        "cityscapes27": cityscapes27,
        "potsdam3": potsdam3,
    }
