"""``fw localize RUN_DIR --image IMG --audio WAV``: where a trained run hears the sound.

Works with any learner that has ``localize(image [1, 3, H, W], audio [1, 1, T], mask [1, T])``
returning the similarity over time and space ``[T', h, w]`` and ``patch_size`` seconds per
token through ``localize_hop`` (DenseAV does). Writes a PNG: the image with the heat of the
chosen time span (default: the whole clip) and the best similarity over time.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fw.api import Command
from fw.errors import DataError, FwError

#: torch interpolation for resizing the image and its heatmap (an F.interpolate mode)
RESIZE_MODE = "bilinear"


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``fw localize``."""
    p.add_argument("run_dir", help="a run directory (holds recipe.yaml and checkpoints/last.ckpt)")
    p.add_argument("--image", required=True, help="an image file (JPEG, PNG)")
    p.add_argument(
        "--audio", required=True, help="an 8-, 16- or 32-bit PCM WAV file (resampled to 16 kHz)"
    )
    p.add_argument("--span", nargs=2, type=float, metavar=("START", "END"), help="seconds")
    p.add_argument("--size", type=int, default=224, help="image side after resize and crop")
    p.add_argument("--out", help="PNG path (default RUN_DIR/localize-<image>-<audio>.png)")


def load_learner(run_dir: Path) -> Any:
    """The learner of a finished run (`fw.runs.load_run` without its data), if it can localize."""
    import yaml

    from fw.registry import get_registry
    from fw.runs import load_run

    recipe = run_dir / "recipe.yaml"
    if recipe.is_file():  # refuse another method's run before loading its weights
        raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        name = raw.get("learner", {}).get("name") if isinstance(raw, dict) else None
        factory = get_registry().get("learner", name).factory if isinstance(name, str) else None
        if isinstance(factory, type) and not hasattr(factory, "localize"):
            raise FwError(
                f"{run_dir} is a run of learner '{name}' ({recipe}), which cannot localize "
                "sounds; pass the directory of a DenseAV run"
            )
    return load_run(run_dir, setup=False)


def cmd_localize(args: argparse.Namespace) -> int:
    import torch

    from fw.lib.plots import pyplot, save_figure

    run_dir = Path(args.run_dir)
    learner = load_learner(run_dir)
    if not hasattr(learner, "localize"):
        raise FwError(f"the learner of {run_dir} ({type(learner).__name__}) cannot localize audio")
    image, audio, mask = _inputs(Path(args.image), Path(args.audio), args.size)
    try:
        with torch.no_grad():
            heat_t = learner.localize(image, audio, mask)  # [T', h, w]
    except (RuntimeError, ValueError, IndexError) as err:  # e.g. fewer samples than one window
        raise DataError(
            f"--audio {args.audio}: cannot localize a clip of {audio.shape[-1] / 16_000:.3f} s "
            f"({str(err).strip().splitlines()[0][:160]}); give a longer clip (1 s or more)"
        ) from err
    hop = learner.localize_hop
    t = torch.arange(heat_t.shape[0]) * hop
    if args.span:
        sel = (t < args.span[1]) & (t + hop > args.span[0])
        if not bool(sel.any()):
            raise FwError(f"--span {args.span} covers no audio token (clip {len(t) * hop:.2f} s)")
    else:
        sel = torch.ones(len(t), dtype=torch.bool)
    heat = heat_t[sel].mean(0)
    up = torch.nn.functional.interpolate(
        heat[None, None], size=image.shape[-2:], mode=RESIZE_MODE, align_corners=False
    )[0, 0]
    plt = pyplot()
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(9, 4), dpi=110)
    ax.imshow(image[0].permute(1, 2, 0).numpy())
    ax.imshow(up.numpy(), cmap="inferno", alpha=0.55)
    ax.axis("off")
    ax.set_title(f"{Path(args.audio).name} over {Path(args.image).name}", fontsize=8)
    ax_t.plot(t.numpy(), heat_t.flatten(1).amax(1).numpy())
    if args.span:
        ax_t.axvspan(*args.span, alpha=0.2)
    ax_t.set_xlabel("time (s)")
    ax_t.set_ylabel("max similarity over the image")
    stem = f"localize-{Path(args.image).stem}-{Path(args.audio).stem}.png"
    out = save_figure(fig, Path(args.out) if args.out else run_dir / stem)
    print(out)
    return 0


def _inputs(image_path: Path, audio_path: Path, size: int) -> tuple[Any, Any, Any]:
    import numpy as np
    import torch

    from fw.lib.images import read_image, resize_short_side_crop
    from fw_denseav.wav import read_wav_at

    image = resize_short_side_crop(read_image(image_path), size)
    wav = read_wav_at(audio_path, 16_000)
    if len(wav) == 0:
        raise DataError(f"--audio {audio_path} holds no samples; give a clip of 1 s or more")
    audio = torch.from_numpy(wav.astype(np.float32))[None, None]
    return (
        image[None],
        audio,
        torch.ones(1, len(wav), dtype=torch.bool),
    )


COMMAND = Command(
    help="heat map of where a trained run hears a clip in an image",
    description="Load RUN_DIR's recipe and checkpoint, then write the heat map of the audio "
    "clip over the image (averaged over --span, default the whole clip).",
    configure=configure,
    main=cmd_localize,
)
