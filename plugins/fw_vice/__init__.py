"""ViCE (Karlsson et al.): dense concept embeddings by swapped prediction over superpixels."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_backbones", "fw_common", "fw_stego")
