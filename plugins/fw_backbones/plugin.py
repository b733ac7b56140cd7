"""Entry point of the ``backbones`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_backbones import cnn, vit


def _walkable(factory, slow: bool = False):
    """The registry walk builds backbones with random weights (no download); big ones are slow."""
    factory.example = {"weights": None}
    factory.smoke_slow = slow
    return factory


@hookimpl
def fw_featurizers():
    return {
        "resnet18": _walkable(cnn.resnet18),
        "resnet50": _walkable(cnn.resnet50, slow=True),
        "mobilenet_v2": _walkable(cnn.mobilenet_v2),
        "dino_vits16": _walkable(vit.dino_vits16),
        "dino_vits8": _walkable(vit.dino_vits8),
        "dino_vitb16": _walkable(vit.dino_vitb16, slow=True),
        "dino_vitb8": _walkable(vit.dino_vitb8, slow=True),
        "dinov2_vits14": _walkable(vit.dinov2_vits14),
        "dinov2_vitb14": _walkable(vit.dinov2_vitb14, slow=True),
        "dinov2_vitl14": _walkable(vit.dinov2_vitl14, slow=True),
    }
