"""The view-based learner (SimCLR family): loss oracles, EMA teacher, two modalities (CLIP),
augmentations, featurizers, and every recipe of the family training on digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from fw import cli
from fw.data import ArrayDataset
from fw.errors import RecipeError
from fw.recipe import build, load_recipe
from fw.train import train
from fw_common import augment
from fw_simclr.evaluation import retrieval_top1
from tests.conftest import RECIPES

DIGITS_RECIPES = ["simclr", "supcon", "cross_entropy", "tsimclr", "tsupcon"]


def _learner(registry, recipe: str, *overrides: str, holdout: bool = False):
    if not holdout and "digits" in recipe:
        overrides = ("learner.exclude_holdout=false", *overrides)
    raw = load_recipe(RECIPES / f"{recipe}.yaml", overrides, registry).raw
    return build("learner", raw["learner"], registry)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one thread is faster than two fighting over a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(registry):
    return build("dataset", {"name": "digits", "limit": 200}, registry)


@pytest.fixture(scope="module")
def halves(registry):
    """Digits as two modalities (top / bottom half) with the one-hot class as side embedding."""
    spec = {"name": "digits", "limit": 200, "halves": True, "embedding": "label"}
    return build("dataset", spec, registry)


def _batch(data, n: int = 32, dtype=torch.float64) -> dict[str, torch.Tensor]:
    batch = dict(data.__getitems__(list(range(n))))
    for key in ("x", "x_bottom", "embedding"):
        if key in batch:
            batch[key] = batch[key].to(dtype)
    return batch


def _nt_xent(z1, z2, tau):
    """SimCLR's NT-Xent (Chen et al. 2020, Algorithm 1), written out independently."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = (z @ z.T / tau).fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, partner)


def _supcon(z, labels, tau):
    """Khosla et al. 2020, L_out: mean over anchors of -1/|P(i)| Σ_p log softmax_{a≠i}."""
    z = F.normalize(z, dim=1)
    eye = torch.eye(len(z), dtype=torch.bool)
    logits = (z @ z.T / tau).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~eye
    return (-(log_prob.masked_fill(~positive, 0.0).sum(1)) / positive.sum(1)).mean()


# ----------------------------------------------------------------------------- loss oracles


@pytest.mark.parametrize("aug", ["none", "digits"])
def test_simclr_loss_is_nt_xent(registry, digits, aug):
    # float64 for a 1e-6 comparison; fw_common's MLP head casts to float32, so q reads the
    # backbone features directly here (the head does not enter the loss formula)
    learner = _learner(registry, "simclr_digits", f"learner.augment={aug}", "learner.head=null")
    learner.setup(digits)
    learner.double()
    batch = _batch(digits)
    torch.manual_seed(3)
    loss = learner.training_step(batch, 0)["loss"]
    torch.manual_seed(3)  # the same draws: the views the step saw
    z = learner.project(learner.make_views(learner.images(batch["x"])))
    z1, z2 = z.chunk(2)
    tau = learner.q.temperature
    assert loss.item() == pytest.approx(_nt_xent(z1, z2, tau).item(), abs=1e-6)
    if aug == "none":
        assert torch.equal(z1, z2)


def test_supcon_recipe_is_supcon_loss(registry, digits):
    learner = _learner(registry, "supcon_digits", "learner.augment=none", "learner.head=null")
    learner.setup(digits)
    learner.double()
    batch = _batch(digits)
    out = learner.training_step(batch, 0)
    z = learner.project(learner.make_views(learner.images(batch["x"])))
    labels = batch["label"].repeat(2)
    expected = _supcon(z, labels, learner.q.temperature)
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    # mode: ce; the KL would be smaller by H(p) = mean_i log(|P(i)|)
    positives = (labels[:, None] == labels[None, :]).sum(1) - 1
    assert out["p_entropy"].item() == pytest.approx(positives.double().log().mean().item())


def test_cross_entropy_recipe_is_f_cross_entropy(registry, digits):
    learner = _learner(registry, "cross_entropy_digits", "learner.augment=none")
    learner.setup(digits)
    learner.double()
    batch = _batch(digits)
    loss = learner.training_step(batch, 0)["loss"]
    h = learner.backbone(learner.images(batch["x"]))
    logits = h @ learner.q.prototypes.T + learner.q.bias
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch["label"]).item(), abs=1e-6)


def test_harmonic_recipe_is_the_harmonic_loss(registry, digits):
    """Baek et al.'s −log(‖h − φ_y‖^(−2n) / Σ_k ‖h − φ_k‖^(−2n)) on the backbone features."""
    learner = _learner(registry, "harmonic_digits", "learner.augment=none")
    learner.setup(digits)
    learner.double()
    batch = _batch(digits)
    loss = learner.training_step(batch, 0)["loss"]
    h = learner.backbone(learner.images(batch["x"]))
    dist = torch.cdist(h, learner.q.prototypes)  # plain Euclidean
    weights = dist.pow(-2 * learner.q.n)
    expected = -torch.log(weights[torch.arange(32), batch["label"]] / weights.sum(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_xsample_recipe_weights_views_by_the_side_embedding(registry, digits):
    learner = _learner(registry, "xsample_digits", "learner.augment=none", "learner.head=null")
    learner.setup(digits)
    learner.double()
    batch = _batch(digits)
    batch["embedding"] = F.one_hot(batch["label"], 10).double()
    loss = learner.training_step(batch, 0)["loss"]
    z = F.normalize(learner.project(learner.make_views(learner.images(batch["x"]))), dim=1)
    g = batch["embedding"].repeat(2, 1)  # both views of an image share its embedding
    eye = torch.eye(64, dtype=torch.bool)
    tau_p, tau_q = learner.p.temperature, learner.q.temperature
    p = (g @ g.T / tau_p).masked_fill(eye, float("-inf")).softmax(1)
    log_q = (z @ z.T / tau_q).masked_fill(eye, float("-inf")).log_softmax(1)
    kl = (p * (torch.log(p.masked_fill(eye, 1.0)) - log_q.masked_fill(eye, 0.0))).sum(1).mean()
    assert loss.item() == pytest.approx(kl.item(), abs=1e-6)


# ----------------------------------------------------------------------------- two modalities


def test_clip_recipe_is_clips_symmetric_cross_entropy(registry, halves):
    learner = _learner(registry, "clip_digits")
    learner.setup(halves)
    learner.double()
    batch = _batch(halves)
    loss = learner.training_step(batch, 0)["loss"]
    za = learner.project_modality(batch["x"], 0)  # no augmentation: the views are the inputs
    zb = learner.project_modality(batch["x_bottom"], 1)
    # CLIP (Radford et al. 2021, Fig. 3): logits = scale · cos, symmetric cross-entropy
    scale = learner.q.log_scale.exp()
    assert scale.item() == pytest.approx(1 / 0.2)
    logits = scale * F.normalize(za, dim=1) @ F.normalize(zb, dim=1).T
    target = torch.arange(32)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    # each half has its own encoder, and the loss trains both and the logit scale
    top, bottom = learner.backbone, learner.towers[0]["backbone"]
    assert type(top) is type(bottom)
    pairs = zip(top.parameters(), bottom.parameters(), strict=True)
    assert not any(torch.equal(a, b) for a, b in pairs if a.dim() == 2)  # weight matrices
    loss.backward()
    for part in (top, bottom, learner.head, learner.towers[0]["head"], learner.q):
        assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in part.parameters())


def test_cross_modal_gaps_normalise_over_the_other_modality(registry, halves):
    """t-CLIP's q is a Student-t over the other half only (a rectangular kernel)."""
    learner = _learner(registry, "tclip_digits")
    learner.setup(halves)
    learner.double()
    batch = _batch(halves)
    loss = learner.training_step(batch, 0)["loss"]
    za = learner.project_modality(batch["x"], 0)
    zb = learner.project_modality(batch["x_bottom"], 1)
    nu = learner.q.dof
    logits = -(nu + 1) / 2 * torch.log1p(torch.cdist(za, zb).pow(2) / nu)
    target = torch.arange(32)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_clip_scores_retrieval_and_probes_on_the_holdout(registry, halves):
    learner = _learner(registry, "clip_digits", holdout=True)
    learner.setup(halves)
    scores = learner.evaluate(halves)
    test, _ = learner.holdout_split(200)
    za, _ = learner.embed(halves, 0, project=True)
    zb, _ = learner.embed(halves, 1, project=True)
    za, zb = za[test], zb[test]

    def top1(queries, keys):  # written out: is each query's most cosine-similar key its own?
        hits = 0
        for i in range(len(queries)):
            sims = [F.cosine_similarity(queries[i], keys[j], dim=0) for j in range(len(keys))]
            hits += int(max(range(len(keys)), key=lambda j: sims[j]) == i)
        return hits / len(queries)

    forward, backward = top1(za, zb), top1(zb, za)
    assert scores["holdout_retrieval_top1_x_to_x_bottom"] == pytest.approx(forward)
    assert scores["holdout_retrieval_top1_x_bottom_to_x"] == pytest.approx(backward)
    assert scores["holdout_retrieval_top1"] == pytest.approx((forward + backward) / 2)
    for key in ("holdout_knn_probe_accuracy", "holdout_knn_probe_accuracy_x_bottom"):
        assert 0.0 <= scores[key] <= 1.0
    assert retrieval_top1(za, za) == 1.0 and retrieval_top1(zb, zb, "euclidean") == 1.0


def test_modalities_user_errors(registry):
    with pytest.raises(RecipeError, match="EMA teacher"):
        _learner(registry, "clip_digits", "learner.ema_momentum=0.9", "learner.views=2")
    with pytest.raises(RecipeError, match="reads input features"):
        _learner(registry, "clip_digits", "learner.p={name: gaussian, sigma: 1.0}")
    with pytest.raises(RecipeError, match="distinct"):
        _learner(registry, "clip_digits", "learner.modalities=[x, x]")


# ----------------------------------------------------------------------------- EMA teacher


def test_ema_teacher_update_and_moco_loss(registry, digits):
    m = 0.9
    learner = _learner(
        registry,
        "simclr_digits",
        f"learner.ema_momentum={m}",
        "learner.augment=none",
        "learner.predictor={name: mlp, dim: 64, hidden: [32]}",
    )
    learner.setup(digits)
    student = [learner.backbone, learner.head]
    teacher = [learner.teacher["backbone"], learner.teacher["head"]]
    for t, s in zip(teacher, student, strict=True):  # the teacher starts as a copy
        for a, b in zip(t.state_dict().values(), s.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    names = {n for n, _ in learner.named_parameters() if n.startswith("teacher.")}
    optimizer = learner.configure_optimizers()
    assert names and not any(w.requires_grad for w in learner.teacher.parameters())
    assert sum(w.numel() for g in optimizer.param_groups for w in g["params"]) == sum(
        w.numel() for n, w in learner.named_parameters() if not n.startswith("teacher.")
    )
    batch = _batch(digits, dtype=torch.float32)
    loss = learner.training_step(batch, 0)["loss"]  # step 0: no update yet
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    before = [[w.clone() for w in t.parameters()] for t in teacher]
    loss = learner.training_step(batch, 1)["loss"]  # updates the teacher first
    for old, t, s in zip(before, teacher, student, strict=True):
        for w_old, w_t, w_s in zip(old, t.parameters(), s.parameters(), strict=True):
            torch.testing.assert_close(w_t, m * w_old + (1 - m) * w_s, rtol=0, atol=1e-6)
    # MoCo v3: (ctr(q1, k2) + ctr(q2, k1)) / 2, ctr = cross-entropy of cos/τ against k's
    x = learner.images(batch["x"])
    q1 = q2 = learner.project(x)
    with torch.no_grad():
        k1 = k2 = learner.project(x, student=False)
    tau = learner.q.temperature

    def ctr(q, k):
        logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / tau
        return F.cross_entropy(logits, torch.arange(len(q)))

    expected = (ctr(q1, k2) + ctr(q2, k1)) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)  # float32
    learner.update_teacher()  # BatchNorm statistics are copied, not averaged
    for t, s in zip(teacher, student, strict=True):
        for b_t, b_s in zip(t.buffers(), s.buffers(), strict=True):
            assert torch.equal(b_t, b_s)


# ----------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", DIGITS_RECIPES)
def test_recipe_trains_on_digits(registry, tmp_path, name):
    recipe = load_recipe(
        RECIPES / f"{name}_digits.yaml",
        [
            "data.limit=200",
            "learner.batch_size=64",
            "trainer.max_steps=20",
            "trainer.log_every=5",
            "trainer.progress=false",
            "learner.probe_max_iter=200",
        ],
        registry,
    )
    final = train(recipe, tmp_path / name, registry=registry)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    for key in ("holdout_knn_probe_accuracy", "holdout_linear_probe_accuracy"):
        assert 0.0 <= final[key] <= 1.0
    assert 0.0 <= final["kmeans_hungarian_accuracy"] <= 1.0
    if name == "cross_entropy":
        assert 0.0 <= final["holdout_classifier_accuracy"] <= 1.0


def test_resume_with_ema_teacher_equals_uninterrupted(registry, tmp_path):
    overrides = [
        "data.limit=200",
        "learner.batch_size=64",
        "learner.ema_momentum=0.9",
        "learner.predictor={name: mlp, dim: 64, hidden: [32]}",
        "learner.linear_probe=false",
        "trainer.progress=false",
    ]

    def run(out, steps, resume=False):
        recipe = load_recipe(
            RECIPES / "simclr_digits.yaml", [*overrides, f"trainer.max_steps={steps}"], registry
        )
        final = train(recipe, tmp_path / out, resume=resume, registry=registry)
        final.pop("train_seconds")
        return final

    full = run("full", 12)
    run("cut", 6)
    assert run("cut", 12, resume=True) == full


def test_vicreg_on_the_sphere_runs(registry, digits):
    learner = _learner(
        registry,
        "simclr_digits",
        "learner.q={name: cohesion_variance}",
        "learner.mode=ce",
        "learner.normalize=true",
    )
    learner.setup(digits)
    optimizer = learner.configure_optimizers()
    batch = _batch(digits, 64, torch.float32)
    for step in range(3):
        loss = learner.training_step(batch, step)["loss"]
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_holdout_is_never_trained_on_and_eval_data_is_used(registry, digits):
    learner = _learner(registry, "simclr_digits", "learner.augment=none", holdout=True)
    learner.setup(digits)
    held = learner._held_out
    assert int(held.sum()) == 40
    seen: list[torch.Tensor] = []
    original = learner._pair_loss

    def spy(batch, *args):
        seen.append(batch["index"])
        return original(batch, *args)

    learner._pair_loss = spy
    learner.training_step(_batch(digits, 100, torch.float32), 0)
    assert len(seen[0]) == 100 - int(held[:100].sum()) and not held[seen[0]].any()
    other = digits.subset(torch.arange(150, 200))
    scores = learner.evaluate(other)
    assert "knn_probe_accuracy" in scores and "holdout_knn_probe_accuracy" not in scores


def test_cifar10_recipe_offline_is_a_data_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # data/cifar10 is relative: nothing there
    code = cli.main(["run", str(RECIPES / "simclr_cifar10.yaml"), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "CIFAR-10 not found" in err and "cifar-10-batches-py" in err


def test_cifar10_learner_steps_on_cifar_shaped_images(registry):
    learner = _learner(registry, "simclr_cifar10")
    assert learner.backbone.dim == 512
    data = ArrayDataset({"x": torch.rand(4, 3, 32, 32), "label": torch.arange(4)})
    learner.setup(data)
    learner.configure_optimizers()
    batch = data.full_batch()
    out = learner.training_step(batch, 0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert learner.infer(batch).shape == (4, 512)


# ----------------------------------------------------------------------------- augmentations


def test_random_resized_crop_matches_torchvision():
    x = torch.rand(16, 3, 12, 10)
    for size in (None, 6):
        op = augment.RandomResizedCrop(size=size, scale=[0.08, 1.0])
        torch.manual_seed(0)
        out = op(x)
        torch.manual_seed(0)
        boxes = op.boxes(16, 12, 10, x.device).long().tolist()
        out_size = [size, size] if size else [12, 10]
        crops = [
            TF.resized_crop(img, *box, out_size, antialias=False)
            for img, box in zip(x, boxes, strict=True)
        ]
        ref = torch.stack(crops)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_translate_is_an_exact_pixel_shift():
    x = torch.rand(64, 1, 8, 8)
    out = augment.RandomTranslate(max_shift=2)(x)
    for img, res in zip(x, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(res, _shift(img, dy, dx))
        ]
        assert matches


def _shift(img, dy, dx):
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    ys, yd = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h - max(0, -dy))
    xs, xd = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w - max(0, -dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def test_colour_ops_match_torchvision():
    x = torch.rand(4, 3, 9, 9)
    for shift in (0.1, -0.3):
        ref = torch.stack([TF.adjust_hue(img, shift) for img in x])
        torch.testing.assert_close(augment.adjust_hue(x, torch.full((4,), shift)), ref)
    blur = augment.GaussianBlur(kernel_size=5, sigma=[1.3, 1.3], p=1.0)
    torch.testing.assert_close(blur(x), TF.gaussian_blur(x, [5, 5], [1.3, 1.3]))
    grey = augment.Grayscale(p=1.0)(x)
    torch.testing.assert_close(grey, TF.rgb_to_grayscale(x, num_output_channels=3))


@pytest.mark.parametrize("preset", sorted(augment.PRESETS))
def test_presets_keep_shape_and_range(preset):
    x = torch.rand(8, 3, 32, 32)
    out = augment.Augmenter(preset)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    grey = augment.Augmenter(preset)(x[:, :1])
    assert grey.shape == (8, 1, 32, 32)


def test_augmentation_errors_name_the_choices(registry):
    with pytest.raises(RecipeError, match="Registered augmentations: .*random_resized_crop"):
        augment.Augmenter([{"name": "rotate"}])
    with pytest.raises(RecipeError, match="Did you mean .brightness."):
        augment.Augmenter([{"name": "color_jitter", "brightnes": 0.4}])
    with pytest.raises(RecipeError, match="Presets"):
        _learner(registry, "simclr_digits", "learner.augment=imagenet")
    op = augment.Augmenter([{"name": "torchvision", "transform": "RandomRotation", "degrees": 9}])
    assert op(torch.rand(3, 1, 8, 8)).shape == (3, 1, 8, 8)


# ----------------------------------------------------------------------------- featurizers


def test_featurizers_take_flat_grey_and_colour_images(registry, digits):
    conv = build("featurizer", {"name": "convnet", "widths": [8, 16]}, registry)
    conv.setup(digits)
    assert conv(digits.x[:5]).shape == (5, 16) and conv.dim == 16
    assert conv.input_key == "x" and conv.dense is False
    res = build("featurizer", {"name": "cifar_resnet18"}, registry).eval()
    assert res(torch.rand(2, 1, 32, 32)).shape == (2, 512)  # grey is repeated to RGB
    assert res(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    proj = build("featurizer", {"name": "convnet", "widths": [8], "dim": 4}, registry)
    assert proj(torch.rand(3, 3, 28, 28)).shape == (3, 4)
