"""Ray fusion on hand-built configurations: ``fuse_rays`` (exhaustive pairwise consensus, the skeleton of
``filter_pose.m``) and ``fuse_rays_ransac``; ``fuse_original`` has its own file."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose, pose_error
from visloc.geometry.rotation import rotation_angle_deg
from visloc.geometry.rotation_averaging import l1_rotation_average
from visloc.localization.fusion import (
    MetricFusionConfig,
    PoseConsensusConfig,
    RansacRayFusionConfig,
    RayFusionConfig,
    consensus_of_poses,
    fuse_metric,
    fuse_rays,
    fuse_rays_ransac,
    triangulate_rays,
)

# --- triangulate_rays ------------------------------------------------------------------------------


def test_midpoint_of_two_skew_lines_by_hand() -> None:
    # line 1: the x axis; line 2: parallel to y through (0, 0, 2). Common perpendicular: the z axis
    # from (0,0,0) to (0,0,2), so the least-squares point is its midpoint (0, 0, 1).
    X = triangulate_rays(np.array([[-3.0, 0.0, 0.0], [0.0, 5.0, 2.0]]), np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]]))
    np.testing.assert_allclose(X, [0.0, 0.0, 1.0], atol=1e-12)


def test_midpoint_general_skew_lines() -> None:
    # line 1 through (1, 0, 0) along (0, 1, 1); line 2 through (0, 0, 0) along (1, 0, 0).
    # Closest points: on line 2, (1, 0, 0); on line 1, (1, 0, 0) + s (0, 1, 1) with s minimising
    # |(0, s, s)|: s = 0 -> lines intersect at (1, 0, 0). Shift line 1 by (0, 0, 4): closest points are
    # (1, -2, 2) on line 1 (s = -2) and (1, 0, 0) on line 2; the midpoint is (1, -1, 1).
    X = triangulate_rays(np.array([[1.0, 0.0, 4.0], [0.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(X, [1.0, -1.0, 1.0], atol=1e-12)


def test_triangulate_rays_is_sign_and_length_agnostic() -> None:
    C = np.array([[-3.0, 0.0, 0.0], [0.0, 5.0, 2.0]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, -2.0, 0.0]])
    ref = triangulate_rays(C, d)
    for signs in ([1, -1], [-1, 1], [-1, -1]):
        np.testing.assert_allclose(triangulate_rays(C, d * np.array(signs)[:, None] * 7.0), ref, atol=1e-12)


def test_many_rays_through_one_point() -> None:
    rng = np.random.default_rng(0)
    X = np.array([0.5, -1.0, 2.0])
    C = rng.normal(size=(6, 3)) * 3
    np.testing.assert_allclose(triangulate_rays(C, X - C), X, atol=1e-10)


@pytest.mark.parametrize("flip", [1.0, -1.0])
def test_parallel_rays_give_none(flip: float) -> None:
    C = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    d = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, flip]])
    assert triangulate_rays(C, d) is None
    # nearly parallel: None only below the parallax limit
    tilted = np.array([[0.0, 0.0, 1.0], [np.tan(np.radians(1.0)), 0.0, 1.0]])
    assert triangulate_rays(C, tilted, min_parallax_deg=2.0) is None
    assert triangulate_rays(C, tilted, min_parallax_deg=0.5) is not None


# --- fuse_rays -----------------------------------------------------------------------------------

QUERY = Pose.from_world_from_cam(Rotation.from_euler("xyz", [5.0, 40.0, -3.0], degrees=True).as_matrix(),
                                 np.array([0.4, -0.2, 1.5]))
DB_CENTERS = np.array([[0.0, 0.0, 0.0], [1.5, 0.2, 0.1], [-1.0, 0.5, 0.3], [0.5, -1.0, 3.0], [2.0, 1.0, 2.5]])


def _exact_evidence():
    d = QUERY.center - DB_CENTERS
    R = np.repeat(QUERY.R[None], len(DB_CENTERS), axis=0)
    return DB_CENTERS.copy(), d, R


def test_exact_rays_and_rotations_give_exact_pose() -> None:
    C, d, R = _exact_evidence()
    fused = fuse_rays(C, d, R)
    assert fused.pose is not None
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 1e-9 and dr < 1e-6
    np.testing.assert_allclose(fused.pose.matrix, QUERY.matrix, atol=1e-9)
    assert fused.position_support.all() and fused.rotation_support.all()
    assert fused.num_support == 5


def test_direction_length_and_sign_do_not_matter_by_default() -> None:
    C, d, R = _exact_evidence()
    d = d * np.array([1.0, -1.0, 3.0, -0.2, 10.0])[:, None]
    fused = fuse_rays(C, d, R)
    assert pose_error(fused.pose, QUERY)[0] < 1e-9
    assert fused.position_support.all()


def test_sign_aware_mode_rejects_flipped_rays_from_support() -> None:
    C, d, R = _exact_evidence()
    d[1] *= -1.0  # a ray pointing away from the query: consistent as a line, not as a ray
    assert fuse_rays(C, d, R).position_support.all()
    fused = fuse_rays(C, d, R, RayFusionConfig(sign_agnostic=False))
    assert pose_error(fused.pose, QUERY)[0] < 1e-9
    np.testing.assert_array_equal(fused.position_support, [True, False, True, True, True])


@pytest.mark.parametrize("bad", [[3], [1, 4]])
def test_outlier_rays_and_rotations_are_rejected(bad: list[int]) -> None:
    rng = np.random.default_rng(1)
    C, d, R = _exact_evidence()
    # small noise on the good evidence: 1 degree on rays and rotations
    for i in range(len(C)):
        d[i] = Rotation.from_rotvec(rng.normal(scale=np.radians(0.5), size=3)).apply(d[i])
        R[i] = Rotation.from_rotvec(rng.normal(scale=np.radians(0.5), size=3)).as_matrix() @ R[i]
    for i in bad:
        # outlier rays point 60 degrees away; outlier rotations are 90 degrees off
        axis = np.cross(d[i], [0.0, 0.0, 1.0] if abs(d[i][2]) < 0.9 * np.linalg.norm(d[i]) else [1.0, 0.0, 0.0])
        d[i] = Rotation.from_rotvec(np.radians(60.0) * axis / np.linalg.norm(axis)).apply(d[i])
        R[i] = Rotation.from_rotvec(np.radians(90.0) * np.array([0.0, 1.0, 0.0])).as_matrix() @ R[i]
    fused = fuse_rays(C, d, R)
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 0.1 and dr < 1.5
    good = np.ones(len(C), dtype=bool)
    good[bad] = False
    np.testing.assert_array_equal(fused.position_support, good)
    np.testing.assert_array_equal(fused.rotation_support, good)
    # without rejection (plain averages) the same evidence would be far off
    assert rotation_angle_deg(Rotation.from_matrix(R).mean().as_matrix() @ QUERY.R.T) > 10.0


def test_all_rays_parallel_gives_no_pose() -> None:
    C = DB_CENTERS.copy()
    d = np.tile([0.0, 0.3, 1.0], (len(C), 1))
    R = np.repeat(QUERY.R[None], len(C), axis=0)
    fused = fuse_rays(C, d, R)
    assert fused.pose is None
    assert not fused.position_support.any() and not fused.rotation_support.any()
    assert fused.position_support.shape == (len(C),)
    # the original code falls back to the first database centre
    fallback = fuse_rays(C, d, R, RayFusionConfig(fallback_to_first=True))
    np.testing.assert_allclose(fallback.pose.center, C[0], atol=1e-12)
    assert rotation_angle_deg(fallback.pose.R @ QUERY.R.T) < 1e-6
    np.testing.assert_array_equal(fallback.position_support, [True, False, False, False, False])


def test_single_ray_needs_the_fallback() -> None:
    C, d, R = _exact_evidence()
    assert fuse_rays(C[:1], d[:1], R[:1]).pose is None
    fused = fuse_rays(C[:1], d[:1], R[:1], RayFusionConfig(fallback_to_first=True))
    np.testing.assert_allclose(fused.pose.center, C[0])
    np.testing.assert_allclose(fused.pose.R, R[0])


def test_tied_hypotheses_are_averaged() -> None:
    # Rays 0 and 1 meet at A = (0,0,0), rays 2 and 3 at B = (1,1,2). Pairs (0,2) and (1,3) are parallel
    # (no hypothesis); the cross pairs (0,3) and (1,2) give midpoints (1,0,1) and (0,1,1), which no ray
    # sees within 10 degrees (>= 26 degrees). A and B each have exactly their own two rays (the other
    # pair sees them at >= 48 degrees), so the tie is averaged: (0.5, 0.5, 1).
    C = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    d = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    R = np.repeat(np.eye(3)[None], 4, axis=0)
    fused = fuse_rays(C, d, R)
    np.testing.assert_allclose(fused.pose.center, [0.5, 0.5, 1.0], atol=1e-12)
    assert fused.position_support.all()  # union of the tied hypotheses' supports
    # break the tie with a fifth ray through B: B alone wins
    C5 = np.vstack([C, [1.0, 1.0, 5.0]])
    d5 = np.vstack([d, [0.0, 0.0, -1.0]])
    fused = fuse_rays(C5, d5, np.repeat(np.eye(3)[None], 5, axis=0))
    np.testing.assert_allclose(fused.pose.center, [1.0, 1.0, 2.0], atol=1e-12)
    np.testing.assert_array_equal(fused.position_support, [False, False, True, True, True])


def test_tied_rotation_groups_are_l1_averaged() -> None:
    # two groups of two agreeing rotations, 60 degrees apart: both tie (one vote each)
    Rz = lambda deg: Rotation.from_rotvec(np.radians(deg) * np.array([0.0, 0.0, 1.0])).as_matrix()  # noqa: E731
    R = np.stack([Rz(0.0), Rz(2.0), Rz(60.0), Rz(62.0)])
    C, d, _ = _exact_evidence()
    fused = fuse_rays(C[:4], d[:4], R)
    assert fused.rotation_support.all()
    # the geodesic L1 mean of {0, 2, 60, 62} degrees about z lies on the axis between 2 and 60
    # (every angle in that interval has the same L1 cost); it must not be one of the two groups
    angle = np.degrees(Rotation.from_matrix(fused.pose.R).as_rotvec())
    np.testing.assert_allclose(angle[:2], 0.0, atol=1e-6)
    assert 2.0 - 1e-6 <= angle[2] <= 60.0 + 1e-6
    # a unique winner is taken as it is (the original: "else the single best")
    R3 = np.stack([Rz(0.0), Rz(5.0), Rz(10.0), Rz(90.0)])  # votes 2, 2, 2, 0 with 20-degree agreement...
    fused = fuse_rays(C[:4], d[:4], R3, RayFusionConfig(rotation_angle_deg=7.0))  # ...but 1, 2, 1, 0 with 7
    np.testing.assert_allclose(fused.pose.R, Rz(5.0), atol=1e-12)
    np.testing.assert_array_equal(fused.rotation_support, [True, True, True, False])


# --- consensus_of_poses ----------------------------------------------------------------------------


def _near(pose: Pose, dc: float, deg: float) -> Pose:
    R = Rotation.from_rotvec(np.radians(deg) * np.array([1.0, 0.0, 0.0])).as_matrix() @ pose.R
    return Pose.from_world_from_cam(R.T, pose.center + np.array([dc, 0.0, 0.0]))


def test_consensus_picks_the_largest_agreeing_group() -> None:
    a = QUERY
    b = Pose.from_world_from_cam(np.eye(3), np.array([5.0, 5.0, 5.0]))
    poses = [_near(a, 0.0, 0.0), _near(b, 0.0, 0.0), _near(a, 0.1, 1.0), _near(b, 0.05, 2.0), _near(a, -0.1, 2.0)]
    np.testing.assert_array_equal(consensus_of_poses(poses), [True, False, True, False, True])
    # weights (e.g. inlier counts) can make the smaller group win
    np.testing.assert_array_equal(consensus_of_poses(poses, weights=np.array([1, 50, 1, 50, 1])),
                                  [False, True, False, True, False])


def test_consensus_requires_both_position_and_rotation() -> None:
    a = QUERY
    poses = [a, _near(a, 0.1, 0.0), _near(a, 0.0, 10.0), _near(a, 0.5, 0.0)]
    # 10 degrees off or 0.5 m off is not agreement at the default thresholds (0.25 m, 5 degrees)
    np.testing.assert_array_equal(consensus_of_poses(poses), [True, True, False, False])
    loose = PoseConsensusConfig(position_threshold=1.0, rotation_threshold_deg=20.0)
    np.testing.assert_array_equal(consensus_of_poses(poses, config=loose), [True, True, True, True])


def test_consensus_of_nothing() -> None:
    assert consensus_of_poses([]).shape == (0,)
    np.testing.assert_array_equal(consensus_of_poses([QUERY]), [True])


# --- fuse_rays_ransac ----------------------------------------------------------------------------------

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


# --- fuse_metric ----------------------------------------------------------------------------------------


def _metric_case(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = Pose.from_world_from_cam(Rotation.random(random_state=seed).as_matrix(), rng.normal(size=3))
    centers = truth.center + rng.normal(scale=0.5, size=(n, 3))
    offsets = truth.center - centers
    rotations = np.repeat(truth.R[None], n, axis=0)
    return truth, centers, offsets, rotations


def test_fuse_metric_exact_hypotheses_give_the_pose() -> None:
    truth, centers, offsets, rotations = _metric_case(5)
    fused = fuse_metric(centers, offsets, rotations)
    dt, dR = pose_error(fused.pose, truth)
    assert dt < 1e-9 and dR < 1e-6 and fused.position_support.all() and fused.rotation_support.all()


def test_fuse_metric_rejects_outliers_and_averages_the_consensus() -> None:
    truth, centers, offsets, rotations = _metric_case(6, seed=1)
    noise = np.array([[0.05, 0, 0], [-0.05, 0, 0], [0, 0.04, 0], [0, -0.04, 0], [0, 0, 0], [0, 0, 0]])
    offsets = offsets + noise
    offsets[4] += [2.0, 0, 0]  # a wrong centre
    offsets[5] += [0, -3.0, 1.0]  # another one, far from the first
    rotations = rotations.copy()
    rotations[5] = Rotation.from_rotvec([0, 0, np.radians(60)]).as_matrix() @ rotations[5]  # a wrong rotation
    fused = fuse_metric(centers, offsets, rotations)
    assert fused.position_support.tolist() == [True, True, True, True, False, False]
    # the mean of the four inliers: their noise cancels exactly
    assert np.allclose(fused.pose.center, truth.center, atol=1e-12)
    assert fused.rotation_support.tolist() == [True] * 5 + [False]
    assert pose_error(fused.pose, truth)[1] < 1e-6


def test_fuse_metric_tie_prefers_the_tighter_group_and_handles_one_image() -> None:
    centers = np.zeros((4, 3))
    offsets = np.array([[0, 0, 0], [0.2, 0, 0], [5, 0, 0], [5.01, 0, 0]], dtype=float)
    rotations = np.repeat(np.eye(3)[None], 4, axis=0)
    fused = fuse_metric(centers, offsets, rotations, MetricFusionConfig(position_threshold=0.25))
    assert fused.position_support.tolist() == [False, False, True, True]
    assert np.allclose(fused.pose.center, [5.005, 0, 0])
    one = fuse_metric(centers[:1], offsets[:1] + 1.0, rotations[:1])
    assert np.allclose(one.pose.center, [1, 1, 1])
    assert fuse_metric(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3, 3))).pose is None
    with pytest.raises(ValueError, match="finite"):
        fuse_metric(centers, offsets * np.nan, rotations)
