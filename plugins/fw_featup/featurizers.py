"""Featurizers of this plugin: MobileNetV2 taps, and any featurizer with an upsampler on top."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from fw.api import Featurizer, Upsampler
from fw.errors import RecipeError, check_choice
from fw_backbones.cnn import TorchvisionCNN
from fw_featup.upsamplers import channel_norm

#: benchmarks.md §1: tap name -> (block index i of ``features[:i+1]``, channels, stride)
MOBILENET_TAPS: dict[str, tuple[int, int, int]] = {
    "s4": (3, 24, 4),
    "s8": (6, 32, 8),
    "s16a": (10, 64, 16),
    "s16": (13, 96, 16),
    "s32a": (16, 160, 32),
    "s32": (17, 320, 32),
    "s32c": (18, 1280, 32),
}


class MobileNetV2Tap(TorchvisionCNN):
    """ImageNet MobileNetV2 cut after block ``features[i]`` (benchmarks.md §1 taps)."""

    example = {"weights": None, "image_size": 64}

    def __init__(self, tap: str, **kwargs) -> None:
        check_choice(tap, tuple(MOBILENET_TAPS), "tap")
        super().__init__("mobilenet_v2", **kwargs)
        self.tap = tap
        self.block, self.dim, stride = MOBILENET_TAPS[tap]
        if self.dense:
            self.patch_size = stride

    def feature_map(self, x: Tensor) -> Tensor:
        return self.net.features[: self.block + 1](x)


def mobilenet_v2_tap(
    tap: Literal["s4", "s8", "s16a", "s16", "s32a", "s32", "s32c"] = "s32a",
    weights: Literal["imagenet"] | None = "imagenet",
    weights_path: str | None = None,
    output: Literal["global", "dense"] = "dense",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> MobileNetV2Tap:
    """MobileNetV2 (torchvision, ImageNet weights found offline) at a benchmarks.md tap;
    s32a (``features[:17]``, 160 ch, 7×7 at 224) is the TexMosaic headline layer."""
    return MobileNetV2Tap(
        tap,
        weights=weights,
        weights_path=weights_path,
        output=output,
        frozen=frozen,
        image_size=image_size,
        preprocess_inputs=preprocess_inputs,
    )


mobilenet_v2_tap.example = {"weights": None, "image_size": 64}


def aligned_featurize(featurizer: Featurizer) -> Callable[[Tensor], Tensor]:
    """Images ``[B, 3, H, W]`` in [0, 1] -> dense features on the *same* field of view.

    FeatUp compares features with jittered images pixel for pixel, so no resize or centre crop
    may come between them. A fw backbone (a ``preprocessing`` with ``mean``/``std`` and an
    ``encode``) gets only its normalisation; any other dense featurizer is called as is and
    must already keep the field of view.
    """
    prep = getattr(featurizer, "preprocessing", None)
    encode = getattr(featurizer, "encode", None)
    if prep is not None and encode is not None and hasattr(prep, "mean"):

        def run(x: Tensor) -> Tensor:
            mean = x.new_tensor(prep.mean).view(1, 3, 1, 1)
            std = x.new_tensor(prep.std).view(1, 3, 1, 1)
            return encode((x - mean) / std)

        return run
    return featurizer


class Upsampled(Featurizer):
    """Any dense featurizer followed by an upsampler guided by the input image.

    ``featurizer: {name: upsampled, featurizer: {name: mobilenet_v2_tap}, upsampler: {name:
    jbu_stack, weights: runs/featup_jbu_mobilenet_v2}}``. Inputs are images in [0, 1] at the
    resolution the features should have (``scale`` × that when given); the inner featurizer
    sees them with only its normalisation (:func:`aligned_featurize`). A per-image upsampler
    (implicit) is fitted on each image as it comes (slow: minutes per image).
    """

    dense = True
    example = {
        "featurizer": {"name": "mobilenet_v2_tap", "weights": None, "tap": "s8"},
        "upsampler": {"name": "bilinear"},
    }
    input_shape = (3, 64, 64)

    def __init__(self, featurizer: Featurizer, upsampler: Upsampler, scale: float = 1.0) -> None:
        super().__init__()
        if not getattr(featurizer, "dense", False):
            raise RecipeError("upsampled: the inner featurizer must be dense (output: dense)")
        self.featurizer = featurizer
        self.upsampler = upsampler
        self.scale = scale
        self.dim = featurizer.dim
        self.patch_size = 1
        self._featurize = aligned_featurize(featurizer)
        if hasattr(upsampler, "bind") and getattr(upsampler, "dim", 0) is None:
            upsampler.bind(self.dim)
        self.upsampler.eval()

    def train(self, mode: bool = True) -> Upsampled:
        # the upsampler stays in eval mode: dropout off, kernels depend on the image only
        super().train(mode)
        self.upsampler.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        lr = self._featurize(x)
        if getattr(self.upsampler, "feature_norm", False):
            lr = channel_norm(lr)
        size = (round(x.shape[-2] * self.scale), round(x.shape[-1] * self.scale))
        if not self.upsampler.per_image:
            return self.upsampler(lr, x, size)
        outs = []
        for i in range(x.shape[0]):
            with torch.enable_grad():
                self.upsampler.fit(x[i : i + 1], self._featurize)
            outs.append(self.upsampler(lr[i : i + 1], x[i : i + 1], size))
        return torch.cat(outs)


def upsampled(featurizer: Featurizer, upsampler: Upsampler, scale: float = 1.0) -> Upsampled:
    """A dense featurizer whose maps are raised to the input resolution by ``upsampler``."""
    return Upsampled(featurizer, upsampler, scale)


upsampled.example = Upsampled.example
