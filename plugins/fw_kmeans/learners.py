"""The clustering learner: the generic I-Con learner plus what clustering recipes need.

k-Means, Spectral clustering, Normalized Cuts and DCD are all ``p × cluster-kernel q`` with a
mapper of cluster logits (I-Con, Thms 9-11, Cor. 5). The generic ``icon`` learner runs them;
this subclass adds four ingredients, each a recipe key, none on by default:

- ``p_scope: dataset`` — p is computed **once on the whole training set** and every batch uses
  its rows and columns, renormalised over the batch's candidates
  ("P restricted to the batch and renormalised"). Per-point widths (``perplexity``) and kNN
  graphs then come from the full data, and no batch pays for them again. ``p_scope: batch``
  (the default) computes p on each batch, as ``icon`` does.
- ``p_featurizer`` — a frozen featurizer p reads instead of the raw inputs (e.g. the
  ``spectral_embedding`` of the data: Spectral clustering = k-Means on it, I-Con, Cor. 5).
- ``degrees: p`` — the degree-weighted cluster kernel (Normalized Cuts) gets every
  column's degree ``d_j`` in the whole graph: the row sums of p's unnormalised kernel (its
  ``log_norm``), so the graph p is built from is the graph q is weighted by.
- ``restarts`` / ``restart_steps`` — like scikit-learn's ``n_init``: ``restarts`` independent
  mappers (embedding tables with seeds ``seed, seed + 1, …``; other mappers initialise
  randomly each) train side by side for ``restart_steps`` steps; then the one with the lowest
  I-Con loss on the whole training set (on ``select_points`` of it when larger) is kept and
  the others stop. The loss logged while they train is their mean.

The learned representation is the kept mapper's logits; evaluation takes their argmax as the
cluster of each point (Hungarian accuracy, NMI, ARI; `fw.evaluation`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fw import api
from fw.api import OptimizerFactory
from fw.errors import check_choice
from fw.lib.icon import icon_loss
from fw_common.learner import IConLearner, context_from_batch
from fw_kmeans.distributions import DEGREE


class ClusterLearner(IConLearner):
    """I-Con clustering: ``mean_i KL(p(.|i) || q(.|i))`` with restarts and dataset-wide p.

    Parameters beyond those of the generic ``icon`` learner (see the module docstring):
    ``p_scope`` (``batch`` | ``dataset``), ``p_featurizer``, ``degrees`` (``none`` | ``p``),
    ``restarts``, ``restart_steps``, ``select_points``.
    """

    #: ``clusters: K`` in a recipe sets the mapper's output width (one logit per cluster), the
    #: same key as the ``icon_clustering`` learner's
    aliases: ClassVar[dict[str, str]] = {"clusters": "mapper.dim"}
    example: ClassVar[dict[str, Any]] = {
        "p": {"name": "knn", "k": 5},
        "q": {"name": "cluster"},
        "mapper": {"name": "linear", "dim": 10},
        "batch_size": 32,
    }

    def __init__(
        self,
        p: api.NeighborhoodDistribution,
        q: api.NeighborhoodDistribution,
        mapper: api.Featurizer,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        direction: Literal["forward", "reverse"] = "forward",
        mode: Literal["kl", "ce"] = "kl",
        p_input: str = "x",
        p_featurizer: api.Featurizer | None = None,
        p_scope: Literal["batch", "dataset"] = "batch",
        degrees: Literal["none", "p"] = "none",
        restarts: int = 1,
        restart_steps: int = 0,
        select_points: int = 4096,
        eval_clusters: int | None = None,
        plot: bool = False,
    ) -> None:
        super().__init__(
            p,
            q,
            mapper,
            optimizer=optimizer,
            batch_size=batch_size,
            direction=direction,
            mode=mode,
            p_input=p_input,
            eval_clusters=eval_clusters,
            plot=plot,
        )
        check_choice(p_scope, ("batch", "dataset"), "p_scope")
        check_choice(degrees, ("none", "p"), "degrees")
        if degrees == "p" and p_scope != "dataset":
            raise ValueError(
                "degrees: p takes every point's degree in the whole graph, which needs "
                "p_scope: dataset (p computed once on the full training set)"
            )
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if restarts > 1 and restart_steps < 1:
            raise ValueError(
                f"restarts: {restarts} needs restart_steps >= 1 (how long the candidates train "
                "before the best one is kept)"
            )
        self.p_featurizer = p_featurizer
        if p_featurizer is not None:
            p_featurizer.requires_grad_(False)
        self.p_scope = p_scope
        self.degrees = degrees
        self.restarts = restarts
        self.restart_steps = restart_steps if restarts > 1 else 0
        self.select_points = select_points
        self.candidates = nn.ModuleList(
            [mapper] + [_reseeded(mapper, r) for r in range(1, restarts)]
        )
        # -1 while the candidates train; then the index of the one kept (checkpointed).
        self.register_buffer("chosen", torch.tensor(-1 if restarts > 1 else 0))
        # whole-set loss of every candidate when the choice was made (NaN before; checkpointed)
        self.register_buffer("restart_losses", torch.full((restarts,), float("nan")))
        self._full_p: api.Neighborhood | None = None
        self._row_of_id: Tensor | None = None
        self._data: Any = None

    # -- setup ------------------------------------------------------------------------------

    def setup(self, data: Any) -> None:
        self._data = data
        if self.p_featurizer is not None:
            self.p_featurizer.setup(data)
        for mapper in self.candidates:
            mapper.setup(data)
        full = data.full_batch() if hasattr(data, "full_batch") else None
        if self.p_scope == "dataset":
            if full is None:
                raise ValueError("p_scope: dataset needs a dataset with full_batch() (in memory)")
            ids = full["index"].long()
            self._row_of_id = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
            self._row_of_id[ids] = torch.arange(len(ids))
            self._full_p = self.supervisory(full)
            if self._full_p.log_prob.shape != (len(ids), len(ids)):
                raise ValueError(
                    "p_scope: dataset restricts a square [N, N] p to each batch; "
                    f"{type(self.p).__name__} gave {tuple(self._full_p.log_prob.shape)} "
                    "(a joint normalisation?)"
                )
            if self.degrees == "p" and self._full_p.log_norm is None:
                raise ValueError(
                    f"degrees: p needs a p built from an unnormalised kernel (with a log_norm); "
                    f"{type(self.p).__name__} does not record one"
                )
        elif self.batch_size is None and full is not None:
            self._p_cache = self.supervisory(full)

    # -- p ----------------------------------------------------------------------------------

    def p_features(self, batch: dict[str, Tensor]) -> Tensor:
        if self.p_featurizer is None:
            return super().p_features(batch)
        with torch.no_grad():
            return self.p_featurizer(batch[self.p_featurizer.input_key]).float()

    def _batch_rows(self, batch: dict[str, Tensor]) -> Tensor:
        assert self._row_of_id is not None
        rows = self._row_of_id.to(batch["index"].device)[batch["index"].long()]
        if bool((rows < 0).any()):
            raise ValueError("a batch holds ids that are not in the training set p was built on")
        return rows

    def batch_p(self, batch: dict[str, Tensor]) -> api.Neighborhood:
        """p for a batch: computed on it, or the dataset-wide p restricted and renormalised."""
        if self._full_p is None:
            return self._p_cache if self._p_cache is not None else self.supervisory(batch)
        full = self._full_p
        device = batch["index"].device
        rows = self._batch_rows(batch).to(full.log_prob.device)
        if len(rows) == full.log_prob.shape[0] and bool(
            (rows == torch.arange(len(rows), device=rows.device)).all()
        ):
            return full.to(device)
        log_p = full.log_prob[rows][:, rows]
        mask = full.mask[rows][:, rows]
        log_norm = torch.logsumexp(log_p, dim=1, keepdim=True)
        empty = torch.isneginf(log_norm)  # a row none of whose neighbours is in the batch
        log_p = (log_p - log_norm.masked_fill(empty, 0.0)).masked_fill(empty, float("-inf"))
        return api.Neighborhood(log_p, mask).to(device)

    def _context(self, batch: dict[str, Tensor], z: Tensor) -> dict[str, Any]:
        ctx = context_from_batch(batch, z)
        if self.degrees == "p":
            assert self._full_p is not None and self._full_p.log_norm is not None
            rows = self._batch_rows(batch).to(self._full_p.log_norm.device)
            ctx[DEGREE] = self._full_p.log_norm[rows].exp().to(z.device, z.dtype)
        return ctx

    # -- training ---------------------------------------------------------------------------

    def active(self, step: int) -> list[int]:
        """Indices of the mappers that train at ``step`` (selecting the best one when due)."""
        if int(self.chosen) < 0 and step >= self.restart_steps:
            self.select()
        chosen = int(self.chosen)
        return list(range(self.restarts)) if chosen < 0 else [chosen]

    def learned_by(self, r: int, batch: dict[str, Tensor]) -> api.Neighborhood:
        mapper = self.candidates[r]
        z = mapper(batch[mapper.input_key])
        return self.q(self._context(batch, z))

    def learned(self, batch: dict[str, Tensor]) -> api.Neighborhood:
        return self.learned_by(max(int(self.chosen), 0), batch)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        p = self.batch_p(batch)
        active = self.active(step)
        losses = [
            icon_loss(p, self.learned_by(r, batch), direction=self.direction, mode=self.mode)
            for r in active
        ]
        loss = torch.stack(losses).mean()
        out = {"loss": loss}
        if len(active) > 1:
            out["loss_best"] = torch.stack(losses).detach().min()
        return out

    @torch.no_grad()
    def selection_losses(self) -> list[float]:
        """The I-Con loss of every candidate on the training set (a fixed sample if large)."""
        data = self._data
        full = data.full_batch()
        n = len(full["index"])
        if n > self.select_points:
            gen = torch.Generator().manual_seed(0)
            keep = torch.randperm(n, generator=gen)[: self.select_points]
            full = {k: v[keep] for k, v in full.items()}
        device = self.chosen.device
        batch = {k: v.to(device) for k, v in full.items()}
        p = self.batch_p(batch) if self._full_p is not None else self.supervisory(batch).to(device)
        was_training = self.training
        self.eval()
        losses = [
            float(icon_loss(p, self.learned_by(r, batch), self.direction, self.mode))
            for r in range(self.restarts)
        ]
        self.train(was_training)
        return losses

    def select(self) -> None:
        """Keep the candidate with the lowest training-set loss."""
        losses = self.selection_losses()
        self.restart_losses.copy_(torch.tensor(losses))
        self.chosen.fill_(min(range(len(losses)), key=losses.__getitem__))

    # -- inference and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        if int(self.chosen) < 0:  # trained for fewer steps than restart_steps
            self.select()
        mapper = self.candidates[int(self.chosen)]
        return mapper(batch[mapper.input_key])

    @torch.no_grad()
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        out = super().evaluate(data, run_dir)
        if self.restarts > 1:
            out["restart_kept"] = float(int(self.chosen))
            out["restart_loss_kept"] = float(self.restart_losses.min())
            out["restart_loss_worst"] = float(self.restart_losses.max())
        return out


def _reseeded(mapper: api.Featurizer, offset: int) -> api.Featurizer:
    """A fresh copy of ``mapper`` for restart ``offset`` (its ``seed`` shifted when it has one)."""
    twin = copy.deepcopy(mapper)
    if hasattr(twin, "seed") and isinstance(twin.seed, int):
        twin.seed = twin.seed + offset
    for module in twin.modules():  # layers built before setup: draw new weights
        if hasattr(module, "reset_parameters") and not isinstance(
            module, nn.modules.lazy.LazyModuleMixin
        ):
            module.reset_parameters()
    return twin
