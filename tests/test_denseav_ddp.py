"""DenseAV under DDP: negatives gathered across two processes give the one-process gradient."""

from __future__ import annotations

from tests.support.scripts import run_script

SCRIPT = """
import torch
from lightning_fabric import Fabric
from tests.test_denseav_learner import _batch, _learner


def build():
    torch.manual_seed(0)
    return _learner(cache_image_features=False, lambda_nonneg=0.0, splice_p=0.0)


def step(learner, batch):
    learner.zero_grad()
    out = learner.training_step(batch, 0)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
    return out["loss"].detach(), grads


torch.manual_seed(1)
batch = _batch(4)
batch["audio_mask"][:] = True  # equal valid lengths: per-process means average to the whole
ref_loss, ref_grads = step(build(), batch)  # one process, all 4 pairs

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
rank = fabric.global_rank
half = {k: v[2 * rank : 2 * rank + 2] for k, v in batch.items()}
for mode in ("fabric", "torch.distributed"):
    learner = build()
    learner.fabric = fabric if mode == "fabric" else None
    loss, grads = step(learner, half)
    loss = fabric.all_reduce(loss, reduce_op="mean")  # what DDP's gradient averaging optimises
    grads = {n: fabric.all_reduce(g, reduce_op="mean") for n, g in grads.items()}
    if rank == 0:
        assert set(grads) == set(ref_grads), (mode, set(grads) ^ set(ref_grads))
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        print("gathered", mode, "equals one process")
"""


def test_two_processes_average_to_the_one_process_gradient(tmp_path):
    out = run_script(tmp_path, SCRIPT)
    assert "gathered fabric equals one process" in out
    assert "gathered torch.distributed equals one process" in out
