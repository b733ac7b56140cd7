"""ViCE's parts against independent references: region pooling, the swapped-prediction loss,
mutual-region views, superpixels, LARS and greedy many-to-one matching."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fw.lib.metrics import majority_assignment
from fw_vice.loss import swapped_prediction_loss
from fw_vice.optim import LARS
from fw_vice.superpixels import grid_regions, superpixels
from fw_vice.views import ViewConfig, _mask, generate_views, keep_mutual, region_means
from tests.support.references import sinkhorn_reference


def test_region_means_match_a_plain_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 6, 7, generator=g, dtype=torch.float64)
    regions = torch.randint(-1, 9, (3, 6, 7), generator=g)
    got = region_means(z, regions, 10)  # id 9 never drawn: must come back as zeros
    for r in range(10):
        total, count = torch.zeros(5, dtype=torch.float64), 0
        for b in range(3):
            for y in range(6):
                for x in range(7):
                    if int(regions[b, y, x]) == r:
                        total += z[b, :, y, x]
                        count += 1
        want = total / count if count else total
        np.testing.assert_allclose(got[r].numpy(), want.numpy(), atol=1e-12)


@pytest.mark.parametrize("with_queue", [False, True])
def test_swapped_prediction_loss_matches_a_hand_written_reference(with_queue):
    g = torch.Generator().manual_seed(1)
    r, k, m = 7, 4, 3
    primary = torch.rand(r, k, generator=g, dtype=torch.float64) * 2 - 1
    others = torch.rand(m - 1, r, k, generator=g, dtype=torch.float64) * 2 - 1
    image_of = torch.tensor([0, 0, 0, 2, 2, 3, 3])  # image 1 has no region: not counted
    queue = torch.rand(5, k, generator=g, dtype=torch.float64) if with_queue else None
    got = swapped_prediction_loss(primary, others, image_of, 0.1, 0.05, 3, queue)
    target = primary.numpy() if queue is None else np.concatenate([primary.numpy(), queue.numpy()])
    q = sinkhorn_reference(target, 0.05, 3)[:r]
    images = sorted(set(image_of.tolist()))
    total = 0.0
    for n in images:
        mine = [i for i in range(r) if int(image_of[i]) == n]
        for v in range(m - 1):
            per = 0.0
            for i in mine:
                logits = [float(s) / 0.1 for s in others[v, i]]
                top = max(logits)
                log_z = top + math.log(sum(math.exp(a - top) for a in logits))
                per -= sum(q[i, c] * (logits[c] - log_z) for c in range(k))
            total += per / len(mine)
    want = total / (len(images) * (m - 1))
    assert abs(float(got) - want) < 1e-9


def test_loss_gradient_reaches_other_views_only():
    primary = torch.randn(4, 3, requires_grad=True)
    others = torch.randn(2, 4, 3, requires_grad=True)
    swapped_prediction_loss(primary, others, torch.tensor([0, 0, 1, 1])).backward()
    assert primary.grad is None and others.grad is not None and others.grad.abs().sum() > 0


def _texture(seed: int, size: int = 96) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    img = np.zeros((3, size, size), dtype=np.float32)
    img[:, :, size // 3 :] = 0.8
    img[:, size // 2 :, : size // 2] = 0.3
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    return torch.from_numpy(img.clip(0, 1))


@pytest.mark.parametrize("mode", ["slic", "grid"])
def test_views_keep_only_regions_common_to_every_view(mode):
    image = _texture(0)
    regions = superpixels(image.permute(1, 2, 0).numpy(), mode, 12)
    config = ViewConfig(views=5, size=32, beta=(0.5, 2.0), max_mask=0.25)
    for seed in range(10):
        v = generate_views(image, regions, config, np.random.default_rng(seed))
        assert v.images.shape == (5, 3, 32, 32) and v.regions.shape == (5, 32, 32)
        assert v.count >= 1  # every window holds the sampled centre
        for m in range(5):
            present = set(v.regions[m].unique().tolist()) - {-1}
            assert present == set(range(v.count)), (seed, m)
        # each kept id is one original region: the same in every view
        for m, (top, left, side, flipped) in enumerate(v.windows):
            src = regions[top : top + side, left : left + side]
            idx = ((np.arange(32) + 0.5) * side / 32).astype(int).clip(max=side - 1)
            src = src[np.ix_(idx, idx)]
            ids = v.regions[m].numpy()
            if flipped:
                ids = ids[:, ::-1]
            for r in range(v.count):
                assert len(np.unique(src[ids == r])) == 1
            assert len(np.unique(ids[src == src[ids == 0][0]])) == 1


def test_masking_covers_whole_regions_within_the_ratio():
    regions = grid_regions(40, 40, 8)
    crop = torch.zeros(3, 40, 40)
    for seed in range(5):
        out = _mask(crop, regions, 0.25, np.random.default_rng(seed))
        masked = (out != 0).any(0).numpy()
        assert masked.mean() <= 0.25
        for r in np.unique(regions):
            inside = masked[regions == r]
            assert inside.all() or not inside.any()  # whole regions only


def test_keep_mutual_after_subsampling():
    maps = torch.tensor(
        [[[[0, 0], [1, 2]], [[0, 1], [1, -1]]], [[[3, 3], [4, 4]], [[4, 3], [3, 4]]]]
    )
    owner = torch.tensor([0, 0, 0, 1, 1])
    out, new_owner = keep_mutual(maps, owner)
    assert new_owner.tolist() == [0, 0, 1, 1]  # region 2 was missing from image 0's view 2
    assert out[0, 0].tolist() == [[0, 0], [1, -1]] and out[1, 1].tolist() == [[3, 2], [2, 3]]


def test_superpixels_grid_and_slic_sizes():
    grid = grid_regions(50, 45, 20)
    assert grid.max() + 1 == 3 * 3 and grid[0, 0] == 0 and grid[49, 44] == 8
    from skimage.data import astronaut

    image = astronaut()[100:220, 150:270] / 255.0
    slic = superpixels(image, "slic", 20)
    n = slic.max() + 1
    assert set(np.unique(slic)) == set(range(n))
    assert 120 * 120 / 20**2 / 2 <= n <= 2 * 120 * 120 / 20**2  # about 36 regions


def test_lars_step_matches_the_update_rule():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    opt = LARS([w, b], lr=0.5, momentum=0.9, weight_decay=0.1, trust_coefficient=0.01)
    w.grad, b.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    opt.step()
    ratio = 0.01 * 5.0 / (1.0 + 0.1 * 5.0)
    want = torch.tensor([[3.0, 4.0]]) - 0.5 * ratio * (
        torch.tensor([[0.0, 1.0]]) + 0.1 * w.data.new_tensor([[3.0, 4.0]])
    )
    assert torch.allclose(w.data, want) and torch.allclose(b.data, torch.tensor([0.0]))


def _accuracy(counts: np.ndarray, mapping) -> float:
    return sum(counts[c, k] for k, c in enumerate(mapping) if c >= 0)


def test_greedy_many_to_one_matching_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(30):
        classes, clusters = int(rng.integers(1, 4)), int(rng.integers(1, 6))
        counts = rng.integers(0, 6, size=(classes, clusters))
        got = majority_assignment(counts)
        best = max(
            _accuracy(counts, mapping)
            for mapping in itertools.product(range(classes), repeat=clusters)
        )
        assert _accuracy(counts, got) == best
        for k in range(clusters):
            assert (got[k] == -1) == (counts[:, k].sum() == 0)
