"""`fw localize` on a tiny trained DenseAV run (skipped without espeak-ng/flite/Fashion-MNIST)."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None or not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="needs apt packages espeak-ng, flite and dataset-fashion-mnist",
)


def test_localize_writes_a_heatmap(tmp_path):
    from PIL import Image

    from fw.cli import main

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        """\
seed: 0
data: {name: spoken_objects, split: test, limit: 8, progress: false, workers: 1}
learner:
  name: denseav
  image: {name: mobilenet_v2_tap, tap: s16d, weights: null}
  audio: {name: log_mel_encoder, dim: 16, width: 16}
  dim: 16
  audio_aligner: none
  batch_size: 4
  steps: 2
  prompts: false
  pictures: 1
trainer: {max_steps: 2, progress: false}
"""
    )
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    assert (run / "heatmaps.png").is_file() and (run / "timeline.png").is_file()
    image = tmp_path / "img.png"
    Image.fromarray(np.full((80, 120, 3), 90, np.uint8)).save(image)
    audio = tmp_path / "clip.wav"
    with wave.open(str(audio), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(22050)
        fh.writeframes((np.random.default_rng(0).standard_normal(22050) * 3000).astype(np.int16))
    out = tmp_path / "heat.png"
    assert (
        main(
            ["localize", str(run), "--image", str(image), "--audio", str(audio), "--out", str(out)]
        )
        == 0
    )
    assert out.stat().st_size > 0
    assert (
        main(["localize", str(run), "--image", str(tmp_path / "no.png"), "--audio", str(audio)])
        == 2
    )
