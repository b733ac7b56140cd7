"""torchvision CNNs (ResNet-18/50, MobileNetV2) as featurizers, with their ImageNet heads kept."""

from __future__ import annotations

from torch import Tensor, nn

from fw_backbones.base import Backbone, make_builder
from fw_backbones.weights import BACKBONES


class TorchvisionCNN(Backbone):
    """A torchvision classification network; features are its last stage (stride 32).

    Global features are the globally average-pooled last feature map (the classifier's input,
    ``[B, dim]``); dense ones are that map itself, ``[B, dim, H/32, W/32]``. The ImageNet
    classifier stays loaded: :meth:`logits` gives the 1000 class scores and ``categories`` their
    names, which is how the weights are checked to be the real ones.
    """

    def build(self, pretrained: bool) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(self.spec.arch, weights=None)

    @property
    def categories(self) -> list[str] | None:
        """Class names of the loaded head (torchvision's ``meta``), None for random weights."""
        if self.weights_name is None:
            return None
        import torchvision

        name = self.spec.weights[self.weights_name].torchvision_name
        return list(torchvision.models.get_weight(name).meta["categories"]) if name else None

    def feature_map(self, x: Tensor) -> Tensor:
        """Prepared images -> the last feature map ``[B, dim, h, w]``."""
        net = self.net
        if self.spec.arch.startswith("resnet"):
            x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        return net.features(x)

    def encode(self, x: Tensor) -> Tensor:
        fmap = self.feature_map(x)
        return fmap if self.dense else fmap.mean(dim=(2, 3))

    def logits(self, x: Tensor) -> Tensor:
        """ImageNet class scores ``[B, 1000]`` of images in [0, 1] (preprocessed here)."""
        if self.preprocess_inputs:
            x = self.preprocess(x)
        pooled = self.feature_map(x).mean(dim=(2, 3))
        head = self.net.fc if self.spec.arch.startswith("resnet") else self.net.classifier
        return head(pooled)


#: one recipe factory per torchvision entry of `fw_backbones.weights.BACKBONES`
BUILDERS = {
    name: make_builder(name, TorchvisionCNN)
    for name, spec in BACKBONES.items()
    if spec.library == "torchvision"
}
globals().update(BUILDERS)  # cnn.resnet18(...) etc.
