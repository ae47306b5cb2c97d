"""Verification scores: hand-computed S, RANSAC inliers against planted outliers, S_F's monotonicity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from visloc.errors import ConfigError
from visloc.geometry.backends import RansacConfig, estimate_two_view_model
from visloc.verification import (
    PAPER_BETA,
    VerificationConfig,
    consistency_score,
    fused_score,
    verify_matches,
)


def test_consistency_score_by_hand() -> None:
    assert consistency_score(0, 10) == 0.0
    assert consistency_score(57600, 57600) == pytest.approx(math.exp(-1))
    assert consistency_score(30, 60, beta=30.0) == pytest.approx(0.5 * math.exp(-1))
    assert consistency_score(5, 5, beta=0.0) == 1.0
    # more consistent matches at the same ratio score higher (the exp term), a lower ratio scores lower
    assert consistency_score(40, 80, 30.0) > consistency_score(20, 40, 30.0) > consistency_score(20, 80, 30.0)
    with pytest.raises(ValueError):
        consistency_score(5, 4)
    assert PAPER_BETA == 57600.0


def _homography_matches(n: int, outliers: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    H = np.array([[1.05, 0.04, 6.0], [-0.03, 0.97, -4.0], [2e-4, 1e-4, 1.0]])
    p0 = rng.uniform(0, 240, (n, 2))
    q = np.c_[p0, np.ones(n)] @ H.T
    p1 = q[:, :2] / q[:, 2:]
    bad = rng.choice(n, outliers, replace=False)
    p1[bad] += rng.uniform(25, 60, (outliers, 2)) * rng.choice([-1, 1], (outliers, 2))
    truth = np.ones(n, bool)
    truth[bad] = False
    return p0, p1, truth


@pytest.mark.parametrize("model", ["homography", "fundamental"])
def test_ransac_finds_the_planted_inliers(model: str) -> None:
    p0, p1, truth = _homography_matches(300, 90)
    fit = estimate_two_view_model(p0, p1, model, RansacConfig(max_error_px=1.0))
    assert fit is not None and fit.matrix.shape == (3, 3)
    # every true match is an inlier; a fundamental matrix also accepts outliers that happen to lie near
    # their epipolar line, a homography none of these (all moved >= 25 px)
    assert fit.inliers[truth].all()
    if model == "homography":
        np.testing.assert_array_equal(fit.inliers, truth)
    else:
        assert fit.inliers[~truth].mean() < 0.2
    assert estimate_two_view_model(p0[:3], p1[:3], model) is None
    with pytest.raises(ValueError):
        estimate_two_view_model(p0, p1, "affine")


def test_verify_matches_counts_inliers_and_consistent_inliers() -> None:
    p0, p1, truth = _homography_matches(200, 50, seed=1)
    cyclic = np.ones(200, bool)
    cyclic[::4] = False  # a quarter fails the round trip
    config = VerificationConfig(model="homography", ransac=RansacConfig(max_error_px=1.0), beta=20.0)
    v = verify_matches(p0, p1, cyclic, config)
    np.testing.assert_array_equal(v.inliers, truth)
    np.testing.assert_array_equal(v.consistent, truth & cyclic)
    assert v.num_matches == 200
    assert v.score == pytest.approx(v.num_consistent / v.num_inliers * math.exp(-20.0 / v.num_consistent))
    # no consistency given: C = I
    assert verify_matches(p0, p1, None, config).num_consistent == int(truth.sum())
    # too few matches: no model, S = 0
    empty = verify_matches(p0[:2], p1[:2], None, config)
    assert empty.num_inliers == 0 and empty.score == 0.0
    with pytest.raises(ValueError):
        verify_matches(p0, p1[:5], None, config)
    with pytest.raises(ConfigError):
        VerificationConfig(model="affine")


def test_fused_score_monotonicity_paper_versus_monotone() -> None:
    g = np.linspace(0.0, 1.5, 7)
    s_l, s = 0.7, 0.3
    monotone = [fused_score(s_l, s, x) for x in g]
    paper = [fused_score(s_l, s, x, "paper") for x in g]
    assert all(a > b for a, b in itertools.pairwise(monotone))  # decreasing in G
    assert all(a < b for a, b in itertools.pairwise(paper))  # as printed: increasing in G
    for fusion in ("paper", "monotone"):  # both increase with S_L * S
        assert fused_score(0.9, s, 0.5, fusion) > fused_score(0.5, s, 0.5, fusion)
    assert fused_score(0.7, 0.3, 0.5) == pytest.approx(math.log10(0.21) * 10 ** 0.5)
    assert fused_score(0.7, 0.3, 0.5, "paper") == pytest.approx(math.log10(0.21) * 10 ** -0.5)
    assert fused_score(0.0, 0.3, 0.5) == -math.inf
    with pytest.raises(ConfigError):
        fused_score(0.5, 0.5, 0.5, "other")


def test_subsampled_ransac_classifies_every_match() -> None:
    """With more matches than max_ransac_points, I is every match within the threshold of the fitted model."""
    from visloc.geometry.backends import two_view_errors

    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.1, 12.0], [-0.05, 1.05, -3.0], [1e-4, 0.0, 1.0]])
    p0 = rng.uniform(0, 400, (5000, 2))
    q = np.c_[p0, np.ones(len(p0))] @ H.T
    p1 = q[:, :2] / q[:, 2:]
    bad = rng.uniform(size=len(p0)) < 0.3
    p1[bad] += rng.uniform(20, 60, (bad.sum(), 2))
    config = VerificationConfig(model="homography", max_ransac_points=256)
    v = verify_matches(p0, p1, None, config)
    np.testing.assert_array_equal(v.inliers, ~bad)
    with pytest.raises(Exception, match="max_ransac_points"):
        VerificationConfig(max_ransac_points=5)
    assert two_view_errors(H, "homography", p0[:3], p1[:3]).shape == (3,)
