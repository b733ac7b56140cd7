"""scikit-learn's bundled handwritten digits (1797 8×8 images, 10 classes; no download)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from fw import api
from fw.data import ArrayDataset

#: Batch key of the second modality of ``digits(halves=True)`` (the first is ``x``).
BOTTOM = "x_bottom"


def digits(
    scale: bool = True,
    limit: int | None = None,
    halves: bool = False,
    embedding: Literal["none", "label"] = "none",
) -> ArrayDataset:
    """The digits as ``x [1797, 64]`` float (pixel values /16 when ``scale``) and ``label``.

    ``halves``: two modalities instead of one image — ``x`` is the top half ``[N, 1, 4, 8]``
    (pixel rows 0-3) and ``x_bottom`` the bottom half (rows 4-7) of the same digit. The halves
    share no pixel; the pairing is the item id (split-image views in the manner of Deep CCA's
    MNIST halves, not two sensors). ``meta["modalities"]`` names the two keys.

    ``embedding``: a side embedding ``g`` under the key ``embedding`` (X-Sample's p reads
    it). ``label`` is the one-hot class ``[N, 10]``: the digits have no captions, so this is
    a "class-name" embedding in which every two classes are equally unrelated.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float32)
    if scale:
        x = x / 16.0
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    tensors = {"x": x, "label": y}
    meta: dict[str, object] = {"image_shape": (1, 8, 8)}
    if halves:
        images = x.reshape(-1, 1, 8, 8)
        tensors = {"x": images[:, :, :4].contiguous(), BOTTOM: images[:, :, 4:].contiguous()}
        tensors["label"] = y
        meta = {"image_shape": (1, 4, 8), "modalities": ("x", BOTTOM)}
    if embedding == "label":
        tensors[api.EMBEDDING] = F.one_hot(y, 10).float()
    elif embedding != "none":
        raise ValueError(f"digits: embedding must be 'none' or 'label', got {embedding!r}")
    return ArrayDataset(
        tensors,
        name="digits",
        classes=[str(c) for c in range(10)],
        meta=meta,
    )
