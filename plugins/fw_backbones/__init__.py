"""Pretrained image backbones as featurizers: torchvision CNNs and DINO / DINOv2 ViTs.

`fw_backbones.weights.BACKBONES` says, for every name, where its weights come from, how its
inputs are prepared and what comes out.
"""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ()
