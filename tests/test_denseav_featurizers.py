"""DenseAV featurizers: log-mel front-end, token masks, HuBERT offline error, dilated MobileNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fw.dense import lengths_to_mask
from fw.errors import DataError
from fw_denseav.audio import HuBERT, LogMel, LogMelEncoder, hubert_cache_path, mel_filterbank


def test_mel_filterbank_matches_torchaudio():
    try:
        from torchaudio.functional import melscale_fbanks
    except (ImportError, OSError) as err:  # a torchaudio build that does not match torch
        pytest.skip(f"torchaudio unusable here: {err}")
    want = melscale_fbanks(257, 0.0, 8000.0, 64, 16000, norm=None, mel_scale="htk")
    torch.testing.assert_close(mel_filterbank(257, 64, 16000), want, atol=1e-5, rtol=1e-4)


def test_log_mel_frames_equal_a_per_frame_dft():
    mel = LogMel(n_mels=32)
    wav = torch.randn(1, 1, 4000)
    out = mel(wav)
    assert out.shape == (1, 32, 4000 // 160)
    x = np.pad(wav[0, 0].numpy().astype(np.float64), (0, 240))
    win = np.hanning(401)[:-1]  # periodic Hann of length 400
    fb = mel.fbank.numpy().astype(np.float64)
    for i in (0, 7, 24):
        frame = x[i * 160 : i * 160 + 400] * win
        power = np.abs(np.fft.rfft(frame, n=512)) ** 2
        np.testing.assert_allclose(
            out[0, :, i].numpy(), np.log(power @ fb + 1e-6), rtol=1e-3, atol=1e-3
        )


def test_encoder_resamples_the_mask_and_ignores_padding():
    enc = LogMelEncoder(dim=8, width=16).eval()
    wav = torch.randn(2, 1, 12800)
    mask = lengths_to_mask(torch.tensor([12800, 3000]), 12800)
    dense = enc.forward_dense(wav * mask[:, None], mask)
    assert dense.features.shape == (2, 8, 10)  # one token per 80 ms
    assert dense.mask.sum(1).tolist() == [10, 3]  # ceil(3000 / 1280)


def test_dense_features_of_any_featurizer_resample_the_mask_by_nearest_position():
    from fw.api import Featurizer
    from fw_denseav.audio import dense_features

    class Stride4(Featurizer):  # one output step per 4 samples, a generic (non-audio) featurizer
        dim, dense = 1, True

        def forward(self, x):
            return x[..., ::4]

    wav = torch.randn(2, 1, 40)
    mask = lengths_to_mask(torch.tensor([40, 13]), 40)
    dense = dense_features(Stride4(), wav, mask)
    assert torch.equal(dense.features, wav[..., ::4])
    # nearest: output step t reads input sample floor(t · 40 / 10) = 4t, valid while 4t < 13
    assert dense.mask.tolist() == [[True] * 10, [True] * 4 + [False] * 6]
    assert dense_features(Stride4(), wav).mask is None


def test_encoder_setup_standardises_log_mels():
    from fw.data import ArrayDataset

    wav = torch.randn(6, 1, 6400) * 0.3
    data = ArrayDataset({"x": torch.zeros(6, 1), "audio": wav})
    enc = LogMelEncoder(dim=8, width=16)
    enc.setup(data)
    mel = (enc.mel(wav) - enc.mel_mean[:, None]) / enc.mel_std[:, None]
    assert float(mel.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(mel.std()) == pytest.approx(1.0, abs=0.05)


def test_hubert_offline_error_names_file_and_cache(tmp_path, monkeypatch):
    try:
        import torchaudio.pipelines  # noqa: F401
    except (ImportError, OSError):
        with pytest.raises(DataError, match="torchaudio"):
            HuBERT("hubert_base")
        return
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        HuBERT("hubert_base")
    msg = str(err.value)
    path = hubert_cache_path("hubert_fairseq_base_ls960.pth")
    assert str(tmp_path) in str(path)
    assert "hubert_fairseq_base_ls960.pth" in msg and str(path) in msg
    assert "https://download.pytorch.org/torchaudio/models/" in msg


def test_dilated_mobilenet_is_stride_16_and_frozen():
    from fw_backbones.taps import mobilenet_v2_tap

    try:
        net = mobilenet_v2_tap("s16d")
    except DataError as err:
        pytest.skip(str(err))
    x = torch.rand(1, 3, 96, 128)
    out = net(x)
    assert out.shape == (1, 160, 6, 8)
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.trunk.training


def test_hubert_forward_dense_on_a_tiny_wav2vec2():
    """The HuBERT wrapper's layer choice and length mask, on a tiny random torchaudio model."""
    try:
        from torchaudio.models import wav2vec2_model
    except (ImportError, OSError) as err:
        pytest.skip(f"torchaudio unusable here: {err}")
    net = wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2)],
        extractor_conv_bias=False,
        encoder_embed_dim=16,
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=4,
        encoder_pos_conv_groups=2,
        encoder_num_layers=3,
        encoder_num_heads=2,
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=32,
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    ).eval()
    hub = HuBERT.from_model(net, layer=2, frozen=True)
    wav = torch.randn(2, 1, 1600)
    mask = lengths_to_mask(torch.tensor([1600, 800]), 1600)
    dense = hub.forward_dense(wav, mask)
    frames = hub.output_length(1600)
    assert dense.features.shape == (2, 16, frames) and hub.dim == 16
    assert dense.mask[0].all() and int(dense.mask[1].sum()) == hub.output_length(800)
    layers, _ = net.extract_features(wav[:, 0], None, num_layers=2)
    torch.testing.assert_close(hub(wav), layers[-1].transpose(1, 2))
    assert not any(p.requires_grad for p in hub.parameters())


def _tiny_wav2vec2_params(mode: str) -> dict:
    return {
        "extractor_mode": mode,
        "extractor_conv_layer_config": [(8, 10, 5), (8, 3, 2)],
        "extractor_conv_bias": mode == "layer_norm",
        "encoder_embed_dim": 16,
        "encoder_projection_dropout": 0.0,
        "encoder_pos_conv_kernel": 4,
        "encoder_pos_conv_groups": 2,
        "encoder_num_layers": 3,
        "encoder_num_heads": 2,
        "encoder_attention_dropout": 0.0,
        "encoder_ff_interm_features": 32,
        "encoder_ff_interm_dropout": 0.0,
        "encoder_dropout": 0.0,
        "encoder_layer_norm_first": mode == "layer_norm",
        "encoder_layer_drop": 0.0,
        "aux_num_out": None,
    }


@pytest.fixture
def tiny_hubert_cache(tmp_path, monkeypatch):
    """torchaudio's HUBERT_BASE / HUBERT_LARGE bundles pointed at tiny random weights, saved
    where torch.hub caches them, so HuBERT loads through ``bundle.get_model()`` offline."""
    try:
        import torchaudio.pipelines as pipelines
        from torchaudio.models import wav2vec2_model
        from torchaudio.pipelines import Wav2Vec2Bundle
    except (ImportError, OSError) as err:
        pytest.skip(f"torchaudio unusable here: {err}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    sources = {}
    for seed, (attr, mode, normalize) in enumerate(
        [("HUBERT_BASE", "group_norm", False), ("HUBERT_LARGE", "layer_norm", True)]
    ):
        params = _tiny_wav2vec2_params(mode)
        torch.manual_seed(seed)
        sources[attr] = wav2vec2_model(**params).eval()
        file = f"tiny_{attr.lower()}.pth"
        path = hubert_cache_path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(sources[attr].state_dict(), path)
        bundle = Wav2Vec2Bundle(
            _path=file,
            _params=params,
            _sample_rate=16000,
            _normalize_waveform=normalize,
            _model_type="Wav2Vec2",
        )
        monkeypatch.setattr(pipelines, attr, bundle)
    return sources


def test_hubert_loads_cached_weights_through_the_torchaudio_bundle(tiny_hubert_cache):
    source = tiny_hubert_cache["HUBERT_BASE"]
    hub = HuBERT("hubert_base", layer=2, frozen=True)
    assert not hub.normalize_waveform and hub.patch_size == 10 and hub.dim == 16
    loaded = hub.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.state_dict().items())
    wav = torch.randn(2, 1, 1600)
    layers, _ = source.extract_features(wav[:, 0], None, num_layers=2)
    torch.testing.assert_close(hub(wav), layers[-1].transpose(1, 2))


def test_hubert_large_normalises_each_clip_over_its_own_samples(tiny_hubert_cache):
    """The large bundles normalise the waveform (fairseq: each utterance alone); a padded batch
    must give each clip's valid frames what torchaudio's own model gives the clip by itself."""
    import torchaudio.pipelines as pipelines

    hub = HuBERT("hubert_large", frozen=True)
    assert hub.normalize_waveform and type(hub.net).__name__ == "Wav2Vec2Model"
    alone = pipelines.HUBERT_LARGE.get_model()  # torchaudio's wrapper, one clip at a time
    lengths = torch.tensor([1600, 1000, 430])
    wav = torch.randn(3, 1, 1600) * torch.tensor([[[0.1]], [[3.0]], [[0.5]]]) + 0.2
    wav = wav * lengths_to_mask(lengths, 1600)[:, None]
    dense = hub.forward_dense(wav, lengths_to_mask(lengths, 1600))
    for i, n in enumerate(lengths.tolist()):
        frames = hub.output_length(n)
        assert int(dense.mask[i].sum()) == frames
        ref, _ = alone.extract_features(wav[i : i + 1, 0, :n])
        torch.testing.assert_close(
            dense.features[i, :, :frames], ref[-1][0].t(), atol=1e-5, rtol=1e-4
        )


def test_hubert_truncated_weights_are_a_clear_error(tiny_hubert_cache):
    path = hubert_cache_path("tiny_hubert_base.pth")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="could not load HuBERT weights for hubert_base from"):
        HuBERT("hubert_base")
