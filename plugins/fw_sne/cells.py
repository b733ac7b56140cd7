"""Periodic-table cells of the ``sne`` plugin: its Gaussian and Student-t kernels as p and q.

The lead wires these with ``@hookimpl def fw_table_cells(): return CELLS`` in ``plugin.py``.
"""

from __future__ import annotations

from fw.table import Cell

DR = "Dimensionality Reduction"

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
