"""Dense-CRF post-processing of segmentation log-probabilities (thesis App. B.9-B.10).

STEGO's parameters: 10 mean-field iterations, a bilateral kernel (θα = 67 px, θβ = 3 intensity
levels, weight a = 4) and a smoothness kernel (θγ = 1 px, weight 3), Potts compatibility; the
image is fed as BGR uint8 and the unary is ``-log softmax(logits)`` after bilinear upsampling.
(These a, b are CRF weights, not STEGO's shift b.)

``method="pydensecrf"`` runs Krähenbühl & Koltun's permutohedral-lattice CRF from the
``pydensecrf2`` package (built from source: ``pip install pydensecrf2``).
``method="exact_lowres"`` is an honest approximation for machines where that package does not
build: the same mean-field updates with the same kernels, but computed exactly (a dense
``[P, P]`` kernel) on the image downsampled to at most ``max_pixels`` pixels, with distances in
original-pixel units; the result is upsampled bilinearly. It is not the paper's CRF.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fw.errors import DataError, check_choice

CrfMethod = Literal["pydensecrf", "exact_lowres"]

BI_W, BI_XY, BI_RGB = 4.0, 67.0, 3.0  # bilateral: compat a, θα, θβ
POS_W, POS_XY = 3.0, 1.0  # smoothness: compat b, θγ
ITERATIONS = 10


def have_pydensecrf() -> bool:
    """Whether the pydensecrf extension imports."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


def _bgr_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` RGB in [0, 1] -> ``[H, W, 3]`` contiguous BGR uint8 (the reference feed)."""
    rgb = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu()
    return np.ascontiguousarray(rgb.numpy()[:, :, ::-1])


def dense_crf(image: Tensor, logits: Tensor, method: CrfMethod = "pydensecrf", **kw) -> Tensor:
    """Posterior marginals ``[K, H, W]`` of one image ``[3, H, W]`` (RGB in [0, 1]) given
    logits or log-probabilities ``[K, h, w]`` (upsampled bilinearly to the image first)."""
    check_choice(method, ("pydensecrf", "exact_lowres"), "crf method")
    h, w = image.shape[-2:]
    logits = F.interpolate(logits[None].float(), size=(h, w), mode="bilinear")[0]
    probs = torch.softmax(logits, dim=0)
    if method == "pydensecrf":
        return _pydensecrf(image, probs)
    return _exact_lowres(image, probs, **kw)


def _pydensecrf(image: Tensor, probs: Tensor) -> Tensor:
    if not have_pydensecrf():
        raise DataError(
            "crf: 'pydensecrf' needs the pydensecrf2 package (`pip install pydensecrf2`, which "
            "compiles from source); or set crf: exact_lowres for the named approximation"
        )
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    k, h, w = probs.shape
    unary = np.ascontiguousarray(unary_from_softmax(probs.cpu().numpy().astype(np.float32)))
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=POS_XY, compat=POS_W)
    crf.addPairwiseBilateral(sxy=BI_XY, srgb=BI_RGB, rgbim=_bgr_uint8(image), compat=BI_W)
    q = np.array(crf.inference(ITERATIONS)).reshape(k, h, w)
    return torch.from_numpy(q).float()


def _exact_lowres(image: Tensor, probs: Tensor, max_pixels: int = 4096) -> Tensor:
    k, h, w = probs.shape
    scale = min(1.0, (max_pixels / (h * w)) ** 0.5)
    hs, ws = max(1, int(h * scale)), max(1, int(w * scale))
    img = torch.from_numpy(_bgr_uint8(image).astype(np.float32)).permute(2, 0, 1)
    img = F.interpolate(img[None], size=(hs, ws), mode="area")[0].reshape(3, -1).T  # [P, 3]
    p = F.interpolate(probs[None], size=(hs, ws), mode="area")[0].reshape(k, -1)  # [K, P]
    ys, xs = torch.meshgrid(
        (torch.arange(hs) + 0.5) * (h / hs), (torch.arange(ws) + 0.5) * (w / ws), indexing="ij"
    )
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)  # original-pixel units
    d_pos = torch.cdist(pos, pos) ** 2
    d_rgb = torch.cdist(img, img) ** 2
    kernel = BI_W * torch.exp(-d_pos / (2 * BI_XY**2) - d_rgb / (2 * BI_RGB**2))
    kernel += POS_W * torch.exp(-d_pos / (2 * POS_XY**2))
    kernel.fill_diagonal_(0.0)  # mean field excludes the pixel itself
    unary = -torch.log(p.clamp_min(1e-10))
    q = torch.softmax(-unary, dim=0)
    for _ in range(ITERATIONS):
        message = q @ kernel  # [K, P]: Σ_j k(i, j) Q_j(l)
        # Potts: the penalty for label l is the kernel mass on the other labels
        pairwise = message.sum(dim=0, keepdim=True) - message
        q = torch.softmax(-unary - pairwise, dim=0)
    q = q.reshape(1, k, hs, ws)
    return F.interpolate(q, size=(h, w), mode="bilinear")[0]
