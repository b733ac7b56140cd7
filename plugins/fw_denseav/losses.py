"""DenseAV's objective: symmetric InfoNCE on calibrated scores plus the regularisers.

Equations are those of Hamilton, PhD thesis, Chapter 6 and Appendix D.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn


class Calibrator(nn.Module):
    """Learnable inverse temperature γ = exp(w), clamped to [0.01, 100] (thesis Eq. 6.3).

    ``forward(S)`` returns the calibrated logits γS − mean(γS) (the global mean is removed; it
    leaves the softmax unchanged and keeps logits centred). ``init`` is γ at the start.
    """

    def __init__(self, init: float = 1.0, low: float = 0.01, high: float = 100.0) -> None:
        super().__init__()
        self.init = init
        self.low, self.high = low, high
        self.log_gamma = nn.Parameter(torch.tensor(math.log(init)))

    @property
    def gamma(self) -> Tensor:
        return self.log_gamma.exp().clamp(self.low, self.high)

    def forward(self, scores: Tensor) -> Tensor:
        logits = self.gamma * scores
        return logits - logits.mean()

    def penalty(self) -> Tensor:
        """Calibration loss, Eq. D.2: max(log init − log γ, 0)², which stops γ from running away."""
        return (math.log(self.init) - self.gamma.clamp_min(1e-8).log()).clamp_min(0) ** 2


def symmetric_infonce(logits: Tensor) -> Tensor:
    """½·(−mean log-softmax over images of the diagonal) + ½·(same over audio), Eq. 6.3.

    ``logits [B_a, B_v]``: rows index audio, columns images; pair ``i`` is positive with
    ``i`` (the first ``min(B_a, B_v)`` diagonal entries). The thesis omits the minus sign.
    """
    n = min(logits.shape)
    diag = torch.arange(n, device=logits.device)
    a_to_v = -logits.log_softmax(dim=1)[diag, diag].mean()
    v_to_a = -logits.log_softmax(dim=0)[diag, diag].mean()
    return 0.5 * (a_to_v + v_to_a)


def disentanglement_loss(volume: Tensor, mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """Eq. 6.4/D.4: mean |s_i ∘ s_j| over head pairs on paired volumes ``[B, K, Na, Nb]``.

    Averaged over valid (audio, image) positions only (padding carries no signal); zero for K=1.
    """
    k = volume.shape[1]
    if k < 2:
        return volume.new_zeros(())
    weight = (mask_a[:, :, None] & mask_b[:, None, :]).to(volume.dtype)  # [B, Na, Nb]
    denom = weight.sum().clamp_min(1.0)
    terms = [
        (volume[:, i].abs() * volume[:, j].abs() * weight).sum() / denom
        for i, j in itertools.combinations(range(k), 2)
    ]
    return torch.stack(terms).mean()


def splice_loss(volume: Tensor, weight: Tensor, mask_b: Tensor | None = None) -> Tensor:
    """Negative-audio splicing, Eq. D.1: weighted mean of s² with ``weight [B, Na]`` in [0, 1].

    ``weight`` is 1 inside a spliced negative clip and on padding, fractional in cross-fades;
    it broadcasts over heads and image positions. The denominator is floored at 0.1 (as the
    authors' code) so a batch without negatives gives ~0 rather than 0/0.
    """
    b, k, _, nb = volume.shape
    mb = torch.ones(b, nb, dtype=volume.dtype, device=volume.device)
    if mask_b is not None:
        mb = mask_b.to(volume.dtype)
    w = weight.to(volume.dtype)[:, None, :, None] * mb[:, None, None, :]
    return (volume.pow(2) * w).sum() / (w.sum() * k).clamp_min(0.1)


def tv_loss(volume: Tensor, mask_a: Tensor) -> Tensor:
    """Time smoothness, Eq. D.5–D.6: mean squared first difference along audio time.

    Only steps whose two ends are valid audio count (padding is not smoothed into speech).
    """
    if volume.shape[2] < 2:
        return volume.new_zeros(())
    diff = (volume[:, :, 1:] - volume[:, :, :-1]).pow(2)  # [B, K, Na-1, Nb]
    both = (mask_a[:, 1:] & mask_a[:, :-1]).to(volume.dtype)[:, None, :, None]
    denom = (both.sum() * volume.shape[1] * volume.shape[3]).clamp_min(1.0)
    return (diff * both).sum() / denom


def nonneg_loss(
    audio: Tensor,
    audio_mask: Tensor,
    image: Tensor,
    image_mask: Tensor,
    heads: int,
    samples: int = 250,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Non-negativity, Eq. D.3: mean of min(s, 0)² over random cross-pair coordinates.

    ``audio [B, C, Na]`` and ``image [B, C, Nb]`` (flattened); ``samples`` valid audio tokens and
    ``samples`` valid image tokens are drawn from the whole batch (so most pairs are negatives),
    and all ``samples² · K`` inner products are penalised, as the authors' code does.
    """
    a_tok = _sample_tokens(audio, audio_mask, samples, generator)  # [S, C]
    v_tok = _sample_tokens(image, image_mask, samples, generator)
    c = a_tok.shape[1] // heads
    sims = torch.einsum("akc,vkc->akv", a_tok.reshape(-1, heads, c), v_tok.reshape(-1, heads, c))
    return sims.clamp_max(0).pow(2).mean()


def _sample_tokens(
    feats: Tensor, mask: Tensor, samples: int, generator: torch.Generator | None
) -> Tensor:
    tokens = feats.permute(0, 2, 1).reshape(-1, feats.shape[1])  # [B·N, C]
    valid = mask.reshape(-1).nonzero().squeeze(1)
    if valid.numel() == 0:
        return tokens[:0]
    pick = torch.randint(valid.numel(), (samples,), generator=generator, device="cpu")
    return tokens[valid[pick.to(valid.device)]]
