"""DenseAV (thesis Ch. 6 and App. D): which image regions a spoken word or a sound names."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_data",)
