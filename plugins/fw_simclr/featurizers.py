"""Image backbones for feature learning: ResNet-18 with a small-image stem, and a small conv net.

Both are global featurizers (``dense = False``, ``input_key = "x"``) returning ``[B, dim]``
penultimate features. They take images ``[B, C, H, W]``, ``[B, H, W]`` (one channel), or
flattened rows ``[B, C·H·W]`` when the image shape is known (``image_shape``, or the dataset's
``meta["image_shape"]`` read in :meth:`setup`), so they run on scikit-learn's flat 8×8 digits
as on CIFAR-10.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fw.api import Featurizer
from fw.errors import ShapeError


def image_shape_of(data: Any) -> tuple[int, ...] | None:
    """``(C, H, W)`` of a dataset's images: ``meta["image_shape"]``, else the shape of 4-D ``x``."""
    meta = getattr(data, "meta", None) or {}
    shape = meta.get("image_shape")
    if shape is not None:
        return tuple(int(s) for s in shape)
    x = getattr(data, "x", None)
    if x is not None and x.dim() == 4:
        return tuple(int(s) for s in x.shape[1:])
    return None


class _ImageInput(Featurizer):
    """Shared input handling: flat rows -> images, grey -> RGB when the stem wants 3 channels."""

    input_key = "x"
    dense = False
    in_channels: int | None = None

    def __init__(self, image_shape: list[int] | None = None) -> None:
        super().__init__()
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ShapeError(f"image_shape must be [C, H, W], got {list(self.image_shape)}")

    def setup(self, data: Any) -> None:
        if self.image_shape is None:
            self.image_shape = image_shape_of(data)
        sample = getattr(data, "x", None)
        if sample is not None:  # materialise lazy layers before the optimizer is built
            with torch.no_grad():
                was = self.training
                self.eval()
                self(sample[:2])
                self.train(was)

    def images(self, x: Tensor) -> Tensor:
        x = x if x.is_floating_point() else x.float()
        if x.dim() == 2:
            if self.image_shape is None:
                raise ShapeError(
                    f"{type(self).__name__} got flat inputs {tuple(x.shape)} and does not know the "
                    "image shape; set `image_shape: [C, H, W]` or use a dataset whose meta has it"
                )
            x = x.reshape(x.shape[0], *self.image_shape)
        elif x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4:
            raise ShapeError(f"{type(self).__name__} expects images [B, C, H, W], got {x.dim()}-D")
        want = self.in_channels
        if want is not None and x.shape[1] != want:
            if x.shape[1] == 1:
                x = x.expand(-1, want, -1, -1)
            else:
                raise ShapeError(
                    f"{type(self).__name__} was built for {want} input channel(s), got "
                    f"{x.shape[1]}; set `in_channels: {x.shape[1]}`"
                )
        return x


class ResNet18(_ImageInput):
    """torchvision's ResNet-18 (He et al. 2016) for small images, untrained: 512-d features.

    ``cifar_stem`` (default) swaps the 7×7 stride-2 convolution and max-pool for one 3×3
    stride-1 convolution, the usual stem for 32×32 inputs (SimCLR's CIFAR-10 setup); the
    classifier is dropped. One-channel images are repeated to three channels unless
    ``in_channels: 1`` (a one-channel stem). Pretrained ImageNet ResNets are the ``resnet18`` /
    ``resnet50`` featurizers of the ``backbones`` plugin.
    """

    def __init__(
        self,
        cifar_stem: bool = True,
        in_channels: int = 3,
        image_shape: list[int] | None = None,
    ) -> None:
        super().__init__(image_shape)
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self.dim = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.images(x))


class ConvNet(_ImageInput):
    """A small conv net for small grey or colour images (8×8 digits, 28×28 MNIST, 32×32 CIFAR).

    One stage per entry of ``widths``: 3×3 convolution, BatchNorm, ReLU, then a 2×2 max-pool
    between stages while the map is at least 4 pixels wide; global average pooling at the end.
    ``dim`` adds a linear layer to that width (default: the last width). ``in_channels``
    defaults to the data's (a lazy first convolution).
    """

    def __init__(
        self,
        widths: list[int] = (32, 64, 128),  # type: ignore[assignment]
        dim: int | None = None,
        in_channels: int | None = None,
        batch_norm: bool = True,
        image_shape: list[int] | None = None,
    ) -> None:
        super().__init__(image_shape)
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ValueError(f"ConvNet widths must be a non-empty list of positive ints: {widths}")
        self.in_channels = in_channels
        stages = []
        prev = in_channels
        for w in widths:
            conv = (
                nn.LazyConv2d(w, 3, padding=1, bias=not batch_norm)
                if prev is None
                else nn.Conv2d(prev, w, 3, padding=1, bias=not batch_norm)
            )
            layers: list[nn.Module] = [conv]
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU(inplace=True))
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2)
        self.proj = nn.Linear(widths[-1], dim) if dim is not None else nn.Identity()
        self.dim = dim if dim is not None else widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.images(x)
        last = len(self.stages) - 1
        for k, stage in enumerate(self.stages):
            x = stage(x)
            if k < last and min(x.shape[-2:]) >= 4:
                x = self.pool(x)
        return self.proj(x.mean(dim=(2, 3)))
