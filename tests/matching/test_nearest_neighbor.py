"""Mutual nearest neighbour + Lowe ratio test on hand-built descriptor sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visloc.errors import ConfigError
from visloc.matching import Matches, NearestNeighborMatcher, NNConfig, matchers


def _unit(*rows: list[float]) -> np.ndarray:
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _angle(deg: float) -> list[float]:
    return [np.cos(np.radians(deg)), np.sin(np.radians(deg)), 0.0]


def test_known_nearest_neighbours_are_matched() -> None:
    # image 1 holds the same directions as image 0, permuted and slightly rotated
    d0 = _unit(_angle(0), _angle(40), _angle(80), [0, 0, 1])
    d1 = _unit([0, 0.05, 1], _angle(81), _angle(1), _angle(39))
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=None))(d0, d1)
    np.testing.assert_array_equal(m.matches0, [2, 3, 1, 0])
    assert m.matches0.dtype == np.int64 and m.scores0.dtype == np.float32
    # scores are the cosine similarities
    np.testing.assert_allclose(m.scores0[:3], np.cos(np.radians([1.0, 1.0, 1.0])), atol=1e-6)
    np.testing.assert_allclose(m.scores0[3], 1 / np.sqrt(1 + 0.05**2), atol=1e-6)
    assert len(m) == 4
    np.testing.assert_array_equal(m.pairs(), [[0, 2], [1, 3], [2, 1], [3, 0]])


def test_non_mutual_match_is_dropped() -> None:
    # both 0-descriptors are nearest to d1[0], but d1[0]'s nearest is d0[1]: only (1, 0) is mutual
    d0 = _unit(_angle(0), _angle(8))
    d1 = _unit(_angle(10), _angle(90))
    mutual = NearestNeighborMatcher(NNConfig(ratio_threshold=None, mutual=True))(d0, d1)
    np.testing.assert_array_equal(mutual.matches0, [-1, 0])
    assert mutual.scores0[0] == 0.0
    one_way = NearestNeighborMatcher(NNConfig(ratio_threshold=None, mutual=False))(d0, d1)
    np.testing.assert_array_equal(one_way.matches0, [0, 0])


def test_ratio_test_rejects_ambiguous_matches() -> None:
    # d0[0] sits between two nearly equal candidates (10 and 12 degrees away): ambiguous.
    # d0[1] has one clear neighbour (2 degrees) and the next at 50 degrees.
    d0 = _unit(_angle(0), _angle(100))
    d1 = _unit(_angle(10), _angle(-12), _angle(102), _angle(150))
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=0.8))(d0, d1)
    np.testing.assert_array_equal(m.matches0, [-1, 2])
    # distances: chord 2 sin(a/2); ratio for d0[0] = sin(5)/sin(6) = 0.834 -> kept at 0.85, not at 0.8
    ratio = np.sin(np.radians(5)) / np.sin(np.radians(6))
    assert 0.8 < ratio < 0.85
    np.testing.assert_array_equal(NearestNeighborMatcher(NNConfig(ratio_threshold=0.85))(d0, d1).matches0, [0, 2])
    np.testing.assert_array_equal(NearestNeighborMatcher(NNConfig(ratio_threshold=None))(d0, d1).matches0, [0, 2])


def test_distance_threshold() -> None:
    d0 = _unit(_angle(0), _angle(100))
    d1 = _unit(_angle(30), _angle(101))
    # chord distances 2 sin(15) = 0.518 and 2 sin(0.5) = 0.017
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=None, distance_threshold=0.5))(d0, d1)
    np.testing.assert_array_equal(m.matches0, [-1, 1])
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=None, distance_threshold=0.52))(d0, d1)
    np.testing.assert_array_equal(m.matches0, [0, 1])


def test_random_descriptors_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    d0 = rng.normal(size=(60, 16)).astype(np.float32)
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    # image 1: noisy copies of 40 of them, shuffled, plus 30 distractors
    perm = rng.permutation(60)[:40]
    noisy = d0[perm] + rng.normal(scale=0.05, size=(40, 16)).astype(np.float32)
    d1 = np.concatenate([noisy, rng.normal(size=(30, 16)).astype(np.float32)])
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    order = rng.permutation(70)
    d1 = d1[order]
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=0.8))(d0, d1)
    expected = np.full(60, -1)
    expected[perm] = np.argsort(order)[:40]
    # every match made is a true one, and nearly all true ones are made
    made = m.matches0 >= 0
    np.testing.assert_array_equal(m.matches0[made], expected[made])
    assert made.sum() >= 38
    # torch input gives the same result
    m2 = NearestNeighborMatcher(NNConfig(ratio_threshold=0.8))(torch.from_numpy(d0), torch.from_numpy(d1))
    np.testing.assert_array_equal(m2.matches0, m.matches0)


def test_pairs_of_matches() -> None:
    m = Matches(np.array([-1, 3, -1, 0, 2]), np.array([0, 0.9, 0, 0.8, 0.7], np.float32))
    np.testing.assert_array_equal(m.pairs(), [[1, 3], [3, 0], [4, 2]])
    assert len(m) == 3
    empty = Matches(np.full(3, -1), np.zeros(3, np.float32))
    assert empty.pairs().shape == (0, 2) and len(empty) == 0


@pytest.mark.parametrize(("n0", "n1"), [(0, 5), (5, 0), (0, 0), (3, 1)])
def test_empty_or_too_small_inputs(n0: int, n1: int) -> None:
    rng = np.random.default_rng(1)
    d0 = rng.normal(size=(n0, 8)).astype(np.float32)
    d1 = rng.normal(size=(n1, 8)).astype(np.float32)
    # with the ratio test on, a single candidate cannot be tested: no match
    m = NearestNeighborMatcher()(d0, d1)
    assert m.matches0.shape == (n0,) and (m.matches0 == -1).all()
    assert m.scores0.shape == (n0,) and (m.scores0 == 0).all()
    assert m.pairs().shape == (0, 2)


def test_single_candidate_without_ratio_test() -> None:
    d0 = _unit(_angle(0), _angle(30))
    d1 = _unit(_angle(5))
    m = NearestNeighborMatcher(NNConfig(ratio_threshold=None))(d0, d1)
    np.testing.assert_array_equal(m.matches0, [0, -1])  # mutual keeps only the closer one


def test_registry() -> None:
    assert "nn" in matchers.names()
    m = matchers.create("nn", ratio_threshold=0.5)
    assert isinstance(m, NearestNeighborMatcher) and m.config.ratio_threshold == 0.5
    with pytest.raises(ConfigError, match="ratio_treshold"):
        matchers.create("nn", ratio_treshold=0.5)
