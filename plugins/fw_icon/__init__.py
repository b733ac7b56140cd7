"""fw_icon plugin: the catalog of I-Con neighbourhood distributions and their wrappers.

Every (p, q) of the periodic table (seed 000 Fig. 8.1; spec icon.md §2-4) that no single
method plugin owns: identity, kNN, graph kernels, cross-modal pairs, classes, data-label pairs,
prototype softmax / harmonic / σ→0 kernels, X-Sample's Gaussian on a side embedding,
the σ→∞ / σ→0 limits, and the debiasing / propagation / union wrappers.
"""
