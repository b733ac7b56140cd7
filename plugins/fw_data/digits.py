"""scikit-learn's bundled handwritten digits (1797 8×8 images, 10 classes; no download)."""

from __future__ import annotations

import torch

from fw.data import ArrayDataset


def digits(scale: bool = True, limit: int | None = None) -> ArrayDataset:
    """The digits as ``x [1797, 64]`` float (pixel values /16 when ``scale``) and ``label``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    if scale:
        x = x / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return ArrayDataset(
        {"x": x, "label": y},
        name="digits",
        classes=[str(c) for c in range(10)],
        meta={"image_shape": (1, 8, 8)},
    )
