"""ImageNet-style folders (``root/<class>/<image>``) loaded into memory at one fixed size."""

from __future__ import annotations

from pathlib import Path

import torch

from fw.data import ArrayDataset
from fw.errors import DataError


def image_folder(
    root: str,
    size: int = 64,
    limit: int | None = None,
    grayscale: bool = False,
) -> ArrayDataset:
    """Every image under ``root/<class>/`` resized to ``size × size``: ``x [N, 3|1, size, size]``.

    Classes are the sub-folder names in sorted order (torchvision's ImageFolder). ``limit``
    keeps that many images spread evenly over the sorted list, so every class stays present.
    """
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

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
