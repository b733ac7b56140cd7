"""STEGO's correlation loss (Hamilton, PhD thesis, §4.5.2-§4.5.3): a linear Potts energy, not a KL.

For a source map ``f`` / code ``s`` and a target map ``g`` / code ``t`` sampled at ``n × n``
random positions each, with ``F`` the cosine similarities of features and ``S`` of codes::

    L_corr = mean_{b,h,w,i,j} -(F^SC_{bhwij} - shift) · max(S_{bhwij}, clamp_min)

(Eq. 4.4 with the reference code's mean instead of the thesis's sum). ``F`` carries no
gradient. The full objective (Eq. 4.5) sums the self, KNN and random terms with their λ.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor

from fw.errors import ShapeError, check_choice

ScMode = Literal["reference", "thesis", "off"]
#: channel-wise L2 normalisation epsilon of the reference code
NORM_EPS = 1e-10
#: the reference code's stand-in for "no clamp" (``clamp(-9999)``)
NO_CLAMP = -9999.0


def correspondence(a: Tensor, b: Tensor, normalized: bool = False) -> Tensor:
    """Cosine similarities ``[B, h, w, i, j]`` of maps ``a [B, C, h, w]`` and ``b [B, C, i, j]``
    (Eq. 4.1); ``normalized`` says both are already unit vectors along C."""
    if not normalized:
        a = F.normalize(a, dim=1, eps=NORM_EPS)
        b = F.normalize(b, dim=1, eps=NORM_EPS)
    return torch.einsum("nchw,ncij->nhwij", a, b)


def spatial_centre(fd: Tensor, sc_mode: ScMode) -> Tensor:
    """Spatial centring of ``F [B, h, w, i, j]`` over the target positions (Eq. 4.3).

    ``thesis``: ``F - mean_ij F``. ``reference``: the authors' code, which adds back the global
    mean of F over the whole batch tensor, ``F - mean_ij F + mean F`` (the
    Table B.3 shifts were tuned with it). ``off``: F unchanged (the "Pointwise" ablation).
    """
    check_choice(sc_mode, ("reference", "thesis", "off"), "sc_mode")
    if sc_mode == "off":
        return fd
    centred = fd - fd.mean(dim=(3, 4), keepdim=True)
    if sc_mode == "reference":
        centred = centred - centred.mean() + fd.mean()
    return centred


def correlation_term(
    f1: Tensor,
    f2: Tensor,
    c1: Tensor,
    c2: Tensor,
    shift: float,
    sc_mode: ScMode = "reference",
    zero_clamp: bool = True,
    normalized: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-entry loss ``-(F^SC - shift) · clamp(S)`` ``[B, h, w, i, j]`` and ``S`` (Eq. 4.4).

    ``f1``/``f2`` are sampled features (no gradient is taken through them), ``c1``/``c2`` the
    codes at the same positions. With ``zero_clamp`` S is clamped at 0 (thesis Eq. 4.4), else at the
    reference code's -9999 (i.e. not at all). ``normalized``: all four are already unit vectors
    along their channels.
    """
    with torch.no_grad():
        fd = spatial_centre(correspondence(f1, f2, normalized), sc_mode)
    cd = correspondence(c1, c2, normalized)
    clamped = cd.clamp(min=0.0 if zero_clamp else NO_CLAMP)
    return -clamped * (fd - shift), cd


def sample_grid(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinear samples ``[B, C, n, m]`` of ``maps [B, C, H, W]`` at ``coords [B, n, m, 2]``.

    ``coords`` are (x, y) in [-1, 1] with the corners on the outer cell centres
    (``align_corners=True``) and border padding, as the reference code samples.
    """
    return F.grid_sample(maps, coords, mode="bilinear", padding_mode="border", align_corners=True)


def derangement(n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
    """A uniformly random permutation of ``range(n)`` without fixed points (``n >= 2``).

    Rejection sampling (about e ≈ 2.7 draws). The reference code's ``super_perm`` shifts fixed
    points by one, which can repeat indices; the thesis asks for a shuffle with no self-pairs,
    which this is.
    """
    if n < 2:
        raise ShapeError(f"random pairs need a batch of at least 2 images, got {n}")
    ar = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == ar).any()):
            return perm.to(device) if device is not None else perm


@attrs.frozen
class PairWeights:
    """λ and b of one pair type (spec Table B.3: rand = neg_inter, knn = pos_inter, self =
    pos_intra)."""

    weight: float
    shift: float


@attrs.frozen
class CorrelationLoss:
    """The full STEGO objective (Eq. 4.5) in the reference code's sampled form.

    ``__call__(feats, code, feats_knn, code_knn)`` takes the (dropped-out) backbone maps and
    codes of a batch of images and of one KNN partner each, draws ``samples × samples``
    coordinates per image for the source (``coords1``) and the targets (``coords2``) and
    ``neg_samples`` derangements of the batch, and returns the total loss and its parts.
    Coordinates and permutations may be passed in (tests, reproducibility).
    """

    self_pair: PairWeights = PairWeights(0.1, 0.12)
    knn_pair: PairWeights = PairWeights(1.0, 0.2)
    rand_pair: PairWeights = PairWeights(0.15, 1.0)
    sc_mode: ScMode = "reference"
    zero_clamp: bool = True
    samples: int = 11
    neg_samples: int = 5

    def __attrs_post_init__(self) -> None:
        check_choice(self.sc_mode, ("reference", "thesis", "off"), "sc_mode")
        if self.samples < 1 or self.neg_samples < 0:
            raise ValueError(
                f"samples must be >= 1 and neg_samples >= 0, got {self.samples}, {self.neg_samples}"
            )

    def draw(
        self, batch: int, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``coords1``, ``coords2`` ``[B, n, n, 2]`` uniform in [-1, 1], and the derangements."""
        shape = (batch, self.samples, self.samples, 2)
        coords1 = torch.rand(shape, generator=generator) * 2 - 1
        coords2 = torch.rand(shape, generator=generator) * 2 - 1
        perms = [derangement(batch, generator) for _ in range(self.neg_samples)]
        if device is not None:
            coords1, coords2 = coords1.to(device), coords2.to(device)
            perms = [p.to(device) for p in perms]
        return coords1, coords2, perms

    def __call__(
        self,
        feats: Tensor,
        code: Tensor,
        feats_knn: Tensor,
        code_knn: Tensor,
        coords1: Tensor | None = None,
        coords2: Tensor | None = None,
        perms: list[Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        for name, t in (("feats", feats), ("code", code), ("feats_knn", feats_knn)):
            if t.dim() != 4:
                raise ShapeError(f"{name} must be a map [B, C, H, W], got {tuple(t.shape)}")
        if code_knn.shape != code.shape or feats_knn.shape != feats.shape:
            raise ShapeError(
                "the KNN partners' maps must match the images' maps: got "
                f"{tuple(feats_knn.shape)} / {tuple(code_knn.shape)} for "
                f"{tuple(feats.shape)} / {tuple(code.shape)}"
            )
        batch = feats.shape[0]
        if coords1 is None or coords2 is None or perms is None:
            c1, c2, p = self.draw(batch, generator, feats.device)
            coords1 = c1 if coords1 is None else coords1
            coords2 = c2 if coords2 is None else coords2
            perms = p if perms is None else perms
        term = self._term
        # normalise every sampled vector once; the terms then skip it (same values)
        f_src, c_src = _unit(sample_grid(feats, coords1)), _unit(sample_grid(code, coords1))
        # self pair: the same coordinates on both sides, so S = F = 1 on the diagonal
        self_loss, self_cd = term(f_src, f_src, c_src, c_src, self.self_pair.shift)
        knn_loss, knn_cd = term(
            f_src,
            _unit(sample_grid(feats_knn, coords2)),
            c_src,
            _unit(sample_grid(code_knn, coords2)),
            self.knn_pair.shift,
        )
        out = {
            "loss_self": self_loss.mean(),
            "loss_knn": knn_loss.mean(),
            "cd_self": self_cd.mean().detach(),
            "cd_knn": knn_cd.mean().detach(),
        }
        total = self.self_pair.weight * out["loss_self"] + self.knn_pair.weight * out["loss_knn"]
        if perms:
            neg_losses, neg_cds = [], []
            for perm in perms:
                loss_i, cd_i = term(
                    f_src,
                    _unit(sample_grid(feats[perm], coords2)),
                    c_src,
                    _unit(sample_grid(code[perm], coords2)),
                    self.rand_pair.shift,
                )
                neg_losses.append(loss_i)
                neg_cds.append(cd_i)
            out["loss_rand"] = torch.cat(neg_losses).mean()
            out["cd_rand"] = torch.cat(neg_cds).mean().detach()
            total = total + self.rand_pair.weight * out["loss_rand"]
        out["loss"] = total
        return out

    def _term(self, f1: Tensor, f2: Tensor, c1: Tensor, c2: Tensor, shift: float):
        return correlation_term(f1, f2, c1, c2, shift, self.sc_mode, self.zero_clamp, True)


def _unit(t: Tensor) -> Tensor:
    return F.normalize(t, dim=1, eps=NORM_EPS)
