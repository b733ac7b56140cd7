"""STEGO (seed 000 Ch. 4, App. B; spec stego.md): unsupervised semantic segmentation by
distilling a frozen backbone's feature correspondences into a 70-d code, plus the TexMosaic-12
benchmark data (spec benchmarks.md §2)."""
