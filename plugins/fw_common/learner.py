"""The generic I-Con learner: any supervisory p × learned q × mapper (thesis Fig. 8.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from fw import api
from fw.api import OptimizerFactory
from fw.data import load_all
from fw.lib.icon import icon_loss
from fw_table.table import CLUSTER_FAMILY


def context_from_batch(batch: dict[str, Tensor], features: Tensor) -> dict[str, Any]:
    """A distribution context for ``features`` with the batch's ids, labels and side keys."""
    ctx: dict[str, Any] = {api.FEATURES: features, api.INDEX: batch.get("index")}
    if "label" in batch:
        ctx[api.LABELS] = batch["label"]
    if "neighbors" in batch:
        ctx[api.NEIGHBORS] = batch["neighbors"]
    if api.EMBEDDING in batch:  # a dataset's side embedding g (e.g. X-Sample's captions)
        ctx[api.EMBEDDING] = batch[api.EMBEDDING]
    return ctx


class IConLearner(api.Learner):
    """Minimises mean_i KL(p(.|i) || q(.|i)); p on the inputs, q on the mapper's outputs.

    ``p_input`` names the batch key p reads (``"x"``: raw inputs, flattened). With a full batch
    (``batch_size: null``) p is computed once in :meth:`setup` and reused every step.
    ``exaggeration`` multiplies the attractive term for the first ``exaggeration_steps`` steps
    (t-SNE's early exaggeration). Evaluation clusters the learned representation (k-means, or
    argmax for cluster-kernel q) and scores it against the labels.
    """

    example_data: ClassVar[dict[str, Any]] = {"name": "digits", "limit": 64}

    example: ClassVar[dict[str, Any]] = {
        "p": {"name": "gaussian", "perplexity": 5.0},
        "q": {"name": "student_t"},
        "mapper": {"name": "mlp", "dim": 2, "hidden": [16]},
        "batch_size": 32,
    }

    def __init__(
        self,
        p: api.NeighborhoodDistribution,
        q: api.NeighborhoodDistribution,
        mapper: api.Featurizer,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = None,
        direction: Literal["forward", "reverse"] = "forward",
        mode: Literal["kl", "ce"] = "kl",
        p_input: str = "x",
        exaggeration: float = 1.0,
        exaggeration_steps: int = 0,
        eval_clusters: int | None = None,
        plot: bool = True,
    ) -> None:
        super().__init__()
        if not exaggeration > 0:
            raise ValueError(
                f"exaggeration must be > 0 (1 = none, t-SNE uses 12), got {exaggeration}"
            )
        if exaggeration_steps < 0:
            raise ValueError(f"exaggeration_steps must be >= 0, got {exaggeration_steps}")
        self.p = p
        self.q = q
        self.mapper = mapper
        self.optimizer_factory = optimizer
        self.batch_size = batch_size
        self.direction = direction
        self.mode = mode
        self.p_input = p_input
        self.exaggeration = exaggeration
        self.exaggeration_steps = exaggeration_steps
        self.eval_clusters = eval_clusters
        self.plot = plot
        self._p_cache: api.Neighborhood | None = None

    # -- training ---------------------------------------------------------------------------

    def setup(self, data: Any) -> None:
        self.mapper.setup(data)
        if self.batch_size is None:
            with torch.no_grad():
                self._p_cache = self.supervisory(load_all(data))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.Adam(params, lr=1e-3)
        return self.optimizer_factory(params)

    def p_features(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch[self.p_input]
        return x.flatten(1).float() if x.dim() > 2 else x.float()

    def supervisory(self, batch: dict[str, Tensor]) -> api.Neighborhood:
        """p for a batch (no gradient)."""
        with torch.no_grad():
            return self.p(context_from_batch(batch, self.p_features(batch)))

    def learned(self, batch: dict[str, Tensor]) -> api.Neighborhood:
        """q for a batch (keeps the graph to the mapper)."""
        z = self.mapper(batch[self.mapper.input_key])
        return self.q(context_from_batch(batch, z))

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        p = self._p_cache if self._p_cache is not None else self.supervisory(batch)
        if p.log_prob.device != batch["index"].device:
            p = p.to(batch["index"].device)
            self._p_cache = p if self._p_cache is not None else None
        q = self.learned(batch)
        alpha = self.exaggeration if step < self.exaggeration_steps else 1.0
        loss = icon_loss(p, q, direction=self.direction, mode=self.mode, exaggeration=alpha)
        return {"loss": loss}

    # -- inference and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        return self.mapper(batch[self.mapper.input_key])

    @torch.no_grad()
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        from fw.lib.evaluation import evaluate_embedding

        was_training = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device
        batch = {k: v.to(device) for k, v in load_all(data).items()}
        z = self.infer(batch).cpu()
        self.train(was_training)
        return evaluate_embedding(
            z,
            data,
            clusters_from_argmax=self.q.family == CLUSTER_FAMILY,
            n_clusters=self.eval_clusters,
            run_dir=run_dir if self.plot else None,
            title=f"{type(self).__name__}: p={type(self.p).__name__}, q={type(self.q).__name__}",
        )
