"""Entry point of the ``selfsup`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_selfsup.distributions import SinkhornAssignment, TeacherAssignment
from fw_selfsup.learners import BYOL, DINO, SimSiam, SwAV, VICReg


@hookimpl
def fw_learners():
    return {"dino": DINO, "swav": SwAV, "byol": BYOL, "simsiam": SimSiam, "vicreg": VICReg}


@hookimpl
def fw_distributions():
    return {"teacher_assignment": TeacherAssignment, "sinkhorn_assignment": SinkhornAssignment}


@hookimpl
def fw_table_cells():
    from fw_selfsup.cells import CELLS

    return CELLS
