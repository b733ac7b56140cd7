"""Periodic-table cells of the ``simclr`` plugin: methods run by its view learner.

The lead wires these with ``@hookimpl def fw_table_cells(): return CELLS`` in ``plugin.py``.
"""

from __future__ import annotations

from fw.table import Cell

PAIRS = "Uniform over Positive Pairs"
SSL = "Unimodal SSL"

CELLS = [
    Cell(
        "InfoNCE",
        PAIRS,
        "Gaussian",
        SSL,
        "Bachman et al. 2019",
        recipe="simclr_digits.yaml",
        note="InfoNCE with augmented views is the SimCLR recipe",
    ),
    Cell("SimCLR", PAIRS, "Gaussian", SSL, "Chen et al. 2020", recipe="simclr_digits.yaml"),
    Cell("MoCo v3", PAIRS, "Gaussian", SSL, "Chen, Xie & He 2021", recipe="mocov3_digits.yaml"),
    Cell(
        "Triplet Loss",
        PAIRS,
        "Gaussian σ→0",
        SSL,
        "Schroff et al. 2015",
        recipe="triplet_digits.yaml",
    ),
    Cell(
        "VICReg",
        PAIRS,
        "Gaussian σ→∞",
        SSL,
        "Bardes, Ponce & LeCun 2021",
        recipe="vicreg_digits.yaml",
    ),
    Cell(
        "t-SimCLR / t-SimCNE",
        PAIRS,
        "Student-T",
        SSL,
        "Hu et al. 2023; Böhm et al. 2023",
        recipe="tsimclr_digits.yaml",
    ),
    Cell(
        "SupCon",
        "Uniform over Classes",
        "Gaussian",
        "Supervised Learning",
        "Khosla et al. 2020",
        recipe="supcon_digits.yaml",
    ),
    Cell(
        "t-SupCon",
        "Uniform over Classes",
        "Student-T",
        "Gap",
        recipe="tsupcon_digits.yaml",
        gap=True,
    ),
    Cell(
        "Cross-Entropy",
        "Data-Label Pairs",
        "Gaussian",
        "Supervised Learning",
        "Good 1963",
        recipe="cross_entropy_digits.yaml",
    ),
]
