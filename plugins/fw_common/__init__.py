"""Generic parts every method shares: optimizers, mappers, and the generic I-Con learner."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_table",)
