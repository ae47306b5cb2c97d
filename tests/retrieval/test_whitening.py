"""PCA whitening: identity covariance on the training data, dimension reduction, shrinkage, storage."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.errors import ConfigError
from visloc.retrieval.whitening import apply_whitening, fit_pca_whitening


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    # correlated, anisotropic, off-centre descriptors
    mix = rng.normal(size=(12, 12)) * np.linspace(3.0, 0.2, 12)
    return (rng.normal(size=(500, 12)) @ mix.T + 5.0).astype(np.float64)


def test_whitened_training_data_has_identity_covariance(data: np.ndarray) -> None:
    mean, proj = fit_pca_whitening(data, eps=0.0)
    assert mean.shape == (12,) and proj.shape == (12, 12)
    y = apply_whitening(data, mean, proj, normalize=False)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(12), atol=1e-9)
    # the default eps (1e-9 added to each eigenvalue) shrinks variance i by eps / eigenvalue_i only
    m, p = fit_pca_whitening(data)
    y = apply_whitening(data, m, p, normalize=False)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(12), atol=1e-5)


def test_dimension_reduction_keeps_top_variance(data: np.ndarray) -> None:
    mean, proj = fit_pca_whitening(data, dim=4, eps=0.0)
    assert proj.shape == (4, 12)
    y = apply_whitening(data, mean, proj, normalize=False)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(4), atol=1e-6)
    # the kept directions are the full solution's first four
    _, full = fit_pca_whitening(data, eps=0.0)
    np.testing.assert_allclose(proj, full[:4], atol=1e-10)
    # normalised output: unit rows
    z = apply_whitening(data, mean, proj)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)


def test_hand_computed_2d() -> None:
    # points (+-2, 0) and (0, +-1) around (1, 1): covariance diag(2, 0.5) -> scale x by 1/sqrt(2), y by sqrt(2)
    x = np.array([[3.0, 1.0], [-1.0, 1.0], [1.0, 2.0], [1.0, 0.0]])
    mean, proj = fit_pca_whitening(x, eps=0.0)
    np.testing.assert_allclose(mean, [1.0, 1.0])
    np.testing.assert_allclose(proj, [[1 / np.sqrt(2), 0.0], [0.0, np.sqrt(2)]], atol=1e-12)


def test_shrinkage(data: np.ndarray) -> None:
    mean, proj = fit_pca_whitening(data, shrinkage=1.0)
    # full shrinkage: an orthogonal rotation times one common scale, distances preserved up to scale
    gram = proj @ proj.T
    np.testing.assert_allclose(gram, gram[0, 0] * np.eye(12), atol=1e-10)
    y = apply_whitening(data, mean, proj, normalize=False)
    d_in = np.linalg.norm(data[:10] - data[10:20], axis=1)
    d_out = np.linalg.norm(y[:10] - y[10:20], axis=1)
    np.testing.assert_allclose(d_out / d_in, d_out[0] / d_in[0], rtol=1e-8)
    # partial shrinkage lies between: the smallest direction is amplified less than without it
    _, p0 = fit_pca_whitening(data)
    _, ph = fit_pca_whitening(data, shrinkage=0.5)
    assert np.linalg.norm(ph[-1]) < np.linalg.norm(p0[-1])


def test_float32_rank_deficient_and_storage(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 16)).astype(np.float32)  # N < D: rank 4
    mean, proj = fit_pca_whitening(x, dim=4)
    assert mean.dtype == np.float32 and proj.dtype == np.float32
    y = apply_whitening(x, mean, proj)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    one = apply_whitening(x[0], mean, proj)
    np.testing.assert_allclose(one, y[0], rtol=1e-5)
    np.savez(tmp_path / "global_state.npz", whiten_mean=mean, whiten_projection=proj)
    state = np.load(tmp_path / "global_state.npz")
    np.testing.assert_array_equal(apply_whitening(x, state["whiten_mean"], state["whiten_projection"]), y)
    # deterministic: same data, same arrays
    _, p2 = fit_pca_whitening(x, dim=4)
    np.testing.assert_array_equal(p2, proj)


def test_errors(data: np.ndarray) -> None:
    with pytest.raises(ConfigError):
        fit_pca_whitening(data, dim=13)
    with pytest.raises(ConfigError):
        fit_pca_whitening(data, shrinkage=1.5)
    with pytest.raises(ValueError):
        fit_pca_whitening(data[:1])
    mean, proj = fit_pca_whitening(data, dim=3)
    with pytest.raises(ValueError):
        apply_whitening(data[:, :5], mean, proj)
