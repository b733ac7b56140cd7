"""Entry point of the ``sne`` plugin: SNE and t-SNE (I-Con, Thms 1-2)."""

from __future__ import annotations

from fw import hookimpl
from fw_sne.distributions import Gaussian, StudentT
from fw_sne.learners import SNE, TSNE
from fw_sne.optim import tsne_gd


@hookimpl
def fw_distributions():
    return {"gaussian": Gaussian, "student_t": StudentT}


@hookimpl
def fw_learners():
    return {"sne": SNE, "tsne": TSNE}


@hookimpl
def fw_optimizers():
    return {"tsne_gd": tsne_gd}


@hookimpl
def fw_table_cells():
    from fw_sne.cells import CELLS

    return CELLS
