"""The ``featup`` learner: trains an upsampler on a frozen featurizer (Hamilton, PhD thesis, Ch. 5).

JBU objective per step (Table C.5, reference ``train_jbu_upsampler``): featurize a batch of images,
upsample to image resolution, then for each of ``n_jitters`` views t sampled once per batch:
``rec(P·σ↓(t(F_hr)), P·f(t(x)); s = N(f(t(x))))`` with a fresh unit-column random projection
P to ``proj_dim`` dims (§5.5.3), averaged over views; plus ``tv_weight``·TV(‖F_hr‖) (0 for JBU).
NAdam over upsampler, downsampler and uncertainty net. ``channel_norm`` compares and upsamples
channel-LayerNormed backbone features, as the released JBU models do (the reference code's
ChannelNorm); the flag is saved with the weights and the ``upsampled`` featurizer applies it.
A per-image upsampler (implicit) is not trained over the corpus: run it with
``trainer.max_steps: 0`` and it is fitted per evaluation image. ``evaluate`` writes
``upsampler.pt`` (what recipes name with ``weights:``), the picture ``featup.png`` and
label-free held-out figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fw.api import Downsampler, Featurizer, Learner, Optimization, Upsampler
from fw.data import take
from fw.errors import FwError, RecipeError
from fw_featup.downsamplers import AttentionDownsampler
from fw_featup.featurizers import aligned_featurize
from fw_featup.jitter import apply_jitter, sample_jitter
from fw_featup.losses import (
    Uncertainty,
    magnitude_tv,
    project,
    random_projection,
    reconstruction_loss,
)
from fw_featup.picture import feature_picture
from fw_featup.upsamplers import WEIGHTS_FILE, Trainable
from fw_featup.upsamplers import channel_norm as norm_channels


class FeatUpLearner(Learner):
    """Multi-view reconstruction training of an upsampler over an image corpus."""

    headline = ("rec_error", "rec_error_bilinear", "rec_error_nearest")
    example_data = {"name": "skimage_photos", "size": 64, "crops": 1}
    example = {
        "featurizer": {"name": "mobilenet_v2_tap", "weights": None, "tap": "s8"},
        "upsampler": {"name": "jbu_stack", "stages": 3, "window": 3, "key_dim": 8},
        "downsampler": {"name": "attention", "kernel_size": 8},
        "max_pad": 4,
        "proj_dim": 4,
        "eval_images": 1,
    }

    def __init__(
        self,
        featurizer: Featurizer,
        upsampler: Upsampler,
        downsampler: Downsampler | None = None,
        n_jitters: int = 2,
        max_pad: int = 30,
        max_zoom: float = 2.0,
        proj_dim: int | None = 30,
        uncertainty: bool = True,
        tv_weight: float = 0.0,
        lr: float = 1e-3,
        batch_size: int = 4,
        eval_images: int = 4,
        picture_images: int = 2,
        eval_seed: int = 0,
        channel_norm: bool = False,
    ) -> None:
        super().__init__()
        if not getattr(featurizer, "dense", False):
            raise RecipeError("learner.featurizer must give dense maps (e.g. output: dense)")
        if any(p.requires_grad for p in featurizer.parameters()):
            raise RecipeError("learner.featurizer must be frozen: FeatUp never changes it")
        self.featurizer = featurizer
        self.channel_norm = channel_norm
        featurize = aligned_featurize(featurizer)
        self.featurize = (lambda x: norm_channels(featurize(x))) if channel_norm else featurize
        if channel_norm and not isinstance(upsampler, Trainable):
            raise RecipeError("channel_norm needs a trainable upsampler (it is saved with it)")
        if isinstance(upsampler, Trainable):
            upsampler.feature_norm = channel_norm
        self.upsampler = upsampler
        self.downsampler = downsampler if downsampler is not None else AttentionDownsampler()
        dim = int(featurizer.dim)
        for part in (self.upsampler, self.downsampler):
            if hasattr(part, "bind"):
                part.bind(dim)
        self.scale = Uncertainty(dim) if uncertainty else None
        self.n_jitters, self.max_pad, self.max_zoom = n_jitters, max_pad, max_zoom
        self.proj_dim, self.tv_weight, self.lr = proj_dim, tv_weight, lr
        self.batch_size = batch_size
        self.eval_images, self.picture_images, self.eval_seed = (
            eval_images,
            picture_images,
            eval_seed,
        )

    def configure_optimizers(self) -> Optimization:
        params = [p for n, p in self.named_parameters() if not n.startswith("featurizer.")]
        return Optimization([torch.optim.NAdam(params, lr=self.lr)])

    def _images(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["x"]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x

    def view_loss(self, hr: Tensor, x: Tensor, jitter: Any) -> Tensor:
        """Eq. 5.1 for one view t (shared by every image of the batch)."""
        tx = apply_jitter(x, jitter)
        with torch.no_grad():
            target = self.featurize(tx)
        pred = self.downsampler(apply_jitter(hr, jitter), tuple(target.shape[-2:]), tx)
        scale = None if self.scale is None else self.scale(target)  # sees the unprojected view
        if self.proj_dim:
            proj = random_projection(x.shape[0], target.shape[1], self.proj_dim, target)
            pred, target = project(pred, proj), project(target, proj)
        return reconstruction_loss(pred, target, scale)

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        if self.upsampler.per_image:
            raise FwError(
                f"{type(self.upsampler).__name__} is fitted per image, not over a corpus: set "
                "trainer.max_steps: 0 (it is then fitted on each evaluation image)"
            )
        x = self._images(batch)
        with torch.no_grad():
            lr = self.featurize(x)
        hr = self.upsampler(lr, x)
        h, w = x.shape[-2:]
        rec = (
            sum(
                self.view_loss(hr, x, sample_jitter(h, w, self.max_pad, self.max_zoom))
                for _ in range(self.n_jitters)
            )
            / self.n_jitters
        )
        out = {"loss": rec, "rec": rec.detach()}
        if self.tv_weight:
            tv = magnitude_tv(hr)
            out["loss"] = rec + self.tv_weight * tv
            out["tv"] = tv.detach()
        return out

    def upsample(self, x: Tensor, lr: Tensor | None = None) -> Tensor:
        """Upsampled features of images ``x`` in [0, 1] (fits a per-image upsampler first)."""
        lr = self.featurize(x) if lr is None else lr
        if not self.upsampler.per_image:
            return self.upsampler(lr, x)
        outs = []
        for i in range(x.shape[0]):
            with torch.enable_grad():
                self.upsampler.fit(x[i : i + 1], self.featurize)
            outs.append(self.upsampler(lr[i : i + 1], x[i : i + 1]))
        return torch.cat(outs)

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        return self.upsample(self._images(batch))

    @torch.no_grad()
    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        """Held-out multi-view reconstruction error of σ↓(t(σ↑)) against f(t(x)), relative to
        the target's variance, for this upsampler, bilinear and nearest (same views, same
        trained downsampler); also writes the weights and the picture."""
        self.eval()
        if run_dir is not None and isinstance(self.upsampler, Trainable):
            run_dir.mkdir(parents=True, exist_ok=True)
            torch.save(self.upsampler.record(), run_dir / WEIGHTS_FILE)
        x = self._images({"x": take(data, "x", self.eval_images)})
        lr = self.featurize(x)
        hr = self.upsample(x, lr)
        size = tuple(x.shape[-2:])
        bil = F.interpolate(lr, size=size, mode="bilinear", align_corners=False)
        near = F.interpolate(lr, size=size, mode="nearest")
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.eval_seed)
        errors = {"rec_error": 0.0, "rec_error_bilinear": 0.0, "rec_error_nearest": 0.0}
        views = 8
        for _ in range(views):
            jit = sample_jitter(size[0], size[1], self.max_pad, self.max_zoom)
            tx = apply_jitter(x, jit)
            target = self.featurize(tx)
            var = target.var(dim=(0, 2, 3)).mean().clamp_min(1e-12)
            for key, maps in (
                ("rec_error", hr),
                ("rec_error_bilinear", bil),
                ("rec_error_nearest", near),
            ):
                pred = self.downsampler(apply_jitter(maps, jit), tuple(target.shape[-2:]), tx)
                errors[key] += float(((pred - target) ** 2).mean() / var) / views
        torch.random.set_rng_state(gen_state)
        metrics = dict(errors)
        metrics["rec_gain_over_bilinear"] = errors["rec_error_bilinear"] - errors["rec_error"]
        if run_dir is not None:
            k = min(self.picture_images, x.shape[0])
            name = getattr(self.upsampler, "registry_name", "") or type(self.upsampler).__name__
            feature_picture(
                x[:k],
                lr[:k],
                {"bilinear": bil[:k], name: hr[:k]},
                run_dir / "featup.png",
                title="FeatUp: PCA of the low-res features, one projection for every map",
            )
        return metrics
