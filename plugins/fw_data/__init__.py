"""fw_data plugin."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
