"""fw_selfsup plugin: DINO, SwAV, BYOL, SimSiam and VICReg, I-Con cells and collapse monitors."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_common", "fw_table")
