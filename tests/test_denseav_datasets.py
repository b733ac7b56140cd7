"""Places Audio Captions and the AudioSet subset on tiny generated trees in the official layouts."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from fw.errors import DataError
from fw_denseav.datasets import audioset_clips, places_audio


def _wav(path: Path, seconds: float, rate: int = 16000) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (np.sin(np.arange(int(seconds * rate)) * 0.05) * 20000).astype(np.int16)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(x.tobytes())
    return x


def _jpg(path: Path, w: int, h: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 200, np.uint8)).save(path)


def test_places_audio_layout(tmp_path):
    root = tmp_path / "PlacesAudio_400k_distro"
    _wav(root / "wavs" / "1" / "utt_a.wav", 0.5)
    _wav(root / "wavs" / "2" / "utt_b.wav", 2.0, rate=8000)
    images = tmp_path / "places205"
    _jpg(images / "a" / "abbey" / "0001.jpg", 64, 48)
    _jpg(images / "b" / "beach" / "0002.jpg", 40, 80)
    data = [
        {
            "wav": "wavs/1/utt_a.wav",
            "image": "a/abbey/0001.jpg",
            "uttid": "a",
            "speaker": "s1",
            "asr_text": "an abbey",
        },
        {
            "wav": "wavs/2/utt_b.wav",
            "image": "b/beach/0002.jpg",
            "uttid": "b",
            "speaker": "s2",
            "asr_text": "a beach",
        },
    ]
    (root / "metadata").mkdir()
    doc = {"image_base_path": str(images), "audio_base_path": ".", "data": data}
    (root / "metadata" / "val.json").write_text(json.dumps(doc))
    ds = places_audio(str(root), "val", image_size=32, samples=16000)
    assert len(ds) == 2
    a, b = ds[0], ds[1]
    assert a["x"].shape == (3, 32, 32) and float(a["x"].max()) == pytest.approx(200 / 255, abs=0.01)
    assert a["audio"].shape == (1, 16000) and int(a["audio_mask"].sum()) == 8000
    assert int(b["audio_mask"].sum()) == 16000  # 2 s at 8 kHz -> resampled, trimmed to 1 s
    assert float(a["audio"][0, 8000:].abs().max()) == 0.0
    (images / "b" / "beach" / "0002.jpg").unlink()
    with pytest.raises(DataError, match="0002.jpg"):
        ds[1]
    with pytest.raises(DataError, match="metadata/train.json"):
        places_audio(str(root), "train")


def test_audioset_layout(tmp_path):
    root = tmp_path / "audioset"
    root.mkdir()
    (root / "class_labels_indices.csv").write_text(
        'index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/0bt9lr,"Dog"\n'
    )
    (root / "eval.csv").write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=2, num_segs=2, num_unique_labels=2, num_positive_labels=3\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--4gqARaEJE, 0.000, 10.000, "/m/0bt9lr,/m/09x0r"\n'
        'zz-abc_1234, 30.000, 40.000, "/m/09x0r"\n'
    )
    _wav(root / "audio" / "--4gqARaEJE_0.wav", 1.0)
    _jpg(root / "frames" / "--4gqARaEJE_0.jpg", 50, 50)
    ds = audioset_clips(str(root), "eval", image_size=24, samples=8000)
    assert len(ds) == 2 and ds.classes == ["Speech", "Dog"]
    item = ds[0]
    assert item["label"].item() == 1 and item["x"].shape == (3, 24, 24)
    assert bool(item["audio_mask"].all()) and item["audio"].dtype == torch.float32
    with pytest.raises(DataError, match="zz-abc_1234_30.wav"):
        ds[1]
    with pytest.raises(DataError, match="train.csv"):
        audioset_clips(str(root), "train")
