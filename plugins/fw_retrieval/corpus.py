"""What `fw retrieve` searches: image folders (featurized and cached) or feature files.

* A **folder** of images (``.png .jpg .jpeg .bmp .webp``, searched recursively). Each image's
  ``label`` is the name of its sub-folder below the root (``"."`` for images at the root). An
  optional ``metadata.csv`` in the root adds columns: its ``file`` column holds paths relative
  to the root, every other column becomes a condition column (integers when every entry is one,
  else strings). Features come from a registered featurizer through `fw.lib.features`'s cache.
* A **feature file** ``.npz`` with ``features [n, D]`` and any 1-D arrays of length n as
  columns; ``paths`` (image files, relative to the file's folder or absolute) lets the contact
  sheet show the images, and a ``featurizer`` string records what made the features. A bare
  ``.npy`` holds features only.

Style features (``kind="style"``) are AdaIN statistics (Huang & Belongie, "Arbitrary Style
Transfer in Real-time with Adaptive Instance Normalization", ICCV 2017, Sec. 5): the mean and
standard deviation per channel of a mid-level feature map, concatenated.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fw.errors import DataError, FwError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: content: an ImageNet CNN's pooled features; style: AdaIN statistics of a mid-level map
DEFAULT_FEATURIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "content": ("mobilenet_v2", {}),
    "style": ("mobilenet_v2_tap", {"tap": "s16", "output": "dense"}),
}


@dataclass
class Indexed:
    """Rows to search: features, condition columns, image paths (or None) and provenance."""

    features: np.ndarray
    columns: dict[str, np.ndarray]
    paths: list[Path] | None
    featurizer: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class StyleStatistics(nn.Module):
    """AdaIN style statistics ``[B, 2C]``: per-channel mean and std of a dense ``[B, C, H, W]``
    featurizer's map."""

    input_key = "x"

    def __init__(self, dense: nn.Module) -> None:
        super().__init__()
        self.dense = dense
        self.dim = 2 * int(getattr(dense, "dim", 0))

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.dense(x)
        if fmap.dim() != 4:
            raise FwError(
                "style features need a dense featurizer ([B, C, H, W]); pick one with "
                "--featurizer (e.g. mobilenet_v2_tap) and --featurizer-arg output=dense"
            )
        flat = fmap.flatten(2)
        return torch.cat([flat.mean(2), flat.std(2, unbiased=False)], dim=1)

    def fingerprint(self) -> dict[str, Any]:
        """What determines the outputs (for the feature cache)."""
        from fw.lib.features import featurizer_fingerprint

        return {"adain_style_of": featurizer_fingerprint(self.dense)}


def build_featurizer(name: str | None, kind: str, args: dict[str, Any]) -> tuple[nn.Module, str]:
    """A registered featurizer (frozen, eval mode), wrapped for style statistics if asked."""
    from fw.registry import get_registry

    default_name, default_args = DEFAULT_FEATURIZERS[kind]
    if name is None:
        name, args = default_name, {**default_args, **args}
    model = get_registry().get("featurizer", name).factory(**args)
    if kind == "style":
        model = StyleStatistics(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    described = name + "".join(f",{k}={v}" for k, v in sorted(args.items()))
    return model, f"{kind}:{described}"


class ImageFiles(torch.utils.data.Dataset):
    """Image files as ``{"x": [3, size, size]}`` items (short side resized, centre crop)."""

    def __init__(self, paths: list[Path], size: int, name: str) -> None:
        self.paths, self.size, self.name = paths, size, name
        self.meta = {"files": [p.as_posix() for p in paths], "size": size}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        from fw.lib.images import read_image, resize_short_side_crop

        return {"x": resize_short_side_crop(read_image(self.paths[i]), self.size)}


def load_image(path: str | Path, size: int) -> Tensor:
    """One query image as ``[1, 3, size, size]``."""
    from fw.lib.images import read_image, resize_short_side_crop

    return resize_short_side_crop(read_image(path), size)[None]


def _metadata(root: Path, paths: list[Path]) -> dict[str, np.ndarray]:
    table = root / "metadata.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "file" not in rows[0]:
        raise DataError(f"{table} needs a header with a 'file' column (paths relative to {root})")
    by_file = {Path(r["file"]).as_posix(): r for r in rows}
    out: dict[str, list[str]] = {c: [] for c in rows[0] if c != "file"}
    for p in paths:
        rel = p.relative_to(root).as_posix()
        if rel not in by_file:
            raise DataError(f"{table} has no row for {rel!r}; add one (file,{','.join(out)})")
        for c in out:
            out[c].append(by_file[rel][c])
    columns: dict[str, np.ndarray] = {}
    for c, values in out.items():
        try:
            columns[c] = np.asarray([int(v) for v in values], dtype=np.int64)
        except ValueError:
            columns[c] = np.asarray(values, dtype=str)
    return columns


def index_folder(
    root: Path,
    featurizer: nn.Module,
    described: str,
    cache_dir: Path,
    size: int,
    batch_size: int = 32,
) -> Indexed:
    """Featurize (or read from the cache) every image below ``root``."""
    from fw.lib.features import cached_features

    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(
            f"--index {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); point it at a "
            "folder of images or at a .npz feature file"
        )
    labels = np.asarray(
        [p.parent.relative_to(root).as_posix() if p.parent != root else "." for p in paths]
    )
    dataset = ImageFiles(paths, size, f"folder-{root.name}")
    feats = cached_features(dataset, featurizer, cache_dir, batch_size=batch_size, progress=False)
    columns = {"label": labels, **_metadata(root, paths)}
    return Indexed(np.asarray(feats, dtype=np.float32), columns, paths, described)


def index_file(path: Path) -> Indexed:
    """Features and columns from a ``.npz`` (or bare ``.npy``) file."""
    try:
        if path.suffix == ".npy":
            return Indexed(np.load(path).astype(np.float32), {}, None)
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"--index {path} is not a readable .npz/.npy feature file: {err}") from None
    if "features" not in data:
        raise DataError(f"--index {path} has no 'features' array (found: {', '.join(data)})")
    feats = np.asarray(data["features"], dtype=np.float32)
    if feats.ndim != 2:
        raise DataError(f"'features' in {path} must be [n, D], got shape {feats.shape}")
    n = len(feats)
    columns, paths, featurizer = {}, None, None
    for key in data.files:
        value = data[key]
        if key == "features":
            continue
        if key == "featurizer":
            featurizer = str(value)
        elif key == "paths":
            paths = [p if p.is_absolute() else path.parent / p for p in map(Path, value.tolist())]
        elif value.ndim == 1 and len(value) == n:
            columns[key] = value
    return Indexed(feats, columns, paths, featurizer)
