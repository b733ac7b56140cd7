"""The view-based I-Con learner: SimCLR, SupCon, MoCo v3, t-SimCLR, VICReg and cross-entropy
are recipes of it (I-Con, §3.2, Thms 4-5, Cors. 2-3; Hamilton, PhD thesis, Table 8.1).

Each step draws ``views`` random augmentations of every batch item and encodes them with a
backbone (a `fw.api.Featurizer`) and an optional projection head. The ``V·B`` encoded views are
the points of the neighbourhoods, in view-major order (all first views, then all second views):
the dataset id of each item is repeated per view (``INDEX``), so ``positive_pairs`` finds an
anchor's partner views, and so are its label (``LABELS``, for ``same_class`` / ``data_label``).
q is the recipe's learned distribution on the projections, p its supervisory distribution on
the same points, and the loss is `fw.lib.icon.icon_loss` (mean over the ``V·B`` anchors).

With ``ema_momentum`` the column side comes from an exponential-moving-average teacher
(MoCo v3; I-Con, §3.2): rows are the student's projections of view ``a`` (through the
``predictor`` when given), columns the teacher's projections of the *other* views (q is then
rectangular, ``FEATURES_COL``), and the loss is the mean over the views ``a`` — with two views
MoCo v3's symmetric ``ctr(q1, k2) + ctr(q2, k1)`` up to its constant factor ``τ``. The teacher
``θ_t ← m·θ_t + (1 − m)·θ_s`` is updated at the start of every step after the first (i.e. right
after each optimiser step), its buffers (BatchNorm statistics) copied from the student.

With ``modalities`` (CLIP, CMC and their gaps; I-Con, Thm 6) the batch holds one input
per modality under the named keys (e.g. the digits' top half ``x`` and bottom half
``x_bottom``), each modality has its own encoder, and the points are the ``V·B`` views of each
modality. q is rectangular and normalised over the other modalities only: rows are modality
``a``'s projections, columns those of every other modality (``FEATURES_COL``, ``INDEX_COL``),
and the loss is the mean over ``a`` — with two modalities CLIP's symmetric
``(L_A→B + L_B→A)/2``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw import api
from fw.api import OptimizerFactory
from fw.data import collate_batched
from fw.lib import monitors
from fw.lib.ema import ema_update
from fw.lib.icon import icon_loss
from fw.lib.images import image_batch
from fw_common.augment import Augmenter
from fw_simclr import evaluation
from fw_simclr.featurizers import image_shape_of


class ContrastiveLearner(api.Learner):
    """I-Con on augmented views: ``mean_i KL(p(.|i) || q(.|i))`` over the ``V·B`` views.

    Parameters (recipe keys):

    - ``p``, ``q``: the supervisory and learned distributions (e.g. ``positive_pairs`` and
      ``gaussian`` with ``metric: cosine`` for SimCLR; ``same_class`` for SupCon;
      ``student_t`` q for t-SimCLR; ``cohesion_variance`` q for VICReg; ``data_label`` p with
      ``prototype_softmax`` q and ``views: 1`` for cross-entropy);
    - ``backbone``: the featurizer whose output is the representation (evaluated by the
      probes); ``head``: projection head on top (e.g. ``{name: mlp, dim: 128, hidden: [512]}``;
      null: q sees the backbone features); ``predictor``: an extra student-only head (MoCo v3);
    - ``views``: augmentations per item; ``augment``: a preset name of `fw_common.augment` or a
      list of ops (null: identity — every view is the raw input);
    - ``ema_momentum``: ``m`` of the EMA teacher (null: no teacher, square q over all views);
    - ``mode``: ``kl`` (the I-Con KL) or ``ce`` (cross-entropy ``H(p, q)``, what NT-Xent and
      SupCon report; the difference ``H(p)`` is logged as ``p_entropy``); ``normalize``
      puts the projections on the unit sphere before q (e.g. VICReg's ``cohesion_variance``
      q, whose variance term is unbounded otherwise);
    - ``p_input``: what p's ``FEATURES`` are when it reads features (``knn``, ``gaussian``):
      the un-augmented ``input`` of each view's item, or the augmented ``view`` pixels;
    - ``modalities``: the batch keys of two or more modalities (null: the one input ``x``).
      ``backbone``/``head`` encode the first; every other modality gets an encoder of the same
      architecture with its own, separately initialised weights. p is typically
      ``cross_modal`` and q any kernel that takes a column set (``cross_modal_gaussian``,
      ``student_t``, ``triplet``, ``cohesion_variance``); a side embedding (batch key
      ``embedding``) reaches p as ``EMBEDDING`` / ``EMBEDDING_COL`` in either mode.

    Evaluation (``evaluate``) embeds un-augmented images with the backbone (eval mode) and
    reports the kNN probe (``knn_k`` neighbours, cosine, weighted vote) and linear probe
    (logistic regression) accuracies, trained on the training data's features and tested on the
    evaluation data's. When the run has no separate ``eval_data`` (the loop passes the training
    set itself), a deterministic ``eval_holdout`` fraction of it (seed ``eval_seed``) is the
    test part and the probe metrics are prefixed ``holdout_``; ``exclude_holdout`` keeps those
    items out of training too (set it when p reads labels, or the probes score items whose
    labels were trained on). k-means with one cluster per
    class on the evaluated features gives ``kmeans_hungarian_accuracy``, ``kmeans_nmi``,
    ``kmeans_ari``. With a ``data_label`` p the classifier itself (argmax of q) is
    scored as ``classifier_accuracy``. With ``modalities`` the probes and k-means read the first
    modality's backbone features, a kNN probe runs on each other modality's
    (``knn_probe_accuracy_<key>``), and cross-modal retrieval is scored on the test items:
    ``retrieval_top1_<a>_to_<b>`` is the fraction of a's projections whose nearest projection
    of modality b (``retrieval_metric``: cosine or euclidean) is the same item, and
    ``retrieval_top1`` their mean over the ordered pairs.
    """

    example_data: ClassVar[dict[str, Any]] = {"name": "digits", "limit": 64}

    example: ClassVar[dict[str, Any]] = {
        "p": {"name": "positive_pairs"},
        "q": {"name": "gaussian", "metric": "cosine", "temperature": 0.5},
        "backbone": {"name": "mlp", "dim": 8, "hidden": [16]},
        "batch_size": 16,
        "augment": "digits",
        "linear_probe": False,
    }

    def __init__(
        self,
        p: api.NeighborhoodDistribution,
        q: api.NeighborhoodDistribution,
        backbone: api.Featurizer,
        head: api.Featurizer | None = None,
        predictor: api.Featurizer | None = None,
        views: int = 2,
        augment: str | list[dict[str, Any]] | None = None,
        ema_momentum: float | None = None,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        mode: Literal["kl", "ce"] = "kl",
        normalize: bool = False,
        p_input: Literal["input", "view"] = "input",
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        exclude_holdout: bool = False,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        eval_batch_size: int = 512,
        eval_clusters: int | None = None,
        modalities: list[str] | None = None,
        retrieval_metric: Literal["cosine", "euclidean"] = "cosine",
    ) -> None:
        super().__init__()
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        if ema_momentum is not None:
            if not 0.0 <= ema_momentum < 1.0:
                raise ValueError(f"ema_momentum must lie in [0, 1), got {ema_momentum}")
            if views < 2:
                raise ValueError("an EMA teacher compares views with other views: set views >= 2")
        if not 0.0 < eval_holdout < 1.0:
            raise ValueError(f"eval_holdout must lie in (0, 1), got {eval_holdout}")
        if modalities is not None:
            _check_modalities(modalities, p, ema_momentum, predictor)
        if retrieval_metric not in ("cosine", "euclidean"):
            raise ValueError(f"retrieval_metric: cosine or euclidean, got {retrieval_metric!r}")
        self.p = p
        self.q = q
        self.backbone = backbone
        self.head = head
        self.predictor = predictor
        self.views = views
        self.augmenter = Augmenter(augment)
        self.ema_momentum = ema_momentum
        self.optimizer_factory = optimizer
        self.batch_size = batch_size
        self.mode = mode
        self.normalize = normalize
        self.p_input = p_input
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.eval_holdout = eval_holdout
        self.eval_seed = eval_seed
        self.exclude_holdout = exclude_holdout
        self.knn_k = knn_k
        self.linear_probe = linear_probe
        self.probe_max_iter = probe_max_iter
        self.eval_batch_size = eval_batch_size
        self.eval_clusters = eval_clusters
        self.modalities = None if modalities is None else [str(k) for k in modalities]
        self.retrieval_metric = retrieval_metric
        # one encoder per modality after the first: the architecture of backbone/head, fresh weights
        self.towers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "backbone": _fresh_copy(backbone),
                    "head": _fresh_copy(head) if head is not None else nn.Identity(),
                }
            )
            for _ in (self.modalities or [])[1:]
        )
        self.teacher: nn.ModuleDict | None = None
        self._train_data: Any = None
        # [max id + 1] bool, ids never trained on (exclude_holdout); not checkpointed
        self.register_buffer("_held_out", None, persistent=False)

    # -- setup ------------------------------------------------------------------------------

    def holdout_split(self, n: int) -> tuple[Tensor, Tensor]:
        """Positions ``(test, train)`` of the deterministic hold-out split of ``n`` items.

        Drawn with numpy's generator, so it is unrelated to the loop's torch-seeded batch order
        (with equal seeds a torch permutation would hold out exactly the first batches).
        """
        perm = torch.from_numpy(np.random.default_rng(self.eval_seed).permutation(n))
        n_test = max(1, int(round(self.eval_holdout * n)))
        return perm[:n_test], perm[n_test:]

    def setup(self, data: Any) -> None:
        self._train_data = data
        if self.exclude_holdout:
            ids = _tensors(data)["index"]
            test, _ = self.holdout_split(ids.shape[0])
            held = torch.zeros(int(ids.max()) + 1, dtype=torch.bool)
            held[ids[test]] = True
            self._held_out = held
        if self.image_shape is None:
            self.image_shape = image_shape_of(data)
        self.backbone.setup(data)
        x = getattr(data, "x", None)
        if x is not None:  # materialise lazy layers of the heads before the optimizer exists
            with torch.no_grad():
                was = self.training
                self.eval()
                self.project(self.images(x[:2]), student=True)
                if self.modalities is not None:
                    tensors = _tensors(data)
                    for m, key in enumerate(self.modalities[1:], start=1):
                        self.project_modality(self.images(tensors[key][:2]), m)
                self.train(was)
        if self.ema_momentum is not None and self.teacher is None:
            self.teacher = nn.ModuleDict(
                {
                    "backbone": copy.deepcopy(self.backbone),
                    "head": copy.deepcopy(self.head) if self.head is not None else nn.Identity(),
                }
            )
            self.teacher.requires_grad_(False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [
            w
            for name, w in self.named_parameters()
            if w.requires_grad and not name.startswith("teacher.")
        ]
        if self.optimizer_factory is None:
            return torch.optim.Adam(params, lr=1e-3)
        return self.optimizer_factory(params)

    # -- encoding ---------------------------------------------------------------------------

    def images(self, x: Tensor) -> Tensor:
        """Inputs as images ``[B, C, H, W]`` (flat rows reshaped with ``image_shape``)."""
        return image_batch(x, self.image_shape, "the contrastive learner")

    def make_views(self, images: Tensor) -> Tensor:
        """``[V·B, C, H, W]``: ``views`` independent augmentations of every image, view-major."""
        return torch.cat([self.augmenter(images) for _ in range(self.views)], dim=0)

    def project(self, views: Tensor, student: bool = True) -> Tensor:
        """Projections of views: student (backbone → head → predictor) or EMA teacher."""
        if not student:
            if self.teacher is None:
                raise RuntimeError("no EMA teacher: set ema_momentum (and call setup)")
            z = self.teacher["head"](self.teacher["backbone"](views))
            return F.normalize(z, dim=1) if self.normalize else z
        z = self.backbone(views)
        if self.head is not None:
            z = self.head(z)
        if self.predictor is not None:
            z = self.predictor(z)
        return F.normalize(z, dim=1) if self.normalize else z

    @property
    def input_keys(self) -> list[str]:
        """The batch keys of the modalities (``["x"]`` for one)."""
        return self.modalities or ["x"]

    def encode_modality(self, images: Tensor, m: int) -> Tensor:
        """Backbone features of modality ``m``'s images (its own encoder)."""
        if m == 0:
            return self.backbone(images)
        return self.towers[m - 1]["backbone"](images)

    def project_modality(self, views: Tensor, m: int) -> Tensor:
        """Projections of modality ``m``'s views: its backbone, then its head."""
        if m == 0:
            return self.project(views, student=True)
        z = self.towers[m - 1]["head"](self.encode_modality(views, m))
        return F.normalize(z, dim=1) if self.normalize else z

    @torch.no_grad()
    def update_teacher(self) -> None:
        """``θ_t ← m·θ_t + (1 − m)·θ_s`` for backbone and head; buffers copied from the student."""
        if self.teacher is None or self.ema_momentum is None:
            return
        ema_update(self.teacher["backbone"], self.backbone, self.ema_momentum)
        if self.head is not None:
            ema_update(self.teacher["head"], self.head, self.ema_momentum)

    # -- the loss ---------------------------------------------------------------------------

    def _context(self, batch: dict[str, Tensor], n_rows: int, n_cols: int | None) -> dict[str, Any]:
        """Ids, labels, side embedding and kNN table of ``n_rows`` (× ``n_cols``) view blocks."""
        idx = batch["index"]
        ctx: dict[str, Any] = {api.INDEX: idx.repeat(n_rows)}
        if "label" in batch:
            ctx[api.LABELS] = batch["label"].repeat(n_rows)
        if api.EMBEDDING in batch:
            ctx[api.EMBEDDING] = batch[api.EMBEDDING].repeat(n_rows, 1)
        if "neighbors" in batch:
            ctx[api.NEIGHBORS] = batch["neighbors"]
        if n_cols is not None:
            ctx[api.INDEX_COL] = idx.repeat(n_cols)
            if "label" in batch:
                ctx[api.LABELS_COL] = batch["label"].repeat(n_cols)
            if api.EMBEDDING in batch:
                ctx[api.EMBEDDING_COL] = batch[api.EMBEDDING].repeat(n_cols, 1)
        return ctx

    def _p_features(self, x: Tensor, views: Tensor, which: list[int]) -> Tensor:
        """p's input features for the views ``which``: raw inputs or augmented pixels."""
        b = x.shape[0]
        if self.p_input == "view":
            return torch.cat([views[v * b : (v + 1) * b] for v in which]).flatten(1)
        flat = x.flatten(1)
        flat = flat if flat.is_floating_point() else flat.float()
        return flat.repeat(len(which), 1)

    def _pair_loss(
        self,
        batch: dict[str, Tensor],
        x: Tensor,
        views: Tensor,
        z_rows: Tensor,
        z_cols: Tensor | None,
        rows: list[int],
        cols: list[int] | None,
    ) -> tuple[Tensor, Tensor]:
        base = self._context(batch, len(rows), None if cols is None else len(cols))
        q_ctx = dict(base, **{api.FEATURES: z_rows})
        if z_cols is not None:
            q_ctx[api.FEATURES_COL] = z_cols
        p_ctx = dict(base)
        if api.FEATURES in self.p.requires:
            p_ctx[api.FEATURES] = self._p_features(x, views, rows)
            if cols is not None:
                p_ctx[api.FEATURES_COL] = self._p_features(x, views, cols)
        with torch.no_grad():
            p = self.p(p_ctx)
        q = self.q(q_ctx)
        loss = icon_loss(p, q, direction="forward", mode=self.mode)
        with torch.no_grad():
            entropy = icon_loss(p, p, mode="ce")
        return loss, entropy

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self.teacher is not None and step > 0:
            self.update_teacher()
        if self._held_out is not None:  # hold-out items never enter training
            keep = ~self._held_out[batch["index"]]
            batch = {k: v[keep] if torch.is_tensor(v) else v for k, v in batch.items()}
            if batch["index"].shape[0] < 2:  # nothing to contrast: a zero step
                zero = sum(w.sum() for w in self.parameters() if w.requires_grad) * 0.0
                return {"loss": zero, "p_entropy": zero.detach()}
        if self.modalities is not None:
            return self._cross_modal_step(batch)
        x = batch["x"]
        views = self.make_views(self.images(x))
        z = self.project(views, student=True)
        all_views = list(range(self.views))
        b = x.shape[0]
        if self.teacher is None:
            loss, entropy = self._pair_loss(batch, x, views, z, None, all_views, None)
            return {"loss": loss, "p_entropy": entropy, **self._monitors(z, b)}
        with torch.no_grad():
            zt = self.project(views, student=False)
        losses, entropies = [], []
        for a in all_views:
            others = [v for v in all_views if v != a]
            z_cols = torch.cat([zt[v * b : (v + 1) * b] for v in others])
            loss_a, h_a = self._pair_loss(
                batch, x, views, z[a * b : (a + 1) * b], z_cols, [a], others
            )
            losses.append(loss_a)
            entropies.append(h_a)
        return {
            "loss": torch.stack(losses).mean(),
            "p_entropy": torch.stack(entropies).mean(),
            **self._monitors(z, b),
        }

    @torch.no_grad()
    def _monitors(self, z: Tensor, b: int) -> dict[str, Tensor]:
        """Alignment, uniformity, normalised std and effective rank of the first two views'
        projections (`fw.lib.monitors`), logged with the loss; none with one view."""
        if self.views < 2 or b < 2:
            return {}
        values, _ = monitors.collapse_report(z[:b], z[b : 2 * b])
        return {k: torch.tensor(v) for k, v in values.items()}

    def _cross_modal_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mean over modalities a of I-Con(a's views × every other modality's views)."""
        keys = self.input_keys
        zs = [
            self.project_modality(self.make_views(self.images(batch[key])), m)
            for m, key in enumerate(keys)
        ]
        losses, entropies = [], []
        for a in range(len(keys)):
            others = [zs[c] for c in range(len(keys)) if c != a]
            base = self._context(batch, self.views, self.views * len(others))
            q_ctx = dict(base, **{api.FEATURES: zs[a], api.FEATURES_COL: torch.cat(others)})
            with torch.no_grad():
                p = self.p(base)
            q = self.q(q_ctx)
            losses.append(icon_loss(p, q, direction="forward", mode=self.mode))
            with torch.no_grad():
                entropies.append(icon_loss(p, p, mode="ce"))
        return {"loss": torch.stack(losses).mean(), "p_entropy": torch.stack(entropies).mean()}

    # -- inference and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        """Backbone (penultimate) features of un-augmented inputs (the first modality's)."""
        return self.backbone(self.images(batch[self.input_keys[0]]))

    @torch.no_grad()
    def embed(
        self, data: Any, modality: int = 0, project: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Features ``[N, dim]`` of a dataset (eval mode, batched) and its labels.

        Backbone features of modality ``modality``'s inputs, or with ``project`` its
        projections (what q compares).
        """
        tensors = _tensors(data)
        x = tensors[self.input_keys[modality]]
        was = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device
        feats = []
        for start in range(0, x.shape[0], self.eval_batch_size):
            chunk = self.images(x[start : start + self.eval_batch_size].to(device))
            if project:
                out = self.project_modality(chunk, modality)
            else:
                out = self.encode_modality(chunk, modality)
            feats.append(out.float().cpu())
        self.train(was)
        return torch.cat(feats), tensors.get("label")

    @torch.no_grad()
    def classify(self, feats: Tensor) -> Tensor:
        """Argmax of q over its columns (the classes, for a data-label p) from backbone features."""
        was = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device
        preds = []
        for start in range(0, feats.shape[0], self.eval_batch_size):
            z = feats[start : start + self.eval_batch_size].to(device)
            if self.head is not None:
                z = self.head(z)
            if self.predictor is not None:
                z = self.predictor(z)
            if self.normalize:
                z = F.normalize(z, dim=1)
            q = self.q({api.FEATURES: z})
            preds.append(q.log_prob.argmax(dim=1).cpu())
        self.train(was)
        return torch.cat(preds)

    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        return evaluation.evaluate(self, data)


def _tensors(data: Any) -> dict[str, Tensor]:
    if hasattr(data, "full_batch"):
        return data.full_batch()
    return collate_batched([data[i] for i in range(len(data))])


def _fresh_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its layers re-initialised (lazy layers stay lazy)."""
    twin = copy.deepcopy(module)
    for sub in twin.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return twin


def _check_modalities(
    modalities: list[str],
    p: api.NeighborhoodDistribution,
    ema_momentum: float | None,
    predictor: api.Featurizer | None,
) -> None:
    """User errors of the cross-modal mode, before anything is built."""
    if len(modalities) < 2 or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must name two or more distinct batch keys, got {modalities}")
    if ema_momentum is not None or predictor is not None:
        raise ValueError("modalities: an EMA teacher or a predictor is not supported across them")
    if api.FEATURES in p.requires:
        raise ValueError(
            f"modalities: p ({type(p).__name__}) reads input features, which differ per "
            "modality; use a p of ids, labels or side embeddings (e.g. cross_modal)"
        )
