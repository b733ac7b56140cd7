"""DINO and SwAV as I-Con cells: the I-Con loss of (stop-gradient p over prototypes, student
softmax q) equals each method's own loss on the same tensors, and `fw table` lists them."""

from __future__ import annotations

import pytest
import torch

from fw import api
from fw.lib.icon import icon_loss
from fw.registry import get_registry
from fw_selfsup import losses
from fw_selfsup.distributions import FAMILY, SinkhornAssignment, TeacherAssignment
from fw_table.table import build_table, find_cell, render_text, status

REGISTRY = get_registry()


def _student_q(k: int, temperature: float) -> api.NeighborhoodDistribution:
    """The registered ``prototype_softmax`` with K identity prototypes (features = scores)."""
    return REGISTRY.get("distribution", "prototype_softmax").factory(
        num_classes=k, temperature=temperature
    )


def test_dino_loss_is_the_icon_cross_entropy_of_teacher_p_and_student_q():
    g = torch.Generator().manual_seed(0)
    b, k = 8, 12
    t = [torch.randn(b, k, generator=g) for _ in range(2)]
    s = [torch.randn(b, k, generator=g, requires_grad=True) for _ in range(2)]
    center = torch.randn(k, generator=g) * 0.2
    p = TeacherAssignment(temperature=0.04)
    p.center = center
    q = _student_q(k, 0.1)
    # each teacher crop supervises the other student crop
    icon = [
        icon_loss(p({api.FEATURES: t[i]}), q({api.FEATURES: s[1 - i]}), mode="ce") for i in (0, 1)
    ]
    own = losses.dino_loss(s, t, center, student_temperature=0.1, teacher_temperature=0.04)
    assert torch.allclose((icon[0] + icon[1]) / 2, own, atol=1e-6)
    # the I-Con KL differs from it by H(p), which does not depend on the student
    kl = icon_loss(p({api.FEATURES: t[0]}), q({api.FEATURES: s[1]}), mode="kl")
    h_p = icon_loss(p({api.FEATURES: t[0]}), p({api.FEATURES: t[0]}), mode="ce")
    assert torch.allclose(kl + h_p, icon[0], atol=1e-5)
    g_icon = torch.autograd.grad(icon[0], s[1])[0]
    g_kl = torch.autograd.grad(kl, s[1])[0]
    assert torch.allclose(g_icon, g_kl, atol=1e-6)


def test_swav_loss_is_the_icon_cross_entropy_of_sinkhorn_p_and_student_q():
    g = torch.Generator().manual_seed(1)
    b, k = 10, 5
    scores = [torch.tanh(torch.randn(b, k, generator=g)) for _ in range(2)]
    p = SinkhornAssignment(epsilon=0.05, iterations=3)
    q = _student_q(k, 0.1)
    icon = [
        icon_loss(p({api.FEATURES: scores[i]}), q({api.FEATURES: scores[1 - i]}), mode="ce")
        for i in (0, 1)
    ]
    own = losses.swav_loss(scores, (0, 1), temperature=0.1, epsilon=0.05, iterations=3)
    assert torch.allclose((icon[0] + icon[1]) / 2, own, atol=1e-6)


def test_fw_table_shows_dino_and_swav_in_the_prototype_column():
    table = build_table(REGISTRY)
    assert FAMILY in table.columns
    for name, recipe in (("DINO", "dino_fashion_mnist.yaml"), ("SwAV", "swav_fashion_mnist.yaml")):
        cell = find_cell(table, name)
        assert (cell.p_family, cell.q_family, cell.recipe) == (FAMILY, "Gaussian", recipe)
        assert status(cell, REGISTRY).runnable
    text = render_text(table)
    assert "DINO" in text and "SwAV" in text and "Caron et al. 2021" in text


@pytest.mark.parametrize("name", ["teacher_assignment", "sinkhorn_assignment"])
def test_assignments_are_normalised_over_the_prototypes(name):
    p = REGISTRY.get("distribution", name).factory()
    nb = p({api.FEATURES: torch.randn(6, 4)})
    assert torch.allclose(nb.prob.sum(dim=1), torch.ones(6), atol=1e-6)
