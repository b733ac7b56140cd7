"""Pictures of a DenseAV run: word-prompted heat maps, and similarity over time under the words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fw.lib.plots import pyplot, save_figure


def _upsample(heat: Tensor, size: tuple[int, int]) -> np.ndarray:
    up = torch.nn.functional.interpolate(
        heat[None, None].float(), size=size, mode="bilinear", align_corners=False
    )
    return up[0, 0].numpy()


def overlay(ax: Any, image: np.ndarray, heat: Tensor, title: str) -> None:
    """Draw ``image`` [H, W, 3] with ``heat`` [h, w] upsampled on top."""
    ax.imshow(image)
    ax.imshow(_upsample(heat, image.shape[:2]), cmap="inferno", alpha=0.55)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _image(data: Any, i: int) -> np.ndarray:
    x = data[i]["x"]
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x
    return x.permute(1, 2, 0).clamp(0, 1).numpy()


def _word(data: Any, i: int, j: int) -> str:
    from fw_denseav.spoken_objects import NAMES

    return NAMES[int(data[i]["cls"][j])]


def heatmap_figure(
    data: Any, rows: list[tuple[int, int]], pick: list[int], heats: Tensor, path: Path
) -> Path:
    """Each picked (image, name) item: the image and the heat of the spoken name over it."""
    plt = pyplot()
    cols = 4
    n_rows = max(1, (len(pick) + cols - 1) // cols)
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(2.6 * cols, 2.7 * n_rows), dpi=110, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, pick, strict=False):
        i, j = rows[k]
        voice = getattr(data, "records", None)
        caption = voice[i]["text"] if voice else ""
        overlay(ax, _image(data, i), heats[k], f'"{_word(data, i, j)}" in "{caption}"')
    fig.suptitle(
        "heat of the spoken name (max over heads, mean over the word's tokens)", fontsize=9
    )
    return save_figure(fig, path)


def timeline_figure(
    data: Any,
    rows: list[tuple[int, int]],
    pick: list[int],
    heat_t: Tensor,
    items: dict[str, Tensor],
    hop: float,
    path: Path,
) -> Path:
    """Per picked image: mean similarity inside each object's mask over time, words shaded."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(pick) or 1, 2, figsize=(9, 2.4 * max(1, len(pick))), dpi=110, squeeze=False
    )
    colours = ("tab:orange", "tab:blue")
    for (ax_img, ax), k in zip(axes, pick, strict=False):
        i, _ = rows[k]
        image = _image(data, i)
        ax_img.imshow(image)
        ax_img.axis("off")
        seg = items["seg"][i]
        grid = heat_t.shape[-2:]
        t = torch.arange(heat_t.shape[1]) * hop
        for j in range(2):
            if int(items["cls"][i, j]) < 0:
                continue
            mask = seg == j + 1
            ax_img.contour(mask.numpy(), levels=[0.5], colors=colours[j], linewidths=1)
            up = torch.nn.functional.interpolate(
                heat_t[i][None].float(), size=tuple(seg.shape), mode="bilinear", align_corners=False
            )[0]
            curve = (up * mask).flatten(1).sum(1) / mask.sum().clamp_min(1)
            ax.plot(t.numpy(), curve.numpy(), color=colours[j], label=_word(data, i, j))
            s, e = items["spans"][i, j].tolist()
            ax.axvspan(s, e, color=colours[j], alpha=0.15)
        alen = float(data[i]["audio_mask"].sum()) / 16_000
        ax.set_xlim(0, alen)  # the clip itself; padded tokens are not part of the caption
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("mean similarity in mask", fontsize=8)
        ax.legend(fontsize=7)
        del grid
    fig.suptitle(
        "similarity over time inside each object (shaded: when its name is spoken)", fontsize=9
    )
    return save_figure(fig, path)
