"""FeatUp (Fu et al., ICLR 2024; Hamilton, PhD thesis, Ch. 5): model-agnostic feature upsampling."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
