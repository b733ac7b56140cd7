"""Entry point of the ``backbones`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_backbones import cnn, vit


@hookimpl
def fw_featurizers():
    return {
        "resnet18": cnn.resnet18,
        "resnet50": cnn.resnet50,
        "mobilenet_v2": cnn.mobilenet_v2,
        "dino_vits16": vit.dino_vits16,
        "dino_vits8": vit.dino_vits8,
        "dino_vitb16": vit.dino_vitb16,
        "dino_vitb8": vit.dino_vitb8,
        "dinov2_vits14": vit.dinov2_vits14,
        "dinov2_vitb14": vit.dinov2_vitb14,
        "dinov2_vitl14": vit.dinov2_vitl14,
    }
