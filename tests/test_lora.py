"""LoRA adapters on a frozen backbone: the update equals its formula and only adapters train."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fw.errors import RecipeError
from fw_backbones import vit
from fw_backbones.lora import add_lora


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(6, 18)
        self.proj = nn.Linear(18, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.qkv(x))


def test_update_equals_scaled_low_rank_product_and_starts_at_zero():
    torch.manual_seed(0)
    net = nn.Sequential(_Block(), _Block())
    x = torch.randn(5, 6)
    before = net(x)
    adapters = add_lora(net, "qkv", rank=2, alpha=8.0, dropout=0.0)
    assert sorted(adapters) == ["0__qkv", "1__qkv"]
    assert torch.equal(net(x), before)  # B = 0: the adapted net starts as the pretrained one
    for lora in adapters.values():
        nn.init.normal_(lora.B)
    ref = x
    for i, block in enumerate(net):
        a, b = adapters[f"{i}__qkv"].A, adapters[f"{i}__qkv"].B
        h = ref @ block.qkv.weight.t() + block.qkv.bias + (8.0 / 2) * (ref @ a.t()) @ b.t()
        ref = h @ block.proj.weight.t() + block.proj.bias
    torch.testing.assert_close(net(x), ref)
    assert list(net.state_dict()) == [
        "0.qkv.weight",
        "0.qkv.bias",
        "0.proj.weight",
        "0.proj.bias",
        "1.qkv.weight",
        "1.qkv.bias",
        "1.proj.weight",
        "1.proj.bias",
    ]


def test_bad_target_and_rank_say_what_exists():
    with pytest.raises(RecipeError, match=r"names no nn.Linear.*\['proj', 'qkv'\]"):
        add_lora(_Block(), "query", rank=8, alpha=32.0, dropout=0.1)
    with pytest.raises(RecipeError, match="rank must be at least 1"):
        add_lora(_Block(), "qkv", rank=-1, alpha=32.0, dropout=0.1)


@pytest.fixture(scope="module")
def dino_pair():
    """A random DINO ViT-S/16 with rank-8 adapters on qkv, and the same weights without."""
    torch.manual_seed(0)
    plain = vit.dino_vits16(weights=None, output="dense", image_size=32)
    torch.manual_seed(0)
    adapted = vit.dino_vits16(weights=None, output="dense", image_size=32, lora_rank=8)
    return plain, adapted


def test_dino_lora_trains_only_the_adapters(dino_pair):
    plain, adapted = dino_pair
    trainable = {n: p.numel() for n, p in adapted.named_parameters() if p.requires_grad}
    assert set(trainable) == {f"lora.blocks__{i}__attn__qkv.{w}" for i in range(12) for w in "AB"}
    assert sum(trainable.values()) == 12 * (8 * 384 + 3 * 384 * 8)
    assert list(adapted.net.state_dict()) == list(plain.net.state_dict())  # official keys
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(adapted(x), plain(x))
    adapted.train()
    assert not adapted.net.training and all(m.training for m in adapted.lora.values())
    adapted(x).square().mean().backward()
    grads = [p.grad for p in adapted.parameters() if p.grad is not None]
    assert len(grads) == 24 and any(float(g.abs().sum()) > 0 for g in grads)
    adapted.eval()


def test_fingerprint_follows_the_adapters(dino_pair):
    _, adapted = dino_pair
    before = adapted.fingerprint()["weights"]
    with torch.no_grad():
        adapted.lora["blocks__0__attn__qkv"].B[0, 0] += 1.0
    assert adapted.fingerprint()["weights"] != before


def test_a_deep_copy_uses_its_own_adapters():
    torch.manual_seed(0)
    net = nn.Sequential(_Block())
    x = torch.randn(3, 6)
    before = net(x)
    adapters = add_lora(net, "qkv", rank=2, alpha=2.0, dropout=0.0)
    twin = copy.deepcopy(nn.ModuleDict({"net": net, "lora": adapters}))
    with torch.no_grad():
        twin["lora"]["0__qkv"].B.fill_(1.0)
    assert torch.equal(net(x), before)  # the original's B is still zero
    assert not torch.allclose(twin["net"](x), before)  # the copy runs its own, changed adapter
