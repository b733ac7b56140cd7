"""Under torch.distributed, Sinkhorn–Knopp and DINO's centre see the global batch: two
processes with half a batch each give the one-process codes and centre."""

from __future__ import annotations

import pytest

from tests.support.scripts import run_script

SCRIPT = """
import torch
from lightning_fabric import Fabric
from fw.lib.prototypes import sinkhorn_knopp
from fw_selfsup.losses import dino_center

torch.manual_seed(0)
scores = torch.tanh(torch.randn(8, 5))
teacher = [torch.randn(8, 5), torch.randn(8, 5)]
center = torch.randn(5)
ref_codes = sinkhorn_knopp(scores, 0.05, 3)  # one process, all 8 samples
ref_center = dino_center(center, teacher, 0.9)

fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp")
fabric.launch()
rank = fabric.global_rank
codes = sinkhorn_knopp(scores[4 * rank : 4 * rank + 4], 0.05, 3)
new_center = dino_center(center, [t[4 * rank : 4 * rank + 4] for t in teacher], 0.9)
torch.testing.assert_close(codes, ref_codes[4 * rank : 4 * rank + 4], rtol=1e-5, atol=1e-6)
torch.testing.assert_close(new_center, ref_center, rtol=1e-5, atol=1e-6)
print(f"rank {rank}: global codes and centre")
"""


@pytest.mark.slow  # two processes start in tens of seconds on a loaded machine
def test_two_processes_share_sinkhorn_and_the_centre(tmp_path):
    out = run_script(tmp_path, SCRIPT)
    assert "rank 0: global codes and centre" in out and "rank 1: global codes and centre" in out
