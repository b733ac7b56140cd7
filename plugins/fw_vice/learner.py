"""The ``vice`` learner: a CNN + FPN trained end to end by contrasting cluster assignments of
superpixel regions across views (Karlsson et al., "ViCE", §3, App. A, Alg. 1-3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fw import api
from fw.api import OptimizerFactory
from fw.errors import DataError, ShapeError
from fw.lib.features import spherical_kmeans
from fw.lib.metrics import majority_assignment
from fw.lib.prototypes import PrototypeLayer
from fw.lib.schedules import warmup_cosine
from fw_common.augment import ColorJitter, GaussianBlur, Grayscale
from fw_stego.learner import batches
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores
from fw_vice.loss import swapped_prediction_loss
from fw_vice.model import Arch, FPNEncoder
from fw_vice.optim import LARS
from fw_vice.picture import save_picture
from fw_vice.superpixels import RegionMode, superpixels
from fw_vice.views import ViewConfig, generate_views, keep_mutual, nearest_index, region_means


def as_images(x: Tensor) -> Tensor:
    """Inputs as float RGB images ``[B, 3, H, W]`` in [0, 1] (uint8 scaled, grey repeated)."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ShapeError(f"ViCE needs image batches [B, 1|3, H, W], got {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def pixel_probe(x: Tensor, y: Tensor, n_classes: int, steps: int, seed: int) -> torch.nn.Linear:
    """Multinomial logistic regression on pixel embeddings (the 1×1 convolution, §4); pixels
    labelled outside ``[0, n_classes)`` are left out. Adam 1e-2 for ``steps`` full-batch steps."""
    keep = (y >= 0) & (y < n_classes)
    x, y = x[keep], y[keep]
    with torch.enable_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        probe = torch.nn.Linear(x.shape[1], n_classes)
        opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(probe(x), y).backward()
            opt.step()
    return probe.eval()


class ViceLearner(api.Learner):
    """ViCE (Karlsson et al.): dense visual concept embeddings by swapped prediction over regions.

    Training (Alg. 1-3): every image is cut into ``region_mode`` regions (SLIC superpixels of
    average side ``region_size`` px, or a grid; kept per dataset index with ``cache_regions``),
    gives ``views`` views (`fw_vice.views`:
    centre from the blurred Canny map, β ∈ ``beta``, region masking up to ``max_mask``, only
    regions common to all views kept, flip), then colour distortion (SwAV's: jitter 0.8/0.8/
    0.8/0.2 with p 0.8, grey p 0.2) and Gaussian blur (p 0.5). The FPN network
    (`fw_vice.model.FPNEncoder`) maps views to unit ``dim``-d embeddings at view resolution;
    each region's mean embedding is scored against ``concepts`` unit concept vectors (Eq. 2,
    `fw.lib.prototypes.PrototypeLayer`, renormalised every step and frozen for the first
    ``freeze_concepts_steps``); Sinkhorn–Knopp equipartitions the primary view's scores
    together with a FIFO queue of ``queue_length`` past primary scores (used once full and from
    ``queue_start_step``), and the other views predict those codes (Eq. 3, τ = ``temperature``).
    Optimizer: ``optimizer`` (default LARS, lr 0.04, weight decay 1e-6, §4) under linear
    warm-up over ``warmup_steps`` and cosine decay to 0 at ``schedule_steps``.

    Evaluation (§4), every number labelled by its protocol: cosine k-means (faiss, seed
    ``kmeans_seed``) on embeddings of ``fit_pixels`` random pixels of each of the first
    ``fit_images`` training images, then over all ``eval_data`` pixels one confusion matrix per
    K: ``hungarian_*`` = K = ``n_classes`` with one-to-one Hungarian matching (STEGO's
    protocol); ``greedy_c<K>_*`` = K clusters, each mapped to its majority class (ViCE's "★"
    protocol) for K = ``n_classes`` and every K of ``overclusters`` (``greedy_*`` repeats the
    first); ``concepts_greedy_*`` = argmax concept per pixel, greedy; ``linear_*`` = a linear
    classifier (the paper's 1×1 convolution) fitted on the same training pixels with their
    labels. ``band_size`` adds boundary band / interior scores. Writes ``vice.png``.
    """

    headline = ("hungarian_miou", "greedy_miou", "linear_miou", "hungarian_accuracy")
    example_data: ClassVar[dict[str, Any]] = {"name": "texmosaic12", "n": 4, "progress": False}
    example: ClassVar[dict[str, Any]] = {
        "arch": "mobilenet_v2",
        "weights": None,
        "n_classes": 12,
        "dim": 16,
        "concepts": 8,
        "fpn_dim": 16,
        "views": 2,
        "view_size": 64,
        "batch_size": 2,
        "overclusters": [16],
        "fit_images": 2,
        "fit_pixels": 64,
        "eval_limit": 2,
    }

    def __init__(
        self,
        arch: Arch = "resnet18",
        weights: Literal["imagenet"] | None = "imagenet",
        n_classes: int = 27,
        dim: int = 128,
        concepts: int = 128,
        fpn_dim: int = 128,
        region_mode: RegionMode = "slic",
        region_size: int = 20,
        compactness: float = 10.0,
        cache_regions: bool = True,
        views: int = 5,
        view_size: int = 256,
        beta: tuple[float, float] = (0.5, 2.0),
        max_mask: float = 0.25,
        train_stride: int = 1,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 5000,
        queue_start_step: int = 0,
        freeze_concepts_steps: int = 0,
        optimizer: OptimizerFactory | None = None,
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        batch_size: int | None = 4,
        overclusters: list[int] = (128, 256),  # type: ignore[assignment]
        kmeans_seed: int = 0,
        fit_images: int | None = None,
        fit_pixels: int = 500,
        probe_steps: int = 300,
        band_size: int | None = None,
        eval_batch_size: int = 8,
        eval_limit: int | None = None,
        picture_images: int = 4,
    ) -> None:
        super().__init__()
        if n_classes < 1 or concepts < 1 or dim < 1:
            raise ValueError("n_classes, concepts and dim must be >= 1")
        if temperature <= 0 or queue_length < 0 or schedule_steps < 1 or warmup_steps < 0:
            raise ValueError(
                "need temperature > 0, queue_length >= 0, schedule_steps >= 1, warmup_steps >= 0"
            )
        if any(int(k) < 1 for k in overclusters):
            raise ValueError(f"overclusters must be >= 1, got {list(overclusters)}")
        self.encoder = FPNEncoder(arch, weights, dim, fpn_dim)
        self.concepts = PrototypeLayer(dim, concepts, weight_norm=False)
        self.view_config = ViewConfig(
            views=views, size=view_size, beta=tuple(beta), max_mask=max_mask
        )
        self.n_classes = int(n_classes)
        if train_stride < 1 or view_size // train_stride < 1:
            raise ValueError(f"train_stride must be in [1, view_size], got {train_stride}")
        self.train_stride = train_stride
        self.region_mode, self.region_size, self.compactness = region_mode, region_size, compactness
        self.cache_regions = cache_regions
        superpixels(np.zeros((4, 4, 3)), region_mode, region_size)  # checks the mode early
        self.temperature, self.epsilon = temperature, epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.queue_length, self.queue_start_step = queue_length, queue_start_step
        self.freeze_concepts_steps = freeze_concepts_steps
        self.optimizer_factory = optimizer
        self.warmup_steps, self.schedule_steps = warmup_steps, schedule_steps
        self.batch_size = batch_size
        self.overclusters = [int(k) for k in overclusters]
        self.kmeans_seed, self.fit_images, self.fit_pixels = kmeans_seed, fit_images, fit_pixels
        self.probe_steps = probe_steps
        self.band_size, self.eval_batch_size, self.eval_limit = (
            band_size,
            eval_batch_size,
            eval_limit,
        )
        self.picture_images = picture_images
        self.appearance = [
            ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8),
            Grayscale(p=0.2),
            GaussianBlur(sigma=[0.1, 2.0], p=0.5),
        ]
        self.register_buffer("queue", torch.zeros(queue_length, concepts))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self._train_data: Any = None
        self._regions: dict[int, np.ndarray] = {}

    def _param_device(self) -> torch.device:
        return self.concepts.weight.device

    # -- training ---------------------------------------------------------------------------

    def setup(self, data: Any) -> None:
        """Remember the training data (evaluation fits its clusters and probe on it)."""
        self._train_data = data

    def configure_optimizers(self) -> api.Optimization:
        params = [p for p in self.parameters() if p.requires_grad]
        opt = self.optimizer_factory(params) if self.optimizer_factory else LARS(params)
        # linear warm-up, then cosine decay to 0 at schedule_steps (ViCE §4, SGDR)
        factor = warmup_cosine(self.warmup_steps, self.schedule_steps)
        return api.Optimization([opt], [torch.optim.lr_scheduler.LambdaLR(opt, factor)])

    def regions_of(self, image: Tensor, index: int | None) -> np.ndarray:
        """Region ids ``[H, W]`` of one image ``[3, H, W]`` (cached by dataset index)."""
        if index is not None and index in self._regions:
            return self._regions[index]
        arr = image.permute(1, 2, 0).cpu().numpy()
        regions = superpixels(arr, self.region_mode, self.region_size, self.compactness)
        if index is not None and self.cache_regions:
            small = np.int16 if regions.max() < 2**15 else np.int32
            self._regions[index] = regions.astype(small)
        return regions

    def make_views(self, x: Tensor, index: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Views ``[N·M, 3, s, s]`` (image-major), batch-wide region ids ``[N, M, s, s]`` and the
        image of every region ``[R]``."""
        images = as_images(x).cpu()
        seed = int(torch.randint(0, 2**62, ()))  # follows the loop's seeded torch generator
        rng = np.random.default_rng(seed)
        all_views, all_maps, owners, offset = [], [], [], 0
        for n in range(images.shape[0]):
            idx = None if index is None else int(index[n])
            v = generate_views(
                images[n], self.regions_of(images[n], idx).astype(np.int64), self.view_config, rng
            )
            all_views.append(v.images)
            all_maps.append(torch.where(v.regions >= 0, v.regions + offset, -1))
            owners.append(torch.full((v.count,), n, dtype=torch.long))
            offset += v.count
        views = torch.cat(all_views)
        for op in self.appearance:
            views = op(views)
        return views, torch.stack(all_maps), torch.cat(owners)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        views, maps, image_of = self.make_views(batch["x"], batch.get("index"))
        device = self._param_device()
        self.concepts.normalize_()
        self.concepts.frozen = step < self.freeze_concepts_steps
        n, m = maps.shape[:2]
        side = maps.shape[-1]
        if self.train_stride > 1:  # embeddings and region ids on a coarser grid (CPU time)
            size = side // self.train_stride
            index = torch.from_numpy(nearest_index(side, size))
            maps = maps[:, :, index][:, :, :, index]
            maps, image_of = keep_mutual(maps, image_of)
        z = self.encoder(views.to(device), tuple(maps.shape[-2:]))
        z = z.view(n, m, *z.shape[1:])
        r = int(image_of.numel())
        if r == 0:  # no region survived in any image: nothing to learn from this batch
            return {"loss": z.sum() * 0.0, "regions": torch.zeros(())}
        maps = maps.to(device)
        means = torch.stack([region_means(z[:, v], maps[:, v], r) for v in range(m)])
        s = self.concepts(means.reshape(m * r, -1)).view(m, r, -1)
        use_queue = (
            self.queue_length > 0
            and step >= self.queue_start_step
            and int(self.queue_filled) >= self.queue_length
        )
        loss = swapped_prediction_loss(
            s[0], s[1:], image_of.to(device), self.temperature, self.epsilon,
            self.sinkhorn_iterations, self.queue if use_queue else None,
        )  # fmt: skip
        if self.queue_length > 0 and step >= self.queue_start_step:
            with torch.no_grad():
                new = s[0].detach()[: self.queue_length]
                self.queue.copy_(torch.cat([new, self.queue[: self.queue_length - len(new)]]))
                self.queue_filled.add_(len(new))
        return {"loss": loss, "regions": torch.tensor(float(r) / n)}

    # -- inference --------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Unit embeddings ``[B, dim, *size]`` of images (eval mode; default: input size)."""
        was = self.training
        self.eval()
        z = self.encoder(as_images(x).to(self._param_device()), size)
        self.train(was)
        return z

    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        return self.embed(batch["x"])

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Cluster prediction per pixel: the argmax concept ``[B, H, W]``."""
        z = self.embed(x)
        w = F.normalize(self.concepts.weight, dim=1)
        return torch.einsum("bdhw,kd->bkhw", z, w).argmax(1)

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def fit_pixels_of(self, data: Any) -> tuple[Tensor, Tensor | None]:
        """Embeddings ``[P, dim]`` (and labels ``[P]`` when the data has them) of random pixels
        of the first ``fit_images`` training images (``fit_pixels`` each, seed ``kmeans_seed``)."""
        g = torch.Generator().manual_seed(self.kmeans_seed)
        vecs, labs = [], []
        for batch in batches(data, self.eval_batch_size, self.fit_images):
            z = self.embed(batch["x"]).cpu()
            b, d, h, w = z.shape
            pick = torch.stack(
                [torch.randperm(h * w, generator=g)[: self.fit_pixels] for _ in range(b)]
            )
            flat = z.permute(0, 2, 3, 1).reshape(b, h * w, d)
            vecs.append(torch.gather(flat, 1, pick[..., None].expand(-1, -1, d)).reshape(-1, d))
            if "label" in batch:
                lab = batch["label"].long().reshape(b, -1)
                labs.append(torch.gather(lab, 1, pick).reshape(-1))
        return torch.cat(vecs), (torch.cat(labs) if labs else None)

    def kmeans(self, x: Tensor, k: int) -> Tensor:
        """Cosine k-means centroids ``[k, dim]`` (faiss, 30 iterations, seed ``kmeans_seed``)."""
        return F.normalize(spherical_kmeans(F.normalize(x, dim=1), k, self.kmeans_seed), dim=1)

    @torch.no_grad()
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        fit_data = self._train_data if self._train_data is not None else data
        fit_x, fit_y = self.fit_pixels_of(fit_data)
        ks = sorted({self.n_classes, *self.overclusters})
        centroids = {k: self.kmeans(fit_x, k) for k in ks}
        probe = (
            None
            if fit_y is None
            else pixel_probe(fit_x, fit_y, self.n_classes, self.probe_steps, self.kmeans_seed)
        )
        concepts = F.normalize(self.concepts.weight.detach().cpu(), dim=1)
        heads = {f"c{k}": (c, k) for k, c in centroids.items()}
        heads["concepts"] = (concepts, concepts.shape[0])
        parts = ("all", "band", "interior") if self.band_size else ("all",)
        conf = {(h, p): Confusion(self.n_classes, k) for h, (_, k) in heads.items() for p in parts}
        if probe is not None:
            conf.update({("linear", p): Confusion(self.n_classes) for p in parts})
        shown: list[tuple[Tensor, Tensor, dict[str, Tensor]]] = []
        n = len(data) if self.eval_limit is None else min(self.eval_limit, len(data))
        for batch in tqdm(
            batches(data, self.eval_batch_size, n),
            total=-(-n // self.eval_batch_size),
            desc="ViCE: evaluation",
        ):
            if "label" not in batch:
                raise DataError("ViCE evaluation needs dense 'label' maps in the eval data")
            label = batch["label"].long()
            z = self.embed(batch["x"], tuple(label.shape[-2:])).cpu()
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            preds = {h: (flat @ c.T).argmax(1).view(label.shape) for h, (c, _) in heads.items()}
            if probe is not None:
                preds["linear"] = probe(flat).argmax(1).view(label.shape)
            band = boundary_band(label, self.band_size) if self.band_size else None
            for h, pred in preds.items():
                conf[h, "all"].update(label, pred)
                if band is not None:
                    conf[h, "band"].update(label, pred, band)
                    conf[h, "interior"].update(label, pred, ~band)
            for i in range(min(self.picture_images - len(shown), label.shape[0])):
                shown.append(
                    (
                        as_images(batch["x"][i : i + 1])[0],
                        label[i],
                        {h: p[i] for h, p in preds.items()},
                    )
                )
        metrics: dict[str, float] = {}

        def put(prefix: str, head: str, assignment: np.ndarray | None) -> None:
            for part in parts:
                got = scores(conf[head, part].counts, assignment)
                suffix = "" if part == "all" else f"_{part}"
                metrics[f"{prefix}_miou{suffix}"] = got["miou"]
                metrics[f"{prefix}_accuracy{suffix}"] = got["accuracy"]

        nk = f"c{self.n_classes}"
        hungarian = hungarian_assignment(conf[nk, "all"].counts)
        put("hungarian", nk, hungarian)
        greedy = {h: majority_assignment(conf[h, "all"].counts) for h in heads}
        for k in ks:
            put(f"greedy_c{k}", f"c{k}", greedy[f"c{k}"])
        first = f"c{self.overclusters[0]}" if self.overclusters else nk
        put("greedy", first, greedy[first])
        put("concepts_greedy", "concepts", greedy["concepts"])
        if probe is not None:
            put("linear", "linear", None)
        if self._regions:
            metrics["regions_per_image"] = float(
                np.mean([r.max() + 1 for r in self._regions.values()])
            )
        if run_dir is not None and shown:
            panels = [
                (nk, hungarian, f"k-means C{self.n_classes}, Hungarian"),
                (first, greedy[first], f"k-means {first.upper()}, greedy"),
            ]
            if probe is not None:
                panels.append(("linear", None, "linear probe"))
            save_picture(
                shown,
                panels,
                self.n_classes,
                Path(run_dir) / "vice.png",
                getattr(data, "classes", None),
            )
        return metrics
