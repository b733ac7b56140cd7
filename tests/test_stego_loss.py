"""STEGO's correlation loss against a separately written loop reference of thesis §4.5.2-§4.5.3."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fw_stego.loss import (
    CorrelationLoss,
    PairWeights,
    correlation_term,
    derangement,
    sample_grid,
    spatial_centre,
)

# -- the reference: plain Python loops over the thesis's formulas, float64 --------------------


def ref_bilinear(m: torch.Tensor, x: float, y: float) -> list[float]:
    """Value of map ``m [C, H, W]`` at normalised (x, y) in [-1, 1], corners on cell centres."""
    c, h, w = m.shape
    px, py = (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
    px, py = min(max(px, 0.0), w - 1), min(max(py, 0.0), h - 1)
    x0, y0 = int(math.floor(px)), int(math.floor(py))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    ax, ay = px - x0, py - y0
    out = []
    for k in range(c):
        v = (
            (1 - ax) * (1 - ay) * float(m[k, y0, x0])
            + ax * (1 - ay) * float(m[k, y0, x1])
            + (1 - ax) * ay * float(m[k, y1, x0])
            + ax * ay * float(m[k, y1, x1])
        )
        out.append(v)
    return out


def ref_points(m: torch.Tensor, coords: torch.Tensor) -> list[list[list[float]]]:
    """Sampled vectors [n][n] -> list of C floats, for one image."""
    n = coords.shape[0]
    return [
        [ref_bilinear(m, float(coords[a, b, 0]), float(coords[a, b, 1])) for b in range(n)]
        for a in range(n)
    ]


def cos(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    nu = max(math.sqrt(sum(a * a for a in u)), 1e-10)
    nv = max(math.sqrt(sum(b * b for b in v)), 1e-10)
    return dot / (nu * nv)


def ref_term(fs, ft, cs, ct, shift, sc_mode, zero_clamp):
    """Mean over batch and positions of -(F^SC - b) max(S, clamp) (thesis Eq. 4.4)."""
    batch, n = len(fs), len(fs[0])
    pos = list(itertools.product(range(n), range(n)))
    fd = [
        [[cos(fs[b][h][w], ft[b][i][j]) for (i, j) in pos] for (h, w) in pos] for b in range(batch)
    ]
    if sc_mode != "off":
        global_mean = sum(v for img in fd for row in img for v in row) / (batch * len(pos) ** 2)
        fd = [[[v - sum(row) / len(row) for v in row] for row in img] for img in fd]
        if sc_mode == "reference":  # re-add the batch mean of F (the centred mean is 0)
            centred_mean = sum(v for img in fd for row in img for v in row) / (
                batch * len(pos) ** 2
            )
            fd = [[[v - centred_mean + global_mean for v in row] for row in img] for img in fd]
    total, count = 0.0, 0
    for b in range(batch):
        for s, (h, w) in enumerate(pos):
            for t, (i, j) in enumerate(pos):
                sv = cos(cs[b][h][w], ct[b][i][j])
                sv = max(sv, 0.0) if zero_clamp else sv
                total += -(fd[b][s][t] - shift) * sv
                count += 1
    return total / count


def ref_loss(feats, code, feats_knn, code_knn, coords1, coords2, perms, w, sc_mode, zero_clamp):
    batch = feats.shape[0]
    fs = [ref_points(feats[b], coords1[b]) for b in range(batch)]
    cs = [ref_points(code[b], coords1[b]) for b in range(batch)]
    fk = [ref_points(feats_knn[b], coords2[b]) for b in range(batch)]
    ck = [ref_points(code_knn[b], coords2[b]) for b in range(batch)]
    self_l = ref_term(fs, fs, cs, cs, w["self"].shift, sc_mode, zero_clamp)
    knn_l = ref_term(fs, fk, cs, ck, w["knn"].shift, sc_mode, zero_clamp)
    negs = []
    for perm in perms:  # target b is image perm[b], sampled at b's coords2
        fn = [ref_points(feats[int(perm[b])], coords2[b]) for b in range(batch)]
        cn = [ref_points(code[int(perm[b])], coords2[b]) for b in range(batch)]
        negs.append(ref_term(fs, fn, cs, cn, w["rand"].shift, sc_mode, zero_clamp))
    rand_l = sum(negs) / len(negs)  # equal-size parts: mean of means = mean of the concatenation
    return w["self"].weight * self_l + w["knn"].weight * knn_l + w["rand"].weight * rand_l


@pytest.mark.parametrize("sc_mode", ["reference", "thesis", "off"])
@pytest.mark.parametrize("zero_clamp", [True, False])
def test_loss_matches_loop_reference_float64(sc_mode, zero_clamp):
    g = torch.Generator().manual_seed(1)
    batch, c, k, n = 3, 5, 4, 3
    feats = torch.randn(batch, c, 5, 6, generator=g, dtype=torch.float64)
    feats_knn = torch.randn(batch, c, 5, 6, generator=g, dtype=torch.float64)
    code = torch.randn(batch, k, 5, 6, generator=g, dtype=torch.float64)
    code_knn = torch.randn(batch, k, 5, 6, generator=g, dtype=torch.float64)
    w = {
        "self": PairWeights(0.67, 0.08),
        "knn": PairWeights(0.25, 0.02),
        "rand": PairWeights(0.63, 0.46),
    }
    loss = CorrelationLoss(w["self"], w["knn"], w["rand"], sc_mode, zero_clamp, n, 2)
    coords1, coords2, perms = loss.draw(batch, g)
    # coords slightly beyond [-1, 1] exercise the border padding
    coords2 = coords2 * 1.1
    coords1, coords2 = coords1.double(), coords2.double()
    got = loss(feats, code, feats_knn, code_knn, coords1, coords2, perms)["loss"]
    want = ref_loss(
        feats, code, feats_knn, code_knn, coords1, coords2, perms, w, sc_mode, zero_clamp
    )
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_sample_grid_is_bilinear_with_aligned_corners():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(1, 2, 4, 7, generator=g, dtype=torch.float64)
    coords = torch.rand(1, 3, 3, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2
    got = sample_grid(m, coords)[0]
    want = torch.tensor(ref_points(m[0], coords[0]), dtype=torch.float64).permute(2, 0, 1)
    assert torch.allclose(got, want, atol=1e-12)
    corner = sample_grid(m, torch.tensor([[[[-1.0, -1.0]]]], dtype=torch.float64))
    assert torch.allclose(corner[0, :, 0, 0], m[0, :, 0, 0])


def test_zero_clamp_clamps_s_not_f():
    f = torch.tensor([[[[1.0]], [[0.0]]]], dtype=torch.float64)  # [1, 2, 1, 1]
    g = torch.tensor([[[[1.0]], [[0.2]]]], dtype=torch.float64)
    c1 = torch.tensor([[[[1.0]], [[0.0]]]], dtype=torch.float64, requires_grad=True)
    c2 = torch.tensor([[[[-1.0]], [[0.5]]]], dtype=torch.float64)  # S = -1/sqrt(1.25) < 0
    s = -1 / math.sqrt(1.25)
    fd = 1 / math.sqrt(1.04)
    loss, cd = correlation_term(f, g, c1, c2, 0.3, "off", zero_clamp=True)
    assert cd.item() == pytest.approx(s)
    assert loss.item() == 0.0  # max(S, 0) = 0: the pair is only pushed to orthogonality
    loss.sum().backward()
    assert torch.all(c1.grad == 0)  # no gradient through S where S < 0
    loss, _ = correlation_term(f, g, c1, c2, 0.3, "off", zero_clamp=False)
    assert loss.item() == pytest.approx(-(fd - 0.3) * s)
    # F is never clamped: a negative F - b gives a positive energy for positive S
    loss, _ = correlation_term(f, -g, c1, -c2, 0.3, "off", zero_clamp=True)
    assert loss.item() == pytest.approx(-(-fd - 0.3) * (-s))


def test_spatial_centring_switch():
    g = torch.Generator().manual_seed(3)
    fd = torch.rand(2, 3, 3, 4, 4, generator=g, dtype=torch.float64) * 0.8 + 0.1  # mean > 0
    thesis = spatial_centre(fd, "thesis")
    reference = spatial_centre(fd, "reference")
    # thesis Eq. 4.3: zero mean over the target positions (i, j) of every source (h, w)
    assert torch.allclose(thesis.mean(dim=(3, 4)), torch.zeros(2, 3, 3, dtype=torch.float64))
    # reference: the same centring plus the batch mean of F, which it therefore keeps
    assert torch.allclose(reference - thesis, torch.full_like(fd, fd.mean().item()))
    assert reference.mean().item() == pytest.approx(fd.mean().item())
    assert torch.equal(spatial_centre(fd, "off"), fd)
    with pytest.raises(ValueError, match="sc_mode"):
        spatial_centre(fd, "pointwise")


def test_self_pair_has_unit_diagonal_and_f_has_no_gradient():
    feats = torch.randn(2, 6, 5, 5, requires_grad=True)
    code = torch.randn(2, 4, 5, 5, requires_grad=True)
    coords = torch.rand(2, 3, 3, 2) * 2 - 1
    f, c = sample_grid(feats, coords), sample_grid(code, coords)
    loss, cd = correlation_term(f, f, c, c, 0.0, "off")
    diag = cd.reshape(2, 9, 9).diagonal(dim1=1, dim2=2)
    assert torch.allclose(diag, torch.ones_like(diag), atol=1e-6)
    loss.mean().backward()
    assert feats.grad is None and code.grad is not None


def test_derangements_are_permutations_without_fixed_points():
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 5, 16):
        for _ in range(20):
            p = derangement(n, g)
            assert sorted(p.tolist()) == list(range(n))
            assert not bool((p == torch.arange(n)).any())


def test_defaults_are_the_reference_sampling():
    loss = CorrelationLoss()
    coords1, coords2, perms = loss.draw(4)
    assert coords1.shape == coords2.shape == (4, 11, 11, 2)
    assert len(perms) == 5
    assert float(coords1.min()) >= -1 and float(coords1.max()) <= 1
    out = loss(*(torch.randn(4, c, 7, 7) for c in (8, 70, 8, 70)))
    assert set(out) >= {"loss", "loss_self", "loss_knn", "loss_rand", "cd_self", "cd_knn"}
    assert torch.isfinite(out["loss"])
