"""SNE and t-SNE as I-Con learners: the generic p × q × mapper learner with their defaults.

Both are `fw_common.learner.IConLearner`; what makes them work (perplexity calibration, joint
normalisation, PCA initialisation, early exaggeration, the momentum and gain schedule of the
optimiser) are components and parameters a recipe spells out. The one addition is ``fused``:
with a cached full-batch p and a radial-kernel q the same loss is computed by
`fw_sne.fused.radial_kl` (a few in-place passes instead of the generic path's temporaries).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from fw import api
from fw.api import OptimizerFactory
from fw_common.learner import IConLearner
from fw_common.mappers import Embedding
from fw_sne.distributions import Gaussian, StudentT
from fw_sne.fused import radial_kernel, radial_kl
from fw_sne.optim import TSNEGradientDescent, tsne_gd

#: SNE's q, ``exp(-||φ_i - φ_j||²)`` (spec §2.3 q1), is exp(-d / 2σ²) with σ = 1/√2.
SNE_Q_SIGMA = 2.0**-0.5


class SNE(IConLearner):
    """SNE (Hinton & Roweis 2002; spec §3.3 item 1): conditional Gaussians on data and embedding.

    Defaults: p = perplexity-30 Gaussian on the inputs, q = ``exp(-||φ_i - φ_j||²)``, both
    normalised over ``j != i``; mapper = a 2-D embedding table with PCA initialisation;
    optimiser = t-SNE's gradient descent. The loss is the I-Con mean over anchors.
    """

    def __init__(
        self,
        p: api.NeighborhoodDistribution | None = None,
        q: api.NeighborhoodDistribution | None = None,
        mapper: api.Featurizer | None = None,
        optimizer: OptimizerFactory | None = None,
        exaggeration: float = 1.0,
        exaggeration_steps: int = 0,
        mode: Literal["kl", "ce"] = "kl",
        fused: bool = True,
        eval_clusters: int | None = None,
        plot: bool = True,
    ) -> None:
        super().__init__(
            p=p if p is not None else Gaussian(perplexity=30.0),
            q=q if q is not None else Gaussian(sigma=SNE_Q_SIGMA),
            mapper=mapper if mapper is not None else Embedding(dim=2, init="pca"),
            optimizer=optimizer,
            batch_size=None,
            mode=mode,
            exaggeration=exaggeration,
            exaggeration_steps=exaggeration_steps,
            eval_clusters=eval_clusters,
            plot=plot,
        )
        self.fused = fused
        self._dense_p: tuple[Tensor, float, bool, bool] | None = None

    def setup(self, data: Any) -> None:
        super().setup(data)
        self._dense_p = None
        p = self._p_cache
        if not self.fused or p is None or radial_kernel(self.q) is None:
            return
        n = len(data)
        joint = tuple(p.log_prob.shape) == (1, n * n)
        q_joint = getattr(self.q, "normalization", "conditional") == "joint"
        if joint != q_joint or (not joint and tuple(p.log_prob.shape) != (n, n)):
            return  # p and q do not cover the same pairs: the generic path raises the error
        prob = p.prob.reshape(n, n)
        if bool(torch.diagonal(prob).any()):
            return  # p puts mass on i = i, which q excludes (infinite loss)
        p_log_p = 0.0
        if self.mode == "kl":
            support = prob > 0
            p_log_p = float((prob[support] * p.log_prob.reshape(n, n)[support]).sum())
            p_log_p = p_log_p if joint else p_log_p / n
        symmetric = joint and bool(torch.equal(prob, prob.T))
        self._dense_p = (prob.contiguous(), p_log_p, joint, symmetric)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self._dense_p is None or self.direction != "forward":
            return super().training_step(batch, step)
        prob, p_log_p, joint, symmetric = self._dense_p
        index = batch["index"]
        if index.numel() != prob.shape[0]:
            return super().training_step(batch, step)  # not the full batch p was cached for
        if prob.device != index.device:
            prob = prob.to(index.device)
            self._dense_p = (prob, p_log_p, joint, symmetric)
        if not torch.equal(index, torch.arange(index.numel(), device=index.device)):
            prob = prob[index][:, index]  # the full batch in another order
        z = self.mapper(batch[self.mapper.input_key])
        alpha = self.exaggeration if step < self.exaggeration_steps else 1.0
        loss = radial_kl(z, prob, p_log_p, self.q, joint, alpha, symmetric)
        return {"loss": loss}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            return tsne_gd(
                [p for p in self.parameters() if p.requires_grad],
                early_exaggeration=max(self.exaggeration, 1.0),
            )
        opt = super().configure_optimizers()
        if isinstance(opt, TSNEGradientDescent) and self.exaggeration_steps > 0:
            for group in opt.param_groups:
                if group["lr"] == "auto" and group["early_exaggeration"] != self.exaggeration:
                    warnings.warn(
                        f"tsne_gd lr 'auto' assumes early_exaggeration "
                        f"{group['early_exaggeration']}, but the learner exaggerates by "
                        f"{self.exaggeration}; set optimizer.early_exaggeration to match",
                        stacklevel=2,
                    )
        return opt


class TSNE(SNE):
    """t-SNE (van der Maaten & Hinton 2008; spec §3.3 item 2): joint p, Student-t q.

    Defaults: p = perplexity-30 Gaussian symmetrised into a joint distribution, q = Student-t
    with one degree of freedom over all ordered pairs, so the I-Con loss is exactly t-SNE's
    ``KL(P || Q)``; mapper = 2-D embedding table with PCA initialisation; early exaggeration
    12 for 250 steps; optimiser = t-SNE's gradient descent with ``lr: auto``.
    """

    def __init__(
        self,
        p: api.NeighborhoodDistribution | None = None,
        q: api.NeighborhoodDistribution | None = None,
        mapper: api.Featurizer | None = None,
        optimizer: OptimizerFactory | None = None,
        exaggeration: float = 12.0,
        exaggeration_steps: int = 250,
        mode: Literal["kl", "ce"] = "kl",
        fused: bool = True,
        eval_clusters: int | None = None,
        plot: bool = True,
    ) -> None:
        super().__init__(
            p=p if p is not None else Gaussian(perplexity=30.0, normalization="joint"),
            q=q if q is not None else StudentT(dof=1.0, normalization="joint"),
            mapper=mapper,
            optimizer=optimizer,
            exaggeration=exaggeration,
            exaggeration_steps=exaggeration_steps,
            mode=mode,
            fused=fused,
            eval_clusters=eval_clusters,
            plot=plot,
        )
