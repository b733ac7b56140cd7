"""DenseAV aggregators and objective against hand-written references (thesis Eqs. 6.1-6.3)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fw.dense import Dense, lengths_to_mask
from fw.lib.distributed import gather_across
from fw_denseav.aggregators import MaxMax, MaxMean, MeanMean
from fw_denseav.losses import (
    Calibrator,
    disentanglement_loss,
    nonneg_loss,
    splice_loss,
    symmetric_infonce,
    tv_loss,
)


def _batch(ba: int = 3, bb: int = 4, c: int = 6, t: int = 7, hw: tuple[int, int] = (3, 2)):
    audio = torch.randn(ba, c, t, dtype=torch.float64)
    lengths = torch.tensor([t, 4, 1][:ba])
    image = torch.randn(bb, c, *hw, dtype=torch.float64)
    return Dense(audio, lengths_to_mask(lengths, t)), Dense(image), lengths


def _loop_scores(audio, lengths, image, heads, image_pool, time_pool):
    """Reference: explicit loops over pairs, heads, audio steps and pixels (Eq. 6.1, 6.2)."""
    ba, c, _ = audio.shape
    bb, _, h, w = image.shape
    per = c // heads
    out = torch.zeros(ba, bb, dtype=audio.dtype)
    for i in range(ba):
        for j in range(bb):
            per_time = []
            for t in range(int(lengths[i])):  # padded steps are never visited
                vals = []
                for y in range(h):
                    for x in range(w):
                        head_vals = [
                            sum(
                                float(audio[i, k * per + cc, t] * image[j, k * per + cc, y, x])
                                for cc in range(per)
                            )
                            for k in range(heads)
                        ]
                        vals.append(max(head_vals))
                per_time.append(max(vals) if image_pool == "max" else sum(vals) / len(vals))
            if time_pool == "mean":
                out[i, j] = sum(per_time) / len(per_time)
            else:
                out[i, j] = max(per_time)
    return out


@pytest.mark.parametrize("heads", [1, 2, 3])
@pytest.mark.parametrize(
    ("cls", "image_pool", "time_pool"),
    [(MaxMean, "max", "mean"), (MeanMean, "mean", "mean"), (MaxMax, "max", "max")],
)
def test_aggregators_match_loop_reference(cls, image_pool, time_pool, heads):
    audio, image, lengths = _batch()
    agg = cls(heads=heads)
    got = agg(audio, image)
    want = _loop_scores(audio.features, lengths, image.features, heads, image_pool, time_pool)
    torch.testing.assert_close(got, want)


def test_aggregator_ignores_padding_values_and_chunks():
    audio, image, _ = _batch()
    agg = MaxMean(heads=2)
    base = agg(audio, image)
    poisoned = audio.features.clone()
    poisoned[~audio.mask.unsqueeze(1).expand_as(poisoned)] = 1e6  # padded steps: huge values
    torch.testing.assert_close(agg(Dense(poisoned, audio.mask), image), base)
    tiny = MaxMean(heads=2, max_elements=1)  # one audio row per block
    torch.testing.assert_close(tiny(audio, image), base)


def test_image_mask_is_respected():
    audio, image, _ = _batch(bb=2)
    mask = torch.ones(2, 3, 2, dtype=torch.bool)
    mask[:, 0] = False
    feats = image.features.clone()
    feats[:, :, 0] = 1e6
    got = MaxMean(heads=1)(audio, Dense(feats, mask))
    want = MaxMean(heads=1)(audio, Dense(image.features[:, :, 1:].contiguous()))
    torch.testing.assert_close(got, want)


def test_pair_volumes_give_heatmaps():
    audio, image, _ = _batch()
    vol = MaxMean(heads=2).pair_volumes(audio, image, torch.tensor([[1, 2]]))
    assert vol.shape == (1, 2, 7, 3, 2)
    ref = torch.einsum(
        "kct,kchw->kthw", audio.features[1].reshape(2, 3, 7), image.features[2].reshape(2, 3, 3, 2)
    )
    torch.testing.assert_close(vol[0], ref)


def test_symmetric_infonce_equals_cross_entropy_both_ways():
    logits = torch.randn(5, 5, dtype=torch.float64)
    target = torch.arange(5)
    want = 0.5 * F.cross_entropy(logits, target) + 0.5 * F.cross_entropy(logits.T, target)
    torch.testing.assert_close(symmetric_infonce(logits), want)


def test_calibrator_clamps_and_centres():
    cal = Calibrator(init=1.0)
    assert float(cal.gamma.detach()) == pytest.approx(1.0)
    scores = torch.randn(4, 4)
    out = cal(scores)
    torch.testing.assert_close(out.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    # softmax is invariant to the centring: InfoNCE sees only gamma * S
    torch.testing.assert_close(symmetric_infonce(out), symmetric_infonce(scores))
    with torch.no_grad():
        cal.log_gamma.fill_(math.log(1e4))
    assert float(cal.gamma.detach()) == pytest.approx(100.0)
    with torch.no_grad():
        cal.log_gamma.fill_(math.log(1e-5))
    assert float(cal.gamma.detach()) == pytest.approx(0.01)
    assert float(cal.penalty().detach()) == pytest.approx(math.log(100.0) ** 2)
    with torch.no_grad():
        cal.log_gamma.fill_(math.log(3.0))
    assert float(cal.penalty().detach()) == 0.0


def test_disentanglement_is_mean_abs_product_over_head_pairs():
    vol = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ma = torch.ones(2, 4, dtype=torch.bool)
    mb = torch.ones(2, 5, dtype=torch.bool)
    pairs = [(0, 1), (0, 2), (1, 2)]
    want = sum((vol[:, i] * vol[:, j]).abs().mean() for i, j in pairs) / 3
    torch.testing.assert_close(disentanglement_loss(vol, ma, mb), want)
    assert float(disentanglement_loss(vol[:, :1], ma, mb)) == 0.0


def test_splice_and_tv_reference_loops():
    vol = torch.randn(2, 2, 5, 3, dtype=torch.float64)
    weight = torch.tensor([[0, 0.5, 1, 1, 0], [0, 0, 0, 0.25, 1]], dtype=torch.float64)
    num = den = 0.0
    for b in range(2):
        for k in range(2):
            for t in range(5):
                for n in range(3):
                    num += float(vol[b, k, t, n] ** 2 * weight[b, t])
                    den += float(weight[b, t])
    assert float(splice_loss(vol, weight)) == pytest.approx(num / den)
    mask = lengths_to_mask(torch.tensor([5, 3]), 5)
    num = cnt = 0.0
    for b in range(2):
        for k in range(2):
            for t in range(4):
                if mask[b, t] and mask[b, t + 1]:
                    for n in range(3):
                        num += float((vol[b, k, t + 1, n] - vol[b, k, t, n]) ** 2)
                        cnt += 1
    assert float(tv_loss(vol, mask)) == pytest.approx(num / cnt)


def test_nonneg_penalises_only_negative_products():
    audio = torch.rand(2, 4, 6)
    image = torch.rand(2, 4, 9)
    ma = torch.ones(2, 6, dtype=torch.bool)
    mb = torch.ones(2, 9, dtype=torch.bool)
    assert float(nonneg_loss(audio, ma, image, mb, heads=2)) == 0.0
    loss = nonneg_loss(-audio, ma, image, mb, heads=2, samples=50)
    assert float(loss) > 0
    # padded tokens are never sampled
    ma[:, 3:] = False
    poisoned = audio.clone()
    poisoned[:, :, 3:] = -100.0
    assert float(nonneg_loss(poisoned, ma, image, mb, heads=1, samples=200)) == 0.0


class _FakeFabric:
    world_size = 3
    global_rank = 1

    def all_gather(self, x):
        return torch.stack([x + 10, x, x - 10])


def test_gather_across_keeps_local_gradient():
    x = torch.randn(2, 3, requires_grad=True)
    assert gather_across(x) is x  # one process: unchanged
    out = gather_across(x, _FakeFabric())
    assert out.shape == (6, 3)
    torch.testing.assert_close(out[:2], x.detach() + 10)
    out.sum().backward()
    # every process computes the same loss and DDP averages: the local slice counts W = 3 times
    torch.testing.assert_close(x.grad, torch.full((2, 3), 3.0))
