"""FeatUp components against independent references (Hamilton, PhD thesis, Ch. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fw.errors import DataError, RecipeError, ShapeError
from fw.recipe import build
from fw_featup.downsamplers import AttentionDownsampler, SimpleDownsampler, window_stride
from fw_featup.implicit import FourierFeatures, ImplicitUpsampler, minmax_scale
from fw_featup.jitter import Jitter, apply_jitter
from fw_featup.losses import (
    PCA,
    Uncertainty,
    magnitude_tv,
    project,
    random_projection,
    reconstruction_loss,
)
from fw_featup.picture import pca_rgb
from fw_featup.upsamplers import JBU, JBUStack, JBUStage, ResizeConv


def test_jitter_matches_numpy_pad_zoomless_crop_and_flip():
    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float64).view(2, 3, 6, 5)
    jit = Jitter(pad=2, zoom=1.0, top=3, left=1, flip=True)
    ref = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    ref = ref[..., 3 : 3 + 6, 1 : 1 + 5][..., ::-1]
    np.testing.assert_array_equal(apply_jitter(x, jit).numpy(), ref)


def test_jitter_is_the_same_map_for_image_and_features():
    # a per-pixel channel mixing commutes with the jitter: image and features move together
    x = torch.randn(1, 3, 20, 20, dtype=torch.float64)
    mix = torch.randn(5, 3, dtype=torch.float64)
    jit = Jitter(pad=3, zoom=1.5, top=4, left=7, flip=True)
    a = torch.einsum("oc,bchw->bohw", mix, apply_jitter(x, jit))
    b = apply_jitter(torch.einsum("oc,bchw->bohw", mix, x), jit)
    torch.testing.assert_close(a, b)
    assert a.shape[-2:] == (20, 20)


def test_window_stride_reaches_the_backbone_grid():
    assert window_stride(224, 14, 16) == 16
    assert window_stride(224, 14, 29) == 15
    assert window_stride(224, 7, 35) == 31
    with pytest.raises(ShapeError, match="kernel_size"):
        window_stride(224, 14, 220)


def test_simple_downsampler_starts_as_average_pooling():
    x = torch.randn(2, 3, 16, 16)
    down = SimpleDownsampler(kernel_size=4)
    torch.testing.assert_close(down(x, (4, 4)), F.avg_pool2d(x, 4))
    with torch.no_grad():
        down.weight.copy_(torch.randn(4, 4))
    k = down.kernel()
    assert (k >= 0).all() and torch.isclose(k.sum(), torch.tensor(1.0))


def test_attention_downsampler_with_flat_logits_is_average_pooling():
    x = torch.randn(2, 5, 12, 12)
    down = AttentionDownsampler(5, kernel_size=3, blur_attn=False).eval()
    with torch.no_grad():
        down.w.zero_()
        down.b.zero_()
    torch.testing.assert_close(down(x, (4, 4)), F.avg_pool2d(x, 3), atol=1e-6, rtol=1e-5)


def test_attention_downsampler_matches_a_loop_over_patches():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 9, 9)
    down = AttentionDownsampler(4, kernel_size=3, blur_attn=False).eval()
    out = down(x, (3, 3))
    sal = down.saliency(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)[0, 0]
    for i in range(3):
        for j in range(3):
            patch = x[0, :, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].reshape(4, 9)
            logit = sal[3 * i : 3 * i + 3, 3 * j : 3 * j + 3].reshape(9)
            attn = torch.softmax(logit * down.w.reshape(9) + down.b.reshape(9), dim=0)
            torch.testing.assert_close(out[0, :, i, j], patch @ attn)


def _jbu_reference(stage: JBUStage, source, guidance):
    """Eqs. 5.4–5.6 written per pixel with explicit neighbours (reflect-padded)."""
    r = stage.radius
    d = 2 * r + 1
    h, w = guidance.shape[-2:]
    hr = F.interpolate(source, size=(h, w), mode=stage.feature_resize, align_corners=False)
    q = stage.range_proj(guidance)
    qp, hp = F.pad(q, (r,) * 4, mode="reflect"), F.pad(hr, (r,) * 4, mode="reflect")
    coords = torch.linspace(-1, 1, d, dtype=source.dtype)
    spatial = torch.exp(-(coords[:, None] ** 2 + coords[None] ** 2) / (2 * stage.sigma_spatial**2))
    out = torch.zeros(source.shape[0], source.shape[1], h, w, dtype=source.dtype)
    for y in range(h):
        for x in range(w):
            keys = qp[0, :, y : y + d, x : x + d]  # [K, d, d]
            logits = torch.einsum("kij,k->ij", keys, q[0, :, y, x]) * stage.range_temp.exp()
            kern = torch.softmax(logits.reshape(-1), 0).reshape(d, d) * spatial
            kern = kern / kern.sum()
            out[0, :, y, x] = torch.einsum("cij,ij->c", hp[0, :, y : y + d, x : x + d], kern)
    return out


def test_jbu_stage_matches_per_pixel_equations():
    torch.manual_seed(0)
    stage = JBUStage(key_dim=4, radius=2, fixup=False, feature_resize="bilinear").double().eval()
    with torch.no_grad():
        stage.sigma_spatial.fill_(0.7)
        stage.range_temp.fill_(0.3)
    src = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    g = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(stage(src, g), _jbu_reference(stage, src, g))


def test_jbu_without_fixup_preserves_constants_and_kernels_sum_to_one():
    stage = JBUStage(key_dim=4, radius=1, fixup=False).eval()
    g = torch.rand(2, 3, 10, 10)
    k = stage.kernel(g)
    torch.testing.assert_close(k.sum(dim=1), torch.ones(2, 10, 10))
    out = stage(torch.full((2, 3, 5, 5), 2.5), g)
    torch.testing.assert_close(out, torch.full_like(out, 2.5))


def test_jbu_stack_is_channelwise_linear_so_centroid_scores_commute():
    # the exactness trick: without the final residual, upsample(f)·c == upsample(f·c)
    torch.manual_seed(0)
    up = JBUStack(dim=6, stages=2, window=3, key_dim=4, reference_extras=False).eval()
    f = torch.randn(2, 6, 4, 4)
    g = torch.rand(2, 3, 16, 16)
    cent = torch.randn(6, 3)
    a = torch.einsum("bchw,ck->bkhw", up(f, g), cent)
    b = up(torch.einsum("bchw,ck->bkhw", f, cent), g)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_upsampler_shapes_and_sizes():
    f, g = torch.randn(2, 4, 4, 4), torch.rand(2, 3, 64, 64)
    assert JBUStack(dim=4, stages=2, window=3, key_dim=4)(f, g).shape == (2, 4, 64, 64)
    assert JBUStack(dim=4, stages=2, window=3, key_dim=4)(f, g, (16, 16)).shape == (2, 4, 16, 16)
    assert JBU(window=3, key_dim=4)(f, g, (24, 20)).shape == (2, 4, 24, 20)
    assert ResizeConv(dim=4, stages=2)(f, g).shape == (2, 4, 64, 64)
    with pytest.raises(RecipeError, match="odd"):
        JBUStack(window=4)


def test_trainable_upsampler_round_trips_through_weights_file(tmp_path):
    up = build("upsampler", {"name": "jbu_stack", "dim": 4, "stages": 2, "window": 3, "key_dim": 4})
    torch.save(up.record(), tmp_path / "upsampler.pt")
    # options left out are the saved ones: the weights alone rebuild the trained upsampler
    again = build("upsampler", {"name": "jbu_stack", "weights": str(tmp_path)})
    assert again.options == {**up.options} and len(again.ups) == 2
    assert again.dim == 4
    f, g = torch.randn(1, 4, 4, 4), torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(up.eval()(f, g), again.eval()(f, g))
    with pytest.raises(DataError, match="does not fit"):
        build(
            "upsampler",
            {"name": "jbu_stack", "stages": 3, "window": 3, "key_dim": 4, "weights": str(tmp_path)},
        )
    with pytest.raises(RecipeError, match="jbu_stack"):
        build("upsampler", {"name": "resize_conv", "weights": str(tmp_path)})
    with pytest.raises(DataError, match="not found"):
        build("upsampler", {"name": "jbu", "weights": str(tmp_path / "nope")})


def test_reconstruction_loss_is_the_gaussian_likelihood_of_eq_5_1():
    pred, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    s = torch.rand(2, 1, 4, 4) + 0.5
    want = ((pred - target) ** 2 / (2 * s**2) + torch.log(s).expand_as(pred)).mean()
    torch.testing.assert_close(reconstruction_loss(pred, target, s), want)
    torch.testing.assert_close(reconstruction_loss(pred, target, None), F.mse_loss(pred, target))
    unc = Uncertainty(3)
    assert unc(target).shape == (2, 1, 4, 4) and (unc(target) >= 1e-4).all()


def test_random_projection_has_unit_columns_and_projects_channels():
    p = random_projection(3, 10, 4, torch.zeros(1))
    torch.testing.assert_close(p.norm(dim=1), torch.ones(3, 4))
    f = torch.randn(3, 10, 2, 2)
    torch.testing.assert_close(project(f, p)[1, :, 0, 1], p[1].T @ f[1, :, 0, 1])


def test_pca_matches_sklearn_and_round_trips():
    from sklearn.decomposition import PCA as SkPCA

    torch.manual_seed(0)
    f = torch.randn(2, 6, 5, 5) * torch.arange(1, 7).view(1, 6, 1, 1)
    pca = PCA(6, 3).fit(f)
    flat = f.permute(0, 2, 3, 1).reshape(-1, 6).numpy()
    ref = SkPCA(3).fit_transform(flat)
    ours = pca.project(f).permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), atol=1e-4)
    full = PCA(6, 6).fit(f)
    torch.testing.assert_close(full.unproject(full.project(f)), f, atol=1e-5, rtol=1e-5)


def test_magnitude_tv_matches_a_loop():
    f = torch.randn(2, 3, 4, 5)
    m = f.norm(dim=1)
    total = 0.0
    for b in range(2):
        for i in range(4):
            for j in range(5):
                if i:
                    total += (m[b, i, j] - m[b, i - 1, j]) ** 2
                if j:
                    total += (m[b, i, j] - m[b, i, j - 1]) ** 2
    torch.testing.assert_close(magnitude_tv(f), total / m.numel())


def test_fourier_features_have_303_channels_and_scaled_colour():
    img = torch.rand(1, 3, 8, 8) * 3 + 1
    ff = FourierFeatures(30)
    assert ff(img).shape == (1, 303, 8, 8)
    scaled = minmax_scale(img)
    assert torch.isclose(scaled.amin(), torch.tensor(-0.5)) and torch.isclose(
        scaled.amax(), torch.tensor(0.5)
    )
    torch.testing.assert_close(ff(img)[:, -3:], scaled)


def test_implicit_fit_lowers_its_loss_and_upsamples_at_any_size():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 32, 32)

    def featurize(x):  # a toy frozen featurizer: 4×4 average pool of a colour mix
        return F.avg_pool2d(torch.cat([x, x[:, :1] * x[:, 1:2]], dim=1), 8)

    up = ImplicitUpsampler(
        steps=60,
        n_jitters=3,
        pool=6,
        pca_views=6,
        pca_dim=4,
        n_freqs=4,
        hidden=16,
        kernel_size=8,
        max_pad=4,
        lr=1e-2,
        progress=False,
    )
    with pytest.raises(Exception, match="fit"):
        up(featurize(img), img)
    up.fit(img, featurize)
    assert np.mean(up.history[-10:]) < np.mean(up.history[:10])
    assert up(featurize(img), img).shape == (1, 4, 32, 32)
    assert up(featurize(img), img, (48, 40)).shape == (1, 4, 48, 40)


def test_pca_picture_colours_low_and_high_res_with_one_projection():
    low = torch.randn(5, 3, 3)
    high = F.interpolate(low[None], scale_factor=4, mode="nearest")[0]
    rgb_low, rgb_high = pca_rgb(low, [high])
    np.testing.assert_allclose(rgb_high[::4, ::4], rgb_low, atol=1e-6)
