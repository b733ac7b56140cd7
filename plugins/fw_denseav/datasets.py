"""Real audio-visual corpora in their official layouts, as map-style datasets of dict items.

Items: ``x`` float ``[3, S, S]`` in [0, 1] (resize shorter side to ``image_size``, centre crop),
``audio`` ``[1, T]`` 16 kHz mono in [−1, 1] trimmed or zero-padded to ``seconds``,
``audio_mask`` ``[T]`` (True on real samples), ``index``; AudioSet adds ``label`` (first
positive class). A missing file raises :class:`DataError` naming it. Nothing is read until an
item is asked for, so the datasets stream from disk through data loaders.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from fw.errors import DataError
from fw_denseav.wav import read_wav_at

RATE = 16_000
#: the authors' 10 s clip length in samples (512 HuBERT frames, as the reference code)
PAPER_SAMPLES = 164_200


def load_audio(path: Path, samples: int) -> tuple[Tensor, Tensor]:
    """``[1, samples]`` 16 kHz waveform (resampled, trimmed or zero-padded) and its mask."""
    x = read_wav_at(path, RATE)
    x = x[:samples]
    out = torch.zeros(1, samples)
    out[0, : len(x)] = torch.from_numpy(x.astype(np.float32))
    return out, torch.arange(samples) < len(x)


def load_image(path: Path, size: int) -> Tensor:
    """``[3, size, size]`` in [0, 1]: shorter side resized to ``size``, then centre-cropped."""
    if not path.is_file():
        raise DataError(f"image file {path} not found")
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        scale = size / min(w, h)
        img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
        arr = np.asarray(img, np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class PlacesAudio(Dataset):
    """Places Audio Captions (Harwath et al.; ``PlacesAudio_400k_distro``) in its official layout.

    ``root/metadata/{split}.json`` holds ``{"image_base_path", "audio_base_path", "data": [{"wav",
    "image", "uttid", "speaker", "asr_text"}, ...]}``; base paths are relative to ``root`` unless
    absolute. ``split`` is ``train`` or ``val`` (the 1,000 DAVENet validation pairs).
    """

    def __init__(
        self, root: Path, split: str = "train", image_size: int = 224, samples: int = PAPER_SAMPLES
    ) -> None:
        self.root = Path(root)
        meta = self.root / "metadata" / f"{split}.json"
        if not meta.is_file():
            raise DataError(
                f"PlacesAudio metadata {meta} not found; unpack PlacesAudio_400k_distro (with its "
                "metadata/train.json and metadata/val.json) into "
                f"{self.root} and the Places205 images the JSON's image_base_path names"
            )
        try:
            doc = json.loads(meta.read_text())
            self.entries: list[dict[str, Any]] = list(doc["data"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{meta}: expected a JSON object with a 'data' list ({err})") from err
        self.image_base = self._base(doc.get("image_base_path", ""))
        self.audio_base = self._base(doc.get("audio_base_path", ""))
        self.image_size, self.samples = image_size, samples

    def _base(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else self.root / path

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        entry = self.entries[i]
        audio, mask = load_audio(self.audio_base / entry["wav"], self.samples)
        image = load_image(self.image_base / entry["image"], self.image_size)
        return {"x": image, "audio": audio, "audio_mask": mask, "index": torch.tensor(i)}


class AudioSetClips(Dataset):
    """The AudioSet subset of the paper: official segment CSVs + one extracted frame and clip each.

    ``root/{split}.csv`` is an official segments file (``# YTID, start_seconds, end_seconds,
    positive_labels``, e.g. ``balanced_train_segments.csv`` renamed), ``root/
    class_labels_indices.csv`` the official label list (``index,mid,display_name``), and every
    row has ``root/audio/{YTID}_{start}.wav`` and ``root/frames/{YTID}_{start}.jpg`` (``start``
    as an integer number of seconds). The frames folder stands for the "one random frame" of
    the clip that training draws (extract several and pick one upstream to vary it).
    """

    def __init__(
        self, root: Path, split: str = "train", image_size: int = 224, samples: int = PAPER_SAMPLES
    ) -> None:
        self.root = Path(root)
        table = self.root / f"{split}.csv"
        labels = self.root / "class_labels_indices.csv"
        for path in (table, labels):
            if not path.is_file():
                raise DataError(
                    f"AudioSet file {path} not found; put the official segment CSV there as "
                    f"{split}.csv, the official class_labels_indices.csv, and the clips under "
                    f"{self.root / 'audio'} and {self.root / 'frames'}"
                )
        with labels.open() as fh:
            rows = list(csv.DictReader(fh))
        self.mids = {r["mid"]: int(r["index"]) for r in rows}
        self.classes = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
        self.clips: list[tuple[str, int, list[int]]] = []
        with table.open() as fh:
            for line in fh:
                if line.startswith("#") or not line.strip():
                    continue
                ytid, start, _end, rest = [p.strip() for p in line.split(",", 3)]
                mids = [m for m in rest.strip().strip('"').split(",") if m]
                self.clips.append(
                    (ytid, int(float(start)), [self.mids[m] for m in mids if m in self.mids])
                )
        self.image_size, self.samples = image_size, samples

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        ytid, start, labels = self.clips[i]
        stem = f"{ytid}_{start}"
        audio, mask = load_audio(self.root / "audio" / f"{stem}.wav", self.samples)
        image = load_image(self.root / "frames" / f"{stem}.jpg", self.image_size)
        label = labels[0] if labels else -1
        return {
            "x": image,
            "audio": audio,
            "audio_mask": mask,
            "label": torch.tensor(label),
            "index": torch.tensor(i),
        }


def places_audio(
    root: str = "data/PlacesAudio_400k_distro",
    split: str = "train",
    image_size: int = 224,
    samples: int = PAPER_SAMPLES,
) -> PlacesAudio:
    """Places Audio Captions from its official folder (metadata/{split}.json)."""
    return PlacesAudio(Path(root), split, image_size, samples)


def audioset_clips(
    root: str = "data/audioset",
    split: str = "train",
    image_size: int = 224,
    samples: int = PAPER_SAMPLES,
) -> AudioSetClips:
    """The paper's AudioSet subset: official segment CSV, one WAV and one frame per clip."""
    return AudioSetClips(Path(root), split, image_size, samples)
