"""fw_kmeans plugin: k-Means as I-Con (I-Con, Thms 8-11, Cor. 5)."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_common", "fw_table")
