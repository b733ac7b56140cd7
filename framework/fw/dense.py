"""The dense-feature convention: maps ``[B, C, H, W]``, sequences ``[B, C, T]`` with padding."""

from __future__ import annotations

import attrs
import torch
from torch import Tensor

from fw.errors import ShapeError


def lengths_to_mask(lengths: Tensor, size: int) -> Tensor:
    """Validity mask ``[B, size]`` from per-item lengths ``[B]`` (first ``length`` steps True)."""
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ShapeError(f"lengths must be [B], got shape {tuple(lengths.shape)}")
    if bool((lengths < 0).any()) or bool((lengths > size).any()):
        raise ShapeError(f"lengths must lie in [0, {size}], got {lengths.tolist()}")
    steps = torch.arange(size, device=lengths.device)
    return steps.unsqueeze(0) < lengths.unsqueeze(1)


@attrs.frozen
class Dense:
    """Dense features ``[B, C, *S]`` (S = (H, W) or (T,)) and their validity mask ``[B, *S]``."""

    features: Tensor
    mask: Tensor | None = None

    def __attrs_post_init__(self) -> None:
        f = self.features
        if f.dim() < 3:
            raise ShapeError(
                f"dense features must be [B, C, H, W] or [B, C, T], got shape {tuple(f.shape)}"
            )
        if self.mask is not None:
            expected = (f.shape[0], *f.shape[2:])
            if tuple(self.mask.shape) != expected or self.mask.dtype != torch.bool:
                raise ShapeError(
                    f"the validity mask of features {tuple(f.shape)} must be a bool tensor "
                    f"{expected}, got {self.mask.dtype} {tuple(self.mask.shape)}"
                )

    @classmethod
    def of(cls, value: Dense | Tensor, mask: Tensor | None = None) -> Dense:
        """Wrap a tensor (and optional mask); a :class:`Dense` passes through."""
        if isinstance(value, Dense):
            return value
        return cls(value, mask)

    @property
    def batch(self) -> int:
        return int(self.features.shape[0])

    @property
    def channels(self) -> int:
        return int(self.features.shape[1])

    @property
    def spatial(self) -> tuple[int, ...]:
        """The positional axes ``S``."""
        return tuple(self.features.shape[2:])

    def flat(self) -> tuple[Tensor, Tensor]:
        """Features ``[B, C, N]`` and mask ``[B, N]`` with the positional axes flattened."""
        f = self.features.flatten(2)
        if self.mask is None:
            m = torch.ones(f.shape[0], f.shape[2], dtype=torch.bool, device=f.device)
        else:
            m = self.mask.flatten(1)
        return f, m

    def index(self, idx: Tensor) -> Dense:
        """The items ``idx`` of the batch."""
        return Dense(self.features[idx], None if self.mask is None else self.mask[idx])

    def to(self, device: torch.device | str) -> Dense:
        return Dense(self.features.to(device), None if self.mask is None else self.mask.to(device))


def check_map(x: Tensor, what: str, channels: int | None = None) -> Tensor:
    """Raise a :class:`ShapeError` naming ``what`` unless ``x`` is a map ``[B, C, H, W]``."""
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        want = f"[B, {channels}, H, W]" if channels is not None else "[B, C, H, W]"
        raise ShapeError(f"{what} must be a feature map {want}, got shape {tuple(x.shape)}")
    return x
