"""KSAM: axiomatic explanations of similarity models (Hamilton et al., ICLR 2022; thesis Ch. 7)."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
