"""scikit-image's bundled photos as a small image dataset (no download)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fw.data import ArrayDataset
from fw.errors import DataError, check_choice

#: photos skimage ships in its wheel (no pooch download); grey ones are repeated to RGB
TRAIN_PHOTOS = (
    "astronaut",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
)
EVAL_PHOTOS = ("chelsea", "coffee")


def _load(name: str) -> torch.Tensor:
    import skimage.data

    try:
        img = getattr(skimage.data, name)()
    except Exception as err:  # missing file or a photo that needs pooch
        raise DataError(
            f"scikit-image photo '{name}' is unavailable ({err}); "
            "`pip install scikit-image` ships it"
        ) from err
    if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return torch.from_numpy(arr[..., :3]).permute(2, 0, 1).contiguous()


def skimage_photos(
    split: Literal["train", "eval"] = "train",
    size: int = 224,
    crops: int = 4,
    seed: int = 0,
) -> ArrayDataset:
    """Square crops of scikit-image's photos, resized to ``size``: ``x [N, 3, size, size]``.

    Each photo gives its centre crop plus ``crops − 1`` random square crops (side ≥ half the
    shorter side, seeded by ``seed`` and the photo's position), antialiased-resized. ``train``
    and ``eval`` use disjoint photos (eval: chelsea, coffee). ``label`` is the photo id.
    """
    check_choice(split, ("train", "eval"), "split")
    if crops < 1 or size < 8:
        raise DataError(f"skimage_photos needs crops >= 1 and size >= 8, got {crops}, {size}")
    names = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
    images, labels = [], []
    for pid, name in enumerate(names):
        img = _load(name)
        h, w = img.shape[1:]
        short = min(h, w)
        rng = np.random.default_rng([seed, pid])
        boxes = [((h - short) // 2, (w - short) // 2, short)]
        for _ in range(crops - 1):
            side = int(rng.integers(short // 2, short + 1))
            boxes.append(
                (int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side)
            )
        for top, left, side in boxes:
            crop = img[:, top : top + side, left : left + side][None]
            crop = F.interpolate(
                crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
            images.append(crop[0].clamp(0, 1))
            labels.append(pid)
    return ArrayDataset(
        {"x": torch.stack(images), "label": torch.tensor(labels)},
        name=f"skimage_photos_{split}",
        classes=list(names),
        meta={"image_shape": (3, size, size)},
    )
