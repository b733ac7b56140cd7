"""Periodic-table cells of the ``selfsup`` plugin: DINO and SwAV as prototype cells.

The column is a learned, stop-gradient supervisory p over K prototypes (the EMA teacher's
centred, sharpened softmax; the Sinkhorn codes); the row is the softmax over prototypes that
cross-entropy classifiers also use (``prototype_softmax``, Gaussian family: a cosine kernel to
unit prototypes). BYOL and SimSiam regress one view's projection on another's with no
normalised q over candidates, so they have no cell.
"""

from __future__ import annotations

from fw_selfsup.distributions import FAMILY
from fw_table.table import Cell

CELLS = [
    Cell(
        "DINO",
        FAMILY,
        "Gaussian",
        "Unimodal SSL",
        "Caron et al. 2021",
        recipe="dino_fashion_mnist.yaml",
        p_name="teacher_assignment",
        q_name="prototype_softmax",
        note="p: EMA teacher's centred, sharpened softmax over prototypes; q: the student's",
    ),
    Cell(
        "SwAV",
        FAMILY,
        "Gaussian",
        "Unimodal SSL",
        "Caron et al. 2020",
        recipe="swav_fashion_mnist.yaml",
        p_name="sinkhorn_assignment",
        q_name="prototype_softmax",
        note="p: Sinkhorn codes of the other crop; q: softmax of prototype scores",
    ),
]
