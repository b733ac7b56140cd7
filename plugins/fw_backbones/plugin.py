"""Entry point of the ``backbones`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_backbones import cnn, vit


def _walkable(factory):
    """The registry walk builds backbones with random weights (no download)."""
    factory.example = {"weights": None}
    return factory


@hookimpl
def fw_featurizers():
    return {
        "resnet18": _walkable(cnn.resnet18),
        "resnet50": _walkable(cnn.resnet50),
        "mobilenet_v2": _walkable(cnn.mobilenet_v2),
        "dino_vits16": _walkable(vit.dino_vits16),
        "dino_vits8": _walkable(vit.dino_vits8),
        "dino_vitb16": _walkable(vit.dino_vitb16),
        "dino_vitb8": _walkable(vit.dino_vitb8),
        "dinov2_vits14": _walkable(vit.dinov2_vits14),
        "dinov2_vitb14": _walkable(vit.dinov2_vitb14),
        "dinov2_vitl14": _walkable(vit.dinov2_vitl14),
    }
