"""scikit-learn estimators (TSNE, SNE, ICon, IConClustering, KMeans) that are fw recipes."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_sne",)

from fw_estimators.estimators import SNE, TSNE, ICon, IConClustering, KMeans  # noqa: E402

__all__ = ["ICon", "IConClustering", "KMeans", "SNE", "TSNE"]
