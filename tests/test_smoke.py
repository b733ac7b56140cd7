"""The smoke check's contract checks: base classes, upsampler input gradients, context keys,
leading batch axes, and `fw.smoke.check` by name; plus the joint layout of a Neighborhood and
the error for p and q over different pairs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fw
from fw import api, hookimpl
from fw.errors import FwError, ShapeError
from fw.lib.icon import icon_loss
from fw.registry import get_registry
from fw.smoke import SmokeError, check


# ----------------------------------------------------------------------------- toy components
class _Scaled(api.Upsampler):
    """Bilinear upsampling times a learned scalar: gradient reaches weight and features."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, features, guidance, size=None):
        size = self.target_size(guidance, size)
        return F.interpolate(features, size, mode="bilinear") * self.weight


class _DetachedInput(_Scaled):
    """Its parameter trains, but the features are cut from the graph."""

    def forward(self, features, guidance, size=None):
        return super().forward(features.detach(), guidance, size)


class _NotAnUpsampler(torch.nn.Module):
    """Has the upsampler's forward, but not its base class (no ``per_image``)."""

    def forward(self, features, guidance, size=None):
        return F.interpolate(features, size or guidance.shape[-2:], mode="bilinear")


class _Kernel(api.NeighborhoodDistribution):
    """Gaussian kernel over j != i on the last two axes: correct for leading batch axes."""

    batched = True

    def log_prob(self, ctx):
        x = ctx[api.FEATURES]
        n = x.shape[-2]
        return api.Neighborhood.from_logits(-(torch.cdist(x, x) ** 2), ~torch.eye(n, dtype=bool))


class _MixesBatches(_Kernel):
    """Claims leading axes but scales the features by their maximum over every batch."""

    def log_prob(self, ctx):
        x = ctx[api.FEATURES]
        return super().log_prob({api.FEATURES: x / x.abs().amax()})


class _DropsBatches(_Kernel):
    """Claims leading axes but flattens them into the points."""

    def log_prob(self, ctx):
        x = ctx[api.FEATURES]
        return super().log_prob({api.FEATURES: x.reshape(-1, x.shape[-1])})


class _ReadsLabels(_Kernel):
    """Reads ``labels`` unconditionally without listing it in ``requires``."""

    batched = False

    def log_prob(self, ctx):
        x = ctx[api.FEATURES] + 0.0 * ctx[api.LABELS][:, None]
        return super().log_prob({api.FEATURES: x})


class _ChecksLabels(_Kernel):
    """Reads ``labels`` only after testing for it, ``modality`` through ``get``, and copies."""

    batched = False

    def log_prob(self, ctx):
        copy = {**ctx, "extra": 1}
        x = copy[api.FEATURES]
        if api.LABELS in ctx and ctx.get("modality") is not None:
            x = x + 0.0 * ctx[api.LABELS][:, None]
        return super().log_prob({api.FEATURES: x})


class _NotADistribution:
    """``log_prob`` without the base class."""

    def __call__(self, ctx):
        return _Kernel()(ctx)


class _Toys:
    @hookimpl
    def fw_upsamplers(self):
        return {"toy_scaled": _Scaled, "toy_detached": _DetachedInput, "toy_plain": _NotAnUpsampler}

    @hookimpl
    def fw_distributions(self):
        return {
            "toy_kernel": _Kernel,
            "toy_mixes_batches": _MixesBatches,
            "toy_drops_batches": _DropsBatches,
            "toy_reads_labels": _ReadsLabels,
            "toy_checks_labels": _ChecksLabels,
            "toy_plain_distribution": _NotADistribution,
        }


@pytest.fixture(scope="module")
def toys():
    return get_registry(modules=[_Toys()])


# ----------------------------------------------------------------------------- check's API
def test_check_by_name_or_entry_with_the_default_registry():
    registry = get_registry()
    assert check("student_t") == "ran"
    assert check(registry.get("distribution", "student_t")) == "ran"
    assert check("adam", registry) == "stepped"


def test_check_refuses_a_name_of_no_single_component(toys):
    with pytest.raises(FwError, match="names no loaded plugin"):
        check("studnet_t", toys)
    plugin = toys.get("upsampler", "toy_scaled").plugin  # this file's plugin: no component
    with pytest.raises(FwError, match="must name one component"):
        check(plugin, toys)


# ----------------------------------------------------------------------------- (d) base class
@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("toy_plain", "fw.api.Upsampler"),
        ("toy_plain_distribution", "fw.api.NeighborhoodDistribution"),
    ],
)
def test_a_product_outside_its_kinds_base_class_fails_clearly(toys, name, base):
    with pytest.raises(SmokeError, match=rf"not a {base} subclass: subclass it") as err:
        check(name, toys)
    assert name in str(err.value)


# ----------------------------------------------------------------------------- (a) upsampler
def test_upsampler_gradient_must_reach_its_input_features(toys):
    assert check("toy_scaled", toys) == "ran"
    with pytest.raises(SmokeError, match="no gradient reaches its input features"):
        check("toy_detached", toys)


# ----------------------------------------------------------------------------- (c) context keys
def test_an_unchecked_read_of_an_undeclared_key_fails_naming_it(toys):
    with pytest.raises(SmokeError, match=r"\['labels'\] unchecked: add it to `requires`"):
        check("toy_reads_labels", toys)


def test_reads_after_a_membership_test_or_get_and_copies_pass(toys):
    assert check("toy_checks_labels", toys) == "ran"


# ----------------------------------------------------------------------------- (b) leading axes
def test_a_batched_distribution_gives_each_batch_its_slice(toys):
    assert check("toy_kernel", toys) == "ran"
    x = torch.randn(3, 5, 2)
    nb = _Kernel()({api.FEATURES: x})
    assert nb.shape == (3, 5, 5)
    for b in range(3):  # reference: the kernel written out for one slice
        d = ((x[b, :, None] - x[b, None]) ** 2).sum(-1)
        w = torch.exp(-d) * (1 - torch.eye(5))
        torch.testing.assert_close(nb.prob[b], w / w.sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("toy_mixes_batches", "batch [01] of features .* differs from that slice alone"),
        ("toy_drops_batches", r"maps features \[2, 12, 4\] to \(24, 24\), not \[2, \*\(12, 12\)\]"),
    ],
)
def test_a_distribution_that_claims_leading_axes_wrongly_fails(toys, name, message):
    with pytest.raises(SmokeError, match=message):
        check(name, toys)


def test_icon_loss_over_leading_axes_is_the_mean_of_the_slices():
    g = torch.Generator().manual_seed(0)
    p = _Kernel()({api.FEATURES: torch.randn(4, 6, 3, generator=g)})
    q = _Kernel()({api.FEATURES: torch.randn(4, 6, 2, generator=g)})
    per_slice = [icon_loss(_slice(p, b), _slice(q, b)) for b in range(4)]
    torch.testing.assert_close(icon_loss(p, q), torch.stack(per_slice).mean())
    # independent reference: KL(p_i || q_i) summed over j, averaged over every row of every batch
    pp, qq = p.prob, q.prob
    off = ~torch.eye(6, dtype=bool)
    kl = torch.where(off, pp * (pp.clamp_min(1e-30).log() - qq.clamp_min(1e-30).log()), 0.0)
    torch.testing.assert_close(icon_loss(p, q), kl.sum(-1).mean())


def _slice(nb: api.Neighborhood, b: int) -> api.Neighborhood:
    return api.Neighborhood(nb.log_prob[b], nb.mask[b], nb.log_norm[b])


# ----------------------------------------------------------------------------- joint layout
def test_joint_matrix_of_a_hand_computed_joint_neighbourhood():
    # weights w_ij over the 6 ordered pairs i != j of 3 points, normalised jointly: w / 21
    w = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 4.0], [5.0, 6.0, 0.0]])
    off = ~torch.eye(3, dtype=torch.bool)
    nb = api.Neighborhood.from_weights(w.reshape(1, 9), off.reshape(1, 9))
    assert nb.shape == (1, 9)
    expected = torch.tensor([[0, 1, 2], [3, 0, 4], [5, 6, 0]]) / 21.0
    torch.testing.assert_close(nb.joint_matrix(), expected)
    # column i·n + j is the pair (i, j): p(1, 2) = 4/21 sits at column 5
    torch.testing.assert_close(nb.prob[0, 5], torch.tensor(4 / 21))
    # leading batch axes are kept
    batched = api.Neighborhood.from_weights(
        torch.stack([w, 2 * w]).reshape(2, 1, 9), off.reshape(1, 9)
    )
    torch.testing.assert_close(batched.joint_matrix(), torch.stack([expected, expected]))


def test_joint_matrix_refuses_a_per_row_neighbourhood():
    nb = _Kernel()({api.FEATURES: torch.randn(3, 2)})
    with pytest.raises(ShapeError, match=r"joint neighbourhood is \[1, n·n\], got \(3, 3\)"):
        nb.joint_matrix()


# ----------------------------------------------------------------------------- same pairs
def _joint_and_conditional(n: int = 4) -> tuple[api.Neighborhood, api.Neighborhood]:
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
    conditional = _Kernel()({api.FEATURES: x})
    logits = -(torch.cdist(x, x) ** 2)
    off = ~torch.eye(n, dtype=torch.bool)
    joint = api.Neighborhood.from_logits(logits.reshape(1, -1), off.reshape(1, -1))
    return joint, conditional


def test_pairs_error_names_the_keys_and_the_normalization_fix():
    joint, conditional = _joint_and_conditional()
    with pytest.raises(ShapeError) as err:
        icon_loss(joint, conditional)
    message = str(err.value)
    assert "p (learner.p) is (1, 16), q (learner.q) is (4, 4)" in message
    assert "set learner.q.normalization=joint to match learner.p's" in message
    with pytest.raises(ShapeError, match="learner.q.normalization=conditional"):
        icon_loss(conditional, joint)
    other = _Kernel()({api.FEATURES: torch.randn(5, 2)})
    with pytest.raises(ShapeError, match="give both the same rows and columns") as err:
        icon_loss(conditional, other)
    assert "normalization" not in str(err.value)


def test_pairs_error_reaches_the_user_of_a_recipe(tmp_path):
    overrides = ["learner.q.normalization=conditional", "data.limit=40", "trainer.max_steps=1"]
    with pytest.raises(ShapeError, match=r"learner\.q\.normalization=joint to match learner\.p's"):
        fw.run("recipes/tsne_digits.yaml", overrides, out=tmp_path / "run")
