"""VLAD aggregation: a hand-computed example, invariances, discrimination, and a seeded codebook."""

from __future__ import annotations

import numpy as np
import pytest

from visloc.features.base import LocalFeatures
from visloc.retrieval import global_descriptors
from visloc.retrieval.vlad import VLAD, VLADConfig


def _features(desc: np.ndarray) -> LocalFeatures:
    desc = np.ascontiguousarray(desc, dtype=np.float32)
    n = len(desc)
    return LocalFeatures(np.zeros((n, 2), np.float32), desc, np.ones(n, np.float32), (640, 480))


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def _image_descriptors(rng: np.random.Generator, centres: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    """Descriptors of an 'image': samples around the given modes, with image-specific mode weights."""
    idx = rng.choice(len(centres), size=n, p=weights)
    return _unit_rows(centres[idx] + rng.normal(scale=0.15, size=(n, centres.shape[1])))


@pytest.fixture(scope="module")
def modes() -> np.ndarray:
    return _unit_rows(np.random.default_rng(0).normal(size=(16, 32)))


@pytest.fixture(scope="module")
def fitted(modes: np.ndarray) -> VLAD:
    rng = np.random.default_rng(1)
    sets = [_image_descriptors(rng, modes, np.full(16, 1 / 16), 300) for _ in range(10)]
    return VLAD(VLADConfig(num_clusters=8, kmeans_iterations=10, seed=0)).fit(sets)


def test_hand_computed_vlad() -> None:
    vlad = VLAD(VLADConfig(num_clusters=2)).load_state(np.array([[1.0, 0.0], [0.0, 1.0]]))
    x = np.array([[1.0, 0.2], [0.9, -0.1], [0.1, 1.3]])
    v = vlad(None, _features(x))
    # residual sums: cluster 0 gets (0, 0.2) + (-0.1, -0.1) = (-0.1, 0.1); cluster 1 gets (0.1, 0.3)
    # intra-normalised: (-1, 1)/sqrt(2) and (1, 3)/sqrt(10); signed square root; global L2
    c0 = np.array([-1.0, 1.0]) / np.sqrt(2)
    c1 = np.array([1.0, 3.0]) / np.sqrt(10)
    expected = np.sign(np.r_[c0, c1]) * np.sqrt(np.abs(np.r_[c0, c1]))
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(v, expected, atol=1e-6)
    assert v.dtype == np.float32 and v.shape == (4,)
    # power = 1: no square root
    v1 = VLAD(VLADConfig(num_clusters=2, power=1.0)).load_state(np.eye(2))(None, _features(x))
    np.testing.assert_allclose(v1, np.r_[c0, c1] / np.sqrt(2), atol=1e-6)


def test_unit_norm_and_dimension(fitted: VLAD, modes: np.ndarray) -> None:
    assert fitted.centroids.shape == (8, 32)
    assert fitted.dim == 8 * 32
    rng = np.random.default_rng(2)
    for n in (1, 5, 300):
        v = fitted(None, _features(_image_descriptors(rng, modes, np.full(16, 1 / 16), n)))
        assert v.shape == (256,)
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


def test_order_invariance(fitted: VLAD, modes: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    d = _image_descriptors(rng, modes, np.full(16, 1 / 16), 200)
    np.testing.assert_allclose(fitted(None, _features(d)), fitted(None, _features(d[rng.permutation(200)])), atol=1e-6)


def test_noisy_copy_is_closer_than_another_image(fitted: VLAD, modes: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    for trial in range(5):
        wa, wb = rng.dirichlet(np.ones(16)), rng.dirichlet(np.ones(16))
        a = _image_descriptors(rng, modes, wa, 200)
        b = _image_descriptors(rng, modes, wb, 200)
        a_noisy = _unit_rows(a + rng.normal(scale=0.05, size=a.shape))[rng.permutation(200)[:150]]
        va, vb, vn = (fitted(None, _features(x)) for x in (a, b, a_noisy))
        assert va @ vn > va @ vb + 0.1, trial


def test_empty_image_gives_a_finite_vector(fitted: VLAD) -> None:
    v = fitted(None, _features(np.zeros((0, 32))))
    assert v.shape == (256,) and np.isfinite(v).all()


def test_codebook_is_deterministic_by_seed(modes: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    sets = [_image_descriptors(rng, modes, np.full(16, 1 / 16), 200) for _ in range(5)]

    def fit(seed: int) -> np.ndarray:
        return VLAD(VLADConfig(num_clusters=8, kmeans_iterations=5, seed=seed, max_training_descriptors=600)).fit(
            sets
        ).centroids

    np.testing.assert_array_equal(fit(0), fit(0))
    assert not np.array_equal(fit(0), fit(1))


def test_codebook_is_a_kmeans_fixed_point() -> None:
    # Lloyd's condition, checked independently: each centroid is the mean of the training descriptors
    # nearest to it (k-means may stop in a local minimum, but never off a fixed point once converged)
    rng = np.random.default_rng(6)
    centres = np.eye(8, dtype=np.float32)[:4] * 5
    sets = [centres[rng.integers(0, 4, 100)] + rng.normal(scale=0.3, size=(100, 8)).astype(np.float32)
            for _ in range(4)]
    vlad = VLAD(VLADConfig(num_clusters=6, kmeans_iterations=50, seed=0)).fit(sets)
    x = np.concatenate(sets)
    assign = np.linalg.norm(x[:, None] - vlad.centroids[None], axis=-1).argmin(axis=1)
    assert len(np.unique(assign)) == 6
    for k in range(6):
        np.testing.assert_allclose(vlad.centroids[k], x[assign == k].mean(axis=0), atol=1e-4)


def test_fit_and_state_errors() -> None:
    with pytest.raises(ValueError, match="no local descriptors"):
        VLAD().fit([np.zeros((0, 8), np.float32)])
    with pytest.raises(RuntimeError, match="not fitted"):
        VLAD()(None, _features(np.ones((1, 8))))
    v = VLAD(VLADConfig(num_clusters=2)).load_state(np.eye(2))
    again = VLAD().load_state(**v.state())
    np.testing.assert_array_equal(again.centroids, np.eye(2))


def test_fewer_descriptors_than_clusters() -> None:
    d = _unit_rows(np.random.default_rng(7).normal(size=(3, 4)))
    vlad = VLAD(VLADConfig(num_clusters=64)).fit([d])
    assert vlad.centroids.shape == (3, 4)


def test_registry() -> None:
    v = global_descriptors.create("vlad", num_clusters=3)
    assert isinstance(v, VLAD) and v.config.num_clusters == 3 and v.needs_fit
