"""fw_icon_clustering plugin: the debiased InfoNCE clusterer (seed 004 §4; spec icon.md §5).

A clustering head on frozen features, learned cluster-kernel q (q9), supervisory p built from
augmentation views, global k-nearest neighbours and walks on the kNN graph (p16), debiasing on
either side, an optional EMA teacher, and datasets that chain one learner's output into the
next (``chained``, ``featurized``).
"""
