"""The retrieval network: descriptor shapes per pooling, unit norm, the split at the attention tap, PCA
whitening initialisation (checked against numpy) and the checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from visloc.errors import ConfigError
from visloc.models.backbones import TAPS, tap_stride
from visloc.models.checkpoint import load_model, read_checkpoint, save_model
from visloc.models.retrieval_net import POOLINGS, RetrievalNet, RetrievalNetConfig

CHANNELS = 256  # the tiny backbone's last map


def _images(n: int = 2, h: int = 64, w: int = 96, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("whitening_dim", [0, 24])
def test_descriptor_shape_and_unit_norm_per_pooling(pooling: str, whitening_dim: int) -> None:
    torch.manual_seed(0)
    config = RetrievalNetConfig(pooling=pooling, whitening_dim=whitening_dim, netvlad_clusters=4)
    net = RetrievalNet(config).eval()
    pooled = 4 * CHANNELS if pooling == "netvlad" else CHANNELS
    assert net.pooled_dim == pooled
    assert net.descriptor_dim == (whitening_dim or pooled)
    with torch.no_grad():
        d = net(_images())
        p = net.pool(net.features(_images()))
    assert d.shape == (2, whitening_dim or pooled) and p.shape == (2, pooled)
    np.testing.assert_allclose(torch.linalg.vector_norm(d, dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(torch.linalg.vector_norm(p, dim=1).numpy(), 1.0, atol=1e-5)
    assert (net.whiten is None) == (whitening_dim == 0)


@pytest.mark.parametrize("tap", TAPS)
def test_the_two_parts_at_each_tap_give_the_last_map(tap: str) -> None:
    torch.manual_seed(0)
    net = RetrievalNet(RetrievalNetConfig(attention_tap=tap)).eval()
    x = _images(h=64, w=96)
    with torch.no_grad():
        at_tap = net.features_until_tap(x)
        rest = net.features_from_tap(at_tap)
        full = net.features(x)
        encoder = net.encoder.feature_map(x).clamp(min=0)  # the backbone's own forward, ReLU'd
    s = tap_stride(tap)
    assert at_tap.shape == (2, net.tap_channels, 64 // s, 96 // s)
    assert full.shape == (2, CHANNELS, 2, 3) and net.feature_channels == CHANNELS
    torch.testing.assert_close(rest, full)
    torch.testing.assert_close(full, encoder)
    assert float(full.min()) >= 0.0


def test_whitening_init_is_pca_whitening_on_the_fitting_data() -> None:
    dim = 16
    net = RetrievalNet(RetrievalNetConfig(whitening_dim=dim))
    rng = np.random.default_rng(0)
    # anisotropic correlated data, more samples than dimensions (full rank)
    mix = rng.normal(size=(CHANNELS, CHANNELS)) * np.linspace(0.05, 1.0, CHANNELS)[:, None]
    x = (rng.normal(size=(600, CHANNELS)) @ mix + rng.normal(size=CHANNELS)).astype(np.float32)
    net.init_whitening(x)
    with torch.no_grad():
        y = net.whiten(torch.from_numpy(x)).double().numpy()
    # decorrelated, unit variance, zero mean
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(np.cov(y.T), np.eye(dim), atol=2e-3)
    # and the top principal components, as numpy computes them (each up to its sign)
    centred = x.astype(np.float64) - x.mean(0)
    eigval, eigvec = np.linalg.eigh(np.cov(centred.T))
    top = np.argsort(eigval)[::-1][:dim]
    expected = centred @ eigvec[:, top] / np.sqrt(eigval[top])
    signs = np.sign((expected * y).sum(0))
    np.testing.assert_allclose(y, expected * signs, atol=2e-3)


def test_whitening_init_with_fewer_samples_than_dimensions_keeps_the_spanned_components() -> None:
    net = RetrievalNet(RetrievalNetConfig(whitening_dim=32))
    x = np.random.default_rng(1).normal(size=(10, CHANNELS)).astype(np.float32)
    net.init_whitening(x)
    w = net.whiten.weight.detach().double().numpy()
    # 10 centred samples span 9 directions: the other rows stay zero instead of amplifying noise
    assert np.abs(w[:9]).sum(1).min() > 0 and not w[9:].any() and not net.whiten.bias[9:].any()
    with torch.no_grad():
        y = net.whiten(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(np.cov(y[:, :9].T), np.eye(9), atol=1e-3)
    with pytest.raises(ValueError, match="N >= 2"):
        net.init_whitening(x[:1])
    with pytest.raises(ConfigError, match="no whitening layer"):
        RetrievalNet(RetrievalNetConfig()).init_whitening(x)


@pytest.mark.parametrize("pooling", ["gem", "netvlad"])
def test_save_and_load_round_trip(tmp_path: Path, pooling: str) -> None:
    torch.manual_seed(0)
    config = RetrievalNetConfig(pooling=pooling, whitening_dim=8, netvlad_clusters=2, gem_p=2.5,
                                attention_tap="stride8")
    net = RetrievalNet(config)
    with torch.no_grad():  # change the learnable parts away from their initial values
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    path = save_model(tmp_path / "net.pt", net, config, metrics={"preprocess": {"image_size": 96}})
    loaded = load_model(path)
    assert isinstance(loaded, RetrievalNet) and loaded.config == config and not loaded.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    assert read_checkpoint(path)["metrics"]["preprocess"] == {"image_size": 96}


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="pooling"):
        RetrievalNetConfig(pooling="max")
    with pytest.raises(ConfigError, match="attention tap"):
        RetrievalNetConfig(attention_tap="stride2")
    with pytest.raises(ConfigError, match="whitening_dim"):
        RetrievalNetConfig(whitening_dim=-1)
