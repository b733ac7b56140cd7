"""Periodic-table cells of the ``icon`` plugin: methods built on its catalog distributions.

Identity, kNN, graph, same-class and σ→∞ / σ→0 (cohesion-variance, triplet) kernels live
here; these cells run on the generic ``icon`` learner. The cells whose
recipes need the view learner of ``simclr`` — CLIP, CMC and their gaps on two modalities,
X-Sample CL, the Harmonic loss and the "Error rate" gap, which use this plugin's
``cross_modal``, ``corresponding_gaussian``, ``harmonic`` and ``prototype_triplet`` — are
declared by ``fw_simclr.cells``.
"""

from __future__ import annotations

from fw_table.table import Cell

DR = "Dimensionality Reduction"
GAP = "Gap"

CELLS = [
    # -- dimensionality reduction ------------------------------------------------------------
    Cell(
        "PCA",
        "Identity",
        "Gaussian σ→∞",
        DR,
        "Pearson 1901",
        recipe="pca_digits.yaml",
        p_name="identity",
        q_name="cohesion_variance",
    ),
    Cell(
        "MDS",
        "Gaussian",
        "Gaussian σ→∞",
        DR,
        "Kruskal 1964",
        p_name="gaussian",
        q_name="cohesion_variance",
        p_params={"sigma": 3.0},
        note="I-Con, Thm 3 only (not in the figure); wide Gaussian p, σ→∞ q",
    ),
    Cell(
        "SNE Graph Embeddings",
        "Graph Kernel Weights",
        "Gaussian",
        GAP,
        p_name="graph",
        q_name="gaussian",
        p_params={"k": 10},
        gap=True,
    ),
    Cell(
        "t-SNE Graph Embedding",
        "Graph Kernel Weights",
        "Student-T",
        GAP,
        p_name="graph",
        q_name="student_t",
        p_params={"k": 10},
        gap=True,
    ),
    Cell(
        "SNE with Uniform Affinities",
        "Uniform over K-Neighbors",
        "Gaussian",
        GAP,
        p_name="knn",
        q_name="gaussian",
        gap=True,
    ),
    Cell(
        "t-SNE with Uniform Affinities",
        "Uniform over K-Neighbors",
        "Student-T",
        GAP,
        p_name="knn",
        q_name="student_t",
        gap=True,
    ),
    # -- contrastive -------------------------------------------------------------------------
    Cell(
        "LGSimCLR",
        "Uniform over K-Neighbors",
        "Gaussian",
        "Unimodal SSL",
        "El Banani, Desai & Johnson 2023",
        p_name="knn",
        q_name="gaussian",
        p_params={"k": 10, "symmetric": True},
        q_params={"metric": "cosine", "temperature": 0.5},
        note="neighbours in pixel space: the digits have no captions",
    ),
    # -- supervised ----------------------------------------------------------------------------
    Cell(
        "Average Margin SupCon",
        "Uniform over Classes",
        "Gaussian σ→∞",
        GAP,
        p_name="same_class",
        q_name="cohesion_variance",
        gap=True,
    ),
    Cell(
        "Triplet SupCon",
        "Uniform over Classes",
        "Gaussian σ→0",
        GAP,
        p_name="same_class",
        q_name="triplet",
        q_params={"positives": "labels"},
        gap=True,
    ),
]
