"""DINO and DINOv2 vision transformers (architecture from timm) as featurizers.

timm's ``VisionTransformer`` has the official DINO / DINOv2 parameter names, so the official
checkpoints load strictly (DINOv2's training-only ``mask_token`` is dropped, see
`fw_backbones.weights`). Position embeddings are interpolated by timm for inputs other than the
checkpoint's native size (``dynamic_img_size``); timm's bicubic resampling differs slightly from
the official repositories' at non-native sizes, and is identical at the native grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fw.errors import ShapeError
from fw_backbones.base import Backbone, Output

#: named weights (see `fw_backbones.weights.BACKBONES`); None = random initialisation
DinoWeights = Literal["imagenet"] | None
Dinov2Weights = Literal["lvd142m"] | None


class DinoViT(Backbone):
    """A ViT whose global feature is the CLS token after the final LayerNorm, ``[B, dim]``, and
    whose dense feature is the patch tokens as a grid, ``[B, dim, H/p, W/p]``.

    Inputs whose sides are not multiples of the patch size ``p`` are centre-cropped to the
    largest multiple (the official models floor the same way).
    """

    def build(self, pretrained: bool) -> nn.Module:
        import timm

        kwargs = {
            "pretrained": False,
            "num_classes": 0,
            "dynamic_img_size": True,
            "img_size": self.spec.native_size,
        }
        if not pretrained:
            return timm.create_model(self.spec.arch, **kwargs)
        with torch.device("meta"):  # skip the random init the checkpoint overwrites anyway
            net = timm.create_model(self.spec.arch, **kwargs)
        if any(True for _ in net.buffers()):  # non-persistent buffers would stay uninitialised
            return timm.create_model(self.spec.arch, **kwargs)
        return net.to_empty(device="cpu")

    def encode(self, x: Tensor) -> Tensor:
        p = self.spec.stride
        h, w = x.shape[-2] // p, x.shape[-1] // p
        if h == 0 or w == 0:
            raise ShapeError(
                f"{self.spec.name} needs images of at least {p}x{p} pixels, got {tuple(x.shape)}"
            )
        top, left = (x.shape[-2] - h * p) // 2, (x.shape[-1] - w * p) // 2
        x = x[..., top : top + h * p, left : left + w * p]
        tokens = self.net.forward_features(x)  # [B, prefix + h*w, D], final norm applied
        if not self.dense:
            return tokens[:, 0]
        patches = tokens[:, self.net.num_prefix_tokens :]
        return patches.transpose(1, 2).reshape(x.shape[0], self.dim, h, w)


def dino_vits16(
    weights: DinoWeights = "imagenet",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINO ViT-S/16, 384-d."""
    return DinoViT(
        "dino_vits16", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dino_vits8(
    weights: DinoWeights = "imagenet",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINO ViT-S/8, 384-d."""
    return DinoViT(
        "dino_vits8", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dino_vitb16(
    weights: DinoWeights = "imagenet",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINO ViT-B/16, 768-d."""
    return DinoViT(
        "dino_vitb16", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dino_vitb8(
    weights: DinoWeights = "imagenet",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINO ViT-B/8, 768-d."""
    return DinoViT(
        "dino_vitb8", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dinov2_vits14(
    weights: Dinov2Weights = "lvd142m",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINOv2 ViT-S/14, 384-d (the I-Con paper's "DiNO ViT-S/14")."""
    return DinoViT(
        "dinov2_vits14", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dinov2_vitb14(
    weights: Dinov2Weights = "lvd142m",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINOv2 ViT-B/14, 768-d."""
    return DinoViT(
        "dinov2_vitb14", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )


def dinov2_vitl14(
    weights: Dinov2Weights = "lvd142m",
    weights_path: str | None = None,
    output: Output = "global",
    frozen: bool = True,
    image_size: int | None = None,
    preprocess_inputs: bool = True,
) -> DinoViT:
    """DINOv2 ViT-L/14, 1024-d."""
    return DinoViT(
        "dinov2_vitl14", weights, weights_path, output, frozen, image_size, preprocess_inputs
    )
