"""fw_icon plugin: the catalog of I-Con neighbourhood distributions and their wrappers.

Every (p, q) of the periodic table (Hamilton, PhD thesis, Fig. 8.1) that no single
method plugin owns: identity, kNN, graph kernels, cross-modal pairs, classes, data-label pairs,
prototype softmax / harmonic / σ→0 kernels, X-Sample's Gaussian on a side embedding,
the σ→∞ / σ→0 limits, and the debiasing / propagation / union wrappers.
"""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_table",)
