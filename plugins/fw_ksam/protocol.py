"""Explain a similarity model on two images: recipes, games, metrics, pictures (thesis Ch. 7).

An *explain recipe* names a featurizer, an explainer, a similarity of GAP features, the players
and the background::

    featurizer: {name: mobilenet_v2, output: dense, preprocess_inputs: false}
    explainer: {name: ksam, samples: 2048}
    similarity: cosine            # cosine | dot, of the globally average-pooled features
    players: {kind: features}     # features (feature-map cells) | superpixels | patches
    background: blur              # blur (25-px blurred image, or its features) | mean
    order: 1                      # 1: heatmap of one image; 2: query × match interactions

The images are resized to ``image_size`` (224) and normalised with the ImageNet statistics
(``normalize: imagenet``) before the featurizer, which should therefore not preprocess them
again, so that its feature grid covers the whole image. Players are either feature-map cells
(SAM family; masking swaps in the background's *features*), SLIC superpixels
(scikit-image; 50 segments, compactness 10, σ 3 by default, App. E.2) or square pixel patches;
masking then swaps in background *pixels* and every coalition runs the featurizer.

Metrics (thesis §7.8): faithfulness is the similarity drop after blurring the top 30 % of the
explained image's pixels; inefficiency is |Σ attributions − (v(N) − v(∅))| (second order: the
Shapley–Taylor terms of order ≤ 2); the dummy check is the largest share of credit on players the
model cannot see.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch
from torch import Tensor

from fw.errors import RecipeError, ShapeError
from fw.lib.images import read_image
from fw.registry import Registry, get_registry
from fw_ksam.games import SimilarityGame, cross_block, empty_and_full, grid_players

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: torch interpolation for image and heatmap resizing (an F.interpolate mode)
RESIZE_MODE = "bilinear"


@attrs.define
class PlayersConfig:
    """Who the players are: feature-map cells, SLIC superpixels or pixel patches."""

    kind: Literal["features", "superpixels", "patches"] = "features"
    cells: list[int] | None = None  # features: group the grid into cells (None: one per cell)
    segments: int = 50  # superpixels (SLIC)
    compactness: float = 10.0
    sigma: float = 3.0


@attrs.define
class ExplainSettings:
    """How the images are prepared and which game is played."""

    similarity: Literal["cosine", "dot"] = "cosine"
    background: Literal["blur", "mean"] = "blur"
    order: int = 1
    explain: Literal["match", "query"] = "match"  # first order: whose parts are the players
    image_size: int = 224
    blur: int = 25  # Gaussian blur kernel (pixels) of the background and of faithfulness
    normalize: Literal["imagenet", "none"] = "imagenet"
    batch_size: int = 64
    top_fraction: float = 0.3  # faithfulness blurs this share of the most credited pixels


TOP_LEVEL = {
    "description": "free text",
    "featurizer": "the featurizer component (dense output for feature players)",
    "explainer": "the explainer component",
    "players": "players: {kind: features|superpixels|patches, ...}",
}
SETTINGS = {f.name for f in attrs.fields(ExplainSettings)}


@attrs.frozen
class ExplainRecipe:
    """A validated explain recipe."""

    featurizer: dict[str, Any]
    explainer: dict[str, Any]
    players: PlayersConfig
    settings: ExplainSettings
    source: Path | None = None


def load_explain_recipe(
    path: str | Path, overrides: Iterable[str] = (), registry: Registry | None = None
) -> ExplainRecipe:
    """Read an explain recipe (``extends`` and dotted overrides as for training recipes)."""
    from fw.recipe import RecipeChecker, apply_overrides, read_recipe_file

    path = Path(path)
    raw, lines = read_recipe_file(path)
    raw = apply_overrides(raw, overrides)
    return _validate(raw, RecipeChecker(registry or get_registry(), path, lines), path)


def explain_recipe_from_dict(raw: Mapping[str, Any], registry: Registry | None = None):
    """Validate an explain recipe given as a mapping."""
    from fw.recipe import RecipeChecker

    return _validate(dict(raw), RecipeChecker(registry or get_registry(), None, {}), None)


def _validate(raw: dict[str, Any], checker: Any, source: Path | None) -> ExplainRecipe:
    allowed = set(TOP_LEVEL) | SETTINGS
    for key in raw:
        if key not in allowed:
            raise checker.fail(
                str(key), checker.unknown(str(key), sorted(allowed), "an explain recipe")
            )
    for key in ("featurizer", "explainer"):
        if key not in raw:
            raise checker.fail("", f"an explain recipe needs '{key}: {{name: ...}}'")
    featurizer = checker.component("featurizer", raw["featurizer"], "featurizer")
    explainer = checker.component("explainer", raw["explainer"], "explainer")
    players = PlayersConfig(**checker.config("players", raw.get("players") or {}, PlayersConfig))
    hints = typing.get_type_hints(ExplainSettings)
    settings = ExplainSettings(
        **{k: checker.value(k, raw[k], hints[k]) for k in SETTINGS if k in raw}
    )
    if settings.order not in (1, 2):
        raise checker.fail("order", f"order must be 1 or 2, got {settings.order}")
    return ExplainRecipe(featurizer, explainer, players, settings, source)


# ----------------------------------------------------------------------------- images


def load_image(path: str | Path, size: int) -> Tensor:
    """An image file as ``[3, size, size]`` in [0, 1] (bilinear resize)."""
    return resize(read_image(path), size)


def resize(image: Tensor, size: int) -> Tensor:
    """``[3, H, W]`` -> ``[3, size, size]``, bilinear with antialiasing."""
    out = torch.nn.functional.interpolate(
        image[None], size=(size, size), mode=RESIZE_MODE, antialias=True, align_corners=False
    )
    return out[0].clamp(0, 1)


def blur(images: Tensor, kernel: int) -> Tensor:
    """Gaussian blur with a ``kernel``-pixel kernel (torchvision's default σ for that size)."""
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, [kernel, kernel])


def superpixels(image: Tensor, cfg: PlayersConfig) -> Tensor:
    """SLIC superpixels of ``[3, H, W]`` as a label map ``[H, W]`` with labels 0..P−1."""
    from skimage.segmentation import slic

    labels = slic(
        image.permute(1, 2, 0).numpy().astype(np.float64),
        n_segments=cfg.segments,
        compactness=cfg.compactness,
        sigma=cfg.sigma,
        start_label=0,
    )
    return torch.from_numpy(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))


# ----------------------------------------------------------------------------- the model


class SimilarityModel:
    """d(a, b) = cosine (or dot) of GAP features of a featurizer, on images or feature maps."""

    def __init__(self, featurizer: torch.nn.Module, settings: ExplainSettings) -> None:
        self.featurizer = featurizer.eval()
        self.settings = settings
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if settings.normalize == "imagenet" else (0, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(-1, 1, 1) * torch.ones(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).reshape(-1, 1, 1) * torch.ones(3, 1, 1)

    def features(self, images: Tensor) -> Tensor:
        """Images ``[B, 3, H, W]`` in [0, 1] -> the featurizer's output, batched."""
        out = [
            self.featurizer((chunk - self.mean) / self.std)
            for chunk in images.split(self.settings.batch_size)
        ]
        return torch.cat(out)

    def pool(self, features: Tensor) -> Tensor:
        """GAP of dense features ``[B, C, *S]`` (global features pass through)."""
        return features.flatten(2).mean(2) if features.dim() > 2 else features

    def score(self, a: Tensor, b: Tensor) -> Tensor:
        """The similarity of pooled features ``[B, C]`` x2 -> ``[B]``."""
        if self.settings.similarity == "cosine":
            return torch.nn.functional.cosine_similarity(a, b, dim=1)
        return (a * b).sum(1)

    def _embed(self, t: Tensor, on_images: bool) -> Tensor:
        if t.shape[0] > 1 and t.stride(0) == 0:  # a fixed input expanded over the batch
            return self._embed(t[:1], on_images).expand(t.shape[0], -1)
        return self.pool(self.features(t) if on_images else t)

    def on_images(self, a: Tensor, b: Tensor) -> Tensor:
        """d of two image batches (the featurizer runs on every masked image)."""
        return self.score(self._embed(a, True), self._embed(b, True))

    def on_features(self, a: Tensor, b: Tensor) -> Tensor:
        """d of two feature-map batches (only the GAP head runs: SAM-type players)."""
        return self.score(self._embed(a, False), self._embed(b, False))

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor) -> float:
        """d(x, y) of two images ``[3, H, W]``."""
        return float(self.on_images(x[None], y[None])[0])


@attrs.define
class Setup:
    """A game over two images and the pixel label maps that draw its players."""

    game: SimilarityGame
    pixels_x: Tensor | None  # [H, W] player of each query pixel (None: query not explained)
    pixels_y: Tensor | None
    grid: tuple[int, int] | None  # feature-grid size when players are feature cells


def build_game(
    model: SimilarityModel,
    x: Tensor,
    y: Tensor,
    players: PlayersConfig,
    settings: ExplainSettings,
    blind: Callable[[Tensor], Tensor] | None = None,
) -> Setup:
    """The game v₁ (order 1) or v₂ (order 2) of d on images x, y (``blind`` wraps the match)."""
    mode = "both" if settings.order == 2 else settings.explain
    size = x.shape[-1]
    if players.kind == "features":
        with torch.no_grad():
            fx, fy = model.features(torch.stack([x, y]))
        if fx.dim() != 3:
            raise ShapeError(
                "players.kind=features needs a dense featurizer (feature maps [B, C, h, w]); "
                "set its output to dense (e.g. `output: dense`) or use superpixels"
            )
        if settings.background == "blur":
            with torch.no_grad():
                bx, by = model.features(blur(torch.stack([x, y]), settings.blur))
        else:
            bx = fx.mean((1, 2), keepdim=True).expand_as(fx)
            by = fy.mean((1, 2), keepdim=True).expand_as(fy)
        grid = (fx.shape[1], fx.shape[2])
        labels = grid_players(grid, tuple(players.cells) if players.cells else None)
        sim = model.on_features
        pix = _upsample_labels(labels, size)
        inputs = (fx, fy, bx, by)
    else:
        grid = None
        if settings.background == "blur":
            bx, by = blur(torch.stack([x, y]), settings.blur)
        else:
            bx = x.mean((1, 2), keepdim=True).expand_as(x)
            by = y.mean((1, 2), keepdim=True).expand_as(y)
        sim = model.on_images
        inputs = (x, y, bx, by)
        if players.kind == "superpixels":
            lx, ly = superpixels(x, players), superpixels(y, players)
        else:
            cells = tuple(players.cells) if players.cells else (8, 8)
            lx = ly = grid_players((size, size), cells)
        labels, pix = ly, ly
    if blind is not None:
        inner = sim

        def sim(a: Tensor, b: Tensor) -> Tensor:
            return inner(a, blind(b))

    if players.kind == "features":
        lx = ly = labels
        px = py = pix
    else:
        px, py = lx, ly
    game = SimilarityGame(
        sim,
        inputs[0],
        inputs[1],
        ly,
        lx,
        background_x=inputs[2],
        background_y=inputs[3],
        players=mode,
        batch_size=settings.batch_size,
    )
    return Setup(
        game,
        px if mode in ("query", "both") else None,
        py if mode in ("match", "both") else None,
        grid,
    )


def _upsample_labels(labels: Tensor, size: int) -> Tensor:
    return (
        torch.nn.functional.interpolate(labels[None, None].float(), size=(size, size))[0, 0]
        .round()
        .long()
    )


def heatmap(phi: Tensor, setup: Setup, side: Literal["query", "match"] = "match") -> Tensor:
    """First-order attributions drawn over the pixels of one image ``[H, W]``.

    Feature-cell players are upsampled bilinearly from the grid (as CAM-style maps are shown);
    pixel players paint their own pixels.
    """
    game = setup.game
    pixels = setup.pixels_x if side == "query" else setup.pixels_y
    assert pixels is not None
    phi = phi.float()
    if game.split is not None:  # players of both images: the query's come first
        phi = phi[: game.split[0]] if side == "query" else phi[game.split[0] :]
    if setup.grid is not None:
        labels = game.labels_x if side == "query" else game.labels_y
        assert labels is not None
        cells = phi[labels][None, None]
        size = tuple(pixels.shape)
        return torch.nn.functional.interpolate(
            cells, size=size, mode=RESIZE_MODE, align_corners=False
        )[0, 0]
    return phi[pixels]


# ----------------------------------------------------------------------------- metrics


def faithfulness(
    model: SimilarityModel, x: Tensor, y: Tensor, heat: Tensor, settings: ExplainSettings
) -> float:
    """d(x, y) − d(x, y'), y' = y with its top ``top_fraction`` pixels blurred (thesis §7.8)."""
    k = int(round(settings.top_fraction * heat.numel()))
    # ties (piecewise-constant maps) are broken by position, deterministically
    order = torch.argsort(heat.flatten().double(), descending=True, stable=True)[:k]
    keep = torch.ones(heat.numel(), dtype=torch.bool)
    keep[order] = False
    keep = keep.reshape(heat.shape)
    blurred = torch.where(keep, y, blur(y[None], settings.blur)[0])
    return model(x, y) - model(x, blurred)


def inefficiency(phi: Tensor, game: SimilarityGame, order: int) -> float:
    """|Σ terms − (v(N) − v(∅))|; order 2 adds the singleton terms v({i}) − v(∅) (thesis §7.8)."""
    v0, vn = empty_and_full(game)
    if order == 1:
        return abs(float(phi.double().sum()) - (vn - v0))
    singles = game.value(torch.eye(game.n_players, dtype=torch.bool)).double() - v0
    return abs(float(singles.sum() + phi.double().triu(1).sum()) - (vn - v0))


def dummy_share(phi: Tensor, dummies: Tensor) -> float:
    """Largest |credit| on dummy players relative to the largest |credit| overall (0 = passes)."""
    scale = float(phi.abs().max())
    return float(phi[dummies].abs().max()) / scale if scale > 0 else 0.0


# ----------------------------------------------------------------------------- running


@attrs.define
class Result:
    """One explanation and what was measured about it."""

    phi: Tensor
    setup: Setup
    seconds: float
    metrics: dict[str, float]


def explain_images(
    recipe: ExplainRecipe,
    x: Tensor,
    y: Tensor,
    registry: Registry | None = None,
    featurizer: torch.nn.Module | None = None,
    explainer: Any = None,
) -> Result:
    """Build the recipe's components (unless given), explain d(x, y), measure it."""
    from fw.recipe import build

    registry = registry or get_registry()
    featurizer = featurizer or build("featurizer", recipe.featurizer, registry)
    explainer = explainer or build("explainer", recipe.explainer, registry)
    settings = recipe.settings
    if settings.order not in explainer.orders:
        raise RecipeError(
            f"explainer '{recipe.explainer['name']}' explains orders {list(explainer.orders)}, "
            f"not order {settings.order}; set `order:` accordingly"
        )
    model = SimilarityModel(featurizer, settings)
    setup = build_game(model, x, y, recipe.players, settings)
    start = time.perf_counter()
    phi = explainer.explain(setup.game, order=settings.order).detach().cpu()
    seconds = time.perf_counter() - start
    v0, vn = empty_and_full(setup.game)
    metrics = {
        "similarity": model(x, y),
        "v_empty": v0,
        "v_full": vn,
        "inefficiency": inefficiency(phi, setup.game, settings.order),
        "seconds": seconds,
        "players": float(setup.game.n_players),
    }
    if settings.order == 1:
        q, r = (y, x) if settings.explain == "query" else (x, y)
        heat = heatmap(phi, setup, settings.explain)
        metrics["faithfulness"] = faithfulness(model, q, r, heat, settings)
    return Result(phi, setup, seconds, metrics)


# ----------------------------------------------------------------------------- pictures


def _show(ax: Any, image: Tensor, title: str) -> None:
    ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_heatmap(result: Result, x: Tensor, y: Tensor, explain: str, path: Path) -> Path:
    """Query, match and the first-order heatmap over the explained image (red helps, blue hurts)."""
    from fw.lib.plots import pyplot, save_figure

    plt = pyplot()
    heat = heatmap(result.phi, result.setup, "query" if explain == "query" else "match")
    target = x if explain == "query" else y
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), dpi=120)
    _show(axes[0], x, "query")
    _show(axes[1], y, "match")
    _show(axes[2], target, f"attribution over the {explain}")
    vmax = float(heat.abs().max()) or 1.0
    im = axes[2].imshow(heat.numpy(), cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.55)
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    m = result.metrics
    fig.suptitle(
        f"d(query, match) = {m['similarity']:.3f}   faithfulness {m.get('faithfulness', 0):.3f}"
        f"   inefficiency {m['inefficiency']:.3g}",
        fontsize=9,
    )
    return save_figure(fig, path)


def plot_correspondence(result: Result, x: Tensor, y: Tensor, path: Path, rows: int = 3) -> Path:
    """Second order: query regions (left) projected onto the match through Φ (thesis Fig. 7.4)."""
    from fw.lib.plots import pyplot, save_figure

    plt = pyplot()
    setup = result.setup
    cross = cross_block(setup.game, result.phi)  # [Pq, Pr]
    chosen = cross.abs().sum(1).argsort(descending=True)[:rows].tolist()
    fig, axes = plt.subplots(len(chosen), 2, figsize=(6.4, 3.1 * len(chosen)), dpi=120)
    axes = np.atleast_2d(axes)
    nq = cross.shape[0]
    for row, i in enumerate(chosen):
        sel = torch.zeros(setup.game.n_players)
        sel[i] = 1.0
        mask = heatmap(sel, setup, "query")
        _show(axes[row, 0], x, f"query region {i}")
        axes[row, 0].imshow(mask.numpy(), cmap="Greens", alpha=0.5, vmin=0, vmax=1)
        projected = torch.zeros(setup.game.n_players)
        projected[nq:] = cross[i]
        heat = heatmap(projected, setup, "match")
        vmax = float(heat.abs().max()) or 1.0
        _show(axes[row, 1], y, "projected onto the match")
        axes[row, 1].imshow(heat.numpy(), cmap="bwr", vmin=-vmax, vmax=vmax, alpha=0.55)
    return save_figure(fig, path)
