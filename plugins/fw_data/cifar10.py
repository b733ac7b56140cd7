"""CIFAR-10 (60,000 32×32 colour images, 10 classes) via torchvision, in its official layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fw.data import ArrayDataset
from fw.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _how_to_get(root: Path) -> str:
    """Instructions for obtaining the files, naming where they must go."""
    return (
        f"expected the python version of CIFAR-10 in {root / 'cifar-10-batches-py'} "
        "(data_batch_1..5, test_batch, batches.meta); set `download: true` to fetch it "
        f"(needs internet) or extract {CIFAR10_URL} into {root}"
    )


def cifar10(
    root: str = "data/cifar10",
    train: bool = True,
    download: bool = False,
    limit: int | None = None,
) -> ArrayDataset:
    """CIFAR-10 train (50,000) or test (10,000) split as ``x [N, 3, 32, 32]`` in [0, 1], ``label``.

    torchvision verifies the md5 checksum of every batch file and of ``batches.meta``; a
    missing, partial or corrupted copy raises `fw.errors.DataError`.
    """
    from torchvision.datasets import CIFAR10

    base = Path(root).expanduser()
    if not download and not (base / CIFAR10.base_folder).is_dir():
        raise DataError(f"CIFAR-10 not found: {_how_to_get(base)}")
    try:
        ds = CIFAR10(str(base), train=train, download=download)
    except (OSError, RuntimeError) as err:  # offline download, failed md5 check, bad pickle
        raise DataError(f"cannot load CIFAR-10 from {base} ({err}); {_how_to_get(base)}") from err
    images = np.asarray(ds.data)  # [N, 32, 32, 3] uint8
    labels = np.asarray(ds.targets, dtype=np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return ArrayDataset(
        {"x": x, "label": torch.from_numpy(labels)},
        name="cifar10",
        classes=list(ds.classes),
        meta={"image_shape": (3, 32, 32), "train": train, "root": str(base)},
    )
