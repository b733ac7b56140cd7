"""The stego learner end to end: recipes, the CLI's error on a missing tree, probes, I-Con form."""

from __future__ import annotations

import json

import pytest
import torch

from fw.cli import main
from fw.data import ArrayDataset
from fw.errors import DataError
from fw_backbones.taps import mobilenet_v2_tap
from fw_stego.crf import have_pydensecrf
from fw_stego.learner import StegoLearner
from tests.conftest import RECIPES
from tests.test_stego_data import write_coco_tree


def tiny_data(n: int = 8, size: int = 32, classes: int = 3) -> ArrayDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    label = torch.randint(0, classes, (n, 1, 1), generator=g).expand(n, size, size).clone()
    label[:, : size // 2] = (label[:, : size // 2] + 1) % classes
    label[0, 0, 0] = -1  # an ignored pixel
    return ArrayDataset({"x": x, "label": label})


def small_learner(**kw) -> StegoLearner:
    backbone = mobilenet_v2_tap("s8", weights=None)
    params = dict(n_classes=3, feature_samples=3, neg_samples=2, batch_size=4, picture_images=2)
    params.update(kw)
    return StegoLearner(backbone, **params)


def test_cocostuff_recipe_without_data_exits_2_naming_the_layout(tmp_path, capsys):
    code = main(["run", str(RECIPES / "stego_cocostuff.yaml"), f"data.root={tmp_path / 'none'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "curated/train2017/Coco164kFull_Stuff_Coarse.txt" in err and "cocodataset" in err


def test_cocostuff_recipe_trains_on_a_tiny_tree(tmp_path):
    root = tmp_path / "coco"
    write_coco_tree(root, {"train": ["1", "2"], "val": ["3", "4"]}, size=(64, 64))
    crf = "pydensecrf" if have_pydensecrf() else "exact_lowres"
    out = tmp_path / "run"
    code = main(
        [
            "run",
            str(RECIPES / "stego_cocostuff.yaml"),
            f"data.root={root}",
            f"eval_data.root={root}",
            "data.res=16",
            "eval_data.res=32",
            "learner.backbone.weights=null",  # no hub weights offline: the real architecture
            "learner.batch_size=4",
            f"learner.crf={crf}",
            "trainer.max_steps=2",
            "trainer.accelerator=cpu",
            "trainer.progress=false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("cluster_miou", "cluster_accuracy", "linear_miou", "linear_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["crf"] == 1.0 and metrics["flip_tta"] == 0.0
    assert (out / "stego.png").stat().st_size > 0


@pytest.mark.parametrize("objective", ["correlation", "icon"])
def test_training_step_moves_only_what_it_should(objective):
    data = tiny_data()
    learner = small_learner(objective=objective, cache_features=objective == "icon")
    learner.setup(data)
    assert learner.knns.shape == (8, 8)
    batch = data.__getitems__([0, 1, 2, 3])
    out = learner.training_step(dict(batch), 0)
    assert torch.isfinite(out["loss"])
    learner.zero_grad()
    out["loss"].backward()
    assert learner.head.linear.weight.grad.abs().sum() > 0
    assert learner.cluster_probe.clusters.grad.abs().sum() > 0
    assert learner.linear_probe.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in learner.backbone.parameters())


def test_probe_losses_do_not_reach_the_head():
    data = tiny_data()
    learner = small_learner(self_weight=0.0, knn_weight=0.0, rand_weight=0.0)
    learner.setup(data)
    out = learner.training_step(dict(data.__getitems__([0, 1, 2, 3])), 0)
    out["loss"].backward()
    assert learner.head.linear.weight.grad.abs().sum() == 0  # only the probes learn
    assert learner.linear_probe.conv.weight.grad.abs().sum() > 0


def test_optimizers_have_their_own_rates():
    learner = small_learner()
    optim = learner.configure_optimizers()
    lrs = [o.param_groups[0]["lr"] for o in optim.optimizers]
    assert lrs == [5e-4, 5e-3, 5e-3]
    owned = [{id(p) for g in o.param_groups for p in g["params"]} for o in optim.optimizers]
    assert owned[0] == {id(p) for p in learner.head.parameters()}
    assert not (owned[0] & owned[1]) and not (owned[1] & owned[2])


def test_evaluate_scores_flip_tta_and_writes_the_picture(tmp_path):
    data = tiny_data()
    learner = small_learner(flip_tta=True, band_size=9, cluster_eval="kmeans")
    learner.setup(data)
    metrics = learner.evaluate(data, tmp_path)
    assert metrics["flip_tta"] == 1.0
    for key in ("cluster_miou_band", "cluster_accuracy_interior", "linear_miou"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (tmp_path / "stego.png").exists()
    code = learner.codes(data.x[:2])
    flipped = learner.codes(data.x[:2].flip(-1)).flip(-1)
    assert torch.allclose(code, flipped, atol=1e-5)  # TTA codes are flip-equivariant


def test_knn_file_is_saved_and_reused(tmp_path):
    data = tiny_data()
    path = tmp_path / "knns.pt"
    first = small_learner(knn_file=str(path))
    first.setup(data)
    assert path.is_file()
    second = small_learner(knn_file=str(path))

    def refuse(x):
        raise AssertionError("reusing the KNN file must not run the backbone")

    second.features = refuse
    second.setup(data)
    assert torch.equal(first.knns, second.knns)
    with pytest.raises(DataError, match="mined for 8 items"):
        small_learner(knn_file=str(path)).setup(tiny_data(n=6))


def test_icon_objective_is_the_kl_between_softmaxes_of_f_and_s():
    learner = small_learner(objective="icon", icon_tau_p=0.2, icon_tau_q=0.5)
    g = torch.Generator().manual_seed(0)
    feats, feats_knn = torch.randn(3, 8, 5, 5, generator=g), torch.randn(3, 8, 5, 5, generator=g)
    code, code_knn = torch.randn(3, 6, 5, 5, generator=g), torch.randn(3, 6, 5, 5, generator=g)
    torch.manual_seed(1)
    got = learner.icon_objective(feats, code, feats_knn, code_knn)["loss"]
    torch.manual_seed(1)
    coords1, coords2, perms = learner.loss_fn.draw(3)

    def points(maps, coords):  # [B, n, C] unit vectors at the sampled positions
        s = torch.nn.functional.grid_sample(maps, coords, align_corners=True, padding_mode="border")
        return torch.nn.functional.normalize(s.flatten(2).transpose(1, 2), dim=2)

    fs, cs = points(feats, coords1), points(code, coords1)
    ft = [fs, points(feats_knn, coords2)] + [points(feats[p], coords2) for p in perms]
    ct = [cs, points(code_knn, coords2)] + [points(code[p], coords2) for p in perms]
    total, rows = 0.0, 0
    for b in range(3):
        for i in range(9):
            fl = torch.cat([fs[b, i] @ t[b].T for t in ft])
            sl = torch.cat([cs[b, i] @ t[b].T for t in ct])
            keep = torch.ones_like(fl, dtype=torch.bool)
            keep[i] = False  # the source position itself
            p = torch.softmax(fl[keep] / 0.2, 0)
            log_q = torch.log_softmax(sl[keep] / 0.5, 0)
            total += float((p * (p.log() - log_q)).sum())
            rows += 1
    assert got.item() == pytest.approx(total / rows, rel=1e-4)
