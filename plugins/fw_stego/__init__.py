"""STEGO (Hamilton et al., ICLR 2022; thesis Ch. 4, App. B): unsupervised semantic segmentation by
distilling a frozen backbone's feature correspondences into a 70-d code, plus the TexMosaic-12
benchmark data (docs/benchmarks.md)."""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
