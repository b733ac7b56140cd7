"""What every pretrained backbone shares: weights resolution, preprocessing, freezing, outputs."""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from fw.api import Featurizer
from fw.errors import DataError, check_choice
from fw_backbones.lora import add_lora
from fw_backbones.weights import (
    BACKBONES,
    BackboneSpec,
    Preprocess,
    read_checkpoint,
    resolve_weights,
)

Output = Literal["global", "dense"]


class Backbone(Featurizer):
    """A pretrained image backbone as a `Featurizer` (subclasses build the network).

    Inputs are images ``[B, 1|3, H, W]`` in [0, 1] (or uint8); unless ``preprocess_inputs`` is
    False they go through :meth:`preprocess` (the weights' own resize / crop / normalise, see
    ``preprocessing``; grey images are repeated to RGB). ``output="global"`` gives ``[B, dim]``,
    ``"dense"`` the last feature map ``[B, dim, h, w]`` with ``patch_size`` input pixels per cell
    (of the preprocessed image). ``image_size`` overrides the crop size (e.g. larger for finer
    dense maps, tiny for tests). A frozen backbone has no trainable parameters and stays in
    eval mode (BatchNorm statistics, dropout) even when its owner calls ``.train()``.
    ``lora_rank`` > 0 adds trainable low-rank adapters (`fw_backbones.lora`) to the linear layers
    named ``lora_target`` (DINO's fused ``qkv``), the way DenseAV fine-tunes DINO.
    """

    def __init__(
        self,
        name: str,
        weights: str | None,
        weights_path: str | None = None,
        output: Output = "global",
        frozen: bool = True,
        image_size: int | None = None,
        preprocess_inputs: bool = True,
        lora_rank: int = 0,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.1,
        lora_target: str = "qkv",
    ) -> None:
        super().__init__()
        check_choice(output, ("global", "dense"), "output")
        self.spec: BackboneSpec = BACKBONES[name]
        self.output = output
        self.dense = output == "dense"
        self.dim = self.spec.dim
        self.patch_size = self.spec.stride if self.dense else 1
        self.frozen = frozen
        self.preprocess_inputs = preprocess_inputs
        prep = self.spec.preprocess
        self.preprocessing: Preprocess = prep if image_size is None else prep.at_size(image_size)
        path, self.weights_id = resolve_weights(self.spec, weights, weights_path)
        self.weights_name = weights if weights_path is None else None
        self.net = self.build(pretrained=path is not None)
        if path is not None:
            self.load_checkpoint(path)
        if frozen:
            self.requires_grad_(False)
        self.lora: nn.ModuleDict | None = None
        if lora_rank:  # after loading and freezing: only the adapters train
            self.lora = add_lora(self.net, lora_target, lora_rank, lora_alpha, lora_dropout)
        self.train(not frozen)

    # -- subclasses ------------------------------------------------------------------------

    def build(self, pretrained: bool) -> nn.Module:
        """The bare network (``pretrained``: its weights are about to be overwritten)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Prepared images -> the requested output (global ``[B, C]`` or dense ``[B, C, h, w]``)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------

    def load_checkpoint(self, path: Path) -> None:
        """Load a checkpoint in the official key layout into ``net``, strictly."""
        state = read_checkpoint(path)
        for key in self.spec.drop_keys:
            state.pop(key, None)
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as err:  # missing / unexpected keys, or shape mismatches
            raise DataError(
                f"checkpoint {path} does not fit backbone '{self.spec.name}' "
                f"(expected the official key layout of {self.spec.arch}): {err}"
            ) from err

    def preprocess(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> the network's input (resize, centre crop, normalise, to RGB)."""
        return self.preprocessing(x)

    def forward(self, x: Tensor) -> Tensor:
        if self.preprocess_inputs:
            x = self.preprocess(x)
        elif x.dim() == 4 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.encode(x)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode and not self.frozen)
        if self.lora is not None:  # the adapters' dropout follows the owner's mode
            self.lora.train(mode)
        return self

    def fingerprint(self) -> dict[str, Any]:
        """What determines this featurizer's outputs (JSON-able); feature caches key on it."""
        params = self.weights_id
        # random or trainable weights (adapters included): hash their values
        if params is None or not self.frozen or self.lora is not None:
            digest = hashlib.sha256()
            state = self.net.state_dict()
            if self.lora is not None:
                state.update({f"lora.{k}": v for k, v in self.lora.state_dict().items()})
            for key, value in state.items():
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            params = f"values:{digest.hexdigest()[:32]}"
        prep = self.preprocessing
        return {
            "backbone": self.spec.name,
            "weights": params,
            "output": self.output,
            "preprocess": [
                prep.resize_size,
                prep.crop_size,
                list(prep.mean),
                list(prep.std),
                prep.interpolation,
            ]
            if self.preprocess_inputs
            else None,
        }

    def extra_repr(self) -> str:
        weights = (self.weights_id or "random")[:60]
        lora = f", lora_rank={next(iter(self.lora.values())).rank}" if self.lora else ""
        return (
            f"output={self.output}, dim={self.dim}, weights={weights}, frozen={self.frozen}{lora}"
        )


def make_builder(name: str, family: type[Backbone]) -> Callable[..., Backbone]:
    """The recipe factory of backbone ``name`` of `BACKBONES`, built from its table entry.

    Its parameters are those of :class:`Backbone` (read from its signature, keyword-only) with
    ``weights`` typed as the entry's named weights (or None for random initialisation), so
    recipes are validated against them.
    """
    spec = BACKBONES[name]
    names = tuple(spec.weights)
    hints = typing.get_type_hints(Backbone.__init__)
    params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(Backbone.__init__).parameters.values()
        if p.name not in ("self", "name")
    ]
    params = [p.replace(default=names[0]) if p.name == "weights" else p for p in params]
    signature = inspect.Signature(params, return_annotation=family)

    def factory(**kwargs: Any) -> Backbone:
        bound = signature.bind(**kwargs)  # refuses unknown keys, fills the defaults
        bound.apply_defaults()
        return family(name, **bound.arguments)

    trained = "; ".join(f"{k}: {w.training}" for k, w in spec.weights.items())
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{spec.title or name}, {spec.dim}-d features; weights {trained}."
    factory.__signature__ = signature  # type: ignore[attr-defined]
    factory.__annotations__ = {
        **{p.name: hints[p.name] for p in params},
        "weights": Literal[names] | None,  # type: ignore[valid-type]
        "return": family,
    }
    return factory
