"""Under torch.distributed, Sinkhorn–Knopp, DINO's centre and VICReg's variance and covariance
see the global batch: two processes with half a batch each give the one-process values (and,
for VICReg, once DDP averages them, the one-process gradient)."""

from __future__ import annotations

import pytest

from tests.support.scripts import run_script

SCRIPT = """
import torch
from lightning_fabric import Fabric
from fw.lib.prototypes import sinkhorn_knopp
from fw_selfsup.losses import dino_center, vicreg_loss, vicreg_terms

torch.manual_seed(0)
scores = torch.tanh(torch.randn(8, 5))
teacher = [torch.randn(8, 5), torch.randn(8, 5)]
center = torch.randn(5)
ref_codes = sinkhorn_knopp(scores, 0.05, 3)  # one process, all 8 samples
ref_center = dino_center(center, teacher, 0.9)
z1, z2 = torch.randn(8, 3, requires_grad=True), torch.randn(8, 3, requires_grad=True)
ref_vc = {k: v.detach() for k, v in vicreg_terms(z1, z2).items()}
vicreg_loss(z1, z2).backward()
ref_grad = z1.grad.clone()

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
rank = fabric.global_rank
codes = sinkhorn_knopp(scores[4 * rank : 4 * rank + 4], 0.05, 3)
new_center = dino_center(center, [t[4 * rank : 4 * rank + 4] for t in teacher], 0.9)
torch.testing.assert_close(codes, ref_codes[4 * rank : 4 * rank + 4], rtol=1e-5, atol=1e-6)
torch.testing.assert_close(new_center, ref_center, rtol=1e-5, atol=1e-6)
a = z1.detach()[4 * rank : 4 * rank + 4].requires_grad_()
b = z2.detach()[4 * rank : 4 * rank + 4]
vc = vicreg_terms(a, b)
for key in ("variance", "covariance"):
    torch.testing.assert_close(vc[key], ref_vc[key], rtol=1e-5, atol=1e-6)
vicreg_loss(a, b).backward()
# DDP averages the two processes' gradients: the local slice's, halved, is the full batch's
torch.testing.assert_close(a.grad / 2, ref_grad[4 * rank : 4 * rank + 4], rtol=1e-5, atol=1e-6)
print(f"rank {rank}: global codes, centre and VICReg statistics")
"""


@pytest.mark.slow  # two processes start in tens of seconds on a loaded machine
def test_two_processes_share_sinkhorn_the_centre_and_vicreg_statistics(tmp_path):
    out = run_script(tmp_path, SCRIPT)
    assert (
        "rank 0: global codes, centre and VICReg statistics" in out
        and "rank 1: global codes, centre and VICReg statistics" in out
    )
