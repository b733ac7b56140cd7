"""TexMosaic-12: mosaics of 12 real textures with exact masks (docs/benchmarks.md).

Every item is regenerated from its own stream ``numpy.random.default_rng([seed, replicate,
i])``, so items regenerate alone and smaller tiers are prefixes. A split holds a
Voronoi half (items ``0..n/2``) then a blob half, each with its own seed. Sources: 5 photos
bundled with scikit-image and 7 from Debian's ``opencv-doc``; each is cut in two across
its longer axis, train crops come from half A and val/dev crops from half B.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from fw.api import example
from fw.data import ArrayDataset
from fw.errors import DataError, check_choice

GENERATOR_VERSION = "texmosaic12-v1"
SIZE = 224
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
#: id -> (class name, source): ``skimage:<function>`` or an opencv-doc file name
SOURCES: tuple[tuple[str, str], ...] = (
    ("brick", "skimage:brick"),
    ("grass", "skimage:grass"),
    ("gravel", "skimage:gravel"),
    ("moon", "skimage:moon"),
    ("starry_night", "starry_night.jpg"),
    ("baboon", "baboon.jpg"),
    ("graffiti", "graf1.png"),
    ("pcb_board", "board.jpg"),
    ("aerial", "aero1.jpg"),
    ("fruits", "fruits.jpg"),
    ("ihc_tissue", "skimage:immunohistochemistry"),
    ("facade", "building.jpg"),
)
CLASSES = [name for name, _ in SOURCES]
#: (Voronoi-half seed, blob-half seed) per split
SEEDS = {"train": (1000, 1001), "val": (2000, 2001), "dev": (3000, 3001)}
#: items per split: full and fast (CI) tiers
TIERS = {"full": {"train": 600, "val": 200, "dev": 100}, "fast": {"train": 200, "val": 100}}

Split = Literal["train", "val", "dev"]


def _read_source(source: str) -> np.ndarray:
    """One source as float32 RGB ``[H, W, 3]`` in [0, 1] (grey photos repeated to 3 channels)."""
    if source.startswith("skimage:"):
        import skimage.data

        img = getattr(skimage.data, source.split(":", 1)[1])()
    else:
        path = OPENCV_DATA / source
        if not path.is_file():
            raise DataError(
                f"TexMosaic-12 needs {path} (7 of its 12 textures come from Debian's opencv-doc "
                "4.6.0 examples): install it with `apt-get install -y opencv-doc`. Where dpkg "
                "excludes /usr/share/doc, use `apt-get download opencv-doc && dpkg -x "
                "opencv-doc_*.deb /` instead."
            )
        from PIL import Image

        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


@lru_cache(maxsize=2)
def sources(gray: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``(half A, half B)`` of every source, float32 ``[h, w, 3]``; gray = rgb2gray once."""
    from skimage.color import rgb2gray

    out = []
    for _, source in SOURCES:
        img = _read_source(source)
        if gray:
            img = np.repeat(rgb2gray(img).astype(np.float32)[:, :, None], 3, axis=2)
        h, w = img.shape[:2]
        if w >= h:  # cut across the longer axis; a square across its width
            out.append((img[:, : w // 2], img[:, w // 2 :]))
        else:
            out.append((img[: h // 2], img[h // 2 :]))
    return tuple(out)


def _displacement(rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    d = gaussian_filter(rng.standard_normal((SIZE, SIZE)).astype(np.float32), sigma=10)
    return d * (6.0 / max(float(np.abs(d).max()), 1e-12))


def _voronoi(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Warped Voronoi layout: ``(region map, class of each region)``."""
    n = int(rng.integers(3, 8))
    centres = rng.uniform(0, SIZE, size=(n, 2)).astype(np.float32)
    dy, dx = _displacement(rng), _displacement(rng)
    k = int(rng.integers(2, min(4, n) + 1))
    classes = rng.choice(len(SOURCES), size=k, replace=False)
    order = rng.permutation(n)
    region_class = np.empty(n, dtype=np.int64)
    region_class[order[:k]] = classes
    region_class[order[k:]] = classes[rng.integers(0, k, size=n - k)]
    grid = np.arange(SIZE, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    py, px = yy + dy, xx + dx
    dist = (py[None] - centres[:, 0, None, None]) ** 2 + (px[None] - centres[:, 1, None, None]) ** 2
    return dist.argmin(axis=0), region_class


def _blobs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blob layout: argmax of k smoothed noise fields, one region per class."""
    from scipy.ndimage import gaussian_filter

    k = int(rng.integers(2, 5))
    classes = rng.choice(len(SOURCES), size=k, replace=False)
    sigma = float(rng.uniform(10, 28))
    fields = [
        gaussian_filter(rng.standard_normal((SIZE, SIZE)).astype(np.float32), sigma=sigma)
        for _ in range(k)
    ]
    return np.stack(fields).argmax(axis=0), classes.astype(np.int64)


def _crop(rng: np.random.Generator, half: np.ndarray) -> np.ndarray:
    """A fresh jittered 224×224 crop of a source half."""
    s = float(rng.uniform(0.7, 1.4))
    h, w = half.shape[:2]
    side = min(int(round(SIZE / s)), h, w)
    top = int(rng.integers(0, h - side + 1))
    left = int(rng.integers(0, w - side + 1))
    window = torch.from_numpy(np.ascontiguousarray(half[top : top + side, left : left + side]))
    x = F.interpolate(
        window.permute(2, 0, 1)[None],
        size=(SIZE, SIZE),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0].numpy()  # [3, 224, 224]
    if rng.random() < 0.5:
        x = x[:, :, ::-1]
    x = np.rot90(x, k=int(rng.integers(0, 4)), axes=(1, 2))
    bright, contrast, sat = rng.uniform(0.8, 1.2, size=3)
    x = x * bright
    lum = np.tensordot(np.array([0.2125, 0.7154, 0.0721], dtype=np.float32), x, axes=(0, 0))
    x = (x - lum.mean()) * contrast + lum.mean()
    lum = np.tensordot(np.array([0.2125, 0.7154, 0.0721], dtype=np.float32), x, axes=(0, 0))
    x = lum[None] + (x - lum[None]) * sat
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def generate_item(
    seed: int, replicate: int, i: int, layout: str, half: int, gray: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One mosaic: image uint8 ``[3, 224, 224]`` and label uint8 ``[224, 224]``."""
    rng = np.random.default_rng([seed, replicate, i])
    make = _voronoi if layout == "voronoi" else _blobs
    while True:  # redraw from the same stream while a chosen class covers < 1 %
        regions, region_class = make(rng)
        label = region_class[regions]
        present = np.unique(region_class)
        cover = np.array([(label == c).mean() for c in present])
        if cover.min() >= 0.01:
            break
    halves = sources(gray)
    image = np.zeros((3, SIZE, SIZE), dtype=np.float32)
    for r in range(len(region_class)):
        patch = _crop(rng, halves[int(region_class[r])][half])
        mask = regions == r
        image[:, mask] = patch[:, mask]
    return np.rint(image * 255).astype(np.uint8), label.astype(np.uint8)


@example(split="val", n=2, progress=False)
def texmosaic12(
    split: Split = "train",
    tier: Literal["full", "fast"] = "full",
    n: int | None = None,
    replicate: int = 0,
    gray: bool = False,
    progress: bool = True,
) -> ArrayDataset:
    """TexMosaic-12 ``split``: ``x`` uint8 ``[N, 3|1, 224, 224]``, ``label`` uint8 ``[N, 224, 224]``
    (class ids 0-11, no ignore value).

    ``n`` (even) overrides the tier's item count; the first ``n/2`` items are Voronoi layouts and
    the rest blobs, each a prefix of its half. ``gray`` runs the same generator on grey sources
    (identical labels). ``meta["manifest"]`` records the generator, seeds and source hashes.
    """
    from tqdm.auto import tqdm

    check_choice(split, ("train", "val", "dev"), "split")
    check_choice(tier, ("full", "fast"), "tier")
    if n is None:
        if split not in TIERS[tier]:
            raise DataError(f"TexMosaic-12 tier '{tier}' has no '{split}' split")
        n = TIERS[tier][split]
    if n < 2 or n % 2:
        raise DataError(f"TexMosaic-12 n must be an even number >= 2, got {n}")
    half = 0 if split == "train" else 1
    items = [
        (seed, layout, i)
        for seed, layout in zip(SEEDS[split], ("voronoi", "blobs"), strict=True)
        for i in range(n // 2)
    ]
    images, labels = [], []
    for seed, layout, i in tqdm(items, desc=f"TexMosaic-12 {split}", disable=not progress):
        img, lab = generate_item(seed, replicate, i, layout, half, gray)
        images.append(img[:1] if gray else img)
        labels.append(lab)
    x = torch.from_numpy(np.stack(images))
    label = torch.from_numpy(np.stack(labels))
    return ArrayDataset(
        {"x": x, "label": label},
        name=f"texmosaic12-{split}{'-gray' if gray else ''}",
        classes=list(CLASSES),
        meta={"manifest": manifest(split, n, replicate, gray), "dense_labels": True},
    )


def manifest(split: str, n: int, replicate: int, gray: bool) -> dict:
    """What defines a split's data: generator, seeds, N, package versions, source hashes."""
    versions = {}
    for dist in ("scikit-image", "numpy", "scipy", "torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    hashes = {}
    for name, source in SOURCES:
        if not source.startswith("skimage:"):
            hashes[name] = hashlib.sha256((OPENCV_DATA / source).read_bytes()).hexdigest()
    return {
        "generator": GENERATOR_VERSION,
        "split": split,
        "seeds": list(SEEDS[split]),
        "replicate": replicate,
        "n": n,
        "gray": gray,
        "versions": versions,
        "opencv_sources_sha256": hashes,
    }
