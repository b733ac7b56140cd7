"""Periodic-table cells of the ``sne`` plugin: its Gaussian and Student-t kernels as p and q.

The lead wires these with ``@hookimpl def fw_table_cells(): return CELLS`` in ``plugin.py``.
"""

from __future__ import annotations

from fw_table.table import Cell

DR = "Dimensionality Reduction"

#: ``fw table --recipe SNE --scale sparse``: p on each point's 3·perplexity nearest neighbours,
#: the normaliser estimated (fw_sne.scale) — memory and time linear in N.
SNE_SPARSE = ("learner.p.scale=sparse", "learner.repulsion=sampled")
TSNE_SPARSE = ("learner.p.scale=sparse", "learner.repulsion=fft")

CELLS = [
    Cell(
        "SNE",
        "Gaussian",
        "Gaussian",
        DR,
        "Hinton & Roweis 2002",
        recipe="sne_digits.yaml",
        p_name="gaussian",
        q_name="gaussian",
        scales={"sparse": SNE_SPARSE},
    ),
    Cell(
        "t-SNE",
        "Gaussian",
        "Student-T",
        DR,
        "van der Maaten & Hinton 2008",
        recipe="tsne_digits.yaml",
        p_name="gaussian",
        q_name="student_t",
        scales={"sparse": TSNE_SPARSE},
    ),
    Cell(
        "Dual t-SNE",
        "Student-T",
        "Gaussian",
        "Gap",
        recipe="dual_tsne_digits.yaml",
        p_name="student_t",
        q_name="gaussian",
        gap=True,
    ),
    Cell(
        "Doubly t-SNE",
        "Student-T",
        "Student-T",
        "Gap",
        p_name="student_t",
        q_name="student_t",
        gap=True,
    ),
]
