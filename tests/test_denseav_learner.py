"""The DenseAV learner and SpokenObjects metrics: gradients reach both aligners, metric checks."""

from __future__ import annotations

import pytest
import torch

from fw.dense import lengths_to_mask
from fw_denseav import metrics as M
from fw_denseav.aggregators import MaxMean
from fw_denseav.audio import LogMelEncoder
from fw_denseav.learner import DenseAV
from fw_denseav.splice import splice_negatives, to_tokens


class _TinyImage(torch.nn.Module):
    """A frozen random conv as the image featurizer (stride 8)."""

    dim = 8
    dense = True
    patch_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.requires_grad_(False)

    def forward(self, x):
        return self.conv(x)


def _learner(**kw) -> DenseAV:
    settings = {
        "image": _TinyImage(),
        "audio": LogMelEncoder(dim=8, width=8),
        "aggregator": MaxMean(heads=2),
        "dim": 8,
        "batch_size": 4,
        "prompts": False,
    }
    return DenseAV(**{**settings, **kw})  # type: ignore[arg-type]


def _batch(b: int = 4) -> dict[str, torch.Tensor]:
    t = 12800
    return {
        "x": torch.rand(b, 3, 32, 32),
        "audio": torch.randn(b, 1, t) * 0.1,
        "audio_mask": lengths_to_mask(torch.tensor([t, 9000, 6400, 3000][:b]), t),
        "index": torch.arange(b),
    }


def test_training_step_trains_both_aligners_and_the_temperature():
    """The authors' forward_image ran under no_grad: here the image side learns."""
    learner = _learner(cache_image_features=False)
    out = learner.training_step(_batch(), 0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    for name in ("image_aligner.proj.weight", "audio_aligner.proj.weight", "calibrator.log_gamma"):
        grad = dict(learner.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    assert all(p.grad is None for p in learner.image.parameters())


def test_untrained_loss_is_log_batch():
    learner = _learner(lambda_splice=0, lambda_nonneg=0, lambda_tv=0, lambda_dis=0)
    with torch.no_grad():
        learner.image_aligner.proj.weight.mul_(1e-4)
    out = learner.training_step(_batch(), 0)
    assert float(out["nce"]) == pytest.approx(float(torch.log(torch.tensor(4.0))), abs=1e-3)


def test_splice_weights_mark_the_pasted_clip():
    audio = torch.zeros(3, 1, 16000)
    audio[1] = 1.0
    audio[2] = 2.0
    mask = torch.ones(3, 16000, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    out, w = splice_negatives(audio, mask, p=1.0, min_seconds=0.4, max_seconds=0.4, generator=gen)
    assert float(w.max()) == pytest.approx(1.0, abs=1e-3)
    assert int((w > 0).sum(1).max()) == 6400
    inside = w[0] > 0
    ratio = out[0, 0][inside] / w[0][inside]  # item 0 is silent: out = w · donor's constant
    assert float(ratio.min()) == pytest.approx(float(ratio.max()))
    assert float(ratio[0]) in (pytest.approx(1.0), pytest.approx(2.0))
    assert float(out[0, 0][~inside].abs().max()) == 0.0
    assert to_tokens(w, 12, 1280).shape == (3, 12)


def test_word_independent_heat_has_disc_exactly_half():
    """An image's two items share one map, so exactly one of them wins (docs/benchmarks.md)."""
    gen = torch.Generator().manual_seed(1)
    heat = torch.rand(5, 8, 8, generator=gen)
    masks = torch.zeros(5, 2, 8, 8, dtype=torch.bool)
    masks[:, 0, :4] = True
    masks[:, 1, 5:] = True
    both = torch.cat([heat, heat])
    target = torch.cat([masks[:, 0], masks[:, 1]])
    other = torch.cat([masks[:, 1], masks[:, 0]])
    assert float(M.disc(both, target, other).mean()) == 0.5


def test_retrieval_ranks_and_label_set_ceiling():
    scores = torch.tensor([[3.0, 1.0, 0.0], [2.0, 2.0, 0.0], [0.0, 5.0, 1.0]])
    out = M.retrieval(scores, torch.tensor([0, 0, 1]), ks=(1, 2))
    # rows: item 0 rank 1; item 1 ties with item 0 -> rank 2; item 2 rank 2
    assert out["r1_a2i"] == pytest.approx(1 / 3) and out["r2_a2i"] == 1.0
    assert out["r1_ceiling"] == pytest.approx(2 / 3)
    assert out["p_chance"] == pytest.approx((4 + 1) / 9)


def test_map_and_pointing_of_an_oracle_and_its_negation():
    target = torch.zeros(4, 16, 16, dtype=torch.bool)
    target[:, 2:6, 3:9] = True
    classes = torch.tensor([0, 0, 1, 1])
    oracle = target.float()
    assert M.class_map(oracle, target, classes)[0] == pytest.approx(1.0)
    assert float(M.pointing(oracle, target).mean()) == 1.0
    assert float(M.pointing(-oracle, target).mean()) == 0.0
    assert M.class_miou(oracle, target, classes)["miou"] == pytest.approx(1.0)


def _loop_map(heat: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> float:
    """Reference: sklearn's AP per class on the pooled pixels, then the mean."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    aps = []
    for c in range(10):
        sel = classes == c
        y = target[sel].flatten().numpy()
        if bool(sel.any()) and y.sum() > 0:
            aps.append(float(average_precision_score(y, heat[sel].flatten().numpy())))
    return float(np.mean(aps))


def _loop_miou(heat: torch.Tensor, target: torch.Tensor, classes: torch.Tensor) -> dict:
    """Reference: every pixel compared with every one of the 20 thresholds."""
    lo, hi = float(heat.min()), float(heat.max())
    thresholds = torch.linspace(lo, hi, 22)[1:-1] if hi > lo else torch.tensor([lo])
    ious = []
    for c in range(10):
        sel = classes == c
        if not bool(sel.any()):
            continue
        h, t = heat[sel].flatten(), target[sel].flatten().bool()
        pred = h[None, :] > thresholds[:, None]
        ious.append((pred & t).sum(1).float() / (pred | t).sum(1).float().clamp_min(1))
    table = torch.stack(ious)
    return {"miou_per_class": float(table.max(1).values.mean()), "miou": float(table.mean(0).max())}


@pytest.mark.parametrize("kind", ["continuous", "ties", "constant"])
def test_sorted_map_and_miou_equal_sklearn_and_the_threshold_loop(kind: str) -> None:
    """One sort per class gives exactly sklearn's AP and the 20-threshold IoU table."""
    gen = torch.Generator().manual_seed(3)
    n = 23
    heat = torch.rand(n, 12, 12, generator=gen)
    if kind == "ties":  # few distinct values, ties across target and background
        heat = (heat * 5).floor() / 5
    elif kind == "constant":
        heat = torch.full((n, 12, 12), 0.25)
    target = torch.rand(n, 12, 12, generator=gen) < 0.3
    target[0] = False  # an item without target pixels
    classes = torch.randint(0, 4, (n,), generator=gen)
    classes[:3] = 7  # class 7: only the first three items
    target[1:3] = False  # class 7 has no positive pixel: skipped by AP, IoU 0
    assert M.class_map(heat, target, classes)[0] == _loop_map(heat, target, classes)
    assert M.class_miou(heat, target, classes) == _loop_miou(heat, target, classes)
    out = M.localisation(heat, target, None, classes)
    assert out["map"] == _loop_map(heat, target, classes)
    assert out["miou"] == _loop_miou(heat, target, classes)["miou"]


@pytest.mark.slow
def test_untrained_model_is_at_chance_on_spoken_objects():
    """docs/benchmarks.md: the reference model at init scores like the random row."""
    pytest.importorskip("skimage")
    from fw.errors import DataError
    from fw_backbones.taps import mobilenet_v2_tap
    from fw_denseav.spoken_objects import spoken_objects

    try:
        data = spoken_objects("test", limit=80, progress=False, workers=1)
        image = mobilenet_v2_tap("s16d")
    except DataError as err:
        pytest.skip(str(err))
    learner = DenseAV(image, LogMelEncoder(), MaxMean(heads=1), prompts=False, pictures=0)
    learner.audio.setup(data)
    out = learner.evaluate(data)
    assert abs(out["two_disc"] - 0.5) < 0.2  # chance is exactly 0.5
    assert abs(out["two_map"] - out["random_two_map"]) < 0.1
    assert out["two_pointing"] < out["objectness_two_pointing"]
    assert out["r10_a2i"] < 0.35 and out["r10_i2a"] < 0.35  # chance 10/80
    assert out["target_oracle_two_map"] > 0.8  # the metric code sees the masks


def test_aligner_warmup_detaches_the_backbones():
    learner = _learner(cache_image_features=False, aligner_warmup=5)
    learner.training_step(_batch(), 0)["loss"].backward()
    assert all(p.grad is None for p in learner.audio.parameters())
    assert learner.audio_aligner.proj.weight.grad is not None
    learner.zero_grad()
    learner.training_step(_batch(), 5)["loss"].backward()
    assert any(
        p.grad is not None and float(p.grad.abs().sum()) > 0 for p in learner.audio.parameters()
    )


def test_dino_lora_adapters_learn_after_the_aligner_warmup():
    """thesis Ch. 6: DINO is fine-tuned through rank-8 LoRA on qkv, after the aligner warm-up."""
    from fw_backbones import vit

    torch.manual_seed(0)
    image = vit.dino_vits16(weights=None, output="dense", image_size=32, lora_rank=8)
    learner = _learner(image=image, aligner_warmup=5)
    assert not learner.image_frozen  # so its maps are not cached: they change as LoRA learns
    lora = [p for n, p in learner.named_parameters() if ".lora." in n]
    assert len(lora) == 24 and all(p.requires_grad for p in lora)
    learner.training_step(_batch(), 0)["loss"].backward()
    assert all(p.grad is None for p in lora)
    learner.training_step(_batch(), 5)["loss"].backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in lora)
    (opt,) = learner.configure_optimizers().optimizers
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in lora)
    assert not any(id(p) in in_opt for n, p in image.net.named_parameters())


def test_conv_audio_aligner_pools_nine_frames_and_masks_padding():
    from fw_denseav.learner import AudioConvAligner

    aligner = AudioConvAligner(8, 12, attention_heads=6).eval()
    x = torch.randn(2, 8, 90)
    mask = lengths_to_mask(torch.tensor([90, 20]), 90)
    out, valid = aligner(x, mask)
    assert out.shape == (2, 12, 10) and valid.sum(1).tolist() == [10, 3]
    x2 = x.clone()
    x2[1, :, 27:] = 100.0  # frames feeding only padded tokens
    out2, _ = aligner(x2, mask)
    torch.testing.assert_close(out2[1, :, :3], out[1, :, :3])  # padding never attended to
    learner = DenseAV(
        image=_TinyImage(),  # type: ignore[arg-type]
        audio=LogMelEncoder(dim=8, width=8),
        aggregator=MaxMean(heads=2),
        dim=12,
        audio_aligner="conv",
        prompts=False,
        cache_image_features=False,
    )
    batch = _batch()
    batch["audio"] = torch.randn(4, 1, 12800 * 9) * 0.1
    batch["audio_mask"] = lengths_to_mask(torch.tensor([115200, 60000, 30000, 12800]), 115200)
    out = learner.training_step(batch, 0)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and learner.audio_aligner.conv1.weight.grad is not None
    assert learner.localize_hop == pytest.approx(0.72)


def test_prompted_protocol_reports_a_random_row_at_chance(monkeypatch):
    """docs/benchmarks.md: the prompted and presence tables carry the random row; i.i.d. token
    heat has presence AUROC ≈ ½ and, word-independent per image, right-object accuracy ≈ ½."""
    import numpy as np

    from fw.dense import Dense
    from fw_denseav import evaluate as E
    from fw_denseav.spoken_objects import PROMPT_VOICES

    gen = torch.Generator().manual_seed(0)
    n, size = 60, 224
    fake = [
        {
            "cls": c,
            "voice": v,
            "audio": (np.random.default_rng([c, k]).standard_normal(8000) * 3000).astype(np.int16),
            "span": (0.1, 0.3),
        }
        for c in range(10)
        for k, v in enumerate(PROMPT_VOICES)
    ]
    monkeypatch.setattr(E, "_PROMPTS", fake)
    cls = torch.stack([torch.randperm(10, generator=gen)[:2] for _ in range(n)]).to(torch.int8)
    seg = torch.zeros(n, size, size, dtype=torch.uint8)
    seg[:, 16:96, 16:96] = 1
    seg[:, 128:208, 112:192] = 2
    learner = _learner()
    learner.eval()
    image = Dense(learner.image_aligner(learner.image(torch.rand(n, 3, size, size))))
    out = E.prompted(learner, image, {"cls": cls, "seg": seg}, n)
    for key in ("prompt_map", "prompt_pointing", "prompt_disc", "presence_auroc"):
        assert 0.0 <= out[key] <= 1.0
        assert 0.0 <= out[f"random_{key}"] <= 1.0
    # 40 prompts × 60 images: 480 present and 1,920 absent random scores
    assert abs(out["random_presence_auroc"] - 0.5) < 0.06
    assert abs(out["random_prompt_disc"] - 0.5) < 0.08


def test_frozen_image_maps_are_computed_once_per_data_and_weights():
    """Seeds of a benchmark share one frozen featurizer pass; other weights or data do not."""
    from fw_denseav import learner as L

    class _Counting(_TinyImage):
        calls = 0

        def forward(self, x):
            type(self).calls += x.shape[0]
            return super().forward(x)

    class _Data:
        def __init__(self, n: int) -> None:
            self.x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"x": self.x[i]}

    L._MAPS.clear()
    torch.manual_seed(0)
    image = _Counting()
    data = _Data(10)
    first = DenseAV(image, LogMelEncoder(dim=8, width=8), dim=8).image_maps(data, batch=4)
    assert _Counting.calls == 10
    same = _Counting()
    same.load_state_dict(image.state_dict())
    again = DenseAV(same, LogMelEncoder(dim=8, width=8), dim=8).image_maps(data, batch=4)
    assert _Counting.calls == 10 and torch.equal(first, again)
    assert torch.allclose(first.float(), image.conv(data.x), atol=1e-2, rtol=1e-3)
    other = _Counting()  # other random weights: computed anew
    DenseAV(other, LogMelEncoder(dim=8, width=8), dim=8).image_maps(data, batch=4)
    assert _Counting.calls == 20
    DenseAV(same, LogMelEncoder(dim=8, width=8), dim=8).image_maps(_Data(6), batch=4)
    assert _Counting.calls == 26
    DenseAV(same, LogMelEncoder(dim=8, width=8), dim=8).image_maps(data, limit=4)
    assert _Counting.calls == 30  # a prefix is its own entry
    L._MAPS.clear()
