"""The (debiased) InfoNCE clusterer (I-Con, §4, Tables 2-4).

One training step, for a batch of B anchor ids:

1. points: ``views`` augmented copies of every anchor plus ``neighbors`` ids per anchor drawn
   from walks on the global kNN table (computed once in :meth:`IConClustering.setup`);
2. supervisory p over all points (no gradient): the recipe's composition, typically
   ``debiased(union[positive_pairs, knn_walks])`` over the context
   ``{INDEX: ids, NEIGHBORS: table, FEATURES: kNN-space features}``;
3. learned q per clustering head: the recipe's cluster kernel (uniform on clusters, batch sizes with
   gradient, optionally ``debiased``) on the head's logits; with an EMA teacher the column side
   of q uses the teacher's logits (``FEATURES_COL``);
4. loss: mean over the main heads (and ``overcluster_weight`` × mean over over-clustering
   heads) of ``mean_i KL(p(.|i) || q(.|i))``.

The clustering heads sit on frozen features: the inputs themselves, a frozen ``backbone``
featurizer applied to them, or another learner's output chained in by the dataset
(``chained``/``featurized``). Evaluation takes the argmax of the main head with the lowest
running loss (label-free model selection, as SCAN does) and reports Hungarian accuracy, NMI
and ARI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from fw import api
from fw.api import OptimizerFactory
from fw.errors import ShapeError
from fw.lib.ema import ema_teacher, ema_update
from fw.lib.icon import icon_loss
from fw_common.augment import Augmenter
from fw_icon.wrappers import Debiased, Union
from fw_icon_clustering.fused import compile_p, compile_q, sparse_icon_loss, sparse_p
from fw_icon_clustering.walks import KNNWalks, Metric, knn_table, sample_walk_neighbors
from fw_kmeans.distributions import ClusterKernel
from fw_simclr.distributions import PositivePairs

#: running-loss smoothing used to pick the head that evaluation reports
HEAD_LOSS_MOMENTUM = 0.9


def _default_p() -> api.NeighborhoodDistribution:
    parts = [PositivePairs(on_missing="skip"), KNNWalks(steps=2, on_missing="skip")]
    return Debiased(of=Union(of=parts), alpha=0.6)


def _default_q() -> api.NeighborhoodDistribution:
    return Debiased(of=ClusterKernel(), alpha=0.6)


class IConClustering(api.Learner):
    """Clustering heads on frozen features trained with the I-Con loss (I-Con, §4).

    Parameters (defaults are the paper's final model where it gives one, I-Con §4):

    - ``p`` / ``q``: supervisory and learned distributions; default
      ``debiased(union[positive_pairs, knn_walks(steps=2)], α=0.6)`` and
      ``debiased(cluster, α=0.6)`` ("both sides", I-Con §4.3).
    - ``clusters``, ``heads``: every main head has ``clusters`` outputs; ``overcluster``
      lists the sizes of extra over-clustering heads trained alongside (not evaluated).
    - ``hidden``: hidden widths of an MLP head (``[]`` = linear, the paper's head).
    - ``backbone``: frozen featurizer between inputs and heads (image views need it);
      ``input_norm``: ``none`` (paper), ``l2``, or ``standardize`` (data mean/std).
    - views: ``augment`` are image augmentations of the inputs before the backbone (a preset
      name or op list of `fw_common.augment`; flat inputs are viewed as the dataset's
      ``image_shape``); ``noise`` adds Gaussian noise of that many per-feature standard
      deviations and ``dropout`` drops features, both on the frozen features (feature-space
      views, cheap with cached features). None of them: the views are identical.
    - ``views``: augmented views per anchor; ``neighbors``: points per anchor sampled from
      ``(P + … + P^walk_steps)/walk_steps`` on the global table of ``knn_k`` nearest neighbours
      (an int: that many; a float in (0, 1): that share of the N points, ``round(knn_k·N)``,
      scikit-learn's int/float convention, so the graph covers the same share at any N)
      by ``knn_metric``, computed on the dataset key ``knn_key`` (default: the frozen head
      features) with faiss (``knn_index``: ``flat`` exact, ``ivf`` approximate, ``ivf_sq8``
      approximate with 8-bit codes re-ranked exactly, 1/4 of ``ivf``'s index memory, ``auto``
      exact below 100 000 points and ``ivf_sq8`` from there); ``augment_neighbors`` augments
      them too.
    - ``ema``: momentum of an EMA teacher for the column side of q (``null`` = none);
      ``eval_teacher``: evaluate with the teacher.
    - ``optimizer`` (Adam 1e-3 by default), multiplied by ``lr_decay`` every
      ``lr_decay_epochs`` epochs (0.5 every 10); ``batch_size`` anchors (4096, clipped to the
      data size).
    - ``fused``: compute the loss from the sparse entries of p when p and q are compositions
      `fw_icon_clustering.fused` recognises (same value and gradient as the generic dense
      path, which is used otherwise).
    """

    example_data: ClassVar[dict[str, Any]] = {"name": "digits", "limit": 64}

    def __init__(
        self,
        p: api.NeighborhoodDistribution | None = None,
        q: api.NeighborhoodDistribution | None = None,
        clusters: int = 10,
        heads: int = 1,
        overcluster: list[int] | None = None,
        overcluster_weight: float = 1.0,
        hidden: list[int] | None = None,
        backbone: api.Featurizer | None = None,
        augment: str | list[dict[str, Any]] | None = None,
        noise: float = 0.0,
        dropout: float = 0.0,
        input_key: str = "x",
        input_norm: Literal["none", "l2", "standardize"] = "none",
        views: int = 2,
        neighbors: int = 2,
        knn_k: int | float = 3,
        knn_metric: Metric = "cosine",
        knn_key: str | None = None,
        knn_index: Literal["auto", "flat", "ivf", "ivf_sq8"] = "auto",
        walk_steps: int = 2,
        augment_neighbors: bool = True,
        ema: float | None = None,
        eval_teacher: bool = True,
        optimizer: OptimizerFactory | None = None,
        lr_decay: float = 0.5,
        lr_decay_epochs: int = 10,
        batch_size: int = 4096,
        mode: Literal["kl", "ce"] = "kl",
        fused: bool = True,
        eval_batch_size: int = 4096,
    ) -> None:
        super().__init__()
        if clusters < 2 or heads < 1:
            raise ValueError(
                f"icon_clustering: need clusters >= 2 and heads >= 1, got {clusters}, {heads}"
            )
        if views < 1 or neighbors < 0 or views + neighbors < 2:
            raise ValueError(
                f"icon_clustering: each anchor needs at least two points (views={views}, "
                f"neighbors={neighbors})"
            )
        if isinstance(knn_k, bool) or not (
            (isinstance(knn_k, int) and knn_k >= 1)
            or (isinstance(knn_k, float) and 0.0 < knn_k < 1.0)
        ):
            raise ValueError(
                "icon_clustering: knn_k must be a count >= 1 or a share of the data in (0, 1), "
                f"got {knn_k!r}"
            )
        if ema is not None and not 0.0 <= ema < 1.0:
            raise ValueError(f"icon_clustering: ema momentum must lie in [0, 1), got {ema}")
        if input_norm not in ("none", "l2", "standardize"):
            raise ValueError(f"icon_clustering: unknown input_norm {input_norm!r}")
        self.p = p if p is not None else _default_p()
        self.q = q if q is not None else _default_q()
        self.clusters = clusters
        self.num_heads = heads
        self.overcluster = list(overcluster or [])
        self.overcluster_weight = overcluster_weight
        self.hidden = list(hidden or [])
        self.backbone = backbone
        if backbone is not None:
            backbone.requires_grad_(False)
        if noise < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(
                f"icon_clustering: need noise >= 0, 0 <= dropout < 1, got {noise}, {dropout}"
            )
        self.augmenter = Augmenter(augment)
        self.augment = augment
        self.noise = noise
        self.dropout = dropout
        self._image_shape: tuple[int, ...] | None = None
        self.input_key = input_key
        self.input_norm = input_norm
        self.views = views
        self.neighbors = neighbors
        self.knn_k = knn_k
        self.knn_metric = knn_metric
        self.knn_key = knn_key
        self.knn_index = knn_index
        self.walk_steps = walk_steps
        self.augment_neighbors = augment_neighbors
        self.ema = ema
        self.eval_teacher = eval_teacher
        self.optimizer_factory = optimizer
        self.lr_decay = lr_decay
        self.lr_decay_epochs = lr_decay_epochs
        self.batch_size = batch_size
        self.mode = mode
        self.fused = fused
        self._p_spec = compile_p(self.p) if fused else None
        self._q_spec = compile_q(self.q) if fused else None
        self.eval_batch_size = eval_batch_size
        self.heads = nn.ModuleList()
        self.teacher: nn.ModuleList | None = None
        self.register_buffer("head_loss", torch.zeros(heads))
        self.register_buffer("neighbor_table", torch.zeros(0, 0, dtype=torch.long))
        self.register_buffer("feat_mean", torch.zeros(0))
        self.register_buffer("feat_std", torch.zeros(0))
        self._inputs: Tensor | None = None
        self._knn_space: Tensor | None = None
        self._n = 0

    # -- frozen features and heads ----------------------------------------------------------

    def train(self, mode: bool = True) -> IConClustering:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: batch-norm statistics and dropout stay fixed
        return self

    @torch.no_grad()
    def frozen_features(self, x: Tensor) -> Tensor:
        """Backbone features ``[B, D]`` of inputs (the flattened inputs without a backbone)."""
        feats = self.backbone(x) if self.backbone is not None else x
        if feats.dim() != 2:
            feats = feats.flatten(1)
        return feats.float()

    def _normalize(self, feats: Tensor) -> Tensor:
        if self.input_norm == "l2":
            return nn.functional.normalize(feats, dim=1)
        if self.input_norm == "standardize":
            return (feats - self.feat_mean) / self.feat_std
        return feats

    def _chunks(self, x: Tensor, fn: Any) -> Tensor:
        device = self.head_loss.device
        parts = [
            fn(x[s : s + self.eval_batch_size].to(device))
            for s in range(0, len(x), self.eval_batch_size)
        ]
        return torch.cat(parts)

    def _make_head(self, in_dim: int, out_dim: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = in_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        return nn.Sequential(*layers) if len(layers) > 1 else layers[0]

    def setup(self, data: Any) -> None:
        tensors = getattr(data, "tensors", None)
        if tensors is None or self.input_key not in tensors:
            raise ShapeError(
                f"icon_clustering needs an in-memory dataset with key {self.input_key!r} "
                f"(an fw.data.ArrayDataset); got {type(data).__name__}"
            )
        self._inputs = tensors[self.input_key]
        self._n = len(self._inputs)
        self.batch_size = min(self.batch_size, self._n)
        if not self.augmenter.identity and self._inputs.dim() == 2:
            shape = getattr(data, "meta", {}).get("image_shape")
            if not shape:
                raise ShapeError(
                    "icon_clustering: image augmentations of flat inputs need the dataset's "
                    "meta['image_shape'] (e.g. [1, 8, 8])"
                )
            self._image_shape = tuple(shape)
        if self.backbone is not None:
            self.backbone.setup(data)
        self.train(self.training)
        feats = self._chunks(self._inputs, self.frozen_features).cpu()
        if self.knn_key is not None:
            if self.knn_key not in tensors:
                raise ShapeError(f"icon_clustering: knn_key {self.knn_key!r} is not in the dataset")
            self._knn_space = tensors[self.knn_key].flatten(1).float()
        else:
            self._knn_space = feats
        if self.neighbor_table.shape[0] != self._n:  # a checkpoint may already hold it
            self.neighbor_table = knn_table(
                self._knn_space, self.neighbors_per_point(self._n), self.knn_metric, self.knn_index
            )
        self.feat_mean = feats.mean(dim=0)
        self.feat_std = feats.std(dim=0).clamp_min(1e-6)
        if not len(self.heads):
            sizes = [self.clusters] * self.num_heads + self.overcluster
            self.heads = nn.ModuleList(self._make_head(feats.shape[1], c) for c in sizes)
        if self.ema is not None and self.teacher is None:
            self.teacher = ema_teacher(self.heads)

    def neighbors_per_point(self, n: int) -> int:
        """The k of the kNN table for n points: ``knn_k`` itself, or ``round(knn_k·n)``."""
        if isinstance(self.knn_k, float):
            return max(1, round(self.knn_k * n))
        return self.knn_k

    def configure_optimizers(self) -> api.Optimization:
        params = [p for p in self.heads.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            opt = torch.optim.Adam(params, lr=1e-3)
        else:
            opt = self.optimizer_factory(params)
        schedulers = []
        if self.lr_decay_epochs > 0:  # lr × lr_decay every lr_decay_epochs epochs, per step
            per_epoch = max(self._n // max(self.batch_size, 1), 1)
            every = self.lr_decay_epochs
            decay = self.lr_decay
            schedulers.append(
                torch.optim.lr_scheduler.LambdaLR(
                    opt, lambda step: decay ** ((step // per_epoch) // every)
                )
            )
        return api.Optimization([opt], schedulers)

    # -- training ---------------------------------------------------------------------------

    def _view(self, x: Tensor) -> Tensor:
        """One augmented view of inputs (images are augmented in their image shape)."""
        if self.augmenter.identity:
            return x
        if self._image_shape is not None:
            return self.augmenter(x.view(-1, *self._image_shape)).reshape(x.shape)
        return self.augmenter(x)

    def _feature_view(self, feats: Tensor) -> Tensor:
        """Feature-space augmentation: dropout, then noise scaled by per-feature std."""
        if self.dropout > 0:
            keep = torch.rand_like(feats) >= self.dropout
            feats = feats * keep / (1.0 - self.dropout)
        if self.noise > 0:
            feats = feats + self.noise * self.feat_std * torch.randn_like(feats)
        return feats

    def _points(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Ids ``[n]``, frozen head features ``[n, D]`` and kNN-space features of the points.

        Points are ``views`` views of the anchors, then ``neighbors`` sampled walk neighbours
        per anchor (view-major: point ``v·B + b`` belongs to anchor ``b``).
        """
        device = batch["index"].device
        anchors = batch["index"]
        x = batch[self.input_key]
        ids = [anchors] * self.views
        feats = [self.frozen_features(self._view(x)) for _ in range(self.views)]
        if self.neighbors:
            table = self.neighbor_table.to(device)
            nbr = sample_walk_neighbors(table, anchors, self.neighbors, self.walk_steps).T.flatten()
            assert self._inputs is not None
            xn = self._inputs[nbr.cpu()].to(device)
            ids.append(nbr)
            feats.append(self.frozen_features(self._view(xn) if self.augment_neighbors else xn))
        ids_all = torch.cat(ids)
        head_in = torch.cat(feats)
        if self.augment_neighbors or not self.neighbors:
            head_in = self._feature_view(head_in)
        else:
            n_views = self.views * len(anchors)
            head_in = torch.cat([self._feature_view(head_in[:n_views]), head_in[n_views:]])
        assert self._knn_space is not None
        return ids_all, head_in, self._knn_space[ids_all.cpu()].to(device)

    def p_context(self, ids: Tensor, knn_feats: Tensor) -> dict[str, Tensor]:
        """The context p is computed on for the points ``ids`` of one batch."""
        return {
            api.FEATURES: knn_feats,
            api.INDEX: ids,
            api.NEIGHBORS: self.neighbor_table.to(ids.device),
        }

    def _update_teacher(self) -> None:
        assert self.teacher is not None and self.ema is not None
        ema_update(self.teacher, self.heads, self.ema)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self.teacher is not None and step > 0:
            self._update_teacher()
        ids, head_in, knn_feats = self._points(batch)
        p_ctx = self.p_context(ids, knn_feats)
        fused = self._p_spec is not None and self._q_spec is not None
        with torch.no_grad():
            if fused:
                entries = sparse_p(self._p_spec, p_ctx, len(ids), head_in.dtype)
            else:
                p = self.p(p_ctx)
        feats = self._normalize(head_in)
        out: dict[str, Tensor] = {}
        losses = []
        for h, head in enumerate(self.heads):
            logits = head(feats)
            logits_col = None
            if self.teacher is not None:
                with torch.no_grad():
                    logits_col = self.teacher[h](feats)
            if fused:
                loss_h = sparse_icon_loss(
                    self._p_spec, self._q_spec, p_ctx, logits, logits_col, self.mode, entries
                )
            else:
                ctx: dict[str, Any] = {api.FEATURES: logits, api.INDEX: ids}
                if logits_col is not None:
                    ctx[api.FEATURES_COL], ctx[api.INDEX_COL] = logits_col, ids
                loss_h = icon_loss(p, self.q(ctx), mode=self.mode)
            losses.append(loss_h)
            out[f"loss_head{h}"] = loss_h.detach()
        main = torch.stack(losses[: self.num_heads])
        loss = main.mean()
        if self.overcluster:
            loss = loss + self.overcluster_weight * torch.stack(losses[self.num_heads :]).mean()
        with torch.no_grad():
            m = HEAD_LOSS_MOMENTUM if step > 0 else 0.0
            self.head_loss.mul_(m).add_((1 - m) * main.detach())
        out["loss"] = loss
        return out

    # -- inference and evaluation -----------------------------------------------------------

    @property
    def selected_head(self) -> int:
        """The main head with the lowest running training loss (no labels involved)."""
        return int(self.head_loss.argmin())

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        """Cluster logits ``[B, clusters]`` of the selected head (the teacher's, if any)."""
        heads = self.teacher if (self.teacher is not None and self.eval_teacher) else self.heads
        feats = self._normalize(self.frozen_features(batch[self.input_key]))
        return heads[self.selected_head](feats)

    @torch.no_grad()
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        from fw.lib.evaluation import evaluate_embedding

        was_training = self.training
        self.eval()
        x = data.full_batch()[self.input_key]
        logits = self._chunks(x, lambda chunk: self.infer({self.input_key: chunk})).cpu()
        self.train(was_training)
        out = evaluate_embedding(logits, data, clusters_from_argmax=True, run_dir=run_dir)
        out["selected_head"] = float(self.selected_head)
        out["clusters_used"] = float(logits.argmax(dim=1).unique().numel())
        return out
