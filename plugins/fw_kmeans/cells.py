"""Periodic-table cells of the ``kmeans`` plugin: the cluster-kernel row (thesis Fig. 8.1).

Every learned q of this row is the cluster kernel ``cluster`` (degree-weighted for
Normalized Cuts) on cluster logits; the columns are the supervisory p the methods pair it with.
"""

from __future__ import annotations

from fw_table.table import Cell

CLUSTERS = "Uniform on Clusters"
CATEGORY = "Cluster Learning"

CELLS = [
    Cell(
        "K-Means",
        "Gaussian",
        CLUSTERS,
        CATEGORY,
        "MacQueen 1967",
        recipe="kmeans_digits.yaml",
        p_name="gaussian",
        q_name="cluster",
    ),
    Cell(
        "Spectral Clustering",
        "Gaussian",
        CLUSTERS,
        CATEGORY,
        "Ng, Jordan & Weiss 2001",
        recipe="spectral_digits.yaml",
        note="k-Means as I-Con on the spectral embedding (Cor. 5): a Gaussian p on eigenmaps",
    ),
    Cell(
        "Normalized Cuts",
        "Graph Kernel Weights",
        CLUSTERS,
        CATEGORY,
        "Shi & Malik 2000",
        recipe="ncut_digits.yaml",
        p_name="graph",
        q_name="cluster",
    ),
    Cell(
        "DCD",
        "Uniform over K-Neighbors",
        CLUSTERS,
        CATEGORY,
        "Yang & Oja 2012",
        recipe="dcd_digits.yaml",
        p_name="knn",
        q_name="cluster",
    ),
    Cell(
        "TEMI / PMI Clustering",
        "Uniform over K-Neighbors",
        CLUSTERS,
        CATEGORY,
        "Adaloglou et al. 2023",
        p_name="knn",
        q_name="cluster",
        p_params={"k": 10},
        note="an MLP clustering head on pixel-space kNN; TEMI's pretrained features and "
        "teacher are not reproduced",
    ),
    Cell(
        "InfoNCE Clustering",
        "Uniform over Positive Pairs",
        CLUSTERS,
        CATEGORY,
        "Alshammari et al. 2025 (I-Con)",
        recipe="icon_clustering_digits_baseline.yaml",
    ),
    Cell(
        "t K-Means",
        "Student-T",
        CLUSTERS,
        "Gap",
        recipe="tkmeans_digits.yaml",
        p_name="student_t",
        q_name="cluster",
        gap=True,
    ),
    Cell(
        "Supervised Clustering",
        "Uniform over Classes",
        CLUSTERS,
        "Gap",
        recipe="supervised_clustering_digits.yaml",
        p_name="same_class",
        q_name="cluster",
        gap=True,
    ),
]
