"""The dense contracts: batched neighbourhoods, padded aggregation, games, a toy dense learner."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

from fw import api, hookimpl
from fw.dense import Dense, lengths_to_mask
from fw.lib.icon import debias, icon_loss, propagate
from fw.lib.volumes import VolumeAggregator
from fw.recipe import recipe_from_dict
from fw.registry import get_registry
from fw.train import train


def _random_nb(*shape: int, learned: bool = False) -> api.Neighborhood:
    logits = torch.randn(*shape, dtype=torch.float64, requires_grad=learned)
    mask = torch.rand(*shape) > 0.2
    mask[..., 0] = True
    return api.Neighborhood.from_logits(logits, mask)


def test_batched_icon_loss_equals_a_loop_over_batches():
    p, q = _random_nb(3, 4, 6, 6), _random_nb(3, 4, 6, 6, learned=True)
    batched = icon_loss(p, q, exaggeration=2.0)
    rows = []
    for a, b in itertools.product(range(3), range(4)):
        pa = api.Neighborhood(p.log_prob[a, b], p.mask[a, b])
        qa = api.Neighborhood(q.log_prob[a, b], q.mask[a, b], q.log_norm[a, b])
        rows.append(icon_loss(pa, qa, exaggeration=2.0, reduction="none"))
    assert torch.allclose(batched, torch.cat(rows).mean())
    batched.backward()
    deb = debias(q, 0.3)
    for a in range(3):
        single = debias(api.Neighborhood(q.log_prob[a, 0], q.mask[a, 0]), 0.3)
        assert torch.allclose(deb.log_prob[a, 0], single.log_prob, equal_nan=True)
    graph = _random_nb(2, 5, 5)
    walked = propagate(graph, steps=2)
    for a in range(2):
        single = propagate(api.Neighborhood(graph.log_prob[a], graph.mask[a]), steps=2)
        assert torch.allclose(walked.log_prob[a], single.log_prob)


def test_neighborhood_to_keeps_log_norm_and_mask_broadcasts():
    nb = _random_nb(2, 3, 3)
    moved = nb.to("cpu")
    assert moved.log_norm is not None and torch.equal(moved.log_norm, nb.log_norm)
    shared = api.Neighborhood(nb.log_prob, nb.mask[0])  # one candidate set for both batches
    assert shared.mask.shape == (2, 3, 3)


class _MaxMean(VolumeAggregator):
    """Max over heads and b's positions, mean over a's valid positions (for the tests)."""

    def __init__(self, heads: int = 2, max_elements: int = 1 << 25) -> None:
        super().__init__()
        self.heads, self.max_elements = heads, max_elements

    def pool(self, volume, mask_a, mask_b):
        v = volume.max(dim=1).values.masked_fill(~mask_b[:, None, :], float("-inf"))
        best = v.max(dim=-1).values
        return (best * mask_a).sum(-1) / mask_a.sum(-1)


def _loop_max_mean(a: Dense, b: Tensor, heads: int) -> Tensor:
    out = torch.zeros(a.batch, b.shape[0])
    c = a.channels // heads
    for i in range(a.batch):
        valid = [t for t in range(a.features.shape[2]) if a.mask[i, t]]
        for j in range(b.shape[0]):
            total = 0.0
            for t in valid:
                total += max(
                    float(a.features[i, k * c : (k + 1) * c, t] @ b[j, k * c : (k + 1) * c, h, w])
                    for k in range(heads)
                    for h in range(b.shape[2])
                    for w in range(b.shape[3])
                )
            out[i, j] = total / len(valid)
    return out


Tensor = torch.Tensor


@pytest.mark.parametrize("max_elements", [1 << 25, 40])  # 40: one row of pairs per block
def test_aggregator_chunks_pairs_and_respects_padding(max_elements):
    a = Dense(torch.randn(4, 6, 7), lengths_to_mask(torch.tensor([7, 5, 2, 1]), 7))
    b = torch.randn(3, 6, 2, 3)
    agg = _MaxMean(heads=2, max_elements=max_elements)
    assert torch.allclose(agg(a, b), _loop_max_mean(a, b, 2), atol=1e-5)
    vol = agg.pair_volumes(a, b, torch.tensor([[1, 2]]))
    ref = torch.einsum("kcn,kchw->knhw", a.features[1].reshape(2, 3, 7), b[2].reshape(2, 3, 2, 3))
    assert vol.shape == (1, 2, 7, 2, 3) and torch.allclose(vol[0], ref, atol=1e-6)


class _ToyDense(api.Learner):
    """Dense toy: a conv net's maps, a q over sampled positions per image, a 2-head aggregator."""

    example: ClassVar[dict[str, Any]] = {}

    def __init__(self, positions: int = 9) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.audio = torch.nn.Conv1d(1, 8, 3, padding=1)
        self.agg = _MaxMean(heads=2)
        self.positions = positions
        self.batch_size = 4

    def configure_optimizers(self):
        main = torch.optim.Adam(self.net.parameters(), lr=1e-2)
        side = torch.optim.SGD(self.audio.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(main, lambda s: 1.0 / (1 + s))
        return api.Optimization([main, side], [sched])

    def training_step(self, batch, step):
        maps = self.net(batch["x"])  # [B, 8, H, W]
        b = maps.shape[0]
        idx = torch.randint(0, maps.shape[2] * maps.shape[3], (self.positions,))
        z = maps.flatten(2)[:, :, idx].transpose(1, 2)  # [B, n, 8]
        eye = torch.eye(self.positions, dtype=torch.bool)
        q = api.Neighborhood.from_logits(-(torch.cdist(z, z) ** 2), ~eye)  # [B, n, n]
        with torch.no_grad():
            raw = batch["x"].flatten(2)[:, :, idx].transpose(1, 2)
            p = api.Neighborhood.from_logits(-(torch.cdist(raw, raw) ** 2), ~eye)
        audio = Dense(self.audio(batch["audio"]), batch["audio_mask"])
        scores = self.agg(audio, Dense(maps))  # [B, B]
        clip = F.cross_entropy(scores, torch.arange(b))
        return {"loss": icon_loss(p, q) + clip, "clip": clip}

    def evaluate(self, data, run_dir=None):
        return {"done": 1.0}

    def infer(self, batch):
        return self.net(batch["x"])


class _PaddedAudio(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        length = 4 + i % 5
        audio = torch.zeros(1, 8)
        audio[0, :length] = torch.randn(length)
        return {"x": torch.rand(3, 6, 6), "audio": audio, "audio_mask": torch.arange(8) < length}


class _DensePlugin:
    @hookimpl
    def fw_learners(self):
        return {"toy_dense": _ToyDense}

    @hookimpl
    def fw_datasets(self):
        return {"toy_padded_audio": _PaddedAudio}


def test_toy_dense_learner_trains_through_the_real_loop(tmp_path):
    registry = get_registry(modules=[_DensePlugin()])
    recipe = recipe_from_dict(
        {
            "data": {"name": "toy_padded_audio"},
            "learner": {"name": "toy_dense"},
            "trainer": {"max_steps": 5, "log_every": 1, "progress": False, "num_workers": 1},
        },
        registry,
    )
    final = train(recipe, tmp_path / "dense", registry=registry)
    assert final["done"] == 1.0 and torch.isfinite(torch.tensor(final["final_loss"]))
    state = torch.load(tmp_path / "dense/checkpoints/last.ckpt", weights_only=False)
    assert state["schedulers"][0]["last_epoch"] == 5  # the loop stepped the learner's scheduler
    assert "optimizer1" in state  # both optimizers are checkpointed
