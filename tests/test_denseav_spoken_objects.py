"""SpokenObjects (docs/benchmarks.md): voices, timings, masks, deterministic regeneration."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from fw.errors import DataError

pytestmark = pytest.mark.skipif(
    shutil.which("flite") is None
    or not Path("/usr/share/datasets/fashion-mnist").is_dir()
    or not any(
        Path(p).exists()
        for p in (
            "/usr/lib/x86_64-linux-gnu/libespeak-ng.so.1",
            "/usr/lib/aarch64-linux-gnu/libespeak-ng.so.1",
        )
    ),
    reason="needs apt packages espeak-ng, flite and dataset-fashion-mnist",
)


@pytest.fixture(scope="module")
def items():
    from fw_denseav.spoken_objects import generate_split

    return generate_split("test", 12, progress=False)


def test_voice_names_and_traps():
    from fw_denseav.speech import espeak_synth, flite_synth
    from fw_denseav.spoken_objects import VOICES

    with pytest.raises(DataError, match="no voice 'en-gb'"):
        espeak_synth("a bag", "en-gb", 175, 50)
    with pytest.raises(DataError):
        espeak_synth("a bag", "en-gb+f2", 175, 50)
    assert espeak_synth("a bag", "en", 175, 50).samples.size > 0
    with pytest.raises(DataError, match="talking clock"):
        flite_synth("a bag", "awb_time", 1.0)
    all_flite = {v for split in VOICES.values() for v in split["flite"]}
    assert "awb_time" not in all_flite
    train = {f"{e}:{v}" for e, vs in VOICES["train"].items() for v in vs}
    test = {f"{e}:{v}" for e, vs in VOICES["test"].items() for v in vs}
    assert len(train) == 63 and len(test) == 11 and not train & test  # speaker-disjoint


def test_kal_is_resampled_to_16k():
    from fw_denseav.speech import flite_synth
    from fw_denseav.spoken_objects import _post

    speech = flite_synth("a coat", "kal", 1.0)
    assert speech.rate == 8000
    wav, _, lead, _ = _post(speech, np.random.default_rng(0))
    assert len(wav) == int(round(lead * 16000)) + 2 * len(speech.samples)


def test_names_and_articles():
    from fw_denseav.spoken_objects import NAMES, noun_phrase

    assert noun_phrase(1) == "some trousers" and noun_phrase(9) == "a boot"
    for a, b in itertools.permutations(NAMES, 2):
        assert a not in b


def test_label_sets_are_55_and_bijective():
    from fw_denseav.spoken_objects import label_set_id

    ids = {label_set_id([c, -1]) for c in range(10)}
    ids |= {label_set_id(list(p)) for p in itertools.combinations(range(10), 2)}
    assert ids == set(range(55))
    assert label_set_id([3, 7]) == label_set_id([7, 3])


def test_spans_and_masks(items):
    for it in items:
        lead = it.params["lead"]
        n = int((it.cls >= 0).sum())
        assert n in (1, 2)
        assert set(np.unique(it.seg)) <= set(range(n + 1)) and (it.seg == n).any()
        starts = it.word_spans[:, 0]
        assert (np.diff(starts) >= 0).all()
        for j in range(n):
            s, e = it.spans[j]
            assert lead - 1e-4 <= s < e <= it.alen / 16000 + 1e-4
            assert e - s >= 0.1
            seg = it.aud[int(s * 16000) : int(e * 16000)].astype(np.float64)
            noise = it.aud[: max(int(lead * 16000), 1)].astype(np.float64)
            assert np.mean(seg**2) > 2 * max(np.mean(noise**2), 1.0)  # the word carries energy
        if n == 2:
            (s0, e0), (s1, e1) = it.spans
            assert e0 <= s1 + 1e-4 or e1 <= s0 + 1e-4  # the two names do not overlap
        assert (it.aud[it.alen :] == 0).all()


def test_items_regenerate_byte_identically(items):
    from fw_denseav.spoken_objects import SPLITS, VOICES, fashion_pool, generate_item

    seed, pool, voices = SPLITS["test"]
    for i in (7, 3):  # alone, out of order
        again = generate_item(seed, i, fashion_pool(pool), VOICES[voices])
        assert again.img.tobytes() == items[i].img.tobytes()
        assert again.aud.tobytes() == items[i].aud.tobytes()
        assert again.seg.tobytes() == items[i].seg.tobytes()
        assert again.text == items[i].text


def test_dataset_items(items):
    from fw_denseav.spoken_objects import SpokenObjects

    data = SpokenObjects(items, "test")
    item = data[0]
    assert item["x"].shape == (3, 224, 224) and item["audio"].shape == (1, 56000)
    assert int(item["audio_mask"].sum()) == items[0].alen
    assert float(item["audio"].abs().max()) <= 1.0


def test_exact_placement_is_uniform_over_non_overlapping_boxes():
    """The fallback for two large objects draws from the law of rejection sampling: uniform over
    the non-overlapping placements, enumerated here by brute force on a small canvas."""
    from scipy.stats import chisquare

    from fw_denseav.spoken_objects import _place, place_exact

    size, s1, s2 = 8, 3, 4
    valid = [
        (y1, x1, y2, x2)
        for y1, x1, y2, x2 in itertools.product(range(size - s1 + 1), repeat=4)
        if y2 <= size - s2
        and x2 <= size - s2
        and (y1 + s1 <= y2 or y2 + s2 <= y1 or x1 + s1 <= x2 or x2 + s2 <= x1)
    ]
    index = {v: k for k, v in enumerate(valid)}
    rng = np.random.default_rng(0)
    counts = np.zeros(len(valid))
    draws = 60 * len(valid)
    for _ in range(draws):
        (y1, x1), (y2, x2) = place_exact(rng, s1, s2, size)
        counts[index[(y1, x1, y2, x2)]] += 1  # KeyError if it overlapped or left the canvas
    assert chisquare(counts).pvalue > 1e-3
    # the largest pair at full size: always placed, never overlapping, inside the canvas
    rng = np.random.default_rng(1)
    for _ in range(20):
        (y1, x1), (y2, x2) = _place(rng, [112, 112])
        assert min(y1, x1, y2, x2) >= 0 and max(y1, x1, y2, x2) <= 112
        assert y1 + 112 <= y2 or y2 + 112 <= y1 or x1 + 112 <= x2 or x2 + 112 <= x1
    with pytest.raises(ValueError, match="cannot both fit"):
        place_exact(rng, 5, 5, 8)
