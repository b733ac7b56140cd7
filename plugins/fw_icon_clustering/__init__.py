"""fw_icon_clustering plugin: the debiased InfoNCE clusterer (I-Con, §4).

A clustering head on frozen features, learned cluster-kernel q (uniform on clusters), p from
augmentation views, global k-nearest neighbours and walks on the kNN graph, debiasing on
either side, an optional EMA teacher, and datasets that chain one learner's output into the
next (``chained``, ``featurized``).
"""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_common", "fw_icon", "fw_kmeans", "fw_simclr")
