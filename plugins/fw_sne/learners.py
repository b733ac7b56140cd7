"""SNE and t-SNE as I-Con learners: the generic p × q × mapper learner with their defaults.

Both are `fw_common.learner.IConLearner`; what makes them work (perplexity calibration, joint
normalisation, PCA initialisation, early exaggeration, the momentum and gain schedule of the
optimiser) are components and parameters a recipe spells out. The one addition is ``fused``:
with a cached full-batch p and a radial-kernel q the same loss is computed by
`fw_sne.fused.radial_kl` (a few in-place passes instead of the generic path's temporaries).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from fw import api
from fw.api import OptimizerFactory
from fw.errors import check_choice
from fw.lib.sparse import SparseNeighborhood
from fw_common.learner import IConLearner
from fw_common.mappers import Embedding
from fw_sne.distributions import Gaussian, ScaleError, StudentT
from fw_sne.fused import radial_kernel, radial_kl
from fw_sne.optim import TSNEGradientDescent, tsne_gd
from fw_sne.scale import (
    Repulsion,
    attraction,
    pair_ids,
    row_lengths,
    sampled_log_norm,
    sparse_q_log_norm,
)

#: SNE's q, ``exp(-||φ_i - φ_j||²)`` (I-Con, Thm 1), is exp(-d / 2σ²) with σ = 1/√2.
SNE_Q_SIGMA = 2.0**-0.5


def _is_symmetric(rows: Tensor, cols: Tensor, prob: Tensor, n: int, chunk: int = 1 << 20) -> bool:
    """Whether a list of pairs with weights equals its transpose.

    Pairs sorted by ``i·N + j`` without repeats (what `fw_sne.scale.sparse_gaussian` gives) are
    checked by looking each transposed pair up, a chunk at a time; other lists are sorted first.
    """
    key = rows * n + cols
    if key.numel() > 1 and not bool((key[1:] > key[:-1]).all()):
        order = torch.argsort(key)
        t_key = cols * n + rows
        t_order = torch.argsort(t_key)
        return bool(
            torch.equal(key[order], t_key[t_order]) and torch.equal(prob[order], prob[t_order])
        )
    for lo in range(0, key.numel(), chunk):
        t_key = cols[lo : lo + chunk] * n + rows[lo : lo + chunk]
        at = torch.searchsorted(key, t_key).clamp_max_(key.numel() - 1)
        if not (torch.equal(key[at], t_key) and torch.equal(prob[at], prob[lo : lo + chunk])):
            return False
    return True


class SNE(IConLearner):
    """SNE (Hinton & Roweis 2002; I-Con, Thm 1): conditional Gaussians on data and embedding.

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
        repulsion: Repulsion = "exact",
        negatives: int = 64,
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
        check_choice(repulsion, ("exact", "sampled", "fft"), "learner repulsion")
        if negatives < 1:
            raise ScaleError(f"learner 'negatives' must be >= 1, got {negatives}")
        self.fused = fused
        self.repulsion = repulsion
        self.negatives = negatives
        self._dense_p: tuple[Tensor, float, bool, bool] | None = None
        self._sparse: tuple[Tensor, Tensor, Tensor, float, Tensor | None] | None = None
        self._generator = torch.Generator()

    def setup(self, data: Any) -> None:
        super().setup(data)
        self._dense_p = None
        self._sparse = None
        if self.repulsion != "exact" or isinstance(self._p_cache, SparseNeighborhood):
            self._setup_sparse(data)
            return
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

    def _setup_sparse(self, data: Any) -> None:
        """Cache the sparse p's pair ids and ``mean_r Σ p log p`` for the estimated-Z path."""
        p = self._p_cache
        if not isinstance(p, SparseNeighborhood):
            raise ScaleError(
                f"learner.repulsion {self.repulsion!r} needs a sparse p over the whole dataset: "
                "set learner.p.scale to 'sparse' and leave the batch size unset (full batch)"
            )
        if self.repulsion == "exact":
            return  # small data: dense q gathered at p's ids by the generic path
        spec = radial_kernel(self.q)
        if spec is None:
            raise ScaleError(
                f"learner.repulsion {self.repulsion!r} estimates the normaliser of a radial "
                f"kernel q ('student_t' or a euclidean 'gaussian' with 'sigma'), got "
                f"{type(self.q).__name__}"
            )
        q_joint = getattr(self.q, "normalization", "conditional") == "joint"
        p_joint = p.num_cols != len(data)
        if q_joint != p_joint:
            raise ScaleError(
                "learner.p and learner.q must share a normalization ('joint' or 'conditional') "
                "to cover the same pairs: set learner.q.normalization="
                f"{'joint' if p_joint else 'conditional'} to match learner.p's"
            )
        rows, cols = pair_ids(p, len(data))
        keep = p.mask & (p.log_prob > -math.inf)
        if bool(keep.all()):  # the usual case: no copies of 10⁷ pairs
            rows, cols, log_p = rows.reshape(-1), cols.reshape(-1), p.log_prob.reshape(-1)
        else:
            rows, cols, log_p = rows[keep], cols[keep], p.log_prob[keep]
        del keep
        prob = log_p.exp()
        p_log_p = float(torch.dot(prob, log_p) / p.log_prob.shape[0])
        if p_joint and _is_symmetric(rows, cols, prob, len(data)):
            # p_ij = p_ji and w_ij = w_ji: the pair (j, i) repeats (i, j), so keep i < j, twice
            upper = rows < cols
            rows, cols, prob = rows[upper], cols[upper], 2.0 * prob[upper]
        lengths = row_lengths(rows, len(data))
        if len(data) < 2**31:  # int32 ids: half the memory traffic of every gather and scatter
            rows, cols = rows.int(), cols.int()
        self._sparse = (rows.contiguous(), cols.contiguous(), prob, p_log_p, lengths)
        self._generator.manual_seed(int(torch.initial_seed()) % (2**63))

    def extra_state(self) -> dict[str, Any]:
        # the sampled negatives' generator: a resumed run draws the negatives it would have drawn
        return {**super().extra_state(), "negatives_rng": self._generator.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if "negatives_rng" in state:
            self._generator.set_state(state["negatives_rng"])

    def _sparse_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        """I-Con loss with an estimated log Z (`fw_sne.scale`), and the KL estimate at α = 1.

        Per row ``α·Σ_j p_rj (-ℓ_rj) + log Ẑ_r + Σ_j p_rj log p_rj``: the same value as
        `fw.lib.icon.icon_loss` on `fw_sne.scale.sparse_q` (the tests compare both).
        """
        assert self._sparse is not None and isinstance(self._p_cache, SparseNeighborhood)
        rows, cols, prob, p_log_p, lengths = self._sparse
        index = batch["index"]
        if not torch.equal(index, torch.arange(index.numel(), device=index.device)):
            raise ScaleError(
                "the sparse t-SNE path trains on the whole dataset in order: leave "
                "trainer.batch_size unset"
            )
        if rows.device != index.device:
            rows, cols, prob = rows.to(index.device), cols.to(index.device), prob.to(index.device)
            lengths = None if lengths is None else lengths.to(index.device)
            self._sparse = (rows, cols, prob, p_log_p, lengths)
        z = self.mapper(batch[self.mapper.input_key])
        kind, param = radial_kernel(self.q)  # type: ignore[misc]
        n_rows = self._p_cache.log_prob.shape[0]
        attract = attraction(z, kind, param, rows, cols, prob, n_rows, lengths)
        joint = n_rows != z.shape[0]
        if self.repulsion == "fft":
            log_norm = sparse_q_log_norm(z, kind, param, joint, "fft")
        else:
            log_norm = sampled_log_norm(z, kind, param, self.negatives, joint, self._generator)
        alpha = self.exaggeration if step < self.exaggeration_steps else 1.0
        log_z = log_norm.mean()
        loss = alpha * attract + log_z + (p_log_p if self.mode == "kl" else 0.0)
        kl = (attract + log_z).detach() + p_log_p
        return {"loss": loss, "kl": kl}

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self._sparse is not None:
            return self._sparse_step(batch, step)
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

    def evaluate(self, data: Any, run_dir: Any = None) -> dict[str, float]:
        out = super().evaluate(data, run_dir)
        out.update(getattr(self.p, "knn_report", {}))  # recall of approximate neighbours
        return out

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
    """t-SNE (van der Maaten & Hinton 2008; I-Con, Thm 2): joint p, Student-t q.

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
        repulsion: Repulsion = "exact",
        negatives: int = 64,
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
            repulsion=repulsion,
            negatives=negatives,
            eval_clusters=eval_clusters,
            plot=plot,
        )
