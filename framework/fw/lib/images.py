"""Reading users' image files as tensors, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fw.errors import DataError, ShapeError


def read_image(path: str | Path) -> Tensor:
    """An image file as RGB ``[3, H, W]`` floats in [0, 1]; a clear `DataError` otherwise."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        what = "is a directory, not an image file" if path.is_dir() else "not found"
        raise DataError(f"image '{path}' {what} (working directory: {Path.cwd()})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"'{path}' is too large to read safely ({exc}); downscale it first, e.g. "
            "`convert in.png -resize 4096x4096 out.png`"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"'{path}' is not an image PIL can read: {exc}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def resize_short_side_crop(image: Tensor, size: int) -> Tensor:
    """``[3, H, W]`` -> ``[3, size, size]``: the short side to ``size``, then the centre crop."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = torch.nn.functional.interpolate(
        image[None], size=new, mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return out[:, top : top + size, left : left + size].clamp(0, 1)


def image_batch(x: Tensor, image_shape: Any, who: str) -> Tensor:
    """Inputs as float images ``[B, C, H, W]`` (flat rows reshaped with ``image_shape``)."""
    x = x if x.is_floating_point() else x.float()
    if x.dim() == 2 and image_shape is not None:
        return x.reshape(x.shape[0], *image_shape)
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() != 4:
        raise ShapeError(
            f"{who} needs images [B, C, H, W] (or flat rows with a known image_shape), got "
            f"{tuple(x.shape)}; set `image_shape: [C, H, W]`"
        )
    return x
