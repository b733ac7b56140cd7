"""DINO and DINOv2 vision transformers (architecture from timm) as featurizers.

timm's ``VisionTransformer`` has the official DINO / DINOv2 parameter names, so the official
checkpoints load strictly (DINOv2's training-only ``mask_token`` is dropped, see
`fw_backbones.weights`). Position embeddings are interpolated by timm for inputs other than the
checkpoint's native size (``dynamic_img_size``); timm's bicubic resampling differs slightly from
the official repositories' at non-native sizes, and is identical at the native grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fw.errors import ShapeError
from fw_backbones.base import Backbone, make_builder
from fw_backbones.weights import BACKBONES


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


#: one recipe factory per timm entry of `fw_backbones.weights.BACKBONES`
BUILDERS = {
    name: make_builder(name, DinoViT) for name, spec in BACKBONES.items() if spec.library == "timm"
}
globals().update(BUILDERS)  # vit.dino_vits16(...) etc.
