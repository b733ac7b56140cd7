"""The JBU adaptive convolution: offset loop vs unfold vs a hand-written loop, and gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fw.errors import ShapeError
from fw_featup.ops import adaptive_conv, adaptive_conv_unfold, local_dot


def _integer_inputs(b=2, c=3, h=5, w=6, k=3, seed=0):
    """Integer-valued float64 tensors: every summation order gives the same exact result."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-4, 5, (b, c, h + k - 1, w + k - 1), generator=g).double()
    kern = torch.randint(-3, 4, (b, h, w, k, k), generator=g).double()
    return x.requires_grad_(), kern.requires_grad_()


def _loop_reference(x_pad, kernel):
    b, h, w, k, _ = kernel.shape
    out = torch.zeros(b, x_pad.shape[1], h, w, dtype=x_pad.dtype)
    for bi in range(b):
        for y in range(h):
            for z in range(w):
                patch = x_pad[bi, :, y : y + k, z : z + k]  # [C, k, k]
                out[bi, :, y, z] = (patch * kernel[bi, y, z]).sum(dim=(1, 2))
    return out


@pytest.mark.parametrize("k", [1, 3, 7])
def test_forward_and_backward_equal_unfold_exactly(k):
    x, kern = _integer_inputs(k=k)
    ours = adaptive_conv(x, kern)
    ref = adaptive_conv_unfold(x, kern)
    assert torch.equal(ours, ref)
    assert torch.equal(ours, _loop_reference(x.detach(), kern.detach()))
    g = torch.randint(-2, 3, ours.shape, generator=torch.Generator().manual_seed(1)).double()
    gx, gk = torch.autograd.grad(ours, (x, kern), g)
    rx, rk = torch.autograd.grad(ref, (x, kern), g)
    assert torch.equal(gx, rx) and torch.equal(gk, rk)


def test_float32_matches_unfold():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 13, 11, generator=g, requires_grad=True)
    kern = torch.randn(2, 7, 5, 7, 7, generator=g, requires_grad=True)
    ours, ref = adaptive_conv(x, kern), adaptive_conv_unfold(x, kern)
    torch.testing.assert_close(ours, ref)
    up = torch.randn(ours.shape, generator=g)
    got = torch.autograd.grad(ours, (x, kern), up)
    want = torch.autograd.grad(ref, (x, kern), up)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, generator=g, requires_grad=True)
    kern = torch.randn(2, 4, 5, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(adaptive_conv, (x, kern))
    # one input only: the other branch of the backward must be skipped cleanly
    assert torch.autograd.gradcheck(lambda a: adaptive_conv(a, kern.detach()), (x,))
    assert torch.autograd.gradcheck(lambda kk: adaptive_conv(x.detach(), kk), (kern,))


def test_saves_only_its_inputs_for_backward():
    x, kern = _integer_inputs(c=4, h=6, w=6, k=5)
    saved = []

    def pack(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        adaptive_conv(x, kern)
    assert saved == [x.shape, kern.shape]  # no [C, k², H, W] buffer, no per-offset slices


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ShapeError, match="needs x_pad"):
        adaptive_conv(torch.zeros(1, 2, 5, 5), torch.zeros(1, 4, 4, 3, 3))
    with pytest.raises(ShapeError, match="square"):
        adaptive_conv(torch.zeros(1, 2, 6, 6), torch.zeros(1, 4, 4, 3, 2))


def test_local_dot_matches_unfold_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    q_pad = torch.randn(2, 4, 8, 7, dtype=torch.float64, generator=g, requires_grad=True)
    ref = (F.unfold(q_pad, 3).view(2, 4, 9, 6, 5) * q.unsqueeze(2)).sum(dim=1)
    torch.testing.assert_close(local_dot(q_pad, q), ref)
    assert torch.autograd.gradcheck(local_dot, (q_pad, q))
