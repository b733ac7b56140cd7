"""STEGO's KNN mining, scoring, head, probes and CRF against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fw.lib.metrics import unsupervised_miou
from fw_stego.crf import dense_crf, have_pydensecrf
from fw_stego.head import ClusterProbe, LinearProbe, SegmentationHead
from fw_stego.knn import five_crop, global_descriptors, mine_knns, sample_partners
from fw_stego.scoring import Confusion, boundary_band, hungarian_assignment, scores


def test_knn_mining_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(50, 16, 4, 4, generator=g) + 0.3 * torch.randn(50, 16, 1, 1, generator=g)
    desc = global_descriptors(maps)
    knns = mine_knns(desc, k=30)
    x = maps.double().mean(dim=(2, 3)).numpy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    brute = np.argsort(-sims, axis=1, kind="stable")[:, :30]
    assert knns.shape == (50, 30)
    # equal up to ties: the similarities of the chosen neighbours are the brute-force ones
    got = np.take_along_axis(sims, knns.numpy(), axis=1)
    want = np.take_along_axis(sims, brute, axis=1)
    assert np.allclose(got, want, atol=1e-5)
    assert (knns[:, 0] == torch.arange(50)).all()  # rank 0 is the item itself


def test_partners_come_from_ranks_one_to_seven():
    knns = torch.arange(40 * 30).reshape(40, 30)
    rows = torch.arange(40).repeat(50)
    partners = sample_partners(knns, rows, num_neighbors=7)
    ranks = partners - knns[rows, 0]
    assert int(ranks.min()) == 1 and int(ranks.max()) == 7


def test_five_crop_sizes_and_corners():
    img = torch.arange(2 * 8 * 10).reshape(2, 8, 10)
    crops = five_crop(img)
    assert len(crops) == 5 and all(c.shape == (2, 4, 5) for c in crops)
    assert torch.equal(crops[0], img[:, :4, :5]) and torch.equal(crops[3], img[:, 4:, 5:])


def test_hungarian_scores_hand_computed():
    # 3 classes, 3 clusters; gt/pred over 10 pixels (one ignored)
    gt = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    pred = torch.tensor([2, 2, 1, 0, 0, 0, 1, 1, 2, 0])
    conf = Confusion(3)
    conf.update(gt, pred)
    # counts[class, cluster]: class0 -> {2:2, 1:1}, class1 -> {0:3}, class2 -> {1:2, 2:1}
    assert conf.counts.tolist() == [[0, 1, 2], [3, 0, 0], [0, 2, 1]]
    assignment = hungarian_assignment(conf.counts)
    assert assignment.tolist() == [1, 2, 0]  # cluster 0 -> class 1, 1 -> 2, 2 -> 0
    got = scores(conf.counts, assignment)
    # IoU: class0 tp 2, pred 3, gt 3 -> 2/4; class1 3/3; class2 tp 2, pred 3, gt 3 -> 2/4
    assert got["miou"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert got["accuracy"] == pytest.approx(7 / 9)
    ref = unsupervised_miou(gt, pred, n_classes=3)
    assert got["miou"] == pytest.approx(ref["miou"]) and got["accuracy"] == pytest.approx(
        ref["accuracy"]
    )


def test_confusion_over_batches_equals_fw_metrics_on_whole_set():
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(-1, 5, (6, 9, 9), generator=g)
    pred = (gt.clamp(min=0) + torch.randint(0, 2, gt.shape, generator=g)) % 7
    conf = Confusion(5, 7)
    for b in range(0, 6, 4):  # two batches of different size
        conf.update(gt[b : b + 4], pred[b : b + 4])
    got = scores(conf.counts, hungarian_assignment(conf.counts))
    ref = unsupervised_miou(gt, pred, n_classes=5, n_clusters=7)
    assert got["miou"] == pytest.approx(ref["miou"])
    assert got["accuracy"] == pytest.approx(ref["accuracy"])
    # identity matching (linear probe): plain per-class IoU
    lin = Confusion(5)
    p5 = pred % 5
    lin.update(gt, p5)
    keep = gt >= 0
    ious = []
    for c in range(5):
        inter = ((gt == c) & (p5 == c) & keep).sum().item()
        union = (((gt == c) | (p5 == c)) & keep).sum().item()
        ious.append(inter / union)
    assert scores(lin.counts)["miou"] == pytest.approx(float(np.mean(ious)))


def test_boundary_band_is_chessboard_distance_four():
    lab = torch.zeros(1, 20, 20, dtype=torch.long)
    lab[:, :, 10:] = 1
    band = boundary_band(lab, 9)[0]
    cols = band.any(dim=0).nonzero().flatten().tolist()
    assert cols == list(range(6, 14))  # within 4 px of the change between columns 9 and 10
    assert band[:, 6:14].all()


def test_head_is_linear_plus_mlp_with_independent_dropout():
    head = SegmentationHead(12, dim=70, dropout=0.1)
    x = torch.randn(2, 12, 5, 5)
    head.eval()
    out = head(x)
    assert out.shape == (2, 70, 5, 5)
    want = head.linear(x) + head.mlp[2](torch.relu(head.mlp[0](x)))
    assert torch.allclose(out, want, atol=1e-6)
    head.train()
    head.dropout.p = 0.5
    masks = []

    def record(_module, inp, _out):
        masks.append((inp[0] != 0).any(dim=(2, 3)))

    head.linear.register_forward_hook(record)
    head.mlp[0].register_forward_hook(record)
    torch.manual_seed(0)
    head(torch.ones(4, 12, 3, 3))
    assert not torch.equal(masks[0], masks[1])  # each branch draws its own channel mask


def test_cluster_probe_loss_is_minus_mean_max_cosine():
    probe = ClusterProbe(6, 4)
    code = torch.randn(2, 6, 3, 3)
    z = F.normalize(code, dim=1).permute(0, 2, 3, 1).reshape(-1, 6)
    c = F.normalize(probe.clusters.detach(), dim=1)
    want = -(z @ c.T).max(dim=1).values.mean()
    assert probe.loss(code).item() == pytest.approx(want.item(), abs=1e-6)
    lp = probe.log_probs(code, alpha=2.0)
    assert torch.allclose(lp.exp().sum(1), torch.ones(2, 3, 3), atol=1e-5)


def test_linear_probe_ignores_out_of_range_labels():
    probe = LinearProbe(6, 3)
    code = torch.randn(1, 6, 4, 4)
    label = torch.randint(0, 3, (1, 4, 4))
    label[0, 0, :] = -1
    label[0, 1, 0] = 255
    logits = probe(code)
    keep = (label >= 0) & (label < 3)
    want = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], label[keep])
    assert probe.loss(code, label).item() == pytest.approx(want.item(), abs=1e-6)


def _two_region_case():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(3, 40, 40)
    image[0, :, :20] = 0.9  # red left, blue right
    image[2, :, 20:] = 0.9
    truth = torch.zeros(40, 40, dtype=torch.long)
    truth[:, 20:] = 1
    clean = F.one_hot(truth, 2).permute(2, 0, 1).float() * 2 - 1
    logits = clean * 0.4 + torch.randn(2, 40, 40, generator=g)  # noisy unary
    return image, truth, logits


@pytest.mark.parametrize("method", ["pydensecrf", "exact_lowres"])
def test_dense_crf_cleans_noisy_unaries_along_colour_edges(method):
    if method == "pydensecrf" and not have_pydensecrf():
        pytest.skip("pydensecrf2 is not installed (pip install pydensecrf2)")
    image, truth, logits = _two_region_case()
    q = dense_crf(image, logits, method)
    assert q.shape == (2, 40, 40)
    assert torch.allclose(q.sum(0), torch.ones(40, 40), atol=1e-4)
    before = (logits.argmax(0) == truth).float().mean().item()
    after = (q.argmax(0) == truth).float().mean().item()
    assert before < 0.85 and after > 0.97
