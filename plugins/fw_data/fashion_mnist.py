"""Fashion-MNIST (Zalando; 70,000 28×28 grey images of 10 clothing classes) from its IDX files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fw.data import ArrayDataset
from fw.errors import DataError
from fw_data.idx import read_idx

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_HOW_TO_GET = (
    "install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
    f"/usr/share/datasets/fashion-mnist) or download the four *-ubyte.gz files from "
    f"{FASHION_MNIST_URL} (e.g. {FASHION_MNIST_URL}train-images-idx3-ubyte.gz) into that folder"
)


def _find(root: Path, stem: str) -> Path:
    """``root/stem.gz`` or ``root/stem``, whichever exists (the compressed one first)."""
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DataError(f"Fashion-MNIST file {root / stem}[.gz] not found; {_HOW_TO_GET}")


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[n, 28, 28]`` uint8 and labels ``[n]`` of one official split."""
    img_stem, lab_stem = _FILES[split]
    img_path, lab_path = _find(root, img_stem), _find(root, lab_stem)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"Fashion-MNIST {split} files disagree: images {images.shape} in {img_path}, "
            f"labels {labels.shape} in {lab_path}"
        )
    return images, labels


def fashion_mnist(
    root: str = "/usr/share/datasets/fashion-mnist",
    split: Literal["train", "test", "all"] = "all",
    limit: int | None = None,
    flatten: bool = False,
) -> ArrayDataset:
    """Fashion-MNIST as ``x [N, 1, 28, 28]`` (``[N, 784]`` if ``flatten``) in [0, 1] and ``label``.

    ``split="all"`` is the 60,000 training images followed by the 10,000 test images; ``limit``
    keeps the first ``limit`` of the chosen split(s).
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"Fashion-MNIST folder {base} does not exist; {_HOW_TO_GET}")
    if split not in ("train", "test", "all"):
        raise DataError(f"Fashion-MNIST split must be 'train', 'test' or 'all', got {split!r}")
    parts = [load_split(base, s) for s in (("train", "test") if split == "all" else (split,))]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    pixels = images.astype(np.float32)
    pixels /= 255.0  # in place: one float copy of the images at the peak, not two
    x = torch.from_numpy(pixels).unsqueeze(1)
    if flatten:
        x = x.flatten(1)
    return ArrayDataset(
        {"x": x, "label": torch.from_numpy(labels.astype(np.int64))},
        name="fashion_mnist",
        classes=list(FASHION_MNIST_CLASSES),
        meta={"image_shape": (1, 28, 28), "split": split, "root": str(base)},
    )
