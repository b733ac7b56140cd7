"""MobileNetV2 intermediate taps as dense featurizers (benchmarks.md §1), the offline DINO
stand-in of the TexMosaic-12 benchmark."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from fw.api import Featurizer, example
from fw.errors import check_choice

Tap = Literal["s4", "s8", "s16a", "s16", "s32a", "s32", "s32c"]
#: tap -> (block index i of ``features[:i+1]``, channels, stride) — benchmarks.md §1
TAPS: dict[str, tuple[int, int, int]] = {
    "s4": (3, 24, 4),
    "s8": (6, 32, 8),
    "s16a": (10, 64, 16),
    "s16": (13, 96, 16),
    "s32a": (16, 160, 32),
    "s32": (17, 320, 32),
    "s32c": (18, 1280, 32),
}


class MobileNetV2Tap(Featurizer):
    """The output of block ``features[i]`` of torchvision's MobileNetV2, ``[B, C, H/s, W/s]``.

    Frozen and in eval mode. Inputs are images in [0, 1] at their own size (no resize or crop),
    ImageNet-normalised here unless ``preprocess_inputs`` is False; grey images are repeated to
    RGB. ``weights: null`` is the random-init control (``torch.manual_seed(init_seed)``).
    """

    dense = True
    input_shape: ClassVar[tuple[int, ...]] = (3, 64, 64)

    def __init__(
        self,
        tap: Tap = "s32a",
        weights: Literal["imagenet"] | None = "imagenet",
        weights_path: str | None = None,
        init_seed: int = 0,
        preprocess_inputs: bool = True,
    ) -> None:
        super().__init__()
        from fw_backbones.cnn import mobilenet_v2

        check_choice(tap, tuple(TAPS), "tap")
        index, self.dim, self.patch_size = TAPS[tap]
        self.tap = tap
        with torch.random.fork_rng():
            torch.manual_seed(init_seed)
            backbone = mobilenet_v2(weights, weights_path, "dense", True, None, False)
        self.features = backbone.net.features[: index + 1]
        self.weights_id = backbone.weights_id
        self.preprocess = backbone.preprocessing
        self.preprocess_inputs = preprocess_inputs
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> MobileNetV2Tap:
        return super().train(False)

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] (or uint8) -> ImageNet-normalised RGB at the same size."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self.preprocess.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.preprocess.std, dtype=x.dtype, device=x.device)
        return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess_inputs:
            x = self.normalize(x)
        elif x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.features(x)


@example(tap="s8", weights=None)
def mobilenet_v2_tap(
    tap: Tap = "s32a",
    weights: Literal["imagenet"] | None = "imagenet",
    weights_path: str | None = None,
    init_seed: int = 0,
    preprocess_inputs: bool = True,
) -> MobileNetV2Tap:
    """MobileNetV2 (ImageNet) truncated after a benchmark tap; dense ``[B, C, H/s, W/s]``."""
    return MobileNetV2Tap(tap, weights, weights_path, init_seed, preprocess_inputs)
