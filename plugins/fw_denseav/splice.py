"""Negative-audio splicing (thesis Ch. 6): paste another clip's audio into each clip."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def raised_cosine(n: int) -> Tensor:
    """Fade-in weights 0→1 over ``n`` samples: ½(1 − cos(πu))."""
    if n <= 0:
        return torch.ones(0)
    u = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    return 0.5 * (1 - torch.cos(math.pi * u))


def splice_negatives(
    audio: Tensor,
    mask: Tensor,
    rate: int = 16_000,
    p: float = 0.5,
    min_seconds: float = 0.3,
    max_seconds: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Splice a clip of a *different* item into each item with probability ``p``.

    ``audio [B, 1, T]``, ``mask [B, T]``. Returns the new audio and the negative weight
    ``[B, T]`` in [0, 1]: 1 inside the spliced clip, 0 in the item's own audio, raised-cosine
    fractions in the cross-fades (fade length max(¼·len, 0.5 s) capped at ½·len, as the
    authors' code). Clips come from the valid part of the donor and land inside the valid part
    of the receiver; padding keeps weight 0 here (the learner adds it separately).
    """
    b, _, t = audio.shape
    out = audio.clone()
    weight = torch.zeros(b, t)
    lengths = mask.sum(dim=1).cpu()
    if b < 2:
        return out, weight.to(audio.device)
    for i in range(b):
        if float(torch.rand((), generator=generator)) >= p:
            continue
        donor = int(torch.randint(b - 1, (), generator=generator))
        donor += int(donor >= i)
        seconds = min_seconds + (max_seconds - min_seconds) * float(
            torch.rand((), generator=generator)
        )
        n = min(int(seconds * rate), int(lengths[i]), int(lengths[donor]))
        if n < 2:
            continue
        src = int(torch.randint(int(lengths[donor]) - n + 1, (), generator=generator))
        dst = int(torch.randint(int(lengths[i]) - n + 1, (), generator=generator))
        fade = min(max(n // 4, rate // 2), n // 2)
        w = torch.ones(n)
        ramp = raised_cosine(fade)
        w[:fade] = ramp
        w[n - fade :] = ramp.flip(0)
        w = w.to(audio.device)
        seg = out[i, 0, dst : dst + n]
        out[i, 0, dst : dst + n] = (1 - w) * seg + w * audio[donor, 0, src : src + n]
        weight[i, dst : dst + n] = w.cpu()
    return out, weight.to(audio.device)


def to_tokens(weight: Tensor, tokens: int, samples_per_token: int) -> Tensor:
    """Average a per-sample weight ``[B, T]`` over each token's samples: ``[B, tokens]``."""
    b, t = weight.shape
    need = tokens * samples_per_token
    if t < need:
        weight = torch.nn.functional.pad(weight, (0, need - t))
    return weight[:, :need].reshape(b, tokens, samples_per_token).mean(dim=2)
