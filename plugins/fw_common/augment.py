"""Batched random augmentations for view-based learners (SimCLR's "random crop (with flip and
resize), color distortion, and Gaussian blur"; Chen et al. 2020).

Every op works on a float batch ``[B, C, H, W]`` in [0, 1] and draws its random parameters
**per image** from torch's global generator (seeded and checkpointed by `fw.train`), in one
vectorised call: torchvision's ``transforms.v2`` draw one set of parameters per call, so on a
batch they would apply the same crop to every image. The ops follow torchvision's parameter
names and sampling rules (``RandomResizedCrop``'s ten attempts and centre-crop fallback,
``ColorJitter``'s factor ranges and luminance weights, ``GaussianBlur``'s reflect padding);
``{name: torchvision, transform: <v2 class>, ...}`` applies any ``torchvision.transforms.v2``
transform image by image, for what is not built in.

A recipe writes an augmentation as a preset name (see :data:`PRESETS`) or a list of ops::

    augment:
      - {name: random_resized_crop, scale: [0.08, 1.0]}
      - {name: horizontal_flip, p: 0.5}
      - {name: color_jitter, brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8}
      - {name: grayscale, p: 0.2}
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from fw.api import Augmentation
from fw.errors import RecipeError, ShapeError

#: Luma weights of torchvision's ``rgb_to_grayscale`` (Rec. 601, red rounded to 0.2989).
LUMA = (0.2989, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device, dtype=like.dtype) * (high - low) + low


def _chance(n: int, p: float, like: Tensor) -> Tensor:
    """Per-image coin flips ``[n]`` (bool) with probability ``p``."""
    if p >= 1.0:
        return torch.ones(n, dtype=torch.bool, device=like.device)
    return torch.rand(n, device=like.device) < p


def _where(apply: Tensor, new: Tensor, old: Tensor) -> Tensor:
    return torch.where(apply.view(-1, *([1] * (old.dim() - 1))), new, old)


def _gray(x: Tensor) -> Tensor:
    """Luminance ``[B, 1, H, W]`` (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor(LUMA).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _pair(value: float | Sequence[float], what: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if len(value) != 2:
        raise RecipeError(f"augmentation {what}: expected a number or a [low, high] pair")
    return float(value[0]), float(value[1])


class Op(Augmentation):
    """One augmentation; ``p`` is the per-image probability that it applies."""

    def __init__(self, p: float = 1.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise RecipeError(f"augmentation {type(self).__name__}: p must lie in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, x: Tensor) -> Tensor:
        raise NotImplementedError


class RandomResizedCrop(Op):
    """Crop a random area fraction ``scale`` with aspect ratio in ``ratio``, resize to ``size``.

    Sampling as torchvision's ``RandomResizedCrop.get_params`` (ten attempts, then a centre crop
    clamped to the ratio range); bilinear resampling with ``grid_sample``. ``size`` defaults to
    the input size.
    """

    def __init__(
        self,
        size: int | list[int] | None = None,
        scale: list[float] = (0.08, 1.0),  # type: ignore[assignment]
        ratio: list[float] = (3 / 4, 4 / 3),  # type: ignore[assignment]
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        self.size = None if size is None else _size(size)
        self.scale = _pair(scale, "random_resized_crop.scale")
        self.ratio = _pair(ratio, "random_resized_crop.ratio")
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise RecipeError(
                "random_resized_crop: need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= "
                f"ratio[1], got scale={self.scale}, ratio={self.ratio}"
            )

    def boxes(self, n: int, height: int, width: int, device: torch.device) -> Tensor:
        """Crop boxes ``[n, 4]`` as (top, left, h, w) in pixels, torchvision's sampling rule."""
        attempts = 10
        area = float(height * width)
        target = area * (
            torch.rand(n, attempts, device=device) * (self.scale[1] - self.scale[0]) + self.scale[0]
        )
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(torch.rand(n, attempts, device=device) * (log_hi - log_lo) + log_lo)
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = ok.float().argmax(dim=1)  # the first attempt that fits (0 if none does)
        rows = torch.arange(n, device=device)
        w, h = w[rows, first], h[rows, first]
        top = torch.floor(torch.rand(n, device=device) * (height - h + 1))
        left = torch.floor(torch.rand(n, device=device) * (width - w + 1))
        # fallback when no attempt fits: the largest centred crop within the ratio range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            fw_, fh_ = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            fw_, fh_ = round(height * self.ratio[1]), height
        else:
            fw_, fh_ = width, height
        found = ok.any(dim=1)
        h = torch.where(found, h, torch.full_like(h, fh_))
        w = torch.where(found, w, torch.full_like(w, fw_))
        top = torch.where(found, top, torch.full_like(top, (height - fh_) // 2))
        left = torch.where(found, left, torch.full_like(left, (width - fw_) // 2))
        return torch.stack([top, left, h, w], dim=1)

    def __call__(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        out_h, out_w = self.size or (height, width)
        top, left, h, w = self.boxes(n, height, width, x.device).to(x.dtype).unbind(1)
        # Source pixel coordinates of the output pixel centres, clamped to the crop (exactly
        # torchvision's crop-then-bilinear-resize without antialiasing), then normalised for
        # grid_sample (align_corners=False: pixel k spans [k, k + 1]).
        ys = _source_coords(top, h, out_h, x.dtype) * 2 / height - 1  # [n, out_h]
        xs = _source_coords(left, w, out_w, x.dtype) * 2 / width - 1  # [n, out_w]
        grid = torch.stack(
            [xs.unsqueeze(1).expand(n, out_h, out_w), ys.unsqueeze(2).expand(n, out_h, out_w)],
            dim=3,
        )
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.p < 1.0:
            if (out_h, out_w) != (height, width):
                raise RecipeError("random_resized_crop: p < 1 needs `size` equal to the input")
            out = _where(_chance(n, self.p, x), out, x)
        return out


def _source_coords(start: Tensor, length: Tensor, out: int, dtype: torch.dtype) -> Tensor:
    """``[n, out]`` continuous source coordinates (pixel centres at k + 0.5) of a 1-D resize."""
    k = torch.arange(out, device=start.device, dtype=dtype) + 0.5
    src = (k.unsqueeze(0) * (length / out).unsqueeze(1)).clamp(min=0.5)
    src = torch.minimum(src, (length - 0.5).unsqueeze(1))
    return start.unsqueeze(1) + src


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise RecipeError(f"augmentation size must be an int or [height, width], got {size}")
    return int(size[0]), int(size[1])


class RandomTranslate(Op):
    """Shift by whole pixels, each axis uniform in ``[-max_shift, max_shift]``; zeros enter."""

    def __init__(self, max_shift: int = 1, p: float = 1.0) -> None:
        super().__init__(p)
        if max_shift < 0:
            raise RecipeError(f"random_translate: max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)

    def __call__(self, x: Tensor) -> Tensor:
        n, _, height, width = x.shape
        m = self.max_shift
        shift = torch.randint(-m, m + 1, (n, 2), device=x.device).to(x.dtype)
        shift = shift * _chance(n, self.p, x).unsqueeze(1).to(x.dtype)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = 1.0
        theta[:, 1, 1] = 1.0
        theta[:, 0, 2] = -2.0 * shift[:, 0] / width
        theta[:, 1, 2] = -2.0 * shift[:, 1] / height
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class HorizontalFlip(Op):
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def __call__(self, x: Tensor) -> Tensor:
        return _where(_chance(x.shape[0], self.p, x), x.flip(-1), x)


class VerticalFlip(Op):
    """Mirror top-bottom with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__(p)

    def __call__(self, x: Tensor) -> Tensor:
        return _where(_chance(x.shape[0], self.p, x), x.flip(-2), x)


class ColorJitter(Op):
    """Random brightness, contrast, saturation and hue (torchvision's ``ColorJitter``).

    Factors are uniform in ``[max(0, 1 - v), 1 + v]`` (hue shifts in ``[-hue, hue]``, hue ≤ 0.5),
    drawn per image; the four adjustments run in a random order drawn per batch (torchvision
    draws it per call). Saturation and hue leave one-channel images unchanged.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p)
        if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
            raise RecipeError(
                "color_jitter: strengths must be >= 0 and hue <= 0.5, got "
                f"{(brightness, contrast, saturation, hue)}"
            )
        self.strengths = {
            "brightness": float(brightness),
            "contrast": float(contrast),
            "saturation": float(saturation),
            "hue": float(hue),
        }

    def __call__(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        out = x
        names = list(self.strengths)
        for k in torch.randperm(4).tolist():
            name = names[k]
            v = self.strengths[name]
            if v == 0.0 or (name in ("saturation", "hue") and x.shape[1] != 3):
                continue
            if name == "hue":
                out = adjust_hue(out, _uniform(n, -v, v, x))
                continue
            f = _uniform(n, max(0.0, 1.0 - v), 1.0 + v, x).view(n, 1, 1, 1)
            if name == "brightness":
                out = (out * f).clamp(0.0, 1.0)
            elif name == "contrast":
                mean = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
                out = (f * out + (1.0 - f) * mean).clamp(0.0, 1.0)
            else:
                out = (f * out + (1.0 - f) * _gray(out)).clamp(0.0, 1.0)
        return _where(_chance(n, self.p, x), out, x)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """``[B, 3, H, W]`` RGB in [0, 1] to HSV with hue in [0, 1) (torchvision's formulas)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    flat = maxc == minc
    ones = torch.ones_like(maxc)
    chroma = maxc - minc
    s = chroma / torch.where(flat, ones, maxc)
    div = torch.where(flat, ones, chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.long() % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    table = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], dim=1),
            torch.stack([t, v, v, q, p, p], dim=1),
            torch.stack([p, p, t, v, v, q], dim=1),
        ],
        dim=1,
    )  # [B, 3, 6, H, W]
    index = i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue of each image by ``shift[b]`` (fraction of a turn)."""
    hsv = rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


class Grayscale(Op):
    """Replace an RGB image by its luminance (kept 3-channel) with probability ``p``."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__(p)

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return x
        return _where(_chance(x.shape[0], self.p, x), _gray(x).expand_as(x), x)


class GaussianBlur(Op):
    """Separable Gaussian blur, ``sigma`` uniform in ``[sigma[0], sigma[1]]`` per image.

    ``kernel_size`` (odd) defaults to about 10% of the image side, SimCLR's choice; padding
    reflects as torchvision's ``gaussian_blur``.
    """

    def __init__(
        self,
        kernel_size: int | None = None,
        sigma: list[float] = (0.1, 2.0),  # type: ignore[assignment]
        p: float = 0.5,
    ) -> None:
        super().__init__(p)
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise RecipeError(f"gaussian_blur: kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.sigma = _pair(sigma, "gaussian_blur.sigma")
        if not 0 < self.sigma[0] <= self.sigma[1]:
            raise RecipeError(f"gaussian_blur: need 0 < sigma[0] <= sigma[1], got {self.sigma}")

    def __call__(self, x: Tensor) -> Tensor:
        n, c, height, width = x.shape
        k = self.kernel_size or (int(0.1 * min(height, width)) // 2 * 2 + 1)
        if k < 3:
            return x
        sigma = _uniform(n, self.sigma[0], self.sigma[1], x)
        t = torch.arange(k, device=x.device, dtype=x.dtype) - (k - 1) / 2
        kernel = torch.exp(-(t**2) / (2 * sigma.view(n, 1) ** 2))
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        flat = x.reshape(1, n * c, height, width)
        pad = k // 2
        flat = F.pad(flat, (pad, pad, 0, 0), mode="reflect")
        flat = F.conv2d(flat, kernel.view(n * c, 1, 1, k), groups=n * c)
        flat = F.pad(flat, (0, 0, pad, pad), mode="reflect")
        flat = F.conv2d(flat, kernel.view(n * c, 1, k, 1), groups=n * c)
        return _where(_chance(n, self.p, x), flat.view_as(x), x)


class GaussianNoise(Op):
    """Add N(0, std²) pixel noise (then clip to [0, 1] when ``clip``)."""

    def __init__(self, std: float = 0.1, clip: bool = True, p: float = 1.0) -> None:
        super().__init__(p)
        if std < 0:
            raise RecipeError(f"gaussian_noise: std must be >= 0, got {std}")
        self.std = float(std)
        self.clip = clip

    def __call__(self, x: Tensor) -> Tensor:
        out = x + self.std * torch.randn_like(x)
        if self.clip:
            out = out.clamp(0.0, 1.0)
        return _where(_chance(x.shape[0], self.p, x), out, x)


class TorchvisionOp(Op):
    """Any ``torchvision.transforms.v2`` transform, applied image by image (slow; any params)."""

    example: ClassVar[dict[str, Any]] = {"transform": "RandomHorizontalFlip"}

    def __init__(self, transform: str, p: float = 1.0, **kwargs: Any) -> None:
        super().__init__(p)
        from torchvision.transforms import v2

        cls = getattr(v2, transform, None)
        if not (inspect.isclass(cls) and issubclass(cls, v2.Transform)):
            raise RecipeError(
                f"augmentation torchvision: '{transform}' is not a torchvision.transforms.v2 "
                "transform (e.g. RandomRotation, RandomAffine, RandomErasing)"
            )
        try:
            self.transform = cls(**kwargs)
        except TypeError as err:
            raise RecipeError(f"augmentation torchvision.{transform}: {err}") from None

    def __call__(self, x: Tensor) -> Tensor:
        out = torch.stack([self.transform(img) for img in x])
        return _where(_chance(x.shape[0], self.p, x), out, x)


#: recipe name -> op class (registered by the ``common`` plugin's ``fw_augmentations``)
OPS: dict[str, Callable[..., Op]] = {
    "random_resized_crop": RandomResizedCrop,
    "random_translate": RandomTranslate,
    "horizontal_flip": HorizontalFlip,
    "vertical_flip": VerticalFlip,
    "color_jitter": ColorJitter,
    "grayscale": Grayscale,
    "gaussian_blur": GaussianBlur,
    "gaussian_noise": GaussianNoise,
    "torchvision": TorchvisionOp,
}

#: Named augmentation pipelines.
PRESETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    # 8×8 digits: crops keeping most of the digit, one-pixel shifts, pixel noise (no flips:
    # mirrored digits are other digits).
    "digits": [
        {"name": "random_resized_crop", "scale": [0.5, 1.0], "ratio": [0.75, 1.333]},
        {"name": "random_translate", "max_shift": 1, "p": 0.5},
        {"name": "gaussian_noise", "std": 0.1, "p": 0.5},
    ],
    # 28×28 grey images (MNIST, Fashion-MNIST): crops, flips only as Fashion-MNIST allows.
    "mnist": [
        {"name": "random_resized_crop", "scale": [0.4, 1.0]},
        {"name": "color_jitter", "brightness": 0.4, "contrast": 0.4, "p": 0.8},
        {"name": "gaussian_noise", "std": 0.05, "p": 0.5},
    ],
    # SimCLR's CIFAR-10 pipeline (Chen et al. 2020, App. B.9): crop, flip, colour distortion of
    # strength 0.5, random grey; no blur at 32×32.
    "cifar10": [
        {"name": "random_resized_crop", "scale": [0.08, 1.0]},
        {"name": "horizontal_flip", "p": 0.5},
        {
            "name": "color_jitter",
            "brightness": 0.4,
            "contrast": 0.4,
            "saturation": 0.4,
            "hue": 0.1,
            "p": 0.8,
        },
        {"name": "grayscale", "p": 0.2},
    ],
    # SimCLR's ImageNet pipeline: strength-1 colour distortion and blur.
    "simclr": [
        {"name": "random_resized_crop", "scale": [0.08, 1.0]},
        {"name": "horizontal_flip", "p": 0.5},
        {
            "name": "color_jitter",
            "brightness": 0.8,
            "contrast": 0.8,
            "saturation": 0.8,
            "hue": 0.2,
            "p": 0.8,
        },
        {"name": "grayscale", "p": 0.2},
        {"name": "gaussian_blur", "sigma": [0.1, 2.0], "p": 0.5},
    ],
}


def _build_op(spec: Mapping[str, Any], where: str) -> Augmentation:
    """An augmentation from the registry (any plugin's ``fw_augmentations``), validated."""
    from fw.recipe import build, check_component

    if not isinstance(spec, Mapping) or "name" not in spec:
        raise RecipeError(f"{where}: an augmentation is written {{name: <op>, ...}}, got {spec!r}")
    return build(
        "augmentation", check_component("augmentation", dict(spec), path=where), None, where
    )


class Augmenter:
    """A pipeline of ops applied in order; ``Augmenter(None)`` / ``"none"`` is the identity."""

    def __init__(self, spec: str | Sequence[Mapping[str, Any]] | None) -> None:
        if spec is None:
            spec = "none"
        if isinstance(spec, str):
            if spec not in PRESETS:
                raise RecipeError(
                    f"unknown augmentation preset '{spec}'. Presets: {', '.join(PRESETS)}; or "
                    "give a list of ops ({name: random_resized_crop, ...})"
                )
            self.name = spec
            spec = PRESETS[spec]
        else:
            self.name = "custom"
        self.ops = [_build_op(s, f"augment[{k}]") for k, s in enumerate(spec)]

    @property
    def identity(self) -> bool:
        return not self.ops

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ShapeError(f"augmentations need images [B, C, H, W], got {tuple(x.shape)}")
        for op in self.ops:
            x = op(x)
        return x
