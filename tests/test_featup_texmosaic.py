"""The FeatUp TexMosaic-12 bench (bench/featup_texmosaic.py): the exactness trick with the JBU
stack's residual folded into the heads, and the bench's scoring pieces on tiny sizes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fw.errors import FwError
from fw_featup.upsamplers import JBUStack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
featup_texmosaic = pytest.importorskip("featup_texmosaic")


def random_stack(dim: int, seed: int = 0, stages: int = 2) -> JBUStack:
    """A small JBU stack whose every parameter is random (residual far from zero)."""
    torch.manual_seed(seed)
    stack = JBUStack(dim=dim, stages=stages, window=3, key_dim=4).double()
    with torch.no_grad():
        for p in stack.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for up in stack.ups:  # keep kernels well-conditioned: positive σ, moderate temperature
            up.sigma_spatial.fill_(0.8)
            up.range_temp.fill_(-0.5)
    return stack.eval()


@pytest.mark.parametrize("size", [None, (20, 18)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_folded_score_upsampling_equals_full_feature_upsampling(size, with_bias):
    # docs/benchmarks.md: A·stack(F) + a == stages(A'·F) + a' with A' = A(I + 0.1W), a' = a + 0.1Ab
    torch.manual_seed(1)
    c, k = 6, 5
    stack = random_stack(c)
    feats = torch.randn(2, c, 4, 5, dtype=torch.float64)
    image = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    weight = torch.randn(k, c, dtype=torch.float64)
    bias = torch.randn(k, dtype=torch.float64) if with_bias else None
    with torch.no_grad():
        full = stack(feats, image, size)  # [2, C, H, W], residual included
        expected = torch.einsum("nchw,kc->nkhw", full, weight)
        if bias is not None:
            expected = expected + bias.view(1, -1, 1, 1)
        w2, b2 = stack.fold_head(weight, bias)
        low = torch.einsum("nchw,kc->nkhw", feats, w2)
        got = stack.upsample_scores(low, image, size) + b2.view(1, -1, 1, 1)
    assert got.shape == expected.shape == (2, k, *(size or (16, 20)))
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    # the residual matters: without the fold the two paths differ
    unfolded = stack.upsample_scores(torch.einsum("nchw,kc->nkhw", feats, weight), image, size)
    assert not torch.allclose(unfolded, expected, atol=1e-3)


def test_fold_matches_centroid_formula_and_needs_eval_mode():
    stack = random_stack(4)
    cents = torch.randn(3, 4, dtype=torch.float64)
    w = stack.fixup.weight[:, :, 0, 0].detach()
    b = stack.fixup.bias.detach()
    w2, b2 = stack.fold_head(cents)
    eye = torch.eye(4, dtype=torch.float64)
    for k in range(3):  # c'_k = (I + 0.1 W)^T c_k, constant 0.1 <b, c_k>
        assert torch.allclose(w2[k], (eye + 0.1 * w).T @ cents[k])
        assert torch.allclose(b2[k], 0.1 * b @ cents[k])
    stack.train()
    with pytest.raises(FwError, match="eval mode"):
        stack.upsample_scores(
            torch.zeros(1, 3, 4, 4, dtype=torch.float64), torch.rand(1, 3, 16, 16)
        )


def test_bench_jbu_path_equals_explicit_path():
    torch.manual_seed(2)
    stack = random_stack(8, seed=3).float()
    heads = [
        featup_texmosaic.Head("cluster", 0, torch.randn(12, 8)),
        featup_texmosaic.Head("probe", 0, torch.randn(12, 8), torch.randn(12)),
    ]
    maps, images = torch.randn(2, 8, 4, 4), torch.rand(2, 3, 16, 16)
    fast = featup_texmosaic.jbu_scores(stack, heads, maps, images)
    slow = featup_texmosaic.explicit_scores(stack, heads, maps, images)
    for a, b in zip(fast, slow, strict=True):
        assert a.shape == (2, 12, 16, 16)
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_interpolated_scores_equal_interpolated_features(mode):
    torch.manual_seed(4)
    head = featup_texmosaic.Head("probe", 0, torch.randn(12, 5), torch.randn(12))
    maps, images = torch.randn(1, 5, 3, 3), torch.rand(1, 3, 12, 12)
    (got,) = featup_texmosaic.interpolated_scores(mode, [head], maps, images)
    up = featup_texmosaic.interpolation(mode)
    (ref,) = featup_texmosaic.explicit_scores(up, [head], maps, images)
    assert torch.allclose(got, ref, atol=1e-5)


def one_hot_scores(pred: torch.Tensor) -> torch.Tensor:
    return F.one_hot(pred, 12).permute(0, 3, 1, 2).float()


def test_scorer_hungarian_fixed_matching_and_band():
    label = torch.arange(12).repeat_interleave(3).reshape(1, 6, 6)  # every class present
    perm = torch.roll(torch.arange(12), 5)
    heads = [
        featup_texmosaic.Head("cluster", 0, torch.zeros(12, 1)),
        featup_texmosaic.Head("probe", 0, torch.zeros(12, 1)),
    ]
    band = torch.zeros(1, 6, 6, dtype=torch.bool)
    band[:, :2] = True
    scorer = featup_texmosaic.Scorer(heads)
    scorer.update("r", [one_hot_scores(perm[label]), one_hot_scores(perm[label])], label, band)
    got = scorer.results()["r"]
    # clusters: a permutation of the labels is matched back exactly; probe: identity, all wrong
    assert got[0]["miou_all"] == got[0]["acc_all"] == 1.0
    assert got[0]["miou_band"] == got[0]["miou_interior"] == 1.0
    assert got[1]["acc_all"] == 0.0
    # a fixed matching (identity) instead of the Hungarian one scores the cluster head at 0
    fixed = scorer.results({0: np.arange(12)})["r"]
    assert fixed[0]["acc_all"] == 0.0
    inverse = featup_texmosaic.hungarian_of(scorer, "r")[0]
    assert (inverse[perm.numpy()] == np.arange(12)).all()


def test_paired_deltas_and_subset():
    heads = [featup_texmosaic.Head("cluster", s, torch.zeros(12, 1)) for s in (0, 1)]
    row = {f"{m}_{p}": 0.5 for m in ("miou", "acc") for p in featup_texmosaic.PARTS}
    better = {**row, "miou_all": 0.52, "miou_band": 0.49}
    text = featup_texmosaic.paired_deltas(
        {"a": [better, better], "b": [row, row]}, heads, [("a", "b")]
    )
    assert "all [+2.00 +2.00] +2.00 ± 0.00 (all >0)" in text
    assert "band [-1.00 -1.00]" in text and "(all <0)" in text
    assert featup_texmosaic.subset_indices(200, 4) == [0, 66, 133, 199]
    assert featup_texmosaic.subset_indices(200, 0) == []


def test_fit_heads_shapes():
    torch.manual_seed(5)
    maps = torch.randn(2, 6, 8, 8).half()
    label = torch.randint(0, 12, (2, 32, 32), dtype=torch.uint8)
    heads = featup_texmosaic.fit_heads(maps, label, [0, 1])
    assert [h.kind for h in heads] == ["cluster", "cluster", "probe", "probe"]
    assert all(h.weight.shape == (12, 6) and h.bias.shape == (12,) for h in heads)
    # spherical k-means centroids are unit vectors
    assert torch.allclose(heads[0].weight.norm(dim=1), torch.ones(12), atol=1e-4)


@pytest.mark.slow
def test_bench_runs_end_to_end_on_a_tiny_tier(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    argv = ["featup_texmosaic.py", "--n-train", "4", "--n-eval", "4", "--tier", "fast"]
    argv += ["--no-baselines", "--seeds", "0", "--implicit-images", "1", "--implicit-steps", "1"]
    argv += ["--implicit-pool", "2", "--check-images", "1", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    featup_texmosaic.main()
    text = capsys.readouterr().out
    assert "argmax agreement 1.000000" in text
    got = __import__("json").loads(out.read_text())
    assert {"low-res", "bilinear", "bicubic", "JBU init"} <= set(got["full"])
    assert "implicit" in got["subset"]
