"""The JBU's spatially adaptive convolution as one op (thesis Eqs. 5.4-5.6, App. C.12).

``out[b, c, h, w] = Σ_{i,j} K[b, h, w, i, j] · x_pad[b, c, h + i, w + j]``

The authors ship it as a CUDA kernel (with an ``unfold`` fallback that materialises a
``C·k²·H·W`` buffer). Here it is a loop over the k² window offsets on shifted slices of the
padded input, with a backward that loops the same way, so neither pass holds more than a few
``C·H·W`` maps at once. :func:`adaptive_conv` is the one entry point a compiled kernel could
replace; :func:`adaptive_conv_unfold` is the reference formulation, kept for tests and the bench.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from fw.errors import ShapeError


def _check(x_pad: Tensor, kernel: Tensor) -> tuple[int, int, int]:
    """Validate shapes; return (k, H, W) of the output."""
    if x_pad.dim() != 4 or kernel.dim() != 5:
        raise ShapeError(
            "adaptive_conv needs x_pad [B, C, H+k-1, W+k-1] and kernel [B, H, W, k, k], got "
            f"{tuple(x_pad.shape)} and {tuple(kernel.shape)}"
        )
    b, h, w, ki, kj = kernel.shape
    if ki != kj:
        raise ShapeError(f"adaptive_conv kernels must be square, got {ki}×{kj}")
    if x_pad.shape[0] != b or x_pad.shape[2] != h + ki - 1 or x_pad.shape[3] != w + ki - 1:
        raise ShapeError(
            f"adaptive_conv: kernel {tuple(kernel.shape)} needs x_pad [{b}, C, {h + ki - 1}, "
            f"{w + ki - 1}], got {tuple(x_pad.shape)}"
        )
    return ki, h, w


class _AdaptiveConv(torch.autograd.Function):
    """Offset-loop forward and backward; saves only the inputs (no per-offset slices)."""

    @staticmethod
    def forward(ctx: Any, x_pad: Tensor, kernel: Tensor) -> Tensor:
        k, h, w = _check(x_pad, kernel)
        # [B, k, k, 1, H, W]: each offset's weights are one contiguous [B, 1, H, W] plane
        kt = kernel.permute(0, 3, 4, 1, 2).unsqueeze(3).contiguous()
        out = x_pad.new_zeros(x_pad.shape[0], x_pad.shape[1], h, w)
        for i in range(k):
            for j in range(k):
                out.addcmul_(x_pad[:, :, i : i + h, j : j + w], kt[:, i, j])
        ctx.save_for_backward(x_pad, kernel)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x_pad, kernel = ctx.saved_tensors
        k, h, w = _check(x_pad, kernel)
        grad_out = grad_out.contiguous()
        grad_x = grad_k = None
        if ctx.needs_input_grad[0]:
            kt = kernel.permute(0, 3, 4, 1, 2).unsqueeze(3).contiguous()
            grad_x = torch.zeros_like(x_pad)
            for i in range(k):
                for j in range(k):
                    grad_x[:, :, i : i + h, j : j + w].addcmul_(grad_out, kt[:, i, j])
        if ctx.needs_input_grad[1]:
            grad_kt = kernel.new_empty(kernel.shape[0], k, k, h, w)
            # one C·H·W scratch map reused by every offset: a fresh temporary per offset would
            # cost as much in page faults as the arithmetic itself
            scratch = torch.empty_like(grad_out)
            for i in range(k):
                for j in range(k):
                    torch.mul(grad_out, x_pad[:, :, i : i + h, j : j + w], out=scratch)
                    torch.sum(scratch, dim=1, out=grad_kt[:, i, j])
            grad_k = grad_kt.permute(0, 3, 4, 1, 2)
        return grad_x, grad_k


def adaptive_conv(x_pad: Tensor, kernel: Tensor) -> Tensor:
    """Per-pixel k×k filtering: ``x_pad [B, C, H+k-1, W+k-1]``, ``kernel [B, H, W, k, k]`` ->
    ``[B, C, H, W]``; differentiable in both, memory O(C·H·W) in both passes."""
    return _AdaptiveConv.apply(x_pad, kernel)


def adaptive_conv_unfold(x_pad: Tensor, kernel: Tensor) -> Tensor:
    """The same op through ``unfold`` (the reference formulation: a ``C·k²·H·W`` buffer)."""
    k, h, w = _check(x_pad, kernel)
    b, c = x_pad.shape[:2]
    patches = F.unfold(x_pad, k).view(b, c, k * k, h, w)  # [B, C, k², H, W]
    weights = kernel.reshape(b, h, w, k * k).permute(0, 3, 1, 2).unsqueeze(1)  # [B, 1, k², H, W]
    return (patches * weights).sum(dim=2)


class _LocalDot(torch.autograd.Function):
    """``out[b, i·k + j, h, w] = Σ_c q_pad[b, c, h + i, w + j] · q[b, c, h, w]``, offset loops."""

    @staticmethod
    def forward(ctx: Any, q_pad: Tensor, q: Tensor) -> Tensor:
        k = q_pad.shape[-2] - q.shape[-2] + 1
        h, w = q.shape[-2:]
        if q_pad.shape[:2] != q.shape[:2] or q_pad.shape[-1] - w + 1 != k or k < 1:
            raise ShapeError(
                f"local_dot needs q_pad [B, C, H+k-1, W+k-1] and q [B, C, H, W], got "
                f"{tuple(q_pad.shape)} and {tuple(q.shape)}"
            )
        out = q.new_empty(q.shape[0], k * k, h, w)
        scratch = torch.empty_like(q)
        for i in range(k):
            for j in range(k):
                torch.mul(q_pad[:, :, i : i + h, j : j + w], q, out=scratch)
                torch.sum(scratch, dim=1, out=out[:, i * k + j])
        ctx.save_for_backward(q_pad, q)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
        q_pad, q = ctx.saved_tensors
        k = q_pad.shape[-2] - q.shape[-2] + 1
        h, w = q.shape[-2:]
        grad_pad = torch.zeros_like(q_pad) if ctx.needs_input_grad[0] else None
        grad_q = torch.zeros_like(q) if ctx.needs_input_grad[1] else None
        for i in range(k):
            for j in range(k):
                g = grad_out[:, i * k + j].unsqueeze(1)
                if grad_pad is not None:
                    grad_pad[:, :, i : i + h, j : j + w].addcmul_(q, g)
                if grad_q is not None:
                    grad_q.addcmul_(q_pad[:, :, i : i + h, j : j + w], g)
        return grad_pad, grad_q


def local_dot(q_pad: Tensor, q: Tensor) -> Tensor:
    """Dot products of each pixel's vector with its k×k window in ``q_pad``: ``[B, k², H, W]``
    (the JBU range logits, Eq. 5.6) without a ``C·k²·H·W`` buffer or per-offset saved slices."""
    return _LocalDot.apply(q_pad, q)
