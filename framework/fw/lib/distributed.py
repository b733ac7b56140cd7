"""Collectives that keep a single-process meaning under data parallelism."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by ``factor``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.factor, None


def gather_across(x: Tensor, fabric: Any = None) -> Tensor:
    """Concatenate ``x [B, ...]`` from every process, keeping the gradient of the local slice.

    With a Fabric of world size W > 1, ``fabric.all_gather`` collects the other processes'
    negatives; without Fabric an initialised ``torch.distributed`` group is used the same way;
    on one process ``x`` is returned unchanged. Every process then computes the same loss over
    all W·B pairs, but only its own slice carries a gradient, and DDP averages the W gradients.
    So the local slice's gradient is multiplied by W, as the authors' GatherLayer does by
    summing the gradients of every copy: the averaged gradient then equals the one-process
    gradient of the whole batch, for the features' parameters and γ alike.
    """
    if fabric is not None and getattr(fabric, "world_size", 1) > 1:
        gathered = fabric.all_gather(x.detach())  # [W, B, ...]
        rank, world = int(fabric.global_rank), int(fabric.world_size)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(world)]
        torch.distributed.all_gather(parts, x.detach().contiguous())
        gathered = torch.stack(parts)
        rank = torch.distributed.get_rank()
    else:
        return x
    pieces = list(gathered.unbind(0))
    pieces[rank] = _ScaleGrad.apply(x, float(world)) if x.is_floating_point() else x
    return torch.cat(pieces, dim=0)
