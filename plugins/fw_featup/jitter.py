"""The view transforms t ∈ T of the multi-view loss (Hamilton, PhD thesis, §5.5).

A jitter is sampled once and applied identically to the image (before the featurizer) and to
the high-resolution features (before the downsampler): reflect-pad, zoom (p = 0.5), integer
crop back to the input size, horizontal flip (p = 0.5), in that order.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor


@attrs.frozen
class Jitter:
    """Parameters of one view: padding, zoom factor, crop offsets (rows, cols), flip."""

    pad: int
    zoom: float
    top: int
    left: int
    flip: bool


def sample_jitter(
    height: int, width: int, max_pad: int, max_zoom: float, flips: bool = True
) -> Jitter:
    """Draw a jitter from torch's global generator (reference code: ``sample_transform``)."""
    zoom = 1.0
    if float(torch.rand(())) < 0.5:
        zoom = 1.0 + float(torch.rand(())) * (max_zoom - 1.0)
    # the offsets range over the zoomed, padded canvas minus the crop (reference JitteredImage.py)
    span_h = int((height + 2 * max_pad) * zoom) - height
    span_w = int((width + 2 * max_pad) * zoom) - width
    top = int(torch.randint(0, max(span_h, 0) + 1, ()))
    left = int(torch.randint(0, max(span_w, 0) + 1, ()))
    flip = bool(flips and float(torch.rand(())) < 0.5)
    return Jitter(max_pad, zoom, top, left, flip)


def apply_jitter(x: Tensor, jitter: Jitter) -> Tensor:
    """Apply one view to a map ``[B, C, H, W]`` (image or features); output keeps ``H × W``."""
    h, w = x.shape[-2:]
    out = F.pad(x, (jitter.pad,) * 4, mode="reflect") if jitter.pad > 0 else x
    if jitter.zoom != 1.0:
        out = F.interpolate(out, scale_factor=jitter.zoom, mode="bilinear", align_corners=False)
    out = out[..., jitter.top : jitter.top + h, jitter.left : jitter.left + w]
    if out.shape[-2:] != (h, w):  # rounding left the canvas short by a pixel: pad it back
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]), mode="replicate")
    return out.flip(-1) if jitter.flip else out
