"""ViCE's view generation (Karlsson et al., App. A, Alg. 1) and region-mean pooling (Alg. 2).

One image and its region map give ``M`` views: a centre ``(x, y)*`` is drawn from the blurred
Canny edge map (content-rich places, §3.2), each view ``m`` crops a window of side
``β_m · size`` (``β_m`` uniform in ``beta``) placed around ``(x, y)*`` so that every window holds
it, masks a random share (up to ``max_mask`` of the window) of its regions with uniform noise,
is resized to ``size × size`` (image bilinear, regions nearest), keeps only the regions present in
all ``M`` views (ids renumbered ``0..I-1``, the rest ``-1``), and is flipped horizontally at
random. Colour distortion and blur (Alg. 1, ``appearance_aug``) act on images only and run
batched in the learner.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


@attrs.frozen
class ViewConfig:
    """Parameters of Alg. 1 (defaults: ViCE §4 and App. A; ``size`` is the common view side)."""

    views: int = 5
    size: int = 256
    beta: tuple[float, float] = (0.5, 2.0)
    max_mask: float = 0.25
    flip: float = 0.5
    canny_sigma: float = 1.0
    edge_blur: float = 8.0
    spread: float = 0.25

    def __attrs_post_init__(self) -> None:
        if self.views < 2:
            raise ValueError(
                f"ViCE needs at least 2 views (a primary and one more), got {self.views}"
            )
        if self.size < 1:
            raise ValueError(f"view size must be >= 1, got {self.size}")
        lo, hi = self.beta
        if not 0 < lo <= hi:
            raise ValueError(f"view resize range beta must satisfy 0 < lo <= hi, got {self.beta}")
        if not 0 <= self.max_mask < 1:
            raise ValueError(f"max_mask must lie in [0, 1), got {self.max_mask}")
        if not 0 <= self.spread <= 0.5:
            raise ValueError(
                f"spread must lie in [0, 0.5] (windows must share the centre), got {self.spread}"
            )


@attrs.frozen
class Views:
    """``images`` float ``[M, 3, size, size]``, ``regions`` long ``[M, size, size]`` (-1: not
    mutual), ``count`` = I mutual regions, ``windows`` ``[M, 4]`` (top, left, side, flipped)."""

    images: Tensor
    regions: Tensor
    count: int
    windows: np.ndarray


def edge_map(image: np.ndarray, canny_sigma: float = 1.0, blur: float = 8.0) -> np.ndarray:
    """Sampling probabilities ``[H, W]`` of view centres: Gaussian-blurred Canny edges (§3.2).

    A flat image (no edges) gives the uniform distribution.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.color import rgb2gray
    from skimage.feature import canny

    gray = (
        rgb2gray(image)
        if image.ndim == 3 and image.shape[2] == 3
        else image.reshape(image.shape[:2])
    )
    edges = canny(gray.astype(np.float64), sigma=canny_sigma).astype(np.float64)
    prob = gaussian_filter(edges, sigma=blur) if blur > 0 else edges
    total = prob.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(prob.shape, 1.0 / prob.size)
    return prob / total


def nearest_index(side: int, size: int) -> np.ndarray:
    """Source rows of a nearest resize from ``side`` to ``size`` (pixel centres, exact ids)."""
    return np.minimum(((np.arange(size) + 0.5) * side / size).astype(np.int64), side - 1)


def generate_views(
    image: Tensor, regions: np.ndarray, config: ViewConfig, rng: np.random.Generator
) -> Views:
    """Alg. 1's ``gen_views``, ``mask_views``, ``resize_views``, ``mutual_regions`` and
    ``geometric_aug`` for one image ``[3, H, W]`` in [0, 1] and its region ids ``[H, W]``."""
    _, height, width = image.shape
    if regions.shape != (height, width):
        raise ValueError(f"region map {regions.shape} does not match the image {(height, width)}")
    prob = edge_map(image.permute(1, 2, 0).numpy(), config.canny_sigma, config.edge_blur)
    anchor = int(rng.choice(prob.size, p=prob.reshape(-1)))
    ay, ax = divmod(anchor, width)
    crops, maps, windows = [], [], []
    for _ in range(config.views):
        beta = rng.uniform(*config.beta)
        side = int(min(max(2, round(beta * config.size)), height, width))
        oy, ox = rng.uniform(-config.spread * side, config.spread * side, size=2)
        # the window [top, top + side) always holds the anchor: before clipping it lies within
        # side/4 of the window's centre, and clipping into the image cannot push it out
        top = int(np.clip(round(ay - side / 2 + oy), 0, height - side))
        left = int(np.clip(round(ax - side / 2 + ox), 0, width - side))
        crop = image[:, top : top + side, left : left + side].clone()
        reg = regions[top : top + side, left : left + side]
        if config.max_mask > 0:
            crop = _mask(crop, reg, rng.uniform(0, config.max_mask), rng)
        crop = F.interpolate(
            crop[None], size=(config.size, config.size), mode="bilinear", antialias=True,
            align_corners=False,
        )[0].clamp(0, 1)  # fmt: skip
        index = nearest_index(side, config.size)
        crops.append(crop)
        maps.append(reg[np.ix_(index, index)])
        windows.append((top, left, side))
    mutual = maps[0]
    common = np.unique(mutual)
    for m in maps[1:]:
        common = np.intersect1d(common, np.unique(m), assume_unique=True)
    lookup = np.full(int(regions.max()) + 1, -1, dtype=np.int64)
    lookup[common] = np.arange(common.size)
    out_maps, out_images, out_windows = [], [], []
    for crop, m, (top, left, side) in zip(crops, maps, windows, strict=True):
        m = lookup[m]
        flipped = bool(rng.random() < config.flip)
        if flipped:
            crop, m = crop.flip(-1), m[:, ::-1]
        out_images.append(crop)
        out_maps.append(torch.from_numpy(np.ascontiguousarray(m)))
        out_windows.append((top, left, side, int(flipped)))
    return Views(
        torch.stack(out_images), torch.stack(out_maps), int(common.size), np.array(out_windows)
    )


def _mask(crop: Tensor, regions: np.ndarray, ratio: float, rng: np.random.Generator) -> Tensor:
    """Fill whole regions (in random order, while their area stays within ``ratio`` of the
    window) with uniform noise: ViCE's contextual region masking (§3.2)."""
    ids, counts = np.unique(regions, return_counts=True)
    budget = ratio * regions.size
    chosen, covered = [], 0
    for k in rng.permutation(ids.size):
        if covered + counts[k] <= budget:
            chosen.append(ids[k])
            covered += counts[k]
    if not chosen:
        return crop
    where = torch.from_numpy(np.isin(regions, chosen))
    noise = torch.from_numpy(rng.random(crop.shape, dtype=np.float32)).to(crop.dtype)
    return torch.where(where[None], noise, crop)


def region_means(z: Tensor, regions: Tensor, count: int) -> Tensor:
    """Mean vector ``[count, D]`` of every region of ``z`` ``[B, D, h, w]`` (Alg. 2's ``z*``).

    ``regions`` long ``[B, h, w]`` holds ids in ``[0, count)`` shared across the batch (-1 pixels
    are ignored); a region without pixels gets the zero vector.
    """
    if z.dim() != 4 or regions.shape != (z.shape[0], *z.shape[2:]):
        raise ValueError(
            f"region_means: z {tuple(z.shape)} and regions {tuple(regions.shape)} differ"
        )
    d = z.shape[1]
    flat = z.permute(0, 2, 3, 1).reshape(-1, d)
    ids = regions.reshape(-1).to(z.device)
    keep = ids >= 0
    flat, ids = flat[keep], ids[keep]
    sums = flat.new_zeros(count, d).index_add_(0, ids, flat)
    counts = torch.bincount(ids, minlength=count).clamp_min(1).to(flat.dtype)
    return sums / counts[:, None]


def keep_mutual(regions: Tensor, owner: Tensor) -> tuple[Tensor, Tensor]:
    """Regions present in every view: ``regions`` long ``[N, M, h, w]`` (batch-wide ids, -1
    ignored) and ``owner`` ``[R]`` (image of each id) → renumbered ids and their owners.

    Needed after the region maps are subsampled (a small region can vanish from one view).
    """
    count = owner.numel()
    n, m = regions.shape[:2]
    present = torch.ones(count, dtype=torch.bool, device=regions.device)
    for v in range(m):
        ids = regions[:, v].reshape(-1)
        present &= torch.bincount(ids[ids >= 0], minlength=count)[:count] > 0
    lookup = torch.full((count + 1,), -1, dtype=torch.long, device=regions.device)
    lookup[:count][present] = torch.arange(int(present.sum()), device=regions.device)
    out = lookup[torch.where(regions >= 0, regions, count)]
    return out, owner[present.to(owner.device)]
