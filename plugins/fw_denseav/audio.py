"""Audio featurizers of ``[B, 1, T]`` 16 kHz waveforms: a log-mel conv encoder and HuBERT.

Both return ``[B, C, T']`` features; :meth:`forward_dense` also resamples the validity mask
``[B, T]`` (``"audio_mask"``, `fw.dense`) to the output rate: a token is valid when its first
sample lies inside the clip.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fw.api import Featurizer
from fw.data import take
from fw.dense import Dense, lengths_to_mask
from fw.errors import DataError, ShapeError
from fw_denseav.aggregators import masked_mean

SAMPLE_RATE = 16_000


def mel_filterbank(
    n_freqs: int, n_mels: int, sample_rate: int, f_max: float | None = None
) -> Tensor:
    """Triangular HTK-mel filters ``[n_freqs, n_mels]`` from 0 Hz to ``f_max`` (unnormalised)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)

    def to_mel(f: Tensor | float) -> Tensor:
        return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

    mels = torch.linspace(float(to_mel(0.0)), float(to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMel(nn.Module):
    """Log-mel spectrogram ``[B, n_mels, T // hop]`` of ``[B, 1, T]`` waveforms (25/10 ms)."""

    def __init__(
        self,
        n_mels: int = 64,
        sample_rate: int = SAMPLE_RATE,
        win_ms: float = 25,
        hop_ms: float = 10,
    ) -> None:
        super().__init__()
        self.win = int(sample_rate * win_ms / 1000)
        self.hop = int(sample_rate * hop_ms / 1000)
        self.n_fft = 1 << (self.win - 1).bit_length()
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)
        self.register_buffer(
            "fbank", mel_filterbank(self.n_fft // 2 + 1, n_mels, sample_rate), persistent=False
        )

    def frames(self, samples: int) -> int:
        """Number of frames of a ``samples``-long clip (one per hop)."""
        return samples // self.hop

    def forward(self, wav: Tensor) -> Tensor:
        x = wav.reshape(wav.shape[0], -1)
        # right-pad so frame i covers samples [i·hop, i·hop + win): exactly T // hop frames
        x = nn.functional.pad(x, (0, self.win - self.hop))
        frames = x.unfold(-1, self.win, self.hop) * self.window  # [B, frames, win]
        spec = torch.fft.rfft(frames, n=self.n_fft)  # [B, frames, F]
        power = torch.view_as_real(spec).pow(2).sum(-1)  # |z|² without the complex abs
        mel = torch.einsum("btf,fm->bmt", power, self.fbank)
        return torch.log(mel + 1e-6)


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, *S]`` (the aligners' LN, eps 1e-4)."""

    def __init__(self, channels: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


class _Block(nn.Module):
    """Residual dilated conv block: x + GELU(LN(conv(x)))."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.norm = ChannelNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        return x + nn.functional.gelu(self.norm(self.conv(x)))


class AudioFeaturizer(Featurizer):
    """Shared parts: waveform input ``[B, 1, T]``, dense output, mask resampling."""

    input_key = "audio"
    dense = True
    input_shape: ClassVar[tuple[int, ...]] = (1, 16_000)

    def output_length(self, samples: int) -> int:
        raise NotImplementedError

    def token_lengths(self, mask: Tensor, tokens: int) -> Tensor:
        """Valid tokens per item: those whose first sample is a valid sample."""
        lengths = mask.sum(dim=1)
        return torch.clamp(
            torch.div(lengths + self.patch_size - 1, self.patch_size, rounding_mode="floor"),
            max=tokens,
        )

    def forward_dense(self, x: Tensor, mask: Tensor | None = None) -> Dense:
        """Features ``[B, C, T']`` with the validity mask of the output tokens."""
        out = self(x)
        if mask is None:
            return Dense(out)
        if mask.shape != (x.shape[0], x.shape[-1]):
            raise ShapeError(
                f"audio_mask must be [B, T] = {(x.shape[0], x.shape[-1])}, got {tuple(mask.shape)}"
            )
        return Dense(out, lengths_to_mask(self.token_lengths(mask, out.shape[-1]), out.shape[-1]))

    @staticmethod
    def check_audio(x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 1:
            raise ShapeError(f"audio must be [B, 1, T] mono waveforms, got shape {tuple(x.shape)}")
        return x


def dense_features(featurizer: Featurizer, x: Tensor, mask: Tensor | None = None) -> Dense:
    """Features and validity mask: an audio featurizer's own, else the mask resampled (nearest)."""
    if isinstance(featurizer, AudioFeaturizer):
        return featurizer.forward_dense(x, mask)
    out = featurizer(x)
    if mask is None:
        return Dense(out)
    m = F.interpolate(mask[:, None].float(), size=out.shape[2:], mode="nearest")
    return Dense(out, m[:, 0] > 0.5)


class LogMelEncoder(AudioFeaturizer):
    """A log-mel conv encoder trained from scratch (docs/benchmarks.md), one token per 80 ms.

    Log-mel (64 bins, 25/10 ms) standardised by the training set's mean/std (:meth:`setup`),
    three stride-2 convs (kernel 4, ``width``), four residual dilated blocks (dilations 1, 2, 4,
    1; conv + channel LN + GELU), then channel LN and a 1×1 conv to ``dim``.
    """

    example: ClassVar[dict[str, Any]] = {"dim": 16, "width": 16}

    def __init__(self, dim: int = 64, width: int = 128, n_mels: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.mel = LogMel(n_mels)
        self.patch_size = self.mel.hop * 8
        self.register_buffer("mel_mean", torch.zeros(n_mels))
        self.register_buffer("mel_std", torch.ones(n_mels))
        layers: list[nn.Module] = []
        channels = n_mels
        for _ in range(3):
            layers += [
                nn.Conv1d(channels, width, 4, stride=2, padding=1),
                ChannelNorm(width),
                nn.GELU(),
            ]
            channels = width
        self.stem = nn.Sequential(*layers)
        self.blocks = nn.Sequential(*[_Block(width, d) for d in (1, 2, 4, 1)])
        self.head = nn.Sequential(ChannelNorm(width), nn.Conv1d(width, dim, 1))

    def setup(self, data: Any, limit: int = 256) -> None:
        """Per-bin mean/std of the log-mels of up to ``limit`` training clips (valid frames)."""
        wav = take(data, "audio", limit).float()
        mels = self.mel(wav)  # [n, M, frames]
        try:
            mask = take(data, "audio_mask", limit)
            frames = torch.div(mask.sum(1), self.mel.hop, rounding_mode="floor")
        except DataError:
            frames = torch.full((wav.shape[0],), mels.shape[-1])
        valid = lengths_to_mask(frames.clamp(max=mels.shape[-1]), mels.shape[-1])[:, None, :]
        count = valid.sum().clamp_min(1)
        mean = (mels * valid).sum(dim=(0, 2)) / count
        var = ((mels - mean[None, :, None]).pow(2) * valid).sum(dim=(0, 2)) / count
        self.mel_mean.copy_(mean)
        self.mel_std.copy_(var.sqrt().clamp_min(1e-3))

    def output_length(self, samples: int) -> int:
        return self.mel.frames(samples) // 8

    def forward(self, x: Tensor) -> Tensor:
        mel = self.mel(self.check_audio(x))
        mel = (mel - self.mel_mean[:, None]) / self.mel_std[:, None]
        return self.head(self.blocks(self.stem(mel)))


#: torchaudio bundles by recipe name; "_ft" ones were CTC fine-tuned on LibriSpeech transcripts
HUBERT_BUNDLES: dict[str, str] = {
    "hubert_base": "HUBERT_BASE",
    "hubert_large": "HUBERT_LARGE",
    "hubert_xlarge": "HUBERT_XLARGE",
    "hubert_large_ft": "HUBERT_ASR_LARGE",
    "hubert_xlarge_ft": "HUBERT_ASR_XLARGE",
}
HubertName = Literal[
    "hubert_base", "hubert_large", "hubert_xlarge", "hubert_large_ft", "hubert_xlarge_ft"
]
_TORCHAUDIO_MODELS = "https://download.pytorch.org/torchaudio/models/"


def normalize_clips(wav: Tensor, lengths: Tensor | None, eps: float = 1e-5) -> Tensor:
    """Each clip ``[B, T]`` standardised over its own valid samples (padding stays zero)."""
    if lengths is None:
        return F.layer_norm(wav, wav.shape[-1:], eps=eps)
    mask = lengths_to_mask(lengths, wav.shape[-1])
    mean = masked_mean(wav, mask, dim=1).unsqueeze(1)
    var = masked_mean((wav - mean).square(), mask, dim=1).unsqueeze(1)
    return torch.where(mask, (wav - mean) * torch.rsqrt(var + eps), torch.zeros_like(wav))


def hubert_cache_path(bundle_path: str) -> Path:
    """Where torch.hub caches a torchaudio pipeline's weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(bundle_path).name


class HuBERT(AudioFeaturizer):
    """HuBERT (torchaudio.pipelines) features of one transformer layer, 50 Hz, ``[B, C, T/320]``.

    ``model`` picks the bundle: the self-supervised ``hubert_base``/``hubert_large`` (the
    thesis's "self-supervision only" claim) or ``hubert_large_ft`` (what the authors' released
    checkpoint used, CTC fine-tuned with transcripts; Hamilton, PhD thesis, Ch. 6). The weights come
    from torch.hub's cache; with ``download`` False (the default) a missing file is a
    :class:`DataError` naming the file, its cache path and the URL to fetch it from. ``layer``
    counts from 1 (None: the last). ``frozen`` freezes every weight; otherwise all are trained
    (the paper fine-tunes all of HuBERT).
    """

    example: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model: HubertName = "hubert_large_ft",
        layer: int | None = None,
        frozen: bool = False,
        download: bool = False,
    ) -> None:
        super().__init__()
        if model not in HUBERT_BUNDLES:
            raise ValueError(f"model must be one of {sorted(HUBERT_BUNDLES)}, got {model!r}")
        try:
            import torchaudio.pipelines as pipelines
        except (ImportError, OSError) as err:
            raise DataError(
                f"HuBERT needs torchaudio, which failed to import ({err}); install the "
                "torchaudio build that matches your torch (same version and CUDA tag)"
            ) from err
        bundle = getattr(pipelines, HUBERT_BUNDLES[model])
        path = hubert_cache_path(bundle._path)
        url = (
            bundle._path if bundle._path.startswith("https") else _TORCHAUDIO_MODELS + bundle._path
        )
        if not path.is_file() and not download:
            raise DataError(
                f"HuBERT weights '{Path(bundle._path).name}' ({model}) not found at {path}. "
                f"Download {url} into {path.parent} (or set TORCH_HOME), or pass "
                "download: true where the internet is reachable."
            )
        try:
            net = bundle.get_model()
        except Exception as err:  # network errors, truncated files
            raise DataError(
                f"could not load HuBERT weights for {model} from {path} (source {url}): {err}"
            ) from err
        # the large bundles come wrapped in a module that layer-normalises the whole padded
        # batch as one tensor; fairseq normalises each utterance alone, which _run does
        normalize = bool(getattr(net, "normalize_waveform", False))
        self._setup(getattr(net, "model", net), model, layer, frozen, normalize)

    def _setup(
        self, net: nn.Module, name: str, layer: int | None, frozen: bool, normalize: bool
    ) -> None:
        self.net, self.model_name, self.layer, self.frozen = net, name, layer, frozen
        self.normalize_waveform = normalize
        self.dim = int(net.encoder.transformer.layers[0].attention.embed_dim)
        self.patch_size = math.prod(b.conv.stride[0] for b in net.feature_extractor.conv_layers)
        if frozen:
            self.requires_grad_(False)

    @classmethod
    def from_model(
        cls,
        net: nn.Module,
        layer: int | None = None,
        frozen: bool = False,
        normalize_waveform: bool = False,
    ) -> HuBERT:
        """Wrap an already built torchaudio ``Wav2Vec2Model`` (e.g. loaded from a local file)."""
        self = cls.__new__(cls)
        AudioFeaturizer.__init__(self)
        self._setup(net, "custom", layer, frozen, normalize_waveform)
        return self

    def output_length(self, samples: int) -> int:
        length = samples
        for block in self.net.feature_extractor.conv_layers:  # type: ignore[union-attr]
            conv = block.conv
            length = (length - conv.kernel_size[0]) // conv.stride[0] + 1
        return length

    def _run(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        wav = self.check_audio(x)[:, 0]
        if self.normalize_waveform:
            wav = normalize_clips(wav, lengths)
        feats, out_lengths = self.net.extract_features(wav, lengths, num_layers=self.layer)
        return feats[-1].transpose(1, 2), out_lengths

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, None)[0]

    def forward_dense(self, x: Tensor, mask: Tensor | None = None) -> Dense:
        if mask is None:
            return Dense(self(x))
        out, lengths = self._run(x, mask.sum(dim=1))
        assert lengths is not None
        return Dense(out, lengths_to_mask(lengths.clamp(max=out.shape[-1]), out.shape[-1]))


def hubert(
    model: HubertName = "hubert_large_ft",
    layer: int | None = None,
    frozen: bool = False,
    download: bool = False,
) -> HuBERT:
    """HuBERT features through torchaudio.pipelines (weights from torch.hub's cache)."""
    return HuBERT(model, layer, frozen, download)


def log_mel_encoder(dim: int = 64, width: int = 128, n_mels: int = 64) -> LogMelEncoder:
    """Log-mel conv encoder trained from scratch (works offline everywhere)."""
    return LogMelEncoder(dim, width, n_mels)


log_mel_encoder.example = {"dim": 16, "width": 16}  # type: ignore[attr-defined]
# the registry walk cannot build HuBERT offline; its offline error is tested instead
hubert.example = {}  # type: ignore[attr-defined]
