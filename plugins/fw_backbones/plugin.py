"""Entry point of the ``backbones`` plugin."""

from __future__ import annotations

from fw import hookimpl
from fw_backbones import cnn, taps, vit


def _walkable(factory, slow: bool = False):
    """The registry walk builds backbones with random weights (no download); big ones are slow."""
    factory.example = {"weights": None}
    factory.smoke_slow = slow
    return factory


#: big random-weight backbones are slow to build: the registry walk runs them with -m slow
_SLOW = {"dino_vitb16", "dino_vitb8", "dinov2_vitb14", "dinov2_vitl14", "resnet50"}


@hookimpl
def fw_featurizers():
    builders = {
        name: _walkable(b, name in _SLOW) for name, b in {**cnn.BUILDERS, **vit.BUILDERS}.items()
    }
    return {**builders, "mobilenet_v2_tap": taps.mobilenet_v2_tap}
