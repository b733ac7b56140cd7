"""The ``stego`` learner: a segmentation head on a frozen dense featurizer, trained with the
correlation loss over self, KNN and random image pairs, with online cluster and linear probes
(Hamilton, PhD thesis, §4.5-§4.6, App. B)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw import api
from fw.api import OptimizerFactory
from fw.data import collate_batched
from fw.errors import DataError, ShapeError, check_choice
from fw.files import load
from fw.lib.features import spherical_kmeans
from fw.lib.icon import icon_loss
from fw_stego.crf import CrfMethod, dense_crf
from fw_stego.head import ClusterProbe, LinearProbe, SegmentationHead
from fw_stego.knn import global_descriptors, mine_knns, sample_partners
from fw_stego.loss import CorrelationLoss, PairWeights, ScMode, correspondence, sample_grid
from fw_stego.picture import save_picture
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def batches(data: Any, batch_size: int, limit: int | None = None) -> Iterator[dict[str, Tensor]]:
    """Consecutive batches of a map-style dataset of dict items (in dataset order)."""
    n = len(data) if limit is None else min(limit, len(data))
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        if hasattr(data, "__getitems__"):
            yield collate_batched(data.__getitems__(idx))
        else:
            yield collate_batched([data[i] for i in idx])


def as_images(x: Tensor) -> Tensor:
    """Inputs as float images ``[B, C, H, W]`` in [0, 1] (uint8 scaled)."""
    if x.dim() != 4:
        raise ShapeError(f"STEGO needs image batches [B, C, H, W], got {tuple(x.shape)}")
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


class StegoLearner(api.Learner):
    """STEGO on a frozen dense ``backbone`` (Hamilton et al., ICLR 2022).

    Training (thesis Eq. 4.5, sampled as upstream): each image pairs with itself, with a partner
    drawn uniformly from ranks 1..``num_neighbors`` of its KNN list (mined once in ``setup``
    over the training set with faiss on GAP descriptors, top ``knn_store`` kept), and with
    ``neg_samples`` derangements of the batch; ``feature_samples²`` positions are sampled per
    image. F uses the channel-dropped backbone features (its own Dropout2d mask), the head
    draws one mask per branch. The cluster probe (cosine k-means, ``n_classes +
    extra_clusters`` centroids) and the linear probe train on detached codes with their own
    optimizer (``probe_optimizer``, Adam 5e-3 by default; the head's ``optimizer`` defaults to
    Adam 5e-4), all stepped every step. The linear probe reads ``label`` (ignored outside
    ``[0, n_classes)``).

    ``objective: icon`` is the gap-filling I-Con form (not STEGO's loss): per source position,
    ``p(j|i) ∝ exp(F_ij/icon_tau_p)`` and ``q(j|i) ∝ exp(S_ij/icon_tau_q)`` over the sampled
    positions of the image itself (without i), its KNN partner and its random partners, and
    the loss is ``KL(p || q)``; λ, b, clamp and centring are unused.

    ``knn_file`` saves the mined table (``.pt``) and reuses it on the next run over the same
    training set and backbone (mining reads every training crop once). ``probe_label_size``
    trains the online linear probe on labels nearest-subsampled to that size (the reference
    upsamples logits to the full label size, which dominates a CPU step); evaluation always
    scores at full label resolution. ``cache_features`` computes the frozen backbone's maps of
    the whole training set once (fast for small sets; the loop's ``index`` must be the dataset
    position). Evaluation runs
    the head at the backbone's resolution, optionally averages with the flipped image
    (``flip_tta``), upsamples codes bilinearly to the label size, applies both probes
    (``cluster_eval: kmeans`` instead fits cosine k-means on training codes, see
    docs/benchmarks.md), optionally a dense CRF, and scores one confusion matrix over the whole set
    (Hungarian for clusters, identity for the linear probe). ``band_size`` adds boundary-band
    and interior scores under the same matching. Every run writes ``stego.png``.
    """

    headline = ("cluster_miou", "cluster_accuracy", "linear_miou", "linear_accuracy")
    example_data: ClassVar[dict[str, Any]] = {"name": "texmosaic12", "n": 8, "progress": False}
    example: ClassVar[dict[str, Any]] = {
        "backbone": {"name": "mobilenet_v2_tap", "tap": "s8", "weights": None},
        "n_classes": 3,
        "feature_samples": 3,
        "neg_samples": 1,
        "batch_size": 2,
    }

    def __init__(
        self,
        backbone: api.Featurizer,
        n_classes: int = 27,
        dim: int = 70,
        dropout: float = 0.1,
        nonlinear: bool = True,
        self_weight: float = 0.1,
        self_shift: float = 0.12,
        knn_weight: float = 1.0,
        knn_shift: float = 0.2,
        rand_weight: float = 0.15,
        rand_shift: float = 1.0,
        sc_mode: ScMode = "reference",
        zero_clamp: bool = True,
        feature_samples: int = 11,
        neg_samples: int = 5,
        num_neighbors: int = 7,
        knn_store: int = 30,
        extra_clusters: int = 0,
        objective: Literal["correlation", "icon"] = "correlation",
        icon_tau_p: float = 0.1,
        icon_tau_q: float = 0.1,
        input_norm: Literal["none", "imagenet"] = "none",
        optimizer: OptimizerFactory | None = None,
        probe_optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 16,
        cache_features: bool = False,
        feature_batch_size: int = 32,
        cluster_eval: Literal["probe", "kmeans"] = "probe",
        kmeans_seed: int = 0,
        flip_tta: bool = False,
        crf: CrfMethod | None = None,
        band_size: int | None = None,
        eval_batch_size: int = 16,
        eval_limit: int | None = None,
        picture_images: int = 4,
        probe_label_size: int | None = None,
        knn_file: str | None = None,
    ) -> None:
        super().__init__()
        check_choice(objective, ("correlation", "icon"), "objective")
        check_choice(input_norm, ("none", "imagenet"), "input_norm")
        check_choice(cluster_eval, ("probe", "kmeans"), "cluster_eval")
        if not getattr(backbone, "dense", False):
            raise ShapeError(
                "STEGO needs a dense backbone (feature maps [B, C, h, w]): set the featurizer's "
                "output: dense"
            )
        if any(p.requires_grad for p in backbone.parameters()):
            raise ShapeError("STEGO trains on a frozen backbone: set the featurizer's frozen: true")
        self.backbone = backbone
        self.n_classes = int(n_classes)
        self.head = SegmentationHead(backbone.dim, dim, dropout, nonlinear)
        self.feat_dropout = nn.Dropout2d(dropout)
        self.cluster_probe = ClusterProbe(dim, n_classes + extra_clusters)
        self.linear_probe = LinearProbe(dim, n_classes)
        self.loss_fn = CorrelationLoss(
            PairWeights(self_weight, self_shift),
            PairWeights(knn_weight, knn_shift),
            PairWeights(rand_weight, rand_shift),
            sc_mode,
            zero_clamp,
            feature_samples,
            neg_samples,
        )
        self.objective = objective
        self.icon_tau_p, self.icon_tau_q = icon_tau_p, icon_tau_q
        self.input_norm = input_norm
        self.optimizer_factory = optimizer
        self.probe_optimizer_factory = probe_optimizer
        self.batch_size = batch_size
        self.num_neighbors, self.knn_store = num_neighbors, knn_store
        self.cache_features = cache_features
        self.feature_batch_size = feature_batch_size
        self.cluster_eval, self.kmeans_seed = cluster_eval, kmeans_seed
        self.flip_tta, self.crf, self.band_size = flip_tta, crf, band_size
        self.eval_batch_size, self.eval_limit = eval_batch_size, eval_limit
        self.picture_images = picture_images
        self.probe_label_size = probe_label_size
        self.knn_file = knn_file
        self.register_buffer("knns", torch.zeros(0, knn_store, dtype=torch.long))
        self._train_data: Any = None
        self._cache: Tensor | None = None
        self._centroids: Tensor | None = None

    # -- features ---------------------------------------------------------------------------

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Frozen backbone maps ``[B, C, h, w]`` of images in [0, 1] (backbone in eval mode)."""
        x = as_images(x)
        if self.input_norm == "imagenet":
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            x = (x - mean) / x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.backbone.eval()
        out = self.backbone(x)
        if out.dim() != 4:
            raise ShapeError(f"the backbone returned {tuple(out.shape)}, not maps [B, C, h, w]")
        return out.float()

    def _param_device(self) -> torch.device:
        return self.linear_probe.conv.weight.device

    def setup(self, data: Any) -> None:
        """Mine the training set's KNNs (and cache its maps when ``cache_features``)."""
        from tqdm.auto import tqdm

        self._train_data = data
        if len(data) < 2:
            raise DataError("STEGO needs at least two training images")
        if self._cache is not None and self._cache.shape[0] == len(data):
            return  # maps given with `use_maps`
        if self.knn_file and not self.cache_features and Path(self.knn_file).is_file():
            saved = load(self.knn_file, "Delete it to mine the KNNs again")  # tensors only
            if not isinstance(saved, dict) or "knns" not in saved:
                raise DataError(f"knn_file {self.knn_file} was not written by STEGO; delete it")
            if saved.get("items") != len(data) or saved.get("backbone") != self._backbone_id():
                raise DataError(
                    f"knn_file {self.knn_file} was mined for {saved.get('items')} items with "
                    f"{saved.get('backbone')!r}; delete it to mine this training set again"
                )
            self.knns = saved["knns"][:, : self.knn_store].to(self._param_device())
            return
        maps, descriptors = [], []
        total = -(-len(data) // self.feature_batch_size)
        for batch in tqdm(
            batches(data, self.feature_batch_size), total=total, desc="STEGO: features for KNNs"
        ):
            f = self.features(batch["x"].to(self._param_device()))
            descriptors.append(global_descriptors(f).cpu())
            if self.cache_features:
                maps.append(f.half().cpu())
        self.knns = mine_knns(torch.cat(descriptors), self.knn_store).to(self._param_device())
        self._cache = torch.cat(maps) if self.cache_features else None
        if self.knn_file:
            Path(self.knn_file).parent.mkdir(parents=True, exist_ok=True)
            record = {"knns": self.knns.cpu(), "items": len(data), "backbone": self._backbone_id()}
            torch.save(record, self.knn_file)

    def _backbone_id(self) -> str:
        """What identifies the backbone's features (a KNN table is only valid for them)."""
        bb = self.backbone
        if hasattr(bb, "fingerprint"):
            return json.dumps(bb.fingerprint(), sort_keys=True)
        parts = (type(bb).__name__, getattr(bb, "tap", ""), getattr(bb, "weights_id", None))
        return ":".join(str(p) for p in (*parts, bb.dim, self.input_norm))

    def use_maps(self, data: Any, maps: Tensor) -> None:
        """Train on precomputed backbone maps ``[N, C, h, w]`` of ``data`` (mines the KNNs)."""
        if maps.shape[0] != len(data) or maps.shape[1] != self.backbone.dim:
            raise ShapeError(
                f"maps {tuple(maps.shape)} do not fit {len(data)} items of {self.backbone.dim} "
                "channels"
            )
        self._train_data = data
        self._cache = maps.half().cpu()
        self.knns = mine_knns(global_descriptors(maps), self.knn_store).to(self._param_device())

    def _train_maps(self, positions: Tensor) -> Tensor:
        if self._cache is not None:
            return self._cache[positions.cpu()].to(self._param_device()).float()
        items = [self._train_data[int(i)]["x"] for i in positions]
        return self.features(
            torch.stack([torch.as_tensor(x) for x in items]).to(self._param_device())
        )

    # -- training ---------------------------------------------------------------------------

    def configure_optimizers(self) -> api.Optimization:
        def make(factory: Any, module: nn.Module, lr: float) -> torch.optim.Optimizer:
            params = list(module.parameters())
            return factory(params) if factory is not None else torch.optim.Adam(params, lr=lr)

        return api.Optimization(
            [
                make(self.optimizer_factory, self.head, 5e-4),
                make(self.probe_optimizer_factory, self.cluster_probe, 5e-3),
                make(self.probe_optimizer_factory, self.linear_probe, 5e-3),
            ]
        )

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self.knns.shape[0] == 0:
            raise DataError("STEGO's KNN table is empty: setup(data) must run before training")
        index = batch["index"].long()
        feats = self._train_maps(index) if self._cache is not None else self.features(batch["x"])
        partners = sample_partners(self.knns.cpu(), index, self.num_neighbors)
        feats_knn = self._train_maps(partners)
        code, code_knn = self.head(feats), self.head(feats_knn)
        # F sees channel-dropped features too, with a mask of its own (as the reference code does)
        f_src, f_knn = self.feat_dropout(feats), self.feat_dropout(feats_knn)
        if self.objective == "correlation":
            out = self.loss_fn(f_src, code, f_knn, code_knn)
        else:
            out = self.icon_objective(f_src, code, f_knn, code_knn)
        detached = code.detach()
        cluster_loss = self.cluster_probe.loss(detached)
        out["loss_stego"] = out["loss"].detach()
        out["cluster_loss"] = cluster_loss.detach()
        total = out["loss"] + cluster_loss
        if "label" in batch:
            label = batch["label"]
            if self.probe_label_size and max(label.shape[-2:]) > self.probe_label_size:
                # a cheaper online probe: nearest-subsampled labels (evaluation is unaffected)
                size = (self.probe_label_size, self.probe_label_size)
                label = F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0]
            linear_loss = self.linear_probe.loss(detached, label)
            out["linear_loss"] = linear_loss.detach()
            total = total + linear_loss
        out["loss"] = total  # probes see detached codes: their losses cannot move the head
        return out

    def icon_objective(
        self, feats: Tensor, code: Tensor, feats_knn: Tensor, code_knn: Tensor
    ) -> dict[str, Tensor]:
        """I-Con over sampled positions: KL(softmax(F/τp) || softmax(S/τq)) per source position."""
        batch = feats.shape[0]
        coords1, coords2, perms = self.loss_fn.draw(batch, device=feats.device)
        f_src, c_src = sample_grid(feats, coords1), sample_grid(code, coords1)
        targets = [
            (f_src, c_src),
            (sample_grid(feats_knn, coords2), sample_grid(code_knn, coords2)),
        ]
        targets += [(sample_grid(feats[p], coords2), sample_grid(code[p], coords2)) for p in perms]
        n = self.loss_fn.samples**2
        with torch.no_grad():
            fd = torch.cat([correspondence(f_src, f).reshape(batch, n, n) for f, _ in targets], 2)
        cd = torch.cat([correspondence(c_src, c).reshape(batch, n, n) for _, c in targets], 2)
        mask = torch.ones(n, fd.shape[-1], dtype=torch.bool, device=fd.device)
        mask[:, :n] &= ~torch.eye(n, dtype=torch.bool, device=fd.device)  # not i itself
        p = api.Neighborhood.from_logits(fd / self.icon_tau_p, mask)
        q = api.Neighborhood.from_logits(cd / self.icon_tau_q, mask)
        return {"loss": icon_loss(p, q), "cd_self": cd[..., :n].mean().detach()}

    # -- inference and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def codes(self, x: Tensor) -> Tensor:
        """Codes ``[B, dim, h, w]`` at the backbone's resolution (flip-averaged if flip_tta)."""
        was = self.training
        self.eval()
        x = as_images(x).to(self._param_device())
        code = self.head(self.features(x))
        if self.flip_tta:
            code = (code + self.head(self.features(x.flip(-1))).flip(-1)) / 2
        self.train(was)
        return code

    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        return self.codes(batch["x"])

    @torch.no_grad()
    def fit_kmeans(self, data: Any, max_points: int = 100_000) -> Tensor:
        """Cosine k-means centroids ``[K, dim]`` of training codes (faiss)."""
        vecs = []
        for batch in batches(data, self.eval_batch_size):
            c = self.codes(batch["x"])
            vecs.append(F.normalize(c, dim=1).permute(0, 2, 3, 1).reshape(-1, c.shape[1]).cpu())
        x = torch.cat(vecs).numpy()
        rng = np.random.default_rng(self.kmeans_seed)
        if x.shape[0] > max_points:
            x = x[rng.choice(x.shape[0], max_points, replace=False)]
        return spherical_kmeans(x, self.cluster_probe.clusters.shape[0], self.kmeans_seed)

    @torch.no_grad()
    def predict(self, x: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Cluster ids and linear-probe classes ``[B, *size]`` of images in [0, 1]."""
        code = F.interpolate(self.codes(x), size=size, mode="bilinear")
        if self._centroids is not None:
            z = F.normalize(code, dim=1)
            c = F.normalize(self._centroids.to(code.device), dim=1)
            cluster_lp = torch.log_softmax(2 * torch.einsum("bchw,kc->bkhw", z, c), dim=1)
        else:
            cluster_lp = self.cluster_probe.log_probs(code, alpha=2.0)
        linear_lp = torch.log_softmax(self.linear_probe(code), dim=1)
        if self.crf is None:
            return cluster_lp.argmax(1), linear_lp.argmax(1)
        images = F.interpolate(as_images(x), size=size, mode="bilinear").cpu()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        crf = self.crf
        out = []
        for lps in (cluster_lp, linear_lp):
            preds = [
                dense_crf(im, lp.cpu(), crf).argmax(0) for im, lp in zip(images, lps, strict=True)
            ]
            out.append(torch.stack(preds))
        return out[0], out[1]

    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        self._centroids = None
        if self.cluster_eval == "kmeans":
            if self._train_data is None:
                raise DataError("cluster_eval: kmeans needs the training data (run setup first)")
            self._centroids = self.fit_kmeans(self._train_data)
        k = self.cluster_probe.clusters.shape[0]
        parts = ("all", "band", "interior") if self.band_size else ("all",)
        conf = {
            (probe, part): Confusion(self.n_classes, k if probe == "cluster" else None)
            for probe in ("cluster", "linear")
            for part in parts
        }
        shown: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        n = len(data) if self.eval_limit is None else min(self.eval_limit, len(data))
        for batch in tqdm(
            batches(data, self.eval_batch_size, n),
            total=-(-n // self.eval_batch_size),
            desc="STEGO: evaluation",
        ):
            if "label" not in batch:
                raise DataError("STEGO evaluation needs dense 'label' maps in the eval data")
            label = batch["label"].long()
            cluster, linear = (p.cpu() for p in self.predict(batch["x"], label.shape[-2:]))
            band = boundary_band(label, self.band_size) if self.band_size else None
            for probe, pred in (("cluster", cluster), ("linear", linear)):
                conf[probe, "all"].update(label, pred)
                if band is not None:
                    conf[probe, "band"].update(label, pred, band)
                    conf[probe, "interior"].update(label, pred, ~band)
            for i in range(min(self.picture_images - len(shown), label.shape[0])):
                shown.append((as_images(batch["x"][i : i + 1])[0], label[i], cluster[i], linear[i]))
        assignment = hungarian_assignment(conf["cluster", "all"].counts)
        metrics: dict[str, float] = {}
        for (probe, part), c in conf.items():
            got = scores(c.counts, assignment if probe == "cluster" else None)
            suffix = "" if part == "all" else f"_{part}"
            metrics[f"{probe}_miou{suffix}"] = got["miou"]
            metrics[f"{probe}_accuracy{suffix}"] = got["accuracy"]
        metrics["flip_tta"] = float(self.flip_tta)
        metrics["crf"] = float(self.crf is not None)
        if run_dir is not None and shown:
            classes = getattr(data, "classes", None)
            save_picture(shown, assignment, self.n_classes, Path(run_dir) / "stego.png", classes)
        return metrics
