"""KNN mining over a training set: GAP of the frozen backbone, cosine, faiss (thesis §4.5.3)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fw.errors import ShapeError


def global_descriptors(maps: Tensor) -> Tensor:
    """L2-normalised global average pools ``[N, C]`` of feature maps ``[N, C, H, W]``."""
    return F.normalize(maps.float().mean(dim=(2, 3)), dim=1)


def mine_knns(descriptors: Tensor, k: int = 30) -> Tensor:
    """Indices ``[N, k]`` of each item's ``k`` most cosine-similar items (itself usually first).

    Exact inner-product search with faiss on the L2-normalised descriptors, as the reference
    code's ``topk(sims, 30)``; training samples partners from ranks 1..7 (`sample_partners`).
    """
    import faiss

    if descriptors.dim() != 2:
        raise ShapeError(f"descriptors must be [N, C], got {tuple(descriptors.shape)}")
    x = F.normalize(descriptors.float(), dim=1).cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = min(int(k), x.shape[0])
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn = index.search(x, k)
    return torch.from_numpy(nn.astype(np.int64))


def sample_partners(
    knns: Tensor, rows: Tensor, num_neighbors: int = 7, generator: torch.Generator | None = None
) -> Tensor:
    """One partner per row, uniform over ranks ``1..num_neighbors`` of its KNN list (never 0)."""
    top = min(int(num_neighbors), knns.shape[1] - 1)
    if top < 1:
        raise ShapeError("KNN partners need at least 2 stored neighbours per item")
    ranks = torch.randint(1, top + 1, (rows.shape[0],), generator=generator)
    return knns[rows.cpu(), ranks]


def five_crop(image: Tensor, ratio: float = 0.5) -> list[Tensor]:
    """The five ``(ratio·h, ratio·w)`` crops (TL, TR, BL, BR, centre) of ``image [..., h, w]``."""
    from torchvision.transforms import functional as tvf

    h, w = image.shape[-2:]
    return list(tvf.five_crop(image, [int(h * ratio), int(w * ratio)]))
