"""Periodic-table cells of the ``simclr`` plugin: methods run by its view learner.

Besides the positive-pair column, the cells whose recipes use this learner with distributions
of the ``icon`` plugin: the cross-modal column (CLIP, CMC and their gaps, on the digits' top
and bottom halves as two modalities), X-Sample CL (a Gaussian p on a side embedding), and the
data-label column's Harmonic loss and "Error rate" gap (prototype kernels).
"""

from __future__ import annotations

from fw_table.table import Cell, RecipeTemplate

PAIRS = "Uniform over Positive Pairs"
XMODAL = "Cross-Modal Pairs"
DATA_LABEL = "Data-Label Pairs"
SSL = "Unimodal SSL"
MM = "Multimodal SSL"
GAP = "Gap"

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
    Cell(
        "Harmonic Loss",
        DATA_LABEL,
        "Student-T",
        "Supervised Learning",
        "Baek et al. 2025",
        recipe="harmonic_digits.yaml",
        p_name="data_label",
        q_name="harmonic",
    ),
    Cell(
        "Error Rate",
        DATA_LABEL,
        "Gaussian σ→0",
        GAP,
        recipe="error_rate_digits.yaml",
        p_name="data_label",
        q_name="prototype_triplet",
        gap=True,
    ),
    # -- X-Sample: p on a side embedding ------------------------------------------------------
    Cell(
        "X-Sample CL",
        "Gaussian",
        "Gaussian",
        SSL,
        "Sobal et al. 2025",
        recipe="xsample_digits.yaml",
        p_name="corresponding_gaussian",
        q_name="gaussian",
        note="the side embedding g is the one-hot class: the digits have no captions",
    ),
    # -- two modalities: the digits' top and bottom halves -------------------------------------
    Cell(
        "CLIP",
        XMODAL,
        "Gaussian",
        MM,
        "Radford et al. 2021",
        recipe="clip_digits.yaml",
        p_name="cross_modal",
        q_name="cross_modal_gaussian",
    ),
    Cell(
        "CMC",
        XMODAL,
        "Gaussian",
        MM,
        "Tian, Krishnan & Isola 2020",
        recipe="cmc_digits.yaml",
        p_name="cross_modal",
        q_name="cross_modal_gaussian",
    ),
    Cell(
        "Average Margin CLIP",
        XMODAL,
        "Gaussian σ→∞",
        GAP,
        recipe="average_margin_clip_digits.yaml",
        p_name="cross_modal",
        q_name="cohesion_variance",
        gap=True,
    ),
    Cell(
        "Triplet CLIP",
        XMODAL,
        "Gaussian σ→0",
        GAP,
        recipe="triplet_clip_digits.yaml",
        p_name="cross_modal",
        q_name="triplet",
        gap=True,
    ),
    Cell(
        "t-CLIP",
        XMODAL,
        "Student-T",
        GAP,
        recipe="tclip_digits.yaml",
        p_name="cross_modal",
        q_name="student_t",
        gap=True,
    ),
]

#: How `fw table --recipe` runs cells whose p pairs views (the view learner) or modalities.
TEMPLATES = [
    RecipeTemplate(
        {
            "seed": 0,
            "data": {"name": "digits"},
            "learner": {
                "name": "contrastive",
                "p": "{p}",
                "q": "{q}",
                "backbone": {"name": "mlp", "dim": 64, "hidden": [256]},
                "head": {"name": "mlp", "dim": "{dim}", "hidden": [128]},
                "views": 2,
                "augment": "digits",
                "batch_size": 128,
                "optimizer": {"name": "adam", "lr": 1e-3},
            },
            "trainer": {"max_steps": 500, "log_every": 50},
        },
        p_families=("Uniform over Positive Pairs",),
    ),
    RecipeTemplate(
        p_families=("Cross-Modal Pairs",),
        refuse="it pairs points of two modalities, which the generic recipe does not make; "
        "start from recipes/clip_digits.yaml (the digits' top and bottom halves as two "
        "modalities) and set its learner.q",
    ),
]
