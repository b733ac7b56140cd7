"""SpokenObjects (docs/benchmarks.md): Fashion-MNIST objects on textured canvases, spoken captions.

Every item is regenerated from ``numpy.random.default_rng([split_seed, index])``, so one item
alone and the same item in sequence are byte-identical. Images are 224×224 RGB with exact masks;
captions come from espeak-ng and flite voices with exact word timings; the test split's voices
are held out (speaker-disjoint).
"""

from __future__ import annotations

import colorsys
import functools
from collections.abc import Sequence
from typing import Any, Literal

import attrs
import numpy as np
import torch
from scipy.signal import resample_poly
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fw.errors import DataError
from fw_denseav.speech import Speech, espeak_synth, flite_synth

SIZE = 224
RATE = 16_000
MAX_SAMPLES = 56_000  # 3.5 s
NAMES = (
    "top",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)
ONE = ("{A}", "a picture of {A}", "this is {A}", "I see {A}", "there is {A} here", "look at {A}")
TWO = (
    "{A} and {B}",
    "a picture of {A} and {B}",
    "I see {A} next to {B}",
    "there is {A} and {B}",
    "{A} with {B}",
    "this is {A} and that is {B}",
)
_TRAIN_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan")
_TRAIN_VARIANTS = ("", "m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt", "croak")
_TEST_ACCENTS = ("en-us-nyc", "en-gb-x-gbcwmd")
_TEST_VARIANTS = ("m5", "m6", "f4", "f5", "klatt2")


def _espeak_voices(accents: Sequence[str], variants: Sequence[str]) -> tuple[str, ...]:
    return tuple(a if not v else f"{a}+{v}" for a in accents for v in variants)


VOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "espeak": _espeak_voices(_TRAIN_ACCENTS, _TRAIN_VARIANTS),
        "flite": ("kal", "awb", "rms"),
    },
    "test": {"espeak": _espeak_voices(_TEST_ACCENTS, _TEST_VARIANTS), "flite": ("slt",)},
}
#: held-out voices of the prompted-localisation protocol
PROMPT_VOICES = (
    "espeak:en-us-nyc+f4",
    "espeak:en-gb-x-gbcwmd+m5",
    "flite:slt",
    "espeak:en-us-nyc+klatt2",
)
Split = Literal["train", "test", "dev"]
SPLITS: dict[str, tuple[int, str, str]] = {  # split -> (seed, Fashion-MNIST pool, voices)
    "train": (0, "train", "train"),
    "test": (1, "test", "test"),
    "dev": (2, "dev", "train"),
}


def noun_phrase(cls: int) -> str:
    """ "some trousers", else "a {name}" (the target word is the name, not the article)."""
    return "some trousers" if NAMES[cls] == "trousers" else f"a {NAMES[cls]}"


@attrs.frozen
class Item:
    """One generated pair (the stored fields)."""

    img: np.ndarray  # [224, 224, 3] uint8
    seg: np.ndarray  # [224, 224] uint8; j+1 marks cls[j]
    cls: np.ndarray  # [2] int8, -1 = none
    spans: np.ndarray  # [2, 2] float32 seconds, aligned with cls
    aud: np.ndarray  # [56000] int16, zero-padded
    alen: int
    text: str
    voice: str
    params: dict[str, float]
    word_spans: np.ndarray  # [n_words, 2] float32 seconds (after the lead-in)


@functools.lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    from skimage import data

    return tuple(np.asarray(f(), np.float64) / 255.0 for f in (data.brick, data.grass, data.gravel))


@functools.lru_cache(maxsize=4)
def fashion_pool(pool: str, root: str = "/usr/share/datasets/fashion-mnist") -> list[np.ndarray]:
    """Per class, the Fashion-MNIST images of a pool: train 0–49,999, dev 50,000–59,999, test."""
    from pathlib import Path

    from fw_data.fashion_mnist import load_split

    images, labels = load_split(Path(root), "test" if pool == "test" else "train")
    if pool == "train":
        images, labels = images[:50_000], labels[:50_000]
    elif pool == "dev":
        images, labels = images[50_000:], labels[50_000:]
    return [images[labels == c] for c in range(10)]


def _resize(x: np.ndarray, size: int, mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))[None, None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode=mode, align_corners=False)[
        0, 0
    ].numpy()


def background(rng: np.random.Generator) -> np.ndarray:
    """Texture crop (p 0.75) or smooth noise, standardised ×0.08 on a base colour, [224,224,3]."""
    if rng.random() < 0.75:
        tex = _textures()[int(rng.integers(3))]
        side = int(rng.integers(SIZE, 513))
        y0 = int(rng.integers(0, tex.shape[0] - side + 1))
        x0 = int(rng.integers(0, tex.shape[1] - side + 1))
        from skimage.transform import resize

        field = resize(tex[y0 : y0 + side, x0 : x0 + side], (SIZE, SIZE), anti_aliasing=True)
    else:
        field = _resize(rng.standard_normal((8, 8)), SIZE, "bicubic")
    field = (field - field.mean()) / max(field.std(), 1e-8) * 0.08
    base = rng.uniform(0.15, 0.55, 3)
    return np.clip(base[None, None, :] + field[..., None], 0.0, 1.0)


def _place(rng: np.random.Generator, sides: list[int]) -> list[tuple[int, int]]:
    for _ in range(1000):
        boxes = [
            (int(rng.integers(0, SIZE - s + 1)), int(rng.integers(0, SIZE - s + 1))) for s in sides
        ]
        if len(boxes) < 2:
            return boxes
        (y1, x1), (y2, x2) = boxes
        s1, s2 = sides
        if y1 + s1 <= y2 or y2 + s2 <= y1 or x1 + s1 <= x2 or x2 + s2 <= x1:
            return boxes
    # two large objects (sides near 112) rarely fit by chance: draw exactly from the same law
    return place_exact(rng, sides[0], sides[1])


def place_exact(
    rng: np.random.Generator, s1: int, s2: int, size: int = SIZE
) -> list[tuple[int, int]]:
    """Top-left corners of two non-overlapping squares, uniform over all such placements.

    This is the law of rejection sampling, so a fallback to it after failed tries leaves the
    distribution unchanged. A placement is valid when the boxes are apart along y (set A) or
    along x (set B). With S separated and T possible 1-D corner pairs per axis,
    |A| = S·T and |B minus A| = S·(T − S); draw A with probability T / (2T − S).
    """
    a, b = np.meshgrid(np.arange(size - s1 + 1), np.arange(size - s2 + 1), indexing="ij")
    a, b = a.ravel(), b.ravel()
    apart = (a + s1 <= b) | (b + s2 <= a)
    sep = np.flatnonzero(apart)
    if len(sep) == 0:
        raise ValueError(f"squares of sides {s1} and {s2} cannot both fit in {size}")
    total = len(a)
    if rng.random() < total / (2 * total - len(sep)):
        iy, ix = int(sep[rng.integers(len(sep))]), int(rng.integers(total))
    else:
        close = np.flatnonzero(~apart)
        iy, ix = int(close[rng.integers(len(close))]), int(sep[rng.integers(len(sep))])
    return [(int(a[iy]), int(a[ix])), (int(b[iy]), int(b[ix]))]


def _post(
    speech: Speech, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, float, dict[str, float]]:
    """Resample to 16 kHz, lead-in, peak, noise at an SNR; returns int16, spans, lead."""
    x = speech.samples
    if speech.rate == 22_050:
        x = resample_poly(x, 320, 441)
    elif speech.rate == 8_000:
        x = resample_poly(x, 2, 1)
    elif speech.rate != RATE:
        raise DataError(f"unexpected TTS sample rate {speech.rate}")
    lead = float(rng.uniform(0.0, 0.3))
    peak = float(rng.uniform(0.3, 0.9))
    snr = float(rng.uniform(15.0, 40.0))
    x = x / max(np.abs(x).max(), 1e-8) * peak
    power = float(np.mean(x**2))
    x = np.concatenate([np.zeros(int(round(lead * RATE))), x])
    x = x + rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr / 10))
    out = np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    return out, speech.spans + lead, lead, {"lead": lead, "peak": peak, "snr": snr}


def speak(
    text: str, voice: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Synthesise ``text`` with ``voice`` (``espeak:V`` / ``flite:V``) within 3.5 s.

    Engine parameters are redrawn from ``rng`` (same voice) until the clip fits; never truncated.
    """
    engine, name = voice.split(":", 1)
    for _ in range(50):
        if engine == "espeak":
            params: dict[str, float] = {
                "rate": int(rng.integers(120, 231)),
                "pitch": int(rng.integers(25, 76)),
            }
            speech = espeak_synth(text, name, int(params["rate"]), int(params["pitch"]))
        else:
            params = {"duration_stretch": float(rng.uniform(0.8, 1.35))}
            speech = flite_synth(text, name, params["duration_stretch"])
        wav, spans, _, post = _post(speech, rng)
        if len(wav) <= MAX_SAMPLES:
            return wav, spans, {**params, **post}
    raise DataError(f"could not fit {text!r} by {voice} into 3.5 s")


def generate_item(
    split_seed: int, index: int, pool: list[np.ndarray], voices: dict[str, tuple[str, ...]]
) -> Item:
    """Item ``index`` of a split from its own stream ``default_rng([split_seed, index])``."""
    rng = np.random.default_rng([split_seed, index])
    img = background(rng)
    if rng.random() < 0.4:
        classes = [int(rng.integers(10))]
    else:
        classes = sorted(int(c) for c in rng.choice(10, 2, replace=False))
    seg = np.zeros((SIZE, SIZE), np.uint8)
    sides, shapes, colours = [], [], []
    for c in classes:
        inst = pool[c][int(rng.integers(len(pool[c])))].astype(np.float64) / 255.0
        side = int(rng.integers(72, 113))
        sides.append(side)
        shapes.append(np.clip(_resize(inst, side, "bilinear"), 0.0, 1.0))
        colours.append(np.array(colorsys.hsv_to_rgb(float(rng.random()), 0.8, 1.0)))
    for j, ((y, x), side, intensity, colour) in enumerate(
        zip(_place(rng, sides), sides, shapes, colours, strict=True)
    ):
        alpha = np.clip(1.3 * intensity, 0.0, 1.0)[..., None]
        patch = img[y : y + side, x : x + side]
        img[y : y + side, x : x + side] = (1 - alpha) * patch + alpha * colour * (
            0.35 + 0.65 * intensity[..., None]
        )
        seg[y : y + side, x : x + side][intensity > 0.15] = j + 1
    order = [int(o) for o in rng.permutation(len(classes))]
    phrases = [noun_phrase(classes[o]) for o in order]
    template = ONE[int(rng.integers(6))] if len(classes) == 1 else TWO[int(rng.integers(6))]
    text = template.format(A=phrases[0], B=phrases[1] if len(phrases) > 1 else "")
    if rng.random() < 0.75:
        engine, names = "espeak", voices["espeak"]
    else:
        engine, names = "flite", voices["flite"]
    voice = f"{engine}:{names[int(rng.integers(len(names)))]}"
    wav, word_spans, params = speak(text, voice, rng)
    words = text.split()
    spans = np.zeros((2, 2), np.float32)
    cls = np.full(2, -1, np.int8)
    for j, c in enumerate(classes):
        cls[j] = c
        spans[j] = word_spans[words.index(NAMES[c])]
    aud = np.zeros(MAX_SAMPLES, np.int16)
    aud[: len(wav)] = wav
    return Item(
        img=np.round(img * 255).astype(np.uint8),
        seg=seg,
        cls=cls,
        spans=spans,
        aud=aud,
        alen=len(wav),
        text=text,
        voice=voice,
        params=params,
        word_spans=word_spans.astype(np.float32),
    )


def label_set_id(cls: Sequence[int]) -> int:
    """0–9 for one object, 10–54 for an unordered pair (55 label sets)."""
    present = sorted(int(c) for c in cls if c >= 0)
    if len(present) == 1:
        return present[0]
    a, b = present
    return 10 + sum(9 - i for i in range(a)) + (b - a - 1)


class SpokenObjects(Dataset):
    """A split of SpokenObjects held in memory as compact arrays; items are dicts of tensors.

    Items: ``x`` uint8 ``[3, 224, 224]``, ``seg`` ``[224, 224]``, ``cls`` ``[2]`` (−1 = none),
    ``spans`` ``[2, 2]`` seconds, ``audio`` float ``[1, 56000]`` in [−1, 1], ``audio_mask``
    ``[56000]``, ``label`` (the label-set id, 55 sets) and ``index``. ``records`` keeps the text,
    voice, engine parameters and all word spans.
    """

    def __init__(self, items: list[Item], split: str) -> None:
        self.split = split
        self.img = (
            torch.from_numpy(np.stack([it.img for it in items])).permute(0, 3, 1, 2).contiguous()
        )
        self.seg = torch.from_numpy(np.stack([it.seg for it in items]))
        self.cls = torch.from_numpy(np.stack([it.cls for it in items]).astype(np.int64))
        self.spans = torch.from_numpy(np.stack([it.spans for it in items]))
        self.aud = torch.from_numpy(np.stack([it.aud for it in items]))
        self.alen = torch.tensor([it.alen for it in items])
        self.label = torch.tensor([label_set_id(it.cls) for it in items])
        self.records = [
            {
                "text": it.text,
                "voice": it.voice,
                "params": it.params,
                "word_spans": it.word_spans.tolist(),
            }
            for it in items
        ]
        self.classes = list(NAMES)

    def __len__(self) -> int:
        return int(self.img.shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: list[int]) -> Any:
        from fw.data import Batch

        idx = torch.as_tensor(indices, dtype=torch.long)
        steps = torch.arange(MAX_SAMPLES)
        return Batch(
            {
                "x": self.img[idx],
                "seg": self.seg[idx],
                "cls": self.cls[idx],
                "spans": self.spans[idx],
                "audio": (self.aud[idx].float() / 32767.0)[:, None, :],
                "audio_mask": steps[None, :] < self.alen[idx, None],
                "label": self.label[idx],
                "index": idx,
            }
        )


def _single_thread() -> None:
    torch.set_num_threads(1)


def _generate_range(split: str, start: int, stop: int) -> list[Item]:
    seed, pool_name, voice_set = SPLITS[split]
    pool = fashion_pool(pool_name)
    return [generate_item(seed, i, pool, VOICES[voice_set]) for i in range(start, stop)]


def generate_split(
    split: Split, n: int | None = None, progress: bool = True, workers: int = 1
) -> list[Item]:
    """Generate the first ``n`` items of ``split`` (train 5,000, test/dev 1,000 by default).

    Items depend only on (split, index), so ``workers`` processes give the same bytes.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    n = (5000 if split == "train" else 1000) if n is None else n
    chunk = 25
    ranges = [(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    bar = tqdm(total=n, desc=f"SpokenObjects {split}", disable=not progress, leave=False)
    items: list[Item] = []
    if workers <= 1:
        for start, stop in ranges:
            items += _generate_range(split, start, stop)
            bar.update(stop - start)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child of a process whose OpenMP pool has run can hang
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_single_thread) as pool:
            futures = [pool.submit(_generate_range, split, a, b) for a, b in ranges]
            for fut, (start, stop) in zip(futures, ranges, strict=True):
                items += fut.result()
                bar.update(stop - start)
    bar.close()
    return items


@functools.lru_cache(maxsize=4)
def _cached_split(split: str, n: int | None, progress: bool, workers: int) -> SpokenObjects:
    return SpokenObjects(generate_split(split, n, progress, workers), split)  # type: ignore[arg-type]


def spoken_objects(
    split: Split = "train", limit: int | None = None, progress: bool = True, workers: int = 2
) -> SpokenObjects:
    """SpokenObjects split (train 5,000 / test 1,000 / dev 1,000; ``limit`` takes a prefix).

    Generated on first use (≈0.1 s per item and process) and memoised in the process.
    """
    return _cached_split(split, limit, progress, workers)


spoken_objects.example = {"split": "test", "limit": 2, "progress": False, "workers": 1}  # type: ignore[attr-defined]


def prompts() -> list[dict[str, Any]]:
    """The prompts "a picture of {A}": 10 classes × 4 held-out voices, rng ``[4, class, voice]``."""
    out = []
    for c in range(10):
        for v, voice in enumerate(PROMPT_VOICES):
            rng = np.random.default_rng([4, c, v])
            text = f"a picture of {noun_phrase(c)}"
            wav, spans, params = speak(text, voice, rng)
            out.append(
                {
                    "cls": c,
                    "voice": voice,
                    "audio": wav,
                    "span": spans[text.split().index(NAMES[c])],
                    "params": params,
                }
            )
    return out
