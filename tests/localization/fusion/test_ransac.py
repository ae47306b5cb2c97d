"""``fuse_rays_ransac`` on hand-built rays: exact, with outliers, by seed, degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose, pose_error
from visloc.geometry.rotation import rotation_angle_deg
from visloc.geometry.rotation_averaging import l1_rotation_average
from visloc.localization.fusion import RansacRayFusionConfig, fuse_rays, fuse_rays_ransac, triangulate_rays

QUERY = Pose.from_world_from_cam(Rotation.from_euler("xyz", [5.0, 40.0, -3.0], degrees=True).as_matrix(),
                                 np.array([0.4, -0.2, 1.5]))
DB_CENTERS = np.array([[0.0, 0.0, 0.0], [1.5, 0.2, 0.1], [-1.0, 0.5, 0.3], [0.5, -1.0, 3.0], [2.0, 1.0, 2.5]])


def _exact_evidence():
    d = QUERY.center - DB_CENTERS
    R = np.repeat(QUERY.R[None], len(DB_CENTERS), axis=0)
    return DB_CENTERS.copy(), d, R


QUERY_R = np.repeat(QUERY.R[None], 12, axis=0)


def _twelve_rays() -> np.ndarray:
    """12 database centres around the query, 1.5-4 m away in well-spread directions."""
    rng = np.random.default_rng(7)
    u = rng.normal(size=(12, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return QUERY.center - u * rng.uniform(1.5, 4.0, size=(12, 1))


def _turn(v: np.ndarray, deg: float, rng: np.random.Generator) -> np.ndarray:
    """``v`` turned by exactly ``deg`` about a random axis perpendicular to it."""
    axis = np.cross(v, rng.normal(size=3))
    return Rotation.from_rotvec(np.radians(deg) * axis / np.linalg.norm(axis)).apply(v)


@pytest.mark.parametrize("n", [5, 12])  # all pairs (n <= 8) and random sampling
def test_ransac_exact_rays_give_the_exact_pose(n: int) -> None:
    C = _twelve_rays()[:n]
    fused = fuse_rays_ransac(C, (QUERY.center - C) * 3.0, QUERY_R[:n])
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 1e-9 and dr < 1e-6
    assert fused.position_support.all() and fused.rotation_support.all()
    assert not fused.fallback


def test_ransac_enumerates_all_pairs_for_small_n_whatever_the_seed() -> None:
    C, d, R = _exact_evidence()
    a = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(seed=1))
    b = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(seed=2))
    expected = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    np.testing.assert_array_equal(a.hypothesis_pairs, expected)
    np.testing.assert_array_equal(b.hypothesis_pairs, expected)
    assert a.position_chosen.sum() == 1
    # without the residual tie-break the first of the equally good samples wins
    first = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(residual_tie_break=False))
    np.testing.assert_array_equal(first.position_chosen, [True] + [False] * 9)


def test_ransac_with_40_percent_outliers() -> None:
    rng = np.random.default_rng(3)
    C = _twelve_rays()
    d = QUERY.center - C
    R = QUERY_R.copy()
    bad = np.array([1, 4, 6, 9, 11])  # 5 of 12
    for i in range(12):
        if i in bad:  # rays 30-90 degrees off, rotations 40-120 degrees off
            d[i] = _turn(d[i], rng.uniform(30.0, 90.0), rng)
            R[i] = Rotation.from_rotvec(_turn(np.array([0.0, 0.0, 1.0]), 90.0, rng) * np.radians(
                rng.uniform(40.0, 120.0))).as_matrix() @ R[i]
        else:  # 1 degree of noise on the good ones
            d[i] = _turn(d[i], 1.0, rng)
            R[i] = Rotation.from_rotvec(rng.normal(size=3) * np.radians(0.5)).as_matrix() @ R[i]
    good = np.ones(12, dtype=bool)
    good[bad] = False
    fused = fuse_rays_ransac(C, d, R)
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 0.05 and dr < 1.0
    np.testing.assert_array_equal(fused.position_support, good)
    np.testing.assert_array_equal(fused.rotation_support, good)
    # the centre is the least-squares point of all inlier rays, the rotation their L1 mean
    np.testing.assert_allclose(fused.pose.center, triangulate_rays(C[good], d[good]), atol=1e-12)
    np.testing.assert_allclose(fused.pose.R, l1_rotation_average(R[good]), atol=1e-12)
    # random sampling stopped early at the 0.999 confidence bound (7 of 12: 19 samples)
    assert len(fused.hypothesis_pairs) == 19
    # and it is much better than the average of everything
    assert np.linalg.norm(triangulate_rays(C, d) - QUERY.center) > 0.2


def test_ransac_is_deterministic_by_seed() -> None:
    rng = np.random.default_rng(5)
    C = _twelve_rays()
    d = QUERY.center - C
    for i in (0, 3, 8):
        d[i] = _turn(d[i], 45.0, rng)
    a = fuse_rays_ransac(C, d, QUERY_R, RansacRayFusionConfig(seed=11))
    b = fuse_rays_ransac(C, d, QUERY_R, RansacRayFusionConfig(seed=11))
    c = fuse_rays_ransac(C, d, QUERY_R, RansacRayFusionConfig(seed=12))
    np.testing.assert_array_equal(a.hypothesis_pairs, b.hypothesis_pairs)
    np.testing.assert_array_equal(a.pose.matrix, b.pose.matrix)
    assert not np.array_equal(a.hypothesis_pairs[:3], c.hypothesis_pairs[:3])  # other samples ...
    np.testing.assert_array_equal(a.position_support, c.position_support)  # ... same answer
    assert pose_error(a.pose, QUERY)[0] < 1e-9 and pose_error(c.pose, QUERY)[0] < 1e-9


def test_ransac_beats_the_tie_averaging_consensus() -> None:
    # 7 rays meet at X = 0, 5 at Y = (1.5, 0, 0). Y lies on ray 0's line and ray 1 (from (6, 0.6, 0))
    # sees it 1.9 degrees off its line, so X and Y both have 7 inliers. The exhaustive consensus
    # averages the tied hypotheses (X from the 21 good pairs, Y or points near it from 16 others) and lands
    # 0.73 m off; RANSAC breaks the tie by the truncated residual sum (X: 5 x 10 degrees, Y: 5 x 10 +
    # 1.9) and re-estimates X from its 7 rays.
    X, Y = np.zeros(3), np.array([1.5, 0.0, 0.0])
    C_in = np.array([[-2.0, 0, 0], [6.0, 0.6, 0], [0, 2, 0], [0, -2, 0], [0, 0, 2], [0, 0, -2], [0, 1.4, 1.4]])
    C_out = Y + np.array([[0, 2, 0], [0, -2, 0], [0, 0, 2], [0, 0, -2], [0, -1.4, -1.4]])
    C = np.vstack([C_in, C_out])
    d = np.vstack([X - C_in, Y - C_out])
    R = np.repeat(np.eye(3)[None], 12, axis=0)
    exhaustive = fuse_rays(C, d, R)
    assert np.linalg.norm(exhaustive.pose.center - X) > 0.5
    assert exhaustive.position_support.all()
    for seed in range(5):
        fused = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(seed=seed))
        np.testing.assert_allclose(fused.pose.center, X, atol=1e-12)
        np.testing.assert_array_equal(fused.position_support, [True] * 7 + [False] * 5)


def test_ransac_signed_rays() -> None:
    C, d, R = _exact_evidence()
    d[1] *= -1.0
    assert fuse_rays_ransac(C, d, R).position_support.all()
    fused = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(sign_agnostic=False))
    assert pose_error(fused.pose, QUERY)[0] < 1e-9
    np.testing.assert_array_equal(fused.position_support, [True, False, True, True, True])


def test_ransac_parallel_rays_fail_or_fall_back() -> None:
    C = DB_CENTERS.copy()
    d = np.tile([0.0, 0.3, 1.0], (5, 1))
    R = np.repeat(QUERY.R[None], 5, axis=0)
    fused = fuse_rays_ransac(C, d, R)
    assert fused.pose is None and not fused.position_support.any() and not fused.rotation_support.any()
    assert np.isnan(fused.hypotheses).all()
    fallback = fuse_rays_ransac(C, d, R, RansacRayFusionConfig(fallback_to_first=True))
    assert fallback.fallback
    np.testing.assert_allclose(fallback.pose.center, C[0], atol=1e-12)
    np.testing.assert_array_equal(fallback.position_support, [True, False, False, False, False])
    assert rotation_angle_deg(fallback.pose.R @ QUERY.R.T) < 1e-6


def test_ransac_two_rays_one_ray_and_min_support() -> None:
    C, d, R = _exact_evidence()
    assert pose_error(fuse_rays_ransac(C[:2], d[:2], R[:2]).pose, QUERY)[0] < 1e-9
    assert fuse_rays_ransac(C[:1], d[:1], R[:1]).pose is None
    one = fuse_rays_ransac(C[:1], d[:1], R[:1], RansacRayFusionConfig(fallback_to_first=True))
    np.testing.assert_allclose(one.pose.center, C[0])
    np.testing.assert_allclose(one.pose.R, R[0], atol=1e-12)
    # two exact rays are 2 inliers: not enough when 3 are required
    assert fuse_rays_ransac(C[:2], d[:2], R[:2], RansacRayFusionConfig(min_support=3)).pose is None
    # a zero direction is never sampled and never an inlier
    d0 = d.copy()
    d0[2] = 0.0
    fused = fuse_rays_ransac(C, d0, R)
    assert 2 not in fused.hypothesis_pairs
    np.testing.assert_array_equal(fused.position_support, [True, True, False, True, True])


def test_ransac_rotation_is_the_l1_mean_of_the_best_cluster() -> None:
    # about z: 0, 4, 9 and 15 degrees agree with each other at 20 degrees, 70 and 75 only with each other
    Rz = lambda deg: Rotation.from_rotvec(np.radians(deg) * np.array([0.0, 0.0, 1.0])).as_matrix()  # noqa: E731
    R = np.stack([Rz(a) for a in (70.0, 0.0, 4.0, 75.0, 9.0, 15.0)])
    C = _twelve_rays()[:6]
    fused = fuse_rays_ransac(C, QUERY.center - C, R)
    np.testing.assert_array_equal(fused.rotation_support, [False, True, True, False, True, True])
    np.testing.assert_array_equal(fused.rotation_votes, [1, 3, 3, 1, 3, 3])
    # L1 mean of {0, 4, 9, 15} about one axis: any angle in [4, 9]
    angle = np.degrees(Rotation.from_matrix(fused.pose.R).as_rotvec())
    np.testing.assert_allclose(angle[:2], 0.0, atol=1e-9)
    assert 4.0 - 1e-6 <= angle[2] <= 9.0 + 1e-6


def test_ransac_config_is_validated() -> None:
    with pytest.raises(ValueError, match="confidence"):
        RansacRayFusionConfig(confidence=1.0)
    with pytest.raises(ValueError, match="positive"):
        RansacRayFusionConfig(ray_angle_deg=0.0)
    with pytest.raises(ValueError, match="min_support"):
        RansacRayFusionConfig(min_support=0)
