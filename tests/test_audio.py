"""fw.audio: WAV samples against numpy's own decoding, resampling, and clear errors."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from fw.errors import DataError
from fw_denseav.wav import read_wav, read_wav_at


def _write(path, samples: np.ndarray, rate: int, width: int) -> None:
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(samples.shape[1])
        fh.setsampwidth(width)
        fh.setframerate(rate)
        fh.writeframes(samples.tobytes())


@pytest.mark.parametrize(
    ("width", "dtype", "centre", "scale"), [(1, np.uint8, 128, 128), (2, np.int16, 0, 32767)]
)
def test_stereo_pcm_is_averaged_to_mono_in_unit_range(tmp_path, width, dtype, centre, scale):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    raw = rng.integers(info.min, info.max, size=(500, 2), endpoint=True).astype(dtype)
    _write(tmp_path / "a.wav", raw, 8000, width)
    x, rate = read_wav(tmp_path / "a.wav")
    expected = ((raw.astype(np.float64) - centre) / scale).mean(axis=1)
    assert rate == 8000
    np.testing.assert_allclose(x, expected, atol=1e-12)


def test_resampling_keeps_duration_and_a_tone_frequency(tmp_path):
    t = np.arange(22050) / 22050
    tone = (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)[:, None]
    _write(tmp_path / "t.wav", tone, 22050, 2)
    y = read_wav_at(tmp_path / "t.wav", 16000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # 1 s of audio: bin k is k Hz


def test_missing_and_unreadable_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_wav(tmp_path / "none.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav at all")
    with pytest.raises(DataError, match="not a readable PCM WAV"):
        read_wav(tmp_path / "bad.wav")
