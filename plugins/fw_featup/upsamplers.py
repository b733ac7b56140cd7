"""Feed-forward upsamplers σ↑ (Hamilton, PhD thesis, §5.5.2, §5.6): baselines and the JBU.

All take low-resolution features ``[B, C, h, w]`` and a guidance image ``[B, 3, H, W]`` in
[0, 1] and return ``[B, C, *size]`` (``size`` defaults to ``(H, W)``). Trainable ones accept
``weights=<run dir or upsampler.pt>`` (written by the ``featup`` learner) and may leave ``dim``
None: it is then taken from the weights, or bound on first use (:meth:`Trainable.bind`).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw.api import Upsampler
from fw.errors import DataError, FwError, RecipeError, ShapeError, check_choice
from fw.files import load
from fw_featup.ops import adaptive_conv, local_dot

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_FILE = "upsampler.pt"


def standardize(image: Tensor) -> Tensor:
    """Images in [0, 1] -> ImageNet-normalised guidance (what the reference JBU was fed)."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image - mean) / std


def read_upsampler_file(weights: str) -> dict[str, Any]:
    """The saved upsampler record of a run dir (``<dir>/upsampler.pt``) or of a file."""
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(
            f"upsampler weights {path} not found: pass a run directory of the 'featup' learner "
            f"(it writes {WEIGHTS_FILE}) or that file itself"
        )
    record = load(path, "Pass the upsampler.pt of a 'featup' run")  # tensors only
    if not isinstance(record, dict) or "state_dict" not in record or "name" not in record:
        raise DataError(f"{path} is not an upsampler record written by the 'featup' learner")
    record["path"] = str(path)
    return record


def channel_norm(features: Tensor) -> Tensor:
    """LayerNorm over the channels of ``[B, C, H, W]``, no affine (reference ``ChannelNorm`` on the
    frozen backbone: its parameters stay at their init, 1 and 0)."""
    return F.layer_norm(features.transpose(1, -1), (features.shape[1],)).transpose(1, -1)


def saved_options(weights: str | None, factory: Any, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` constructor options, with those left at their defaults taken from the saved
    record of ``weights`` (so ``{name: jbu_stack, weights: <run>}`` rebuilds what was trained;
    an option given explicitly and differing from the record fails at loading)."""
    if weights is None:
        return given
    saved = read_upsampler_file(weights).get("options", {})
    defaults = {k: p.default for k, p in inspect.signature(factory).parameters.items()}
    out = dict(given)
    for key, value in saved.items():
        if key in out and out[key] == defaults.get(key):
            out[key] = value
    return out


class Trainable(Upsampler):
    """An upsampler with parameters: late binding of ``dim`` and loading saved weights."""

    registry_name: str = ""
    dim: int | None
    options: dict[str, Any]  # constructor options that shape the parameters
    #: trained on channel-LayerNormed backbone features (reference ChannelNorm); set by the learner,
    #: saved with the weights, applied by the ``upsampled`` featurizer before upsampling
    feature_norm: bool = False

    def bind(self, dim: int) -> Trainable:
        """Build the channel-dependent layers for ``dim`` channels (idempotent)."""
        if not self.channel_dependent():
            return self
        if self.dim is None:
            self.dim = dim
            self.build_dim(dim)
        elif self.dim != dim:
            raise ShapeError(f"{type(self).__name__} was built for {self.dim} channels, got {dim}")
        return self

    def channel_dependent(self) -> bool:
        """Whether some layer's shape depends on the channel width (else any C works)."""
        return True

    def build_dim(self, dim: int) -> None:  # noqa: B027 - only some have channel-wise layers
        """Create the layers whose shape depends on the channel width."""

    def load_weights(self, weights: str) -> None:
        """Load a record written by the ``featup`` learner (same upsampler name, strictly)."""
        record = read_upsampler_file(weights)
        if record["name"] != self.registry_name:
            raise RecipeError(
                f"{record['path']} holds a '{record['name']}' upsampler, not "
                f"'{self.registry_name}'; name that upsampler in the recipe"
            )
        if record.get("dim") is not None:
            self.bind(int(record["dim"]))
        self.feature_norm = bool(record.get("channel_norm", False))
        try:
            self.load_state_dict(record["state_dict"], strict=True)
        except RuntimeError as err:
            raise DataError(
                f"{record['path']} does not fit this {self.registry_name} (were its options "
                f"{record.get('params')}?): {err}"
            ) from err

    def record(self) -> dict[str, Any]:
        """What :meth:`load_weights` reads back."""
        params = dict(getattr(self, "_fw_spec", {}) or {})
        params.pop("name", None)
        params.pop("weights", None)
        return {
            "name": self.registry_name,
            "dim": self.dim,
            "options": dict(self.options),
            "channel_norm": self.feature_norm,
            "params": params,
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }


class Interpolate(Upsampler):
    """Unguided resizing (``bilinear`` / ``bicubic``, ``align_corners=False``)."""

    def __init__(self, mode: Literal["bilinear", "bicubic", "nearest"] = "bilinear") -> None:
        super().__init__()
        check_choice(mode, ("bilinear", "bicubic", "nearest"), "mode")
        self.mode = mode

    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        size = self.target_size(guidance, size)
        if self.mode == "nearest":
            return F.interpolate(features, size=size, mode="nearest")
        return F.interpolate(features, size=size, mode=self.mode, align_corners=False)


def bilinear() -> Interpolate:
    """Bilinear interpolation to the guidance size."""
    return Interpolate("bilinear")


def bicubic() -> Interpolate:
    """Bicubic interpolation to the guidance size."""
    return Interpolate("bicubic")


class ResizeConv(Trainable):
    """Upstream ``LayeredResizeConv``: per 2× stage, bilinear 2×, concat the resized image, a
    ``k×k`` conv back to C channels, ReLU (not on the last stage), residual add."""

    registry_name = "resize_conv"
    example = {"stages": 2}  # dim binds to the input on first use

    def __init__(
        self,
        dim: int | None = None,
        stages: int = 4,
        kernel_size: int = 1,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.options = saved_options(
            weights, ResizeConv, {"stages": stages, "kernel_size": kernel_size}
        )
        stages, kernel_size = self.options["stages"], self.options["kernel_size"]
        self.dim, self.stages, self.kernel_size = None, stages, kernel_size
        self.convs = nn.ModuleList()
        if dim is not None:
            self.bind(dim)
        if weights is not None:
            self.load_weights(weights)

    def build_dim(self, dim: int) -> None:
        k = self.kernel_size
        self.convs.extend(nn.Conv2d(dim + 3, dim, k, padding="same") for _ in range(self.stages))

    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        size = self.target_size(guidance, size)
        self.bind(features.shape[1])
        x = features
        image = standardize(guidance)
        for i, conv in enumerate(self.convs):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            g = F.interpolate(image, size=x.shape[-2:], mode="bilinear", align_corners=False)
            y = conv(torch.cat([x, g], dim=1))
            x = x + (y if i == len(self.convs) - 1 else F.relu(y))
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class JBUStage(nn.Module):
    """One learned joint bilateral upsampler (Eqs. 5.4–5.6; reference ``JBULearnedRange``).

    Kernel at each guidance pixel over a ``(2·radius+1)²`` window: a softmax over the window of
    ``exp(range_temp) · ⟨MLP(G_center), MLP(G_neighbour)⟩`` (range, Eq. 5.6) times a Gaussian of
    the window offsets normalised to [−1, 1] (spatial, Eq. 5.5), renormalised to sum to 1.
    ``fixup`` adds the reference's learned correction ``0.1·MLP([K, G])``. The features are
    resized to the guidance grid (``bicubic`` in the code, ``bilinear`` in the thesis) and
    filtered by :func:`fw_featup.ops.adaptive_conv`, with reflect padding.
    """

    def __init__(
        self,
        guidance_dim: int = 3,
        key_dim: int = 32,
        radius: int = 3,
        fixup: bool = True,
        feature_resize: Literal["bicubic", "bilinear"] = "bicubic",
    ) -> None:
        super().__init__()
        self.radius = radius
        self.feature_resize = feature_resize
        d = 2 * radius + 1
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1),
            nn.GELU(),
            nn.Dropout2d(0.1),
            nn.Conv2d(key_dim, key_dim, 1),
        )
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.fixup_proj = (
            nn.Sequential(
                nn.Conv2d(guidance_dim + d * d, d * d, 1),
                nn.GELU(),
                nn.Dropout2d(0.1),
                nn.Conv2d(d * d, d * d, 1),
            )
            if fixup
            else None
        )

    def range_kernel(self, guidance: Tensor) -> Tensor:
        """``[B, d², H, W]`` softmax over the window of temperature × key dot products."""
        r = self.radius
        q = self.range_proj(guidance)
        logits = local_dot(F.pad(q, (r,) * 4, mode="reflect"), q)
        temp = self.range_temp.exp().clamp(1e-4, 1e4)
        return torch.softmax(temp * logits, dim=1)

    def spatial_kernel(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``[d²]`` Gaussian of the window offsets, coordinates normalised to [−1, 1]."""
        d = 2 * self.radius + 1
        c = torch.linspace(-1, 1, d, dtype=dtype, device=device)
        dist = c[:, None] ** 2 + c[None, :] ** 2
        return torch.exp(-dist / (2 * self.sigma_spatial.to(dtype) ** 2)).reshape(-1)

    def kernel(self, guidance: Tensor) -> Tensor:
        """The full per-pixel kernel ``[B, d², H, W]``."""
        k = self.range_kernel(guidance) * self.spatial_kernel(guidance.dtype, guidance.device).view(
            1, -1, 1, 1
        )
        k = k / k.sum(dim=1, keepdim=True).clamp_min(1e-7)
        if self.fixup_proj is not None:
            k = k + 0.1 * self.fixup_proj(torch.cat([k, guidance], dim=1))
        return k

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        h, w = guidance.shape[-2:]
        r, d = self.radius, 2 * self.radius + 1
        if min(h, w) <= r:
            raise ShapeError(f"a JBU stage with radius {r} needs a guidance larger than {r} px")
        hr = F.interpolate(source, size=(h, w), mode=self.feature_resize, align_corners=False)
        k = self.kernel(guidance)  # [B, d², H, W]
        k = k.permute(0, 2, 3, 1).reshape(k.shape[0], h, w, d, d)
        return adaptive_conv(F.pad(hr, (r,) * 4, mode="reflect"), k)


def _stage_kwargs(window: int, key_dim: int, reference_extras: bool, feature_resize: str) -> dict:
    if window % 2 != 1 or window < 1:
        raise RecipeError(f"window must be an odd number of pixels (3 or 7), got {window}")
    check_choice(feature_resize, ("bicubic", "bilinear"), "feature_resize")
    return {
        "key_dim": key_dim,
        "radius": window // 2,
        "fixup": reference_extras,
        "feature_resize": feature_resize,
    }


class JBU(Trainable):
    """One JBU stage straight to the output size (any factor); guidance pooled to that size."""

    registry_name = "jbu"
    example = {"window": 3, "key_dim": 8}

    def __init__(
        self,
        window: int = 7,
        key_dim: int = 32,
        reference_extras: bool = True,
        feature_resize: Literal["bicubic", "bilinear"] = "bicubic",
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.options = saved_options(
            weights,
            JBU,
            {
                "window": window,
                "key_dim": key_dim,
                "reference_extras": reference_extras,
                "feature_resize": feature_resize,
            },
        )
        self.dim = None  # one stage has no channel-wise layer: any C works
        self.stage = JBUStage(**_stage_kwargs(**self.options))
        if weights is not None:
            self.load_weights(weights)

    def channel_dependent(self) -> bool:
        return False

    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        size = self.target_size(guidance, size)
        g = F.adaptive_avg_pool2d(standardize(guidance), size)
        return self.stage(features, g)


class JBUStack(Trainable):
    """FeatUp's JBU as the authors ship it (the reference code's ``JBUStack``): ``stages`` 2× JBU
    stages, each guided by the image average-pooled to its output size, then the final
    residual ``0.1·Conv1x1(Dropout2d(0.2)(F)) + F``; bilinearly resized to ``size`` if the
    stages end elsewhere.

    Options give the thesis-literal variant: ``window=3``, ``key_dim=30``,
    ``feature_resize="bilinear"``, ``reference_extras=False`` (no kernel fixup, no final
    residual conv). ``stages`` = log2 of the backbone stride: 4 for /16 ViTs, 5 for stride-32
    CNNs (which the reference leaves at 4 and resizes).
    """

    registry_name = "jbu_stack"
    example = {"window": 3, "key_dim": 8, "stages": 2}  # dim binds on first use

    def __init__(
        self,
        dim: int | None = None,
        stages: int = 4,
        window: int = 7,
        key_dim: int = 32,
        reference_extras: bool = True,
        feature_resize: Literal["bicubic", "bilinear"] = "bicubic",
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.options = saved_options(
            weights,
            JBUStack,
            {
                "stages": stages,
                "window": window,
                "key_dim": key_dim,
                "reference_extras": reference_extras,
                "feature_resize": feature_resize,
            },
        )
        opts = dict(self.options)
        stages, reference_extras = opts.pop("stages"), opts["reference_extras"]
        if stages < 1:
            raise RecipeError(f"jbu_stack needs stages >= 1, got {stages}")
        kwargs = _stage_kwargs(**opts)
        self.ups = nn.ModuleList(JBUStage(**kwargs) for _ in range(stages))
        self.reference_extras = reference_extras
        self.dim = None
        self.fixup: nn.Conv2d | None = None
        self.dropout = nn.Dropout2d(0.2)
        if dim is not None:
            self.bind(dim)
        if weights is not None:
            self.load_weights(weights)

    def channel_dependent(self) -> bool:
        return self.reference_extras

    def build_dim(self, dim: int) -> None:
        self.fixup = nn.Conv2d(dim, dim, 1)

    @property
    def factor(self) -> int:
        """The upsampling factor of the stages (2 ** stages)."""
        return 2 ** len(self.ups)

    def forward(
        self, features: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        size = self.target_size(guidance, size)
        self.bind(features.shape[1])
        x = self.run_stages(features, guidance)
        if self.fixup is not None:
            x = 0.1 * self.fixup(self.dropout(x)) + x
        return self._resize(x, size)

    def run_stages(self, features: Tensor, guidance: Tensor) -> Tensor:
        """The JBU stages alone (no final residual, no final resize), on any channel count."""
        image = standardize(guidance)
        x = features
        for up in self.ups:
            g = F.adaptive_avg_pool2d(image, (2 * x.shape[-2], 2 * x.shape[-1]))
            x = up(x, g)
        return x

    @staticmethod
    def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def upsample_scores(
        self, scores: Tensor, guidance: Tensor, size: tuple[int, int] | None = None
    ) -> Tensor:
        """Upsample low-resolution score maps ``[B, K, h, w]`` (any K) with the stages and the
        final resize but without the channel-mixing residual (docs/benchmarks.md exactness
        trick). In eval mode every kernel depends on the image only, so for a linear head
        ``(A, a)`` on the upsampled features, ``A·stack(F) + a`` equals
        ``upsample_scores(A'·F + a')`` with ``(A', a') =`` :meth:`fold_head` ``(A, a)``."""
        if self.training:
            raise FwError("upsample_scores needs eval mode (dropout makes kernels random)")
        return self._resize(self.run_stages(scores, guidance), self.target_size(guidance, size))

    def fold_head(self, weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fold the final ``0.1·Conv1x1`` residual into a linear head ``weight [K, C]``,
        ``bias [K]``: ``A' = A·(I + 0.1·W)``, ``a' = a + 0.1·A·b`` (for centroids ``c_k`` as the
        rows of A: ``c'_k = (I + 0.1·W)ᵀ c_k`` and the constant ``0.1⟨b, c_k⟩``)."""
        bias = weight.new_zeros(weight.shape[0]) if bias is None else bias
        if self.fixup is None:
            return weight, bias
        w = self.fixup.weight[:, :, 0, 0].to(weight)
        if w.shape[0] != weight.shape[1]:
            raise ShapeError(f"head has {weight.shape[1]} channels, the residual {w.shape[0]}")
        return weight + 0.1 * weight @ w, bias + 0.1 * weight @ self.fixup.bias.to(weight)


def stages_for(stride: int) -> int:
    """The number of 2× stages that undo a backbone stride (16 -> 4, 32 -> 5)."""
    return max(1, round(math.log2(max(stride, 2))))
