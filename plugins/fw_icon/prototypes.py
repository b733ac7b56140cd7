"""Learned kernels from data points to class prototypes beyond the softmax (I-Con, Table 1).

Rows are the data points (``FEATURES`` ``[n, d]``), columns the ``C`` class prototypes φ —
learned here (``num_classes`` and ``dim``), the identity (``num_classes`` alone: the features
are class scores) or given by the context's ``FEATURES_COL`` — as for ``prototype_softmax``.
Paired with ``data_label`` p they fill the data-label column of the table: the
Student-t row (Harmonic loss) and the σ→0 row (the "Error rate" gap). Distances are
squared Euclidean, computed from differences so that logs of them stay exact near 0.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw import api
from fw.errors import check_choice
from fw.lib.distributions import exact_sq_dists, learned_prototypes, present, prototype_points
from fw_icon.kernels import Triplet


class Harmonic(api.NeighborhoodDistribution, nn.Module):
    """Harmonic loss's q: an inverse power of the distance to each prototype (thesis Thm F.3.8).

    ``q(j|i) = (d_ij + (2n − 1)σ²)^(−n) / Σ_k (d_ik + (2n − 1)σ²)^(−n)``, ``d_ij = ‖f_i − φ_j‖²``:
    the Student-t kernel with ``2n − 1`` degrees of freedom and scale σ; ``sigma: 0`` (default)
    is its limit σ→0, ``d_ij^(−n) / Σ_k d_ik^(−n)``, the Harmonic loss [T Table 8.1].

    Convention: ``n`` is the thesis's degree, the power of the **squared** distance. Baek et
    al. (2025) write ``‖f − φ_j‖₂^(−n_B)`` with the plain Euclidean distance, so ``n_B = 2n``
    (with ``data_label`` p the I-Con loss is their ``−log(‖f−φ_y‖^(−n_B) / Σ_k ‖f−φ_k‖^(−n_B))``,
    tested). Evaluated in log space, ``−n·log(d_ij + (2n − 1)σ²)`` then a log-softmax:
    powers of small distances overflow. A feature exactly on a prototype has its
    distance floored at the dtype's smallest normal number, so that class gets all the mass.
    """

    example: ClassVar[dict[str, Any]] = {"num_classes": 3, "dim": 4}

    family: ClassVar[str] = "Student-T"
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(
        self,
        *,
        n: float = 4.0,
        num_classes: int | None = None,
        dim: int | None = None,
        sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if n <= 0:
            raise ValueError(f"harmonic: the degree n must be > 0, got {n}")
        if sigma < 0 or (sigma > 0 and n <= 0.5):
            raise ValueError(
                "harmonic: sigma must be >= 0, and a finite sigma needs n > 1/2 (a Student-t "
                f"with 2n - 1 > 0 degrees of freedom); got sigma={sigma}, n={n}"
            )
        self.n = n
        self.num_classes = num_classes
        self.sigma = sigma
        init = learned_prototypes(num_classes, dim, "harmonic")
        self.prototypes = None if init is None else nn.Parameter(init)

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        f = ctx[api.FEATURES]
        protos = prototype_points(ctx, self.prototypes, self.num_classes, "harmonic")
        d = exact_sq_dists(f, protos)
        if self.sigma > 0:
            d = d + (2.0 * self.n - 1.0) * self.sigma**2
        logits = -self.n * torch.log(d.clamp_min(torch.finfo(d.dtype).tiny))
        mask = torch.ones(logits.shape, dtype=torch.bool, device=logits.device)
        return api.Neighborhood.from_logits(logits, mask)


class PrototypeTriplet(api.NeighborhoodDistribution, nn.Module):
    """A narrow Gaussian from each point to the class prototypes (σ→0, as in I-Con, Thm 5).

    ``q(j|i) = exp(−d_ij/σ²) / Σ_{k ∈ K_i} exp(−d_ik/σ²)``, ``d_ij = ‖f_i − φ_j‖²``, with the
    candidates ``K_i`` = {i's class, one other class} (``negative: hardest`` — the nearest wrong
    prototype — or ``random``; Triplet's one-negative form, I-Con, Thm 5) or every class
    (``all``). With ``data_label`` p and one negative a row of the I-Con loss is
    ``softplus((d_iy − d_i⁻)/σ²)``; in general ``σ²·L − σ² log|K_i| ≤ h ≤ σ²·L`` for the hinge
    ``h = mean_i (d_iy − min_{k ∈ K_i} d_ik)`` (the bounds of I-Con, Thm 5), so σ²·L → h as
    σ→0. For the hardest negative or all classes ``h = mean_i (d_iy − min_k d_ik)``
    is zero exactly on the points whose nearest prototype is their class: its support is the
    set of errors of the nearest-prototype classifier (the "Error rate" gap of the table).

    The negative is chosen from ``LABELS``; without labels (inference) every class is a
    candidate and the argmax is the nearest prototype. ``normalize`` puts features and
    prototypes on the unit sphere (without it, shrinking everything shrinks the loss).
    """

    example: ClassVar[dict[str, Any]] = {"num_classes": 3, "dim": 4}

    family: ClassVar[str] = "Gaussian σ→0"
    role: ClassVar[str] = "learned"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        dim: int | None = None,
        sigma: float = 1.0,
        negative: Literal["hardest", "random", "all"] = "hardest",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError(f"prototype_triplet: sigma must be > 0, got {sigma}")
        check_choice(negative, ("hardest", "random", "all"), "prototype_triplet: negative")
        self.num_classes = num_classes
        self.sigma = sigma
        self.negative = negative
        self.normalize = normalize
        init = learned_prototypes(num_classes, dim, "prototype_triplet")
        self.prototypes = None if init is None else nn.Parameter(init)

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        f = ctx[api.FEATURES]
        protos = prototype_points(ctx, self.prototypes, self.num_classes, "prototype_triplet")
        if self.normalize:
            f, protos = F.normalize(f, dim=1), F.normalize(protos, dim=1)
        d = exact_sq_dists(f, protos)
        mask = self.candidates(ctx, f, protos, d)
        return api.Neighborhood.from_logits(-d / self.sigma**2, mask)

    def candidates(self, ctx: api.Context, f: Tensor, protos: Tensor, d: Tensor) -> Tensor:
        """``[n, C]`` bool: each row's class and its negative (every class without labels)."""
        if self.negative == "all" or not present(ctx, api.LABELS):
            return torch.ones(d.shape, dtype=torch.bool, device=d.device)
        classes = torch.arange(protos.shape[0], device=d.device)
        if present(ctx, api.LABELS_COL):
            classes = torch.as_tensor(ctx[api.LABELS_COL], device=d.device)
        pairs = {
            api.FEATURES: f,
            api.FEATURES_COL: protos,
            api.LABELS: torch.as_tensor(ctx[api.LABELS], device=d.device),
            api.LABELS_COL: classes,
        }
        chooser = Triplet(positives="labels", negative=self.negative)
        positive, negative = chooser.select(pairs, d)
        mask = positive.clone()
        mask[torch.arange(d.shape[0], device=d.device), negative] = True
        return mask
