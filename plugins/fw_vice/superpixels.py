"""Region decompositions of an image: SLIC superpixels or a regular grid (ViCE §3.1, Table 3)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from fw.errors import check_choice

RegionMode = Literal["slic", "grid"]


def grid_regions(height: int, width: int, size: int) -> np.ndarray:
    """Square cells of side ``size`` px, ids ``0..R-1`` row by row: ``int64 [height, width]``."""
    if size < 1:
        raise ValueError(f"grid cell size must be >= 1, got {size}")
    cols = -(-width // size)
    yy, xx = np.meshgrid(np.arange(height) // size, np.arange(width) // size, indexing="ij")
    return (yy * cols + xx).astype(np.int64)


def superpixels(
    image: np.ndarray,
    mode: RegionMode = "slic",
    region_size: int = 20,
    compactness: float = 10.0,
) -> np.ndarray:
    """Region ids ``int64 [H, W]`` (consecutive from 0) of an RGB image ``[H, W, 3]`` in [0, 1].

    ``slic``: scikit-image's SLIC (Achanta et al. 2012) with about ``H·W / region_size²``
    segments, the average region side ``region_size`` (ViCE §4: OpenCV's SLIC, region size
    20 px); ``grid``: square cells of that side (the paper's ablation, Table 3).
    """
    check_choice(mode, ("slic", "grid"), "region_mode")
    if image.ndim != 3:
        raise ValueError(f"superpixels need an image [H, W, C], got shape {image.shape}")
    height, width = image.shape[:2]
    if mode == "grid":
        return grid_regions(height, width, region_size)
    from skimage.segmentation import slic

    n = max(1, round(height * width / region_size**2))
    channel_axis = -1 if image.shape[2] > 1 else None
    img = image if channel_axis is not None else image[:, :, 0]
    labels = slic(
        img, n_segments=n, compactness=compactness, start_label=0, channel_axis=channel_axis
    )
    _, ids = np.unique(labels, return_inverse=True)  # consecutive even if SLIC skips ids
    return ids.reshape(height, width).astype(np.int64)
