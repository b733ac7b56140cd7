"""DINO's and SwAV's targets as supervisory I-Con distributions over prototypes.

The "points" j of these neighbourhoods are the K prototypes, not other samples: the context's
``FEATURES`` ``[n, K]`` are a network's prototype scores for the n rows. p is a stop-gradient
assignment computed from one crop (the EMA teacher's centred, sharpened softmax for DINO; the
Sinkhorn–Knopp codes for SwAV), and q is the student's softmax over the same prototypes from
another crop — the registered ``prototype_softmax`` of the ``icon`` plugin with
``num_classes: K`` and the student temperature. Then the I-Con cross-entropy
``mean_i H(p(·|i), q(·|i))`` is each method's loss for one (teacher crop, student crop) pair
(tests/test_selfsup_icon.py checks it on the same tensors).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from fw import api
from fw.lib.prototypes import sinkhorn_knopp

FAMILY = "Prototype Assignments"


class TeacherAssignment(api.NeighborhoodDistribution):
    """``p(k|i) = softmax_k((s_ik − c_k)/τ_t)``: DINO's centred, sharpened teacher output.

    Caron et al. 2021, Eq. 1 and §3.1 ("centering and sharpening"). ``center`` (``[K]``, set by
    the caller, e.g. the learner's centre buffer) defaults to zero; no gradient.
    """

    example: ClassVar[dict[str, Any]] = {"temperature": 0.04}
    family: ClassVar[str] = FAMILY
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(self, temperature: float = 0.04) -> None:
        if temperature <= 0:
            raise ValueError(f"teacher_assignment: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.center: Tensor | None = None

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        s = ctx[api.FEATURES].detach()
        if self.center is not None:
            s = s - self.center.to(s)
        logits = s / self.temperature
        return api.Neighborhood.from_logits(logits, torch.ones_like(logits, dtype=torch.bool))


class SinkhornAssignment(api.NeighborhoodDistribution):
    """``p(k|i) = Q_ik``, the Sinkhorn–Knopp codes of the scores (Caron et al. 2020, Eq. 3).

    Equipartitioned over the batch (each prototype gets ``n/K`` of the mass) with entropic
    regularisation ``epsilon`` after ``iterations`` rounds (`fw.lib.prototypes.sinkhorn_knopp`);
    no gradient.
    """

    example: ClassVar[dict[str, Any]] = {"epsilon": 0.05, "iterations": 3}
    family: ClassVar[str] = FAMILY
    role: ClassVar[str] = "supervisory"
    requires: ClassVar[tuple[str, ...]] = (api.FEATURES,)

    def __init__(self, epsilon: float = 0.05, iterations: int = 3) -> None:
        if epsilon <= 0 or iterations < 1:
            raise ValueError(
                f"sinkhorn_assignment: need epsilon > 0 and iterations >= 1, got {epsilon}, "
                f"{iterations}"
            )
        self.epsilon = epsilon
        self.iterations = iterations

    def log_prob(self, ctx: api.Context) -> api.Neighborhood:
        q = sinkhorn_knopp(ctx[api.FEATURES].detach(), self.epsilon, self.iterations)
        return api.Neighborhood.from_weights(q, torch.ones_like(q, dtype=torch.bool))
