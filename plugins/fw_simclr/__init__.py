"""fw_simclr plugin: SimCLR / InfoNCE and its family (I-Con, Thms 4-6, Cors. 2-3).

The ``positive_pairs`` distribution, the view-based ``contrastive`` learner (SimCLR, SupCon,
MoCo v3, t-SimCLR, VICReg and cross-entropy are recipes of it), batched augmentations
(`fw_common.augment`) and small-image backbones (``cifar_resnet18``, ``convnet``).
"""

#: the other plugins this one imports (checked by tests/test_layers.py)
requires: tuple[str, ...] = ("fw_common", "fw_table")
