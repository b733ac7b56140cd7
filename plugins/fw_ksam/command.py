"""``fw explain RECIPE --query IMG --match IMG``: explain a similarity model on two photos."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fw.api import Command


def configure(p: argparse.ArgumentParser) -> None:
    """The arguments of ``fw explain``."""
    p.add_argument("recipe", help="path of an explain recipe (e.g. recipes/explain/ksam.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. order=2")
    p.add_argument("--query", required=True, help="query image file (any format PIL reads)")
    p.add_argument("--match", required=True, help="matched (retrieved) image file")
    p.add_argument("--out", help="output directory (default runs/explain-<recipe>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace what OUT already holds")


def cmd_explain(args: argparse.Namespace) -> int:
    """Run one explanation and write its pictures and metrics."""
    from fw.errors import FwError
    from fw.files import locked, save, write_text
    from fw.registry import get_registry
    from fw_ksam.protocol import (
        explain_images,
        load_explain_recipe,
        load_image,
        plot_correspondence,
        plot_heatmap,
    )

    registry = get_registry()
    recipe = load_explain_recipe(args.recipe, args.overrides, registry)
    size = recipe.settings.image_size
    x, y = load_image(args.query, size), load_image(args.match, size)
    out = Path(
        args.out or f"runs/explain-{Path(args.recipe).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (out / "metrics.json").exists() and not args.overwrite:
        raise FwError(
            f"--out {out} holds an explanation; pass --overwrite to replace it, or choose "
            "another --out"
        )
    with locked(out):  # one writer; a failed explanation leaves no empty directory
        result = explain_images(recipe, x, y, registry)
        if recipe.settings.order == 1:
            picture = plot_heatmap(result, x, y, recipe.settings.explain, out / "heatmap.png")
        else:
            picture = plot_correspondence(result, x, y, out / "correspondence.png")
        save({"phi": result.phi, "metrics": result.metrics}, out / "explanation.pt")
        metrics = {"recipe": str(args.recipe), **result.metrics}
        write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    print(f"wrote {picture}")
    return 0


COMMAND = Command(
    help="explain why two images are similar (heatmaps, correspondences)",
    description="Explain d(query, match) with the recipe's featurizer, explainer, players "
    "and background. Order 1 writes heatmap.png (attributions over one image), order 2 "
    "correspondence.png (query regions projected onto the match), plus metrics.json.",
    configure=configure,
    main=cmd_explain,
)
