"""Exponential-moving-average teachers (MoCo v3, BYOL, DINO; the debiased clusterer's option)."""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` to be updated by :func:`ema_update`."""
    return copy.deepcopy(student).requires_grad_(False)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_s`` for parameters; buffers (BatchNorm statistics) are copied."""
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"EMA momentum must lie in [0, 1), got {momentum}")
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s, alpha=1.0 - momentum)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)
