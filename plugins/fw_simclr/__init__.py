"""fw_simclr plugin: SimCLR / InfoNCE and its family (spec icon.md §1.3, §3.3 #5-11, #15).

The ``positive_pairs`` distribution, the view-based ``contrastive`` learner (SimCLR, SupCon,
MoCo v3, t-SimCLR, VICReg and cross-entropy are recipes of it), batched augmentations
(`fw_common.augment`) and small-image backbones (``cifar_resnet18``, ``convnet``).
"""
