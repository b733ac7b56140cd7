"""ImageNet-style folders (``root/<class>/<image>``) loaded into memory at one fixed size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from fw.data import ArrayDataset
from fw.errors import DataError


class StreamedImageFolder(Dataset):
    """Items ``{"x": [C, size, size], "label", "index"}`` read from disk on every access.

    ``crop`` takes a random square of that fraction of the resized image's side (then resizes
    back) and ``flip`` mirrors with probability 1/2: per-item transforms drawn from torch's
    global generator, which the loop seeds per (step, item) (`fw.data.SeededItems`).
    """

    def __init__(self, folder: Any, samples: list[int], size: int, crop: float, flip: bool):
        self.folder, self.samples = folder, samples
        self.size, self.crop, self.flip = size, crop, flip
        self.classes = list(folder.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        import torch.nn.functional as F

        path = self.folder.samples[self.samples[i]][0]
        try:
            img, target = self.folder[self.samples[i]]
        except OSError as err:
            raise DataError(f"cannot read image {path}: {err}") from err
        if self.crop < 1.0:
            side = max(1, round(self.size * self.crop))
            top, left = (torch.randint(0, self.size - side + 1, (2,))).tolist()
            img = img[:, top : top + side, left : left + side]
            img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear")[0]
        if self.flip and bool(torch.rand(()) < 0.5):
            img = img.flip(-1)
        return {"x": img, "label": torch.tensor(target), "index": torch.tensor(i)}


def image_folder(
    root: str,
    size: int = 64,
    limit: int | None = None,
    grayscale: bool = False,
    stream: bool = False,
    crop: float = 1.0,
    flip: bool = False,
) -> ArrayDataset | StreamedImageFolder:
    """Every image under ``root/<class>/`` resized to ``size × size``: ``x [N, 3|1, size, size]``.

    Classes are the sub-folder names in sorted order (torchvision's ImageFolder). ``limit``
    keeps that many images spread evenly over the sorted list, so every class stays present.
    ``stream`` reads images from disk per item (for folders that do not fit in memory; the
    loop's ``trainer.num_workers`` processes load them) and allows the per-item transforms
    ``crop`` (random square of that fraction of the side) and ``flip``.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    if not 0.0 < crop <= 1.0:
        raise DataError(f"image_folder crop must lie in (0, 1], got {crop}")
    if (crop < 1.0 or flip) and not stream:
        raise DataError("image_folder's per-item transforms (crop, flip) need stream: true")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(
            f"image folder {base} does not exist; expected one sub-folder of images per class "
            "(root/<class>/<image>.png|jpg|...)"
        )
    if size < 1:
        raise DataError(f"image_folder size must be >= 1, got {size}")
    steps = [transforms.Resize((size, size))]
    if grayscale:
        steps.append(transforms.Grayscale(num_output_channels=1))
    steps.append(transforms.ToTensor())
    try:
        ds = ImageFolder(str(base), transform=transforms.Compose(steps))
    except (FileNotFoundError, OSError) as err:  # no class folders, or no images in them
        raise DataError(f"cannot read image folder {base}: {err}") from err
    n = len(ds)
    if limit is not None and limit < n:
        order = torch.linspace(0, n - 1, steps=max(limit, 0)).round().long().tolist()
    else:
        order = list(range(n))
    if stream:
        return StreamedImageFolder(ds, order, size, crop, flip)
    images, labels = [], []
    for i in order:
        try:
            img, target = ds[i]
        except OSError as err:  # unreadable or truncated image file
            raise DataError(f"cannot read image {ds.samples[i][0]}: {err}") from err
        images.append(img)
        labels.append(target)
    channels = 1 if grayscale else 3
    x = torch.stack(images) if images else torch.empty(0, channels, size, size)
    return ArrayDataset(
        {"x": x, "label": torch.as_tensor(labels, dtype=torch.long)},
        name=base.name or "image_folder",
        classes=list(ds.classes),
        meta={"image_shape": (channels, size, size), "root": str(base)},
    )
