"""SNE and t-SNE: Gaussian and Student-t neighbourhoods, t-SNE's optimiser, two learners."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_common", "fw_table")
