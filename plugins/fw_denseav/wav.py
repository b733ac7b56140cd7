"""Reading users' audio: PCM WAV files as mono float samples, resampled where asked."""

from __future__ import annotations

import wave
from math import gcd
from pathlib import Path

import numpy as np

from fw.errors import DataError


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples in [−1, 1] and the rate of a PCM WAV file (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} not found")
    try:
        with wave.open(str(path)) as fh:
            rate, width, channels = fh.getframerate(), fh.getsampwidth(), fh.getnchannels()
            raw = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError) as err:
        raise DataError(
            f"{path} is not a readable PCM WAV file ({err}); convert it, e.g. with "
            "`ffmpeg -i IN -ac 1 -ar 16000 OUT.wav`"
        ) from err
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise DataError(f"{path}: {8 * width}-bit WAV is not supported (use 8, 16 or 32-bit PCM)")
    x = np.frombuffer(raw, dtype).astype(np.float64)
    x = (x - 128) / 128 if width == 1 else x / float(np.iinfo(dtype).max)
    return x.reshape(-1, channels).mean(axis=1), rate


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``x`` sampled at ``rate`` resampled to ``target`` Hz (polyphase; unchanged if equal)."""
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(target, rate)
    return resample_poly(x, target // g, rate // g)


def read_wav_at(path: Path, target: int) -> np.ndarray:
    """Mono samples of a PCM WAV file at ``target`` Hz."""
    x, rate = read_wav(path)
    return resample(x, rate, target)
