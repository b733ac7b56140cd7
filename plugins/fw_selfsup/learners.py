"""Self-distillation, assignment and regularised learners: DINO, SwAV, BYOL, SimSiam, VICReg.

They share :class:`MultiCropLearner`: a backbone (any registered global `fw.api.Featurizer`) and
an optional projection head, ``global_crops`` random-resized crops of the input size and
``local_crops`` smaller ones (multi-crop; Caron et al. 2020, §3.2), each followed by the
``augment`` pipeline of `fw_common.augment`; a warm-up + cosine learning-rate schedule over
``schedule_steps`` (the loop steps it); collapse monitors on the projections of the first two
crops at every step (`fw.lib.monitors`, logged with the loss) with a warning when they show
collapse; and evaluation by kNN and linear probes on the backbone features plus the same
monitors (alignment on two augmented crops of each evaluated image).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw import api
from fw.api import OptimizerFactory
from fw.data import take
from fw.lib import metrics, monitors
from fw.lib.ema import ema_update
from fw.lib.images import image_batch
from fw.lib.prototypes import PrototypeLayer
from fw.lib.schedules import warmup_cosine
from fw_common.augment import Augmenter, RandomResizedCrop
from fw_selfsup import losses


def _image_shape(data: Any) -> tuple[int, ...] | None:
    meta = getattr(data, "meta", None) or {}
    shape = meta.get("image_shape")
    return None if shape is None else tuple(int(s) for s in shape)


class CollapseWarning(UserWarning):
    """The collapse monitors of a run crossed their thresholds."""


class MultiCropLearner(api.Learner):
    """Shared machinery of the learners of this plugin (not registered itself)."""

    example_data: ClassVar[dict[str, Any]] = {"name": "digits", "limit": 64}
    headline: ClassVar[tuple[str, ...]] = (
        "knn_probe_accuracy",
        "linear_probe_accuracy",
        "effective_rank",
    )

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer | None = None,
        augment: str | list[dict[str, Any]] | None = None,
        global_crops: int = 2,
        local_crops: int = 0,
        global_scale: list[float] = (0.4, 1.0),  # type: ignore[assignment]
        local_scale: list[float] = (0.05, 0.4),  # type: ignore[assignment]
        local_size: float = 0.43,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        super().__init__()
        if global_crops < 2:
            raise ValueError(
                f"global_crops must be >= 2 (two views to compare), got {global_crops}"
            )
        if local_crops < 0:
            raise ValueError(f"local_crops must be >= 0, got {local_crops}")
        if not 0.0 < eval_holdout < 1.0:
            raise ValueError(f"eval_holdout must lie in (0, 1), got {eval_holdout}")
        if schedule_steps < 1:
            raise ValueError(f"schedule_steps must be >= 1, got {schedule_steps}")
        if local_size <= 0:
            raise ValueError(
                f"local_size must be > 0 (pixels, or a fraction <= 1), got {local_size}"
            )
        self.backbone = backbone
        self.head = head
        self.augmenter = Augmenter(augment)
        self.global_crops = global_crops
        self.local_crops = local_crops
        self.global_crop = RandomResizedCrop(scale=list(global_scale))
        self.local_scale = [float(s) for s in local_scale]
        self.local_size = local_size
        self._local_ops: dict[tuple[int, int], RandomResizedCrop] = {}
        RandomResizedCrop(scale=self.local_scale)  # validates the range now
        self.optimizer_factory = optimizer
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.schedule_steps = schedule_steps
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        self.eval_holdout = eval_holdout
        self.eval_seed = eval_seed
        self.knn_k = knn_k
        self.linear_probe = linear_probe
        self.probe_max_iter = probe_max_iter
        self.probe_limit = probe_limit
        self.eval_batch_size = eval_batch_size
        self.monitor_every = monitor_every
        self._train_data: Any = None
        self._warned = False

    # -- setup ------------------------------------------------------------------------------

    def setup(self, data: Any) -> None:
        self._train_data = data
        if self.image_shape is None:
            self.image_shape = _image_shape(data)
        self.backbone.setup(data)
        sample = self.images(take(data, limit=2))
        with torch.no_grad():  # materialise lazy layers before the optimizer exists
            was = self.training
            self.eval()
            z = self.project(sample)
            self.build(int(z.shape[1]), sample)
            self.train(was)

    def build(self, dim: int, sample: Tensor) -> None:  # noqa: B027 - optional hook
        """Create what depends on the projection width ``dim`` (prototypes, teachers)."""

    def student_parameters(self) -> list[nn.Parameter]:
        """The trained parameters (never a teacher's)."""
        return [
            w
            for name, w in self.named_parameters()
            if w.requires_grad and not name.startswith("teacher.")
        ]

    def configure_optimizers(self) -> api.Optimization:
        params = self.student_parameters()
        if self.optimizer_factory is None:
            opt = torch.optim.Adam(params, lr=1e-3)
        else:
            opt = self.optimizer_factory(params)
        # linear warm-up, then a cosine decay to 0 at schedule_steps (DINO, App. B)
        factor = warmup_cosine(self.warmup_steps, self.schedule_steps, self.lr_schedule == "cosine")
        return api.Optimization([opt], [torch.optim.lr_scheduler.LambdaLR(opt, factor)])

    # -- views and encoding -----------------------------------------------------------------

    def images(self, x: Tensor) -> Tensor:
        """Inputs as images ``[B, C, H, W]`` (flat rows reshaped with ``image_shape``)."""
        return image_batch(x, self.image_shape, type(self).__name__)

    def _local_op(self, height: int, width: int) -> RandomResizedCrop:
        key = (height, width)
        if key not in self._local_ops:
            if self.local_size <= 1.0:
                size = [
                    max(1, round(self.local_size * height)),
                    max(1, round(self.local_size * width)),
                ]
            else:
                size = [int(self.local_size)] * 2
            self._local_ops[key] = RandomResizedCrop(size=size, scale=self.local_scale)
        return self._local_ops[key]

    def make_crops(self, images: Tensor) -> list[Tensor]:
        """``global_crops`` crops at the input size, then ``local_crops`` small ones, augmented."""
        crops = [self.augmenter(self.global_crop(images)) for _ in range(self.global_crops)]
        if self.local_crops:
            op = self._local_op(images.shape[-2], images.shape[-1])
            crops += [self.augmenter(op(images)) for _ in range(self.local_crops)]
        return crops

    def project(self, x: Tensor) -> Tensor:
        """Student projections: backbone, then the head (identity without one)."""
        z = self.backbone(x)
        return z if self.head is None else self.head(z)

    @staticmethod
    def by_size(fn: Any, crops: list[Tensor]) -> list[Tensor]:
        """``fn`` on each run of equal-sized crops batched together (as the authors' multi-crop
        wrapper), split back per crop."""
        out: list[Tensor] = []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            z = fn(torch.cat(crops[start:end]))
            out += list(z.chunk(end - start))
            start = end
        return out

    # -- collapse monitors ------------------------------------------------------------------

    def monitor(self, z1: Tensor, z2: Tensor, step: int) -> dict[str, Tensor]:
        """Monitors of one step's projections of two crops; warns once when they show collapse."""
        with torch.no_grad():
            values, reasons = monitors.collapse_report(z1, z2)
        if (
            reasons
            and not self._warned
            and self.monitor_every > 0
            and step > 0
            and step % self.monitor_every == 0
        ):
            self._warned = True
            warnings.warn(
                f"{type(self).__name__}: the representation looks collapsed at step {step}: "
                + "; ".join(reasons),
                CollapseWarning,
                stacklevel=2,
            )
        return {k: torch.tensor(v) for k, v in values.items()}

    # -- inference and evaluation -----------------------------------------------------------

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        """Backbone features of un-augmented inputs."""
        return self.backbone(self.images(batch["x"]))

    @torch.no_grad()
    def embed(self, x: Tensor, augment: bool = False) -> Tensor:
        """Backbone features ``[N, dim]`` (eval mode, batched), of a global crop if ``augment``."""
        was = self.training
        self.eval()
        device = next(self.parameters(), torch.empty(0)).device
        feats = []
        for start in range(0, x.shape[0], self.eval_batch_size):
            chunk = self.images(x[start : start + self.eval_batch_size].to(device))
            if augment:
                chunk = self.augmenter(self.global_crop(chunk))
            feats.append(self.backbone(chunk).float().cpu())
        self.train(was)
        return torch.cat(feats)

    def holdout_split(self, n: int) -> tuple[Tensor, Tensor]:
        """Positions ``(test, train)`` of a deterministic hold-out split of ``n`` items."""
        perm = torch.from_numpy(np.random.default_rng(self.eval_seed).permutation(n))
        n_test = max(1, int(round(self.eval_holdout * n)))
        return perm[:n_test], perm[n_test:]

    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        """kNN / linear probes on backbone features, and the collapse monitors of the test part."""
        x = take(data, limit=self.probe_limit)
        labels = take(data, "label", limit=self.probe_limit) if _has(data, "label") else None
        feats = self.embed(x)
        train = self._train_data
        out: dict[str, float] = {}
        if train is None or train is data:
            test, fit = self.holdout_split(feats.shape[0])
            prefix = "holdout_"
        else:
            test, fit, prefix = torch.arange(feats.shape[0]), None, ""
        x_test = x[test]
        z_test = feats[test]
        if labels is not None:
            if fit is not None:
                xtr, ytr = feats[fit], labels[fit]
            else:
                xtr = self.embed(take(train, limit=self.probe_limit))
                ytr = take(train, "label", limit=self.probe_limit)
            yte = labels[test]
            probes = metrics.probe_accuracies(
                xtr, ytr, z_test, yte, k=self.knn_k, linear=self.linear_probe,
                max_iter=self.probe_max_iter, prefix=prefix,
            )  # fmt: skip
            out.update(probes)
        else:
            warnings.warn("evaluation data has no labels: no probes", stacklevel=2)
        n_mon = min(1024, x_test.shape[0])
        pair_a = self.embed(x_test[:n_mon], augment=True)
        pair_b = self.embed(x_test[:n_mon], augment=True)
        values, reasons = monitors.collapse_report(z_test)
        out.update(values)
        out["alignment"] = float(monitors.alignment(pair_a, pair_b))
        out["collapsed"] = float(bool(reasons))
        if reasons:
            warnings.warn(
                f"{type(self).__name__}: the evaluated features look collapsed: "
                + "; ".join(reasons),
                CollapseWarning,
                stacklevel=2,
            )
        return out


def _has(data: Any, key: str) -> bool:
    tensors = getattr(data, "tensors", None)
    if isinstance(tensors, dict):
        return key in tensors
    try:
        take(data, key, limit=1)
    except Exception:  # noqa: BLE001 - any failure means the key is not there
        return False
    return True


def _ema(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """EMA step; at momentum 1 (the end of a cosine schedule) the teacher is left as it is."""
    if momentum < 1.0:
        ema_update(teacher, student, momentum)


class DINO(MultiCropLearner):
    """DINO: self-distillation with no labels (Caron et al. 2021).

    The student (backbone → ``head`` MLP → ``prototypes`` weight-normalised cosine outputs;
    the paper's ``K = 65536``, §3.1) sees every crop; its EMA teacher sees the global crops
    only. The loss (`fw_selfsup.losses.dino_loss`) is the cross-entropy from the teacher's
    centred, sharpened softmax (temperature warmed from ``teacher_temperature_start`` to
    ``teacher_temperature`` over ``teacher_warmup_steps``) to the student's
    (``student_temperature``) over pairs of different crops; the centre is an EMA
    (``center_momentum``) of the teacher's batch mean (Eq. 4), and the teacher's momentum
    follows a cosine schedule from ``momentum`` to ``momentum_end`` over ``schedule_steps``
    (§3.1). The prototypes get no gradient for the
    first ``freeze_prototypes_steps`` steps (the authors' ``freeze_last_layer``). The defaults
    are the paper's (App. B / the authors' ``main_dino.py``): τ_s 0.1, τ_t 0.04 → 0.07, centre
    momentum 0.9, teacher momentum 0.996 → 1, global crop scale (0.4, 1), local (0.05, 0.4).
    In I-Con terms the teacher's distribution over prototypes is a stop-gradient p and the
    student's softmax is q (`fw_selfsup.distributions`).
    """

    example: ClassVar[dict[str, Any]] = {
        "backbone": {"name": "mlp", "dim": 8, "hidden": [16]},
        "head": {"name": "mlp", "dim": 8, "hidden": [16], "batch_norm": False},
        "prototypes": 16,
        "local_crops": 2,
        "local_size": 1.0,  # an MLP backbone takes one input size only
        "batch_size": 16,
        "linear_probe": False,
    }

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer | None = None,
        prototypes: int = 65536,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.07,
        teacher_temperature_start: float = 0.04,
        teacher_warmup_steps: int = 0,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        freeze_prototypes_steps: int = 0,
        augment: str | list[dict[str, Any]] | None = None,
        global_crops: int = 2,
        local_crops: int = 8,
        global_scale: list[float] = (0.4, 1.0),  # type: ignore[assignment]
        local_scale: list[float] = (0.05, 0.4),  # type: ignore[assignment]
        local_size: float = 0.43,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        super().__init__(
            backbone, head, augment, global_crops, local_crops, global_scale, local_scale,
            local_size, optimizer, batch_size, lr_schedule, warmup_steps, schedule_steps,
            image_shape, eval_holdout, eval_seed, knn_k, linear_probe, probe_max_iter,
            probe_limit, eval_batch_size, monitor_every,
        )  # fmt: skip
        if prototypes < 1:
            raise ValueError(f"prototypes must be >= 1, got {prototypes}")
        for name, t in (
            ("student_temperature", student_temperature),
            ("teacher_temperature", teacher_temperature),
            ("teacher_temperature_start", teacher_temperature_start),
        ):
            if t <= 0:
                raise ValueError(f"{name} must be > 0, got {t}")
        if not 0.0 <= center_momentum < 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1), got {center_momentum}")
        if not 0.0 <= momentum <= momentum_end <= 1.0:
            raise ValueError(
                f"need 0 <= momentum <= momentum_end <= 1, got {momentum}, {momentum_end}"
            )
        self.num_prototypes = prototypes
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.teacher_temperature_start = teacher_temperature_start
        self.teacher_warmup_steps = teacher_warmup_steps
        self.center_momentum = center_momentum
        self.momentum = momentum
        self.momentum_end = momentum_end
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.register_buffer("center", torch.zeros(1, prototypes))
        self.prototypes: PrototypeLayer | None = None
        self.teacher: nn.ModuleDict | None = None

    def build(self, dim: int, sample: Tensor) -> None:
        if self.prototypes is None:
            self.prototypes = PrototypeLayer(dim, self.num_prototypes, weight_norm=True)
        if self.teacher is None:
            self.teacher = nn.ModuleDict(
                {
                    "backbone": copy.deepcopy(self.backbone),
                    "head": copy.deepcopy(self.head) if self.head is not None else nn.Identity(),
                    "prototypes": copy.deepcopy(self.prototypes),
                }
            ).requires_grad_(False)

    def student_module(self) -> nn.ModuleDict:
        """The student's modules in the teacher's layout (for the EMA update)."""
        return nn.ModuleDict(
            {
                "backbone": self.backbone,
                "head": self.head if self.head is not None else nn.Identity(),
                "prototypes": self.prototypes,
            }
        )

    def momentum_at(self, step: int) -> float:
        """The teacher momentum of optimisation step ``step`` (cosine, 0.996 → 1)."""
        return losses.cosine_schedule(step, self.schedule_steps, self.momentum, self.momentum_end)

    def teacher_temperature_at(self, step: int) -> float:
        """τ_t at ``step`` (linear warm-up)."""
        return losses.linear_warmup(
            step,
            self.teacher_warmup_steps,
            self.teacher_temperature_start,
            self.teacher_temperature,
        )

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        assert self.prototypes is not None and self.teacher is not None, "call setup first"
        if step > 0:  # the update that follows optimiser step `step - 1`
            _ema(self.teacher, self.student_module(), self.momentum_at(step - 1))
        self.prototypes.frozen = step < self.freeze_prototypes_steps
        crops = self.make_crops(self.images(batch["x"]))
        z = self.by_size(self.project, crops)
        student = [self.prototypes(zv) for zv in z]
        with torch.no_grad():
            teacher = self.by_size(
                lambda x: self.teacher["prototypes"](
                    self.teacher["head"](self.teacher["backbone"](x))
                ),
                crops[: self.global_crops],
            )
        tau_t = self.teacher_temperature_at(step)
        loss = losses.dino_loss(student, teacher, self.center, self.student_temperature, tau_t)
        with torch.no_grad():
            p_t = F.softmax((torch.cat(teacher) - self.center) / tau_t, dim=1)
            entropy = -(p_t * p_t.clamp_min(1e-12).log()).sum(dim=1).mean()
            mean_p = p_t.mean(dim=0)
            batch_entropy = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
            self.center.copy_(losses.dino_center(self.center, teacher, self.center_momentum))
        out = {
            "loss": loss,
            "teacher_entropy": entropy,  # → 0: one prototype per image (sharpening wins)
            "teacher_batch_entropy": batch_entropy,  # → 0: every image on one prototype
            "teacher_temperature": torch.tensor(tau_t),
            "teacher_momentum": torch.tensor(self.momentum_at(step)),
        }
        out.update(self.monitor(z[0], z[1], step))
        return out


class SwAV(MultiCropLearner):
    """SwAV: swapping assignments between multiple views (Caron et al. 2020).

    Projections (backbone → ``head``, L2-normalised) are scored against ``prototypes`` unit
    vectors (renormalised every step; no gradient for the first ``freeze_prototypes_steps``);
    each global crop's codes come from Sinkhorn–Knopp (``epsilon``, ``sinkhorn_iterations``;
    `fw.lib.prototypes.sinkhorn_knopp`) and are predicted from every other crop's softmax at
    ``temperature`` (`fw_selfsup.losses.swav_loss`). With ``queue_length`` > 0 the projections
    of the global crops of past batches are kept (from step ``queue_start_step`` on) and, once
    the queue is full, join the batch in Sinkhorn (§4, small batches). Defaults are the paper's
    (§4, App. A): ε 0.05, 3 iterations, τ 0.1, K 3000, 2 × 224 + 6 × 96 crops at scales
    (0.14, 1) and (0.05, 0.14), prototypes frozen for the first epoch (313 iterations at 4096).
    """

    example: ClassVar[dict[str, Any]] = {
        "backbone": {"name": "mlp", "dim": 8, "hidden": [16]},
        "head": {"name": "mlp", "dim": 8, "hidden": [16]},
        "prototypes": 6,
        "local_crops": 2,
        "local_size": 1.0,
        "queue_length": 32,
        "batch_size": 16,
        "linear_probe": False,
    }

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer | None = None,
        prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 0,
        queue_start_step: int = 0,
        freeze_prototypes_steps: int = 313,
        augment: str | list[dict[str, Any]] | None = None,
        global_crops: int = 2,
        local_crops: int = 6,
        global_scale: list[float] = (0.14, 1.0),  # type: ignore[assignment]
        local_scale: list[float] = (0.05, 0.14),  # type: ignore[assignment]
        local_size: float = 0.43,
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        super().__init__(
            backbone, head, augment, global_crops, local_crops, global_scale, local_scale,
            local_size, optimizer, batch_size, lr_schedule, warmup_steps, schedule_steps,
            image_shape, eval_holdout, eval_seed, knn_k, linear_probe, probe_max_iter,
            probe_limit, eval_batch_size, monitor_every,
        )  # fmt: skip
        if prototypes < 1:
            raise ValueError(f"prototypes must be >= 1, got {prototypes}")
        if temperature <= 0 or epsilon <= 0:
            raise ValueError(f"temperature and epsilon must be > 0, got {temperature}, {epsilon}")
        if sinkhorn_iterations < 1 or queue_length < 0:
            raise ValueError("sinkhorn_iterations must be >= 1 and queue_length >= 0")
        self.num_prototypes = prototypes
        self.temperature = temperature
        self.epsilon = epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.queue_length = queue_length
        self.queue_start_step = queue_start_step
        self.freeze_prototypes_steps = freeze_prototypes_steps
        self.assign = (0, 1)
        self.prototypes: PrototypeLayer | None = None
        self.register_buffer("queue", None)
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def build(self, dim: int, sample: Tensor) -> None:
        if self.prototypes is None:
            self.prototypes = PrototypeLayer(dim, self.num_prototypes, weight_norm=False)
        if self.queue_length and self.queue is None:
            self.queue = torch.zeros(len(self.assign), self.queue_length, dim)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        assert self.prototypes is not None, "call setup first"
        self.prototypes.normalize_()
        self.prototypes.frozen = step < self.freeze_prototypes_steps
        crops = self.make_crops(self.images(batch["x"]))
        z = [F.normalize(zv, dim=1) for zv in self.by_size(self.project, crops)]
        scores = [self.prototypes(zv) for zv in z]
        queue_scores = None
        use_queue = self.queue is not None and step >= self.queue_start_step
        if use_queue and int(self.queue_filled) >= self.queue_length:
            w = self.prototypes.weight.detach()
            queue_scores = [self.queue[k] @ w.T for k in range(len(self.assign))]
        loss = losses.swav_loss(
            scores,
            self.assign,
            self.temperature,
            self.epsilon,
            self.sinkhorn_iterations,
            queue_scores,
        )
        if use_queue:
            with torch.no_grad():
                b = z[0].shape[0]
                for k, crop in enumerate(self.assign):
                    new = z[crop].detach()[: self.queue_length]
                    self.queue[k] = torch.cat([new, self.queue[k][: self.queue_length - len(new)]])
                self.queue_filled.fill_(min(int(self.queue_filled) + b, self.queue_length))
        out = {"loss": loss, "queue_used": torch.tensor(float(queue_scores is not None))}
        out.update(self.monitor(z[0], z[1], step))
        return out


class _Siamese(MultiCropLearner):
    """Two global crops, a ``predictor`` on the online branch (BYOL, SimSiam)."""

    def __init__(self, predictor: api.Featurizer, **common: Any) -> None:
        super().__init__(**common)
        self.predictor = predictor

    def build(self, dim: int, sample: Tensor) -> None:
        self.predictor(self.project(sample))  # materialise its lazy layers


class BYOL(_Siamese):
    """BYOL: bootstrap your own latent (Grill et al. 2020).

    Online network backbone → ``head`` (projector) → ``predictor``; the target network is an
    EMA of backbone and projector whose momentum follows ``1 − (1 − τ_base)(cos(πk/K) + 1)/2``
    from ``momentum`` (τ_base 0.996) to 1 over ``schedule_steps`` (§3.2). The loss is the
    symmetrised normalised MSE between each view's prediction and the other view's target
    projection (`fw_selfsup.losses.byol_loss`).
    """

    example: ClassVar[dict[str, Any]] = {
        "backbone": {"name": "mlp", "dim": 8, "hidden": [16]},
        "head": {"name": "mlp", "dim": 8, "hidden": [16]},
        "predictor": {"name": "mlp", "dim": 8, "hidden": [16]},
        "batch_size": 16,
        "linear_probe": False,
    }

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer,
        predictor: api.Featurizer,
        momentum: float = 0.996,
        momentum_end: float = 1.0,
        augment: str | list[dict[str, Any]] | None = None,
        global_scale: list[float] = (0.08, 1.0),  # type: ignore[assignment]
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        if not 0.0 <= momentum <= momentum_end <= 1.0:
            raise ValueError(
                f"need 0 <= momentum <= momentum_end <= 1, got {momentum}, {momentum_end}"
            )
        super().__init__(
            predictor, backbone=backbone, head=head, augment=augment, global_scale=global_scale,
            optimizer=optimizer, batch_size=batch_size, lr_schedule=lr_schedule,
            warmup_steps=warmup_steps, schedule_steps=schedule_steps, image_shape=image_shape,
            eval_holdout=eval_holdout, eval_seed=eval_seed, knn_k=knn_k,
            linear_probe=linear_probe, probe_max_iter=probe_max_iter, probe_limit=probe_limit,
            eval_batch_size=eval_batch_size, monitor_every=monitor_every,
        )  # fmt: skip
        self.momentum = momentum
        self.momentum_end = momentum_end
        self.teacher: nn.ModuleDict | None = None

    def build(self, dim: int, sample: Tensor) -> None:
        super().build(dim, sample)
        if self.teacher is None:
            self.teacher = nn.ModuleDict(
                {"backbone": copy.deepcopy(self.backbone), "head": copy.deepcopy(self.head)}
            ).requires_grad_(False)

    def momentum_at(self, step: int) -> float:
        """τ of optimisation step ``step`` (cosine from τ_base to 1)."""
        return losses.cosine_schedule(step, self.schedule_steps, self.momentum, self.momentum_end)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        assert self.teacher is not None, "call setup first"
        if step > 0:
            online = nn.ModuleDict({"backbone": self.backbone, "head": self.head})
            _ema(self.teacher, online, self.momentum_at(step - 1))
        v1, v2 = self.make_crops(self.images(batch["x"]))[:2]
        z1, z2 = self.by_size(self.project, [v1, v2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with torch.no_grad():
            t1, t2 = self.by_size(
                lambda x: self.teacher["head"](self.teacher["backbone"](x)), [v1, v2]
            )
        loss = losses.byol_loss(p1, p2, t1, t2)
        out = {"loss": loss, "target_momentum": torch.tensor(self.momentum_at(step))}
        out.update(self.monitor(z1, z2, step))
        return out


class SimSiam(_Siamese):
    """SimSiam: simple Siamese representation learning (Chen & He 2021).

    One encoder (backbone → ``head``) for both views, a ``predictor`` MLP, and the symmetrised
    negative cosine between each view's prediction and the other view's stop-gradient
    projection (`fw_selfsup.losses.simsiam_loss`; Alg. 1). No momentum encoder, no negatives.
    """

    example: ClassVar[dict[str, Any]] = BYOL.example

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer,
        predictor: api.Featurizer,
        augment: str | list[dict[str, Any]] | None = None,
        global_scale: list[float] = (0.2, 1.0),  # type: ignore[assignment]
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        super().__init__(
            predictor, backbone=backbone, head=head, augment=augment, global_scale=global_scale,
            optimizer=optimizer, batch_size=batch_size, lr_schedule=lr_schedule,
            warmup_steps=warmup_steps, schedule_steps=schedule_steps, image_shape=image_shape,
            eval_holdout=eval_holdout, eval_seed=eval_seed, knn_k=knn_k,
            linear_probe=linear_probe, probe_max_iter=probe_max_iter, probe_limit=probe_limit,
            eval_batch_size=eval_batch_size, monitor_every=monitor_every,
        )  # fmt: skip

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        v1, v2 = self.make_crops(self.images(batch["x"]))[:2]
        z1, z2 = self.by_size(self.project, [v1, v2])
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = losses.simsiam_loss(p1, p2, z1, z2)
        out = {"loss": loss}
        out.update(self.monitor(z1, z2, step))
        return out


class VICReg(MultiCropLearner):
    """VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022).

    One encoder (backbone → ``head``, the paper's expander) for both crops; no predictor, no
    teacher, no negatives and no normalisation of the embeddings. The loss is
    ``λ·s(Z, Z') + μ·v + ν·c`` (Eq. 6) with the normalisations of the authors' code
    (`fw_selfsup.losses.vicreg_terms`): the invariance pulls the two crops' embeddings
    together, the variance hinge keeps every dimension's batch std at least ``gamma``, and the
    covariance term decorrelates the dimensions. fw's I-Con recipe ``vicreg_digits`` is the
    invariance and a variance term only (I-Con's σ→∞ cell); this learner is the full method.
    """

    example: ClassVar[dict[str, Any]] = {
        "backbone": {"name": "mlp", "dim": 8, "hidden": [16]},
        "head": {"name": "mlp", "dim": 8, "hidden": [16]},
        "batch_size": 16,
        "linear_probe": False,
    }

    def __init__(
        self,
        backbone: api.Featurizer,
        head: api.Featurizer,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        augment: str | list[dict[str, Any]] | None = None,
        global_scale: list[float] = (0.08, 1.0),  # type: ignore[assignment]
        optimizer: OptimizerFactory | None = None,
        batch_size: int | None = 256,
        lr_schedule: Literal["cosine", "constant"] = "cosine",
        warmup_steps: int = 0,
        schedule_steps: int = 1000,
        image_shape: list[int] | None = None,
        eval_holdout: float = 0.2,
        eval_seed: int = 0,
        knn_k: int = 20,
        linear_probe: bool = True,
        probe_max_iter: int = 1000,
        probe_limit: int | None = 20000,
        eval_batch_size: int = 512,
        monitor_every: int = 50,
    ) -> None:
        weights = (invariance_weight, variance_weight, covariance_weight)
        if min(weights) < 0:
            raise ValueError(f"vicreg: the three weights must be >= 0, got {weights}")
        if gamma <= 0 or eps <= 0:
            raise ValueError(f"vicreg: gamma and eps must be > 0, got {gamma}, {eps}")
        super().__init__(
            backbone=backbone, head=head, augment=augment, global_scale=global_scale,
            optimizer=optimizer, batch_size=batch_size, lr_schedule=lr_schedule,
            warmup_steps=warmup_steps, schedule_steps=schedule_steps, image_shape=image_shape,
            eval_holdout=eval_holdout, eval_seed=eval_seed, knn_k=knn_k,
            linear_probe=linear_probe, probe_max_iter=probe_max_iter, probe_limit=probe_limit,
            eval_batch_size=eval_batch_size, monitor_every=monitor_every,
        )  # fmt: skip
        self.invariance_weight, self.variance_weight, self.covariance_weight = weights
        self.gamma = gamma
        self.eps = eps

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        v1, v2 = self.make_crops(self.images(batch["x"]))[:2]
        z1, z2 = self.by_size(self.project, [v1, v2])
        if z1.shape[0] < 2:
            raise ValueError("vicreg: the variance and covariance need a batch of 2 or more")
        terms = losses.vicreg_terms(z1, z2, self.gamma, self.eps)
        loss = (
            self.invariance_weight * terms["invariance"]
            + self.variance_weight * terms["variance"]
            + self.covariance_weight * terms["covariance"]
        )
        out = {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
        out.update(self.monitor(z1, z2, step))
        return out
