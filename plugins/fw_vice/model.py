"""ViCE's network f_θ: an ImageNet CNN with a Feature Pyramid Network decoder (§4, Lin et al. 2017)
to unit-length D-dimensional embeddings at input resolution."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw.errors import check_choice

Arch = Literal["resnet18", "mobilenet_v2"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: MobileNetV2 ``features`` blocks ending the stride-4/8/16/32 stages, and their widths
_MOBILENET_STAGES = ((3, 24), (6, 32), (13, 96), (17, 320))
_RESNET18_WIDTHS = (64, 128, 256, 512)


class FPNEncoder(nn.Module):
    """Backbone stages at strides 4, 8, 16, 32 → FPN → ``[B, dim, H, W]`` unit vectors.

    The FPN (Lin et al. 2017, §3) takes 1×1 lateral convolutions of the four stages to
    ``fpn_dim`` channels, adds each coarser level upsampled ×2 (nearest) to the next finer one,
    smooths the stride-4 sum with a 3×3 convolution, maps it to ``dim`` with a 1×1 convolution,
    upsamples bilinearly to the input size (ViCE predicts Z at the input's resolution, §3) and
    L2-normalises every pixel. The whole network trains (BatchNorm included).
    ``weights: imagenet`` loads torchvision's ImageNet weights through `fw_backbones` (offline
    for MobileNetV2; ResNet-18 needs its file downloaded once), ``None`` starts at random.
    """

    def __init__(
        self, arch: Arch = "resnet18", weights: str | None = "imagenet", dim: int = 128,
        fpn_dim: int = 128,
    ) -> None:  # fmt: skip
        super().__init__()
        from fw_backbones.cnn import TorchvisionCNN

        check_choice(arch, ("resnet18", "mobilenet_v2"), "arch")
        net = TorchvisionCNN(arch, weights, None, "dense", frozen=False).net
        self.arch = arch
        if arch == "mobilenet_v2":
            stages, start = [], 0
            for end, _ in _MOBILENET_STAGES:
                stages.append(net.features[start : end + 1])
                start = end + 1
            self.stages = nn.ModuleList(stages)
            widths = tuple(w for _, w in _MOBILENET_STAGES)
        else:
            stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
            self.stages = nn.ModuleList([stem, net.layer2, net.layer3, net.layer4])
            widths = _RESNET18_WIDTHS
        self.lateral = nn.ModuleList(nn.Conv2d(w, fpn_dim, 1) for w in widths)
        self.smooth = nn.Conv2d(fpn_dim, fpn_dim, 3, padding=1)
        self.out = nn.Conv2d(fpn_dim, dim, 1)
        self.dim = dim
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Images ``[B, 1|3, H, W]`` in [0, 1] → embeddings ``[B, dim, *size]`` (default H, W)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out_size = tuple(x.shape[-2:]) if size is None else size
        h = (x - self.mean) / self.std
        levels = []
        for stage in self.stages:
            h = stage(h)
            levels.append(h)
        top = self.lateral[-1](levels[-1])
        for lat, level in zip(self.lateral[-2::-1], levels[-2::-1], strict=True):
            top = lat(level) + F.interpolate(top, size=level.shape[-2:], mode="nearest")
        z = self.out(F.relu(self.smooth(top)))
        z = F.interpolate(z, size=out_size, mode="bilinear", align_corners=False)
        return F.normalize(z, dim=1)
