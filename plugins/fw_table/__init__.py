"""The periodic table of representation learning (I-Con, Fig. 1) and the `fw table` command."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
