"""The DenseAV learner: dense audio–image contrastive learning with a pooling aggregator.

Hamilton et al., CVPR 2024; Hamilton, PhD thesis, Ch. 6 and App. D (loss, aligners, resolutions,
optimisation); docs/benchmarks.md (the CPU reference model and the SpokenObjects evaluation, in
`fw_denseav.evaluate`).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from fw.api import Aggregator, Featurizer, Learner, Optimization, OptimizerFactory
from fw.data import gather
from fw.dense import Dense
from fw.errors import ShapeError
from fw.lib.distributed import gather_across
from fw_denseav.audio import ChannelNorm, dense_features
from fw_denseav.evaluate import evaluate, float_images
from fw_denseav.losses import (
    Calibrator,
    disentanglement_loss,
    nonneg_loss,
    splice_loss,
    symmetric_infonce,
    tv_loss,
)
from fw_denseav.splice import splice_negatives, to_tokens


class Aligner(nn.Module):
    """Channel LayerNorm (eps 1e-4) then a 1×1 conv to the code dimension."""

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.proj = nn.Conv1d(channels, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = self.norm(x).flatten(2)
        return self.proj(flat).reshape(shape[0], -1, *shape[2:])


class AudioConvAligner(nn.Module):
    """The authors' audio aligner: channel LN, two kernel-3 stride-3 convs, then one
    pre-norm self-attention block over the tokens with a learned CLS token (dropped after).

    Returns features ``[B, dim, T // 9]`` (about) and the resampled validity mask: a token is
    valid when its first input frame is.
    """

    def __init__(self, channels: int, dim: int, attention_heads: int = 6) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels)
        self.conv1 = nn.Conv1d(channels, dim, 3, stride=3)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=3)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.block = nn.TransformerEncoderLayer(
            dim,
            attention_heads,
            4 * dim,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
            layer_norm_eps=1e-4,
            activation="gelu",
        )

    @staticmethod
    def _shrink(lengths: Tensor, size: int) -> Tensor:
        return torch.clamp(torch.div(lengths + 2, 3, rounding_mode="floor"), max=size)

    def forward(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.conv2(self.conv1(self.norm(x)))  # [B, dim, T'']
        b, _, t = h.shape
        lengths = (
            mask.sum(1) if mask is not None else torch.full((b,), x.shape[-1], device=x.device)
        )
        lengths = self._shrink(self._shrink(lengths, (x.shape[-1] - 3) // 3 + 1), t)
        valid = torch.arange(t, device=x.device)[None] < lengths[:, None]
        tokens = torch.cat([self.cls.expand(b, -1, -1), h.transpose(1, 2)], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~valid], dim=1)
        out = self.block(tokens, src_key_padding_mask=pad)[:, 1:]
        return out.transpose(1, 2), valid


class ClippedAdamW(torch.optim.AdamW):
    """AdamW that clips the global gradient norm of its parameters before each step."""

    def __init__(self, params: Any, clip: float, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.clip = clip

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        if self.clip > 0:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.clip)
        return super().step(closure)


def warmup_cosine(warmup: int, total: int, cosine: bool = True) -> Any:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine to 0 at ``total``
    (or constant when ``cosine`` is False, as the authors' ``lr_schedule: ~``).

    `fw.lib.schedules.warmup_cosine` is the same schedule; it rounds the cosine's argument in
    another order (1 ulp apart), so this copy stays for DenseAV's recorded runs to reproduce.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class DenseAV(Learner):
    """DenseAV: which image regions a spoken word or a sound refers to, learned from pairs alone.

    ``image`` and ``audio`` are dense featurizers (any image featurizer; ``log_mel_encoder`` or
    ``hubert`` for audio); aligners (channel LN + 1×1 conv) map both to ``dim`` channels that the
    ``aggregator`` splits into its K heads. The loss is the symmetric InfoNCE of the calibrated
    aggregate scores (Eq. 6.3) over the batch gathered from all processes, plus the weighted
    regularisers of Eq. 6.5/D.7. A frozen image featurizer's maps are computed once per training
    item (``cache_image_features``); training average-pools them by ``train_pool``.
    ``steps`` sets the cosine schedule's length (use the trainer's ``max_steps``).
    """

    headline: ClassVar[tuple[str, ...]] = ("two_map", "two_disc", "prompt_map", "r10_a2i")
    example_data: ClassVar[dict[str, Any]] = {
        "name": "spoken_objects",
        "split": "test",
        "limit": 8,
        "progress": False,
        "workers": 1,
    }
    example: ClassVar[dict[str, Any]] = {
        "image": {"name": "mobilenet_v2_tap", "tap": "s16d", "weights": None},
        "audio": {"name": "log_mel_encoder", "dim": 16, "width": 16},
        "dim": 16,
        "batch_size": 4,
        "eval_limit": 8,
        "prompts": False,
    }

    def __init__(
        self,
        image: Featurizer,
        audio: Featurizer,
        aggregator: Aggregator | None = None,
        dim: int = 64,
        audio_aligner: Literal["linear", "conv", "none"] = "linear",
        batch_size: int = 48,
        optimizer: OptimizerFactory | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        grad_clip: float = 10.0,
        warmup_steps: int = 100,
        steps: int = 1500,
        schedule: Literal["cosine", "constant"] = "cosine",
        train_pool: int = 2,
        aligner_warmup: int = 0,
        cache_image_features: bool = True,
        cal_init: float = 1.0,
        lambda_dis: float = 0.05,
        lambda_splice: float = 0.01,
        lambda_cal: float = 0.1,
        lambda_nonneg: float = 0.01,
        lambda_tv: float = 0.01,
        splice_p: float = 0.5,
        splice_seconds: tuple[float, float] = (0.3, 1.0),
        nonneg_samples: int = 250,
        eval_limit: int | None = None,
        prompts: bool = True,
        pictures: int = 6,
    ) -> None:
        super().__init__()
        from fw_denseav.aggregators import MaxMean

        self.image = image
        self.audio = audio
        self.aggregator = aggregator if aggregator is not None else MaxMean(heads=1)
        if dim % self.aggregator.heads:
            raise ShapeError(f"dim {dim} cannot be split into {self.aggregator.heads} heads")
        self.dim = dim
        self.image_aligner = Aligner(image.dim, dim)
        if audio_aligner == "none" and audio.dim != dim:
            raise ShapeError(
                f"audio_aligner 'none' needs audio.dim == dim, got {audio.dim} != {dim}"
            )
        self.audio_aligner: nn.Module = nn.Identity()
        if audio_aligner == "linear":
            self.audio_aligner = Aligner(audio.dim, dim)
        elif audio_aligner == "conv":
            self.audio_aligner = AudioConvAligner(audio.dim, dim)
        self.calibrator = Calibrator(cal_init)
        self.batch_size = batch_size
        self.optimizer_factory = optimizer
        self.lr, self.weight_decay, self.grad_clip = lr, weight_decay, grad_clip
        self.warmup_steps, self.steps, self.schedule = warmup_steps, steps, schedule
        self.train_pool = train_pool
        self.aligner_warmup = aligner_warmup
        self.cache_image_features = cache_image_features
        self.lambdas = {
            "dis": lambda_dis,
            "splice": lambda_splice,
            "cal": lambda_cal,
            "nonneg": lambda_nonneg,
            "tv": lambda_tv,
        }
        self.splice_p, self.splice_seconds = splice_p, tuple(splice_seconds)
        self.nonneg_samples = nonneg_samples
        self.eval_limit, self.prompts, self.pictures = eval_limit, prompts, pictures
        self.fabric: Any = None  # set by a caller that owns a Fabric; else torch.distributed
        self._cache: Tensor | None = None

    # -- features ----------------------------------------------------------------------------

    @property
    def image_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.image.parameters())

    @torch.no_grad()
    def image_maps(
        self, data: Any, limit: int | None = None, batch: int = 32, desc: str = ""
    ) -> Tensor:
        """Frozen image featurizer maps of a dataset's items, fp16 ``[N, C, h, w]``.

        The maps are remembered per (dataset object, item count, featurizer parameters and
        buffers), so several learners with the same frozen featurizer on the same data (the
        seeds and ablations of a benchmark in one process) compute them once.
        """
        n = len(data) if limit is None else min(limit, len(data))
        key = (id(data), n, type(self.image).__qualname__, _fingerprint(self.image))
        if key in _MAPS:
            _MAPS.move_to_end(key)
            return _MAPS[key][1]
        self.image.eval()
        out = []
        for start in tqdm(range(0, n, batch), desc=desc or "image features", leave=False):
            idx = list(range(start, min(n, start + batch)))
            items = gather(data, idx)
            # channels-last input: oneDNN's convolutions run ≈1.7× faster on one CPU thread
            # (MobileNetV2 s16d: 74 -> 40 ms per image; the maps agree to 1e-5)
            x = float_images(items["x"]).contiguous(memory_format=torch.channels_last)
            out.append(self.image(x).half().contiguous())
        maps = torch.cat(out)
        _MAPS[key] = (data, maps)  # holding the dataset keeps its id from being reused
        while len(_MAPS) > _MAPS_KEPT:
            _MAPS.popitem(last=False)
        return maps

    def setup(self, data: Any) -> None:
        if hasattr(self.audio, "setup"):
            self.audio.setup(data)
        if self.cache_image_features and self.image_frozen:
            self._cache = self.image_maps(data, desc="caching training image features")

    def encode_image(self, batch: dict[str, Tensor], pool: int = 1, detach: bool = False) -> Dense:
        """Aligned image codes ``[B, dim, h, w]`` (cached backbone maps while training)."""
        if self._cache is not None and self.training and "index" in batch:
            feats = self._cache[batch["index"].cpu()].to(batch["audio"].device).float()
        else:
            feats = self.image(float_images(batch["x"]))
        if detach:
            feats = feats.detach()
        if pool > 1:
            feats = nn.functional.avg_pool2d(feats, pool)
        return Dense(self.image_aligner(feats))

    def encode_audio(self, audio: Tensor, mask: Tensor, detach: bool = False) -> Dense:
        """Aligned audio codes ``[B, dim, T']`` with their validity mask."""
        dense = dense_features(self.audio, audio, mask)
        feats = dense.features.detach() if detach else dense.features
        if isinstance(self.audio_aligner, AudioConvAligner):
            return Dense(*self.audio_aligner(feats, dense.mask))
        return Dense(self.audio_aligner(feats), dense.mask)

    # -- training ----------------------------------------------------------------------------

    def configure_optimizers(self) -> Optimization:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is not None:
            opt = self.optimizer_factory(params)
        else:
            opt = ClippedAdamW(params, self.grad_clip, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(self.warmup_steps, self.steps, self.schedule == "cosine")
        )
        return Optimization([opt], [sched])

    def training_step(self, batch: dict[str, Tensor], step: int) -> dict[str, Tensor]:
        audio, mask = batch["audio"].float(), batch["audio_mask"].bool()
        neg = torch.zeros(mask.shape, device=audio.device)
        if self.lambdas["splice"] > 0 and self.splice_p > 0:
            lo, hi = self.splice_seconds
            audio, neg = splice_negatives(
                audio, mask, p=self.splice_p, min_seconds=lo, max_seconds=hi
            )
        # phase 1: only the aligners and γ learn while the backbones' outputs are
        # detached for the first ``aligner_warmup`` steps
        warm = step < self.aligner_warmup
        a = self.encode_audio(audio, mask, detach=warm)
        v = self.encode_image(batch, self.train_pool, detach=warm)
        tokens = a.features.shape[-1]
        amask = (
            a.mask
            if a.mask is not None
            else torch.ones(a.batch, tokens, dtype=torch.bool, device=audio.device)
        )
        neg_tok = to_tokens(neg, tokens, self.samples_per_token)
        # spliced negatives and padding are both pushed to zero similarity (Eq. D.1, thesis)
        splice_w = torch.where(amask, neg_tok, torch.ones_like(neg_tok))

        # masks travel as uint8: collective back-ends do not all support bool tensors
        gathered_mask = gather_across(amask.to(torch.uint8), self.fabric).bool()
        a_all = Dense(gather_across(a.features, self.fabric), gathered_mask)
        v_all = Dense(gather_across(v.features, self.fabric))
        scores = self.aggregator(a_all, v_all)  # [B, B] rows audio, columns images
        nce = symmetric_infonce(self.calibrator(scores))

        pairs = torch.arange(a.batch, device=audio.device).repeat(2, 1).T
        vol = self.aggregator.pair_volumes(a, v, pairs).flatten(3)  # [B, K, T, h·w]
        vmask = torch.ones(v.batch, vol.shape[-1], dtype=torch.bool, device=audio.device)
        heads = self.aggregator.heads
        terms = {
            "dis": disentanglement_loss(vol, amask, vmask),
            "splice": splice_loss(vol, splice_w),
            "cal": self.calibrator.penalty(),
            "nonneg": nonneg_loss(
                a.features, amask, v.features.flatten(2), vmask, heads, self.nonneg_samples
            ),
            "tv": tv_loss(vol, amask),
        }
        loss = nce + sum(self.lambdas[k] * t for k, t in terms.items())
        out = {"loss": loss, "nce": nce.detach(), "gamma": self.calibrator.gamma.detach()}
        out.update({k: t.detach() for k, t in terms.items()})
        return out

    # -- inference ---------------------------------------------------------------------------

    @torch.no_grad()
    def infer(self, batch: dict[str, Tensor]) -> Tensor:
        """Clip-level audio→image scores ``[B, B]`` (the training aggregate, before γ)."""
        self.eval()
        a = self.encode_audio(batch["audio"].float(), batch["audio_mask"].bool())
        return self.aggregator(a, self.encode_image(batch))

    @torch.no_grad()
    def token_heat(self, audio: Dense, image: Dense) -> Tensor:
        """s(t, h, w) = max_k <a_t, v_hw> of paired items: ``[B, T, h, w]`` (docs/benchmarks.md)."""
        pairs = torch.arange(audio.batch).repeat(2, 1).T
        vol = self.aggregator.pair_volumes(audio, image, pairs)  # [B, K, T, h, w]
        return vol.amax(dim=1)

    @property
    def samples_per_token(self) -> int:
        """Audio samples per aligned token (the conv aligner pools 9 featurizer frames)."""
        factor = 9 if isinstance(self.audio_aligner, AudioConvAligner) else 1
        return self.audio.patch_size * factor

    @property
    def localize_hop(self) -> float:
        """Seconds per audio token (for `fw localize`)."""
        return self.samples_per_token / 16_000

    @torch.no_grad()
    def localize(self, image: Tensor, audio: Tensor, mask: Tensor) -> Tensor:
        """Similarity over time and space ``[T', h, w]`` of one image and one clip."""
        self.eval()
        a = self.encode_audio(audio.float(), mask.bool())
        heat = self.token_heat(a, Dense(self.image_aligner(self.image(float_images(image)))))[0]
        return heat[: int(a.mask.sum())] if a.mask is not None else heat

    def evaluate(self, data: Any, run_dir: Path | None = None) -> dict[str, float]:
        return evaluate(self, data, run_dir)


#: frozen image maps already computed: key -> (dataset, maps); the newest ``_MAPS_KEPT`` stay
_MAPS: OrderedDict[tuple[Any, ...], tuple[Any, Tensor]] = OrderedDict()
_MAPS_KEPT = 4


def _fingerprint(module: nn.Module) -> str:
    """SHA-1 of a module's parameters and buffers (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
