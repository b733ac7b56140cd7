"""Periodic-table cells of the ``icon`` plugin: methods built on its catalog distributions.

Identity, kNN, graph, cross-modal, same-class, data-label, prototype, σ→∞ (cohesion-variance)
and σ→0 (triplet) kernels live here (spec icon.md §2). Cells whose distribution nobody
implements yet (X-Sample's p11, Harmonic's q8, the σ→0 prototype kernel of "Error rate") or that
need two modalities (CLIP, CMC and their gaps) are declared without a way to run: `fw table`
lists them as not runnable yet.
"""

from __future__ import annotations

from fw.table import Cell

DR = "Dimensionality Reduction"
MM = "Multimodal SSL"
GAP = "Gap"
XMODAL = "Cross-Modal Pairs"
TWO_MODALITIES = "needs a two-modality dataset and a cross-modal learner (none installed)"

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
        note="[P] Thm 3 only (not in the figure); wide Gaussian p, σ→∞ q",
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
    # -- contrastive / multimodal ------------------------------------------------------------
    Cell(
        "X-Sample CL",
        "Gaussian",
        "Gaussian",
        "Unimodal SSL",
        "Sobal et al. 2025",
        note="p11 (a Gaussian on paired caption embeddings) is not implemented",
    ),
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
    Cell("CLIP", XMODAL, "Gaussian", MM, "Radford et al. 2021", note=TWO_MODALITIES),
    Cell("CMC", XMODAL, "Gaussian", MM, "Tian, Krishnan & Isola 2020", note=TWO_MODALITIES),
    Cell("Average Margin CLIP", XMODAL, "Gaussian σ→∞", GAP, gap=True, note=TWO_MODALITIES),
    Cell("Triplet CLIP", XMODAL, "Gaussian σ→0", GAP, gap=True, note=TWO_MODALITIES),
    Cell("t-CLIP", XMODAL, "Student-T", GAP, gap=True, note=TWO_MODALITIES),
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
    Cell(
        "Harmonic Loss",
        "Data-Label Pairs",
        "Student-T",
        "Supervised Learning",
        "Baek et al. 2025",
        note="q8 (Student-t between features and class prototypes) is not implemented",
    ),
    Cell(
        "Error Rate",
        "Data-Label Pairs",
        "Gaussian σ→0",
        GAP,
        gap=True,
        note="a σ→0 Gaussian to class prototypes is not implemented",
    ),
]
