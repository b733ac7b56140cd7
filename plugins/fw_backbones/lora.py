"""Low-rank adaptation (LoRA, Hu et al. 2021) of a frozen network's linear layers.

DenseAV fine-tunes DINO through LoRA of rank 8 on the fused ``qkv`` projection of every
attention block (Hamilton, PhD thesis, Ch. 6, "Full Training": α = 32, dropout 0.1 in the
authors' code). Each adapted ``nn.Linear`` keeps its weights and its state-dict keys; a forward
hook adds ``(α / r) · B A dropout(x)``, with ``B = 0`` at the start so the adapted network
begins as the pretrained one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fw.errors import RecipeError


class LoRA(nn.Module):
    """The low-rank update ``(alpha / rank) · B A dropout(x)`` of one ``nn.Linear``."""

    def __init__(
        self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float
    ) -> None:
        super().__init__()
        self.rank = rank
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # nn.Linear's default, as in LoRA

    def forward(self, x: Tensor) -> Tensor:
        return (self.dropout(x) @ self.A.t() @ self.B.t()) * self.scale

    def extra_repr(self) -> str:
        return (
            f"rank={self.rank}, scale={self.scale:g}, in={self.A.shape[1]}, out={self.B.shape[0]}"
        )


_ATTR = "_fw_lora"


def _add_update(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
    # the adapter is found through the layer, not a closure, so deep copies use their own
    return out + module.__dict__[_ATTR](args[0]).to(out.dtype)


def add_lora(net: nn.Module, target: str, rank: int, alpha: float, dropout: float) -> nn.ModuleDict:
    """Adapt every ``nn.Linear`` of ``net`` whose name ends in ``target``; returns the adapters.

    The adapters are keyed by the layer's name (dots as ``__``); the caller owns them, so they
    appear in its parameters and state dict while ``net``'s own keys stay the official ones.
    """
    if rank < 1:
        raise RecipeError(f"lora rank must be at least 1, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise RecipeError(f"lora dropout must be in [0, 1), got {dropout}")
    layers = {
        name: m
        for name, m in net.named_modules()
        if isinstance(m, nn.Linear) and name.split(".")[-1] == target
    }
    if not layers:
        linear = sorted(
            {n.split(".")[-1] for n, m in net.named_modules() if isinstance(m, nn.Linear)}
        )
        raise RecipeError(
            f"lora_target '{target}' names no nn.Linear of {type(net).__name__}; "
            f"its linear layers are named {linear or 'nothing'}"
        )
    adapters = nn.ModuleDict()
    for name, layer in layers.items():
        lora = LoRA(layer.in_features, layer.out_features, rank, alpha, dropout)
        lora.to(device=layer.weight.device, dtype=layer.weight.dtype)
        adapters[name.replace(".", "__")] = lora
        layer.__dict__[_ATTR] = lora  # a plain attribute: the layer's state-dict keys stay
        layer.register_forward_hook(_add_update)
    return adapters
