"""Evaluation of a DenseAV learner: retrieval on any paired data; SpokenObjects localisation.

docs/benchmarks.md: word-prompted heat maps of (image, name) items, the baseline rows that
need no training (random, centre prior, objectness and target oracles, whole-utterance heat),
prompted localisation with held-out voices, presence AUROC, retrieval with label-set precision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from fw.data import gather
from fw.dense import Dense
from fw_denseav import metrics as M

if TYPE_CHECKING:
    from fw_denseav.learner import DenseAV


def float_images(x: Tensor) -> Tensor:
    """Images as float in [0, 1] (uint8 items are scaled)."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


RATE = 16_000


@torch.no_grad()
def encode(
    learner: DenseAV, data: Any, n: int, batch: int = 32
) -> tuple[Dense, Dense, dict[str, Tensor]]:
    """Aligned audio codes (with masks), image codes and the other fields of the first n items."""
    learner.eval()
    # a frozen image featurizer's maps of these items are computed once per process
    maps = learner.image_maps(data, n, batch) if learner.image_frozen else None
    audio, masks, images, rest = [], [], [], {}
    for start in range(0, n, batch):
        items = gather(data, list(range(start, min(n, start + batch))))
        a = learner.encode_audio(items["audio"].float(), items["audio_mask"].bool())
        audio.append(a.features)
        masks.append(a.mask)
        feats = (
            maps[start : start + batch].float()
            if maps is not None
            else learner.image(float_images(items["x"]))
        )
        images.append(learner.image_aligner(feats))
        for key in ("seg", "cls", "spans", "label"):
            if key in items:
                rest.setdefault(key, []).append(items[key])
    cat = {k: torch.cat(v) for k, v in rest.items()}
    return Dense(torch.cat(audio), torch.cat(masks)), Dense(torch.cat(images)), cat


def span_tokens(start: float, end: float, length: int, hop: float) -> Tensor:
    """Valid tokens overlapping [start, end) s; token t covers [t·hop, (t+1)·hop)."""
    t = torch.arange(length)
    sel = (t * hop < end) & ((t + 1) * hop > start)
    if not bool(sel.any()):  # a span shorter than a token between two of them
        sel[min(int(start / hop), length - 1)] = True
    return sel


def cell_cover(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """Fraction of each token cell covered by a pixel mask ``[N, H, W]`` -> ``[N, h, w]``."""
    return nn.functional.adaptive_avg_pool2d(mask[:, None].float(), grid)[:, 0]


def baseline_heats(
    items: dict[str, Tensor], ids: Tensor, grid: tuple[int, int]
) -> dict[str, Tensor]:
    """Token-grid heat of the word-independent baseline rows for item ids ``[M]``."""
    h, w = grid
    rand = torch.stack(
        [
            torch.from_numpy(np.random.default_rng([7, int(i)]).random((h, w)))
            for i in range(len(ids))
        ]
    )
    ys, xs = torch.meshgrid(
        torch.arange(h) + 0.5 - h / 2, torch.arange(w) + 0.5 - w / 2, indexing="ij"
    )
    centre = -(ys**2 + xs**2).float().expand(len(ids), h, w)
    objects = cell_cover(items["seg"][ids] > 0, grid)
    return {"random": rand.float(), "centre": centre, "objectness": objects}


@torch.no_grad()
def evaluate(learner: DenseAV, data: Any, run_dir: Path | None = None) -> dict[str, float]:
    """All metrics of ``learner`` on ``data`` (the first ``eval_limit`` items)."""
    n = len(data) if learner.eval_limit is None else min(learner.eval_limit, len(data))
    audio, image, items = encode(learner, data, n)
    scores = learner.aggregator(audio, image)
    out = M.retrieval(scores, items.get("label"))
    if not {"seg", "cls", "spans"} <= set(items):
        return out
    hop = learner.samples_per_token / RATE
    grid = tuple(image.spatial)
    lengths = audio.mask.sum(1)
    heat_tokens = []
    for start in range(0, n, 64):
        idx = torch.arange(start, min(n, start + 64))
        heat_tokens.append(learner.token_heat(audio.index(idx), image.index(idx)))  # [b, T, h, w]
    heat_t = torch.cat(heat_tokens)

    rows = _items(items, n)
    word, utter = [], []
    for i, j in rows:
        span = items["spans"][i, j]
        sel = span_tokens(float(span[0]), float(span[1]), int(lengths[i]), hop)
        word.append(heat_t[i, : len(sel)][sel].mean(0))
        utter.append(heat_t[i, : int(lengths[i])].mean(0))
    ids = torch.tensor([i for i, _ in rows])
    js = torch.tensor([j for _, j in rows])
    seg = items["seg"][ids]
    target = seg == (js[:, None, None] + 1)
    second = items["cls"][ids, 1] >= 0
    other = (seg > 0) & ~target & second[:, None, None]
    classes = items["cls"][ids, js]
    targ_px, other_px = target[:, ::2, ::2], other[:, ::2, ::2]
    heats = {"model": torch.stack(word), "utterance": torch.stack(utter)}
    heats.update(baseline_heats(items, ids, grid))
    heats["target_oracle"] = cell_cover(target, grid)
    two = second
    for name, heat in heats.items():
        px = M.to_pixels(heat)
        prefix = "" if name == "model" else f"{name}_"
        for subset, sel in (("two", two), ("all", torch.ones_like(two))):
            res = M.localisation(
                px[sel], targ_px[sel], other_px[sel] if subset == "two" else None, classes[sel]
            )
            out.update({f"{prefix}{subset}_{k}": v for k, v in res.items()})
    out["two_items"] = float(two.sum())
    out.update(spotting(heat_t, items, rows, lengths, hop))
    if learner.prompts:
        out.update(prompted(learner, image, items, n))
    if run_dir is not None and learner.pictures > 0:
        from fw_denseav.pictures import heatmap_figure, timeline_figure

        pick = [k for k in range(len(rows)) if bool(two[k])][: 2 * learner.pictures]
        heatmap_figure(data, rows, pick, heats["model"], Path(run_dir) / "heatmaps.png")
        timeline_figure(data, rows, pick[::2], heat_t, items, hop, Path(run_dir) / "timeline.png")
        (Path(run_dir) / "eval_items.json").write_text(
            json.dumps({"items": len(rows), "two": int(two.sum())})
        )
    return out


@torch.no_grad()
def spotting(
    heat_t: Tensor,
    items: dict[str, Tensor],
    rows: list[tuple[int, int]],
    lengths: Tensor,
    hop: float,
) -> dict[str, float]:
    """spot and spot-disc from c_j(t), the mean upsampled s(t) inside mask j.

    spot: the argmax of c_j over valid tokens lies within j's tokens ±1. spot-disc (two-object
    items): the mean of c_j over j's tokens > over the other name's tokens (ties ½).
    """
    spot, spot_disc = [], []
    up, upsampled = (
        heat_t.new_zeros(0),
        -1,
    )  # an image's two names share its upsampled s(t) (same values)
    for i, j in rows:
        length = int(lengths[i])
        seg = items["seg"][i]
        mask = (seg == j + 1).float()
        if upsampled != i:
            up = nn.functional.interpolate(
                heat_t[i, :length][None].float(),
                size=tuple(seg.shape),
                mode="bilinear",
                align_corners=False,
            )[0]
            upsampled = i
        c = (up * mask).flatten(1).sum(1) / mask.sum().clamp_min(1)  # [T]
        span = items["spans"][i, j]
        own = span_tokens(float(span[0]), float(span[1]), length, hop).nonzero().squeeze(1)
        best = int(c.argmax())
        spot.append(float(int(own.min()) - 1 <= best <= int(own.max()) + 1))
        if int(items["cls"][i, 1]) >= 0:
            o = items["spans"][i, 1 - j]
            other = span_tokens(float(o[0]), float(o[1]), length, hop)
            a, b = c[own].mean(), c[other].mean()
            spot_disc.append(float(a > b) + 0.5 * float(a == b))
    out = {"all_spot": float(np.mean(spot))}
    if spot_disc:
        out["two_spot_disc"] = float(np.mean(spot_disc))
    return out


def _items(items: dict[str, Tensor], n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(2) if int(items["cls"][i, j]) >= 0]


@torch.no_grad()
def prompted(learner: DenseAV, image: Dense, items: dict[str, Tensor], n: int) -> dict[str, float]:
    """Prompted localisation (mAP, pointing, disc per held-out voice) and presence AUROC."""
    from fw_denseav.spoken_objects import MAX_SAMPLES, PROMPT_VOICES, prompts

    hop = learner.samples_per_token / RATE
    grid = tuple(image.spatial)
    per_voice: dict[str, dict[str, list[dict[str, float]]]] = {"": {}, "random_": {}}
    present: dict[str, list[Tensor]] = {"": [], "random_": []}
    absent: dict[str, list[Tensor]] = {"": [], "random_": []}
    for q, p in enumerate(_cached_prompts(prompts)):
        wav = torch.zeros(1, 1, MAX_SAMPLES)
        wav[0, 0, : len(p["audio"])] = torch.from_numpy(p["audio"].astype(np.float32) / 32767.0)
        mask = torch.arange(MAX_SAMPLES)[None] < len(p["audio"])
        a = learner.encode_audio(wav, mask)
        length = int(a.mask.sum())
        sel = span_tokens(float(p["span"][0]), float(p["span"][1]), length, hop)
        a_word = Dense(a.features[:, :, : len(sel)][:, :, sel])
        heat = learner.aggregator.pair_volumes(
            Dense(a_word.features.expand(n, -1, -1)), image, torch.arange(n).repeat(2, 1).T
        )  # [n, K, t, h, w]
        heats = {
            "": heat.amax(dim=1).mean(dim=1),  # [n, h, w]
            # the random row: i.i.d. U[0,1) per token, a fresh draw per prompt and image
            "random_": torch.from_numpy(np.random.default_rng([7, 1, q]).random((n, *grid))),
        }
        has = (items["cls"][:n] == p["cls"]).any(dim=1)
        ids = has.nonzero().squeeze(1)
        j = (items["cls"][ids] == p["cls"]).float().argmax(1)
        seg = items["seg"][ids]
        target = seg == (j[:, None, None] + 1)
        other = (seg > 0) & ~target
        for prefix, h in heats.items():
            score = h.flatten(1).amax(1)
            present[prefix].append(score[has])
            absent[prefix].append(score[~has])
            if not bool(has.any()):
                continue
            res = M.localisation(
                M.to_pixels(h[ids]),
                target[:, ::2, ::2],
                other[:, ::2, ::2],
                torch.full((len(ids),), p["cls"]),
            )
            per_voice[prefix].setdefault(p["voice"], []).append(res)
    out: dict[str, float] = {}
    for prefix, voices in per_voice.items():
        for key in ("map", "pointing", "disc"):
            voice_means = [
                np.nanmean([r.get(key, np.nan) for r in voices[v]])
                for v in PROMPT_VOICES
                if v in voices
            ]
            out[f"{prefix}prompt_{key}"] = float(np.mean(voice_means))
        out[f"{prefix}presence_auroc"] = M.auroc(
            torch.cat(present[prefix]), torch.cat(absent[prefix])
        )
    return out


_PROMPTS: list[dict[str, Any]] = []


def _cached_prompts(make: Any) -> list[dict[str, Any]]:
    if not _PROMPTS:
        _PROMPTS.extend(make())
    return _PROMPTS
