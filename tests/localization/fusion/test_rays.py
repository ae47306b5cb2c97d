"""``fuse_rays`` (exhaustive pairwise consensus, the skeleton of ``filter_pose.m``) on hand-built rays."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose, pose_error
from visloc.geometry.rotation import rotation_angle_deg
from visloc.localization.fusion import RayFusionConfig, fuse_rays

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
