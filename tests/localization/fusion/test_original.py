"""``fuse_original``: ``filter_pose.m`` of Laskar et al. (ICCVW 2017) step by step, on constructed evidence.

Inputs follow the MATLAB: database centres and camera-to-world rotations ``R_i``, regressed relative
rotations ``R_i^-1 R_q`` (w-first quaternions of any length) and world-frame translations ``C_q - C_i``
(any length). The truth of every case is built by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose, pose_error
from visloc.geometry.rotation import matrix_to_quat, rotation_angle_deg
from visloc.localization.fusion import (
    RayFusionConfig,
    fuse_original,
    fuse_rays,
    hypotheses_from_relative_poses,
)

QUERY = Pose.from_world_from_cam(Rotation.from_euler("xyz", [5.0, 40.0, -3.0], degrees=True).as_matrix(),
                                 np.array([0.4, -0.2, 1.5]))
X = QUERY.center
R_Q = QUERY.R.T  # camera-to-world, as in filter_pose.m
DB_CENTERS = np.array([[0.0, 0.0, 0.0], [1.5, 0.2, 0.1], [-1.0, 0.5, 0.3], [0.5, -1.0, 3.0], [2.0, 1.0, 2.5]])
DB_ROTATIONS = Rotation.random(5, random_state=3).as_matrix()  # camera-to-world
# a camera-to-world rotation whose optical axis (third column) is (1, 1, 1) / sqrt(3): no world axis is
# perpendicular to it, so axis-aligned rays keep a non-zero camera z
TILTED = Rotation.align_vectors([[1.0, 1.0, 1.0]], [[0.0, 0.0, 1.0]])[0].as_matrix()


def Rz(deg: float) -> np.ndarray:
    return Rotation.from_rotvec(np.radians(deg) * np.array([0.0, 0.0, 1.0])).as_matrix()


def _relative(R_db: np.ndarray, R_q_wc: np.ndarray) -> np.ndarray:
    """Exact relative rotations ``R_i^-1 R_q`` for camera-to-world ``R_q`` (one or one per image)."""
    return np.swapaxes(R_db, -1, -2) @ R_q_wc


def _exact(n: int = 5):
    C = DB_CENTERS[:n].copy()
    R_db = DB_ROTATIONS[:n].copy()
    return C, R_db, _relative(R_db, R_Q), X - C


# --- exact evidence ----------------------------------------------------------------------------------


def test_exact_evidence_gives_the_exact_pose() -> None:
    C, R_db, R_rel, t = _exact()
    # network-like inputs: unnormalised w-first quaternions (either sign), translations of any length
    q_rel = matrix_to_quat(R_rel) * np.array([3.0, -0.5, 1.0, 2.0, -7.0])[:, None]
    t = t * np.array([2.7, 0.1, 1.0, 5.0, 0.3])[:, None]
    fused = fuse_original(C, matrix_to_quat(R_db), q_rel, t)
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 1e-12 and dr < 1e-6
    # all ten pairs, in the MATLAB's order (1,2), (1,3), (2,3), (1,4), ..., each through X with all five rays
    np.testing.assert_array_equal(
        fused.hypothesis_pairs, [[0, 1], [0, 2], [1, 2], [0, 3], [1, 3], [2, 3], [0, 4], [1, 4], [2, 4], [3, 4]]
    )
    np.testing.assert_allclose(fused.hypotheses, np.tile(X, (10, 1)), atol=1e-12)
    np.testing.assert_array_equal(fused.hypothesis_scores, 5)
    assert fused.position_chosen.all() and fused.position_support.all() and fused.rotation_support.all()
    np.testing.assert_array_equal(fused.rotation_votes, 4)
    assert not fused.fallback


def test_hypotheses_from_relative_poses_compose_camera_to_world() -> None:
    _, R_db, R_rel, t = _exact()
    d, R_wc = hypotheses_from_relative_poses(R_db, R_rel, 3.0 * t)
    np.testing.assert_allclose(R_wc, np.repeat(R_Q[None], 5, axis=0), atol=1e-12)
    np.testing.assert_allclose(d, t / np.linalg.norm(t, axis=1, keepdims=True), atol=1e-15)


@pytest.mark.parametrize("bad", [[3], [1, 4]])
def test_outliers_are_outvoted_and_left_out_of_the_support(bad: list[int]) -> None:
    rng = np.random.default_rng(1)
    C, R_db, R_rel, t = _exact()
    R_wc = R_db @ R_rel
    for i in range(5):  # about 0.5 degree of noise on every ray and rotation
        t[i] = Rotation.from_rotvec(rng.normal(scale=np.radians(0.3), size=3)).apply(t[i])
        R_wc[i] = Rotation.from_rotvec(rng.normal(scale=np.radians(0.3), size=3)).as_matrix() @ R_wc[i]
    for i in bad:  # rays turned by 60 degrees, rotations off by 90 degrees
        axis = np.cross(t[i], [1.0, 0.0, 0.0])
        t[i] = Rotation.from_rotvec(np.radians(60.0) * axis / np.linalg.norm(axis)).apply(t[i])
        R_wc[i] = Rotation.from_rotvec(np.radians(90.0) * np.array([0.0, 1.0, 0.0])).as_matrix() @ R_wc[i]
    fused = fuse_original(C, R_db, _relative(R_db, R_wc), t)
    dt, dr = pose_error(fused.pose, QUERY)
    assert dt < 0.05 and dr < 1.0
    good = np.ones(5, dtype=bool)
    good[bad] = False
    np.testing.assert_array_equal(fused.position_support, good)
    np.testing.assert_array_equal(fused.rotation_support, good)
    np.testing.assert_array_equal(fused.rotation_chosen, good)  # the inliers tie (all see each other)
    # only pairs of good rays reach the best score, and they are the ones averaged
    good_pairs = good[fused.hypothesis_pairs].all(axis=1)
    np.testing.assert_array_equal(fused.position_chosen, good_pairs)


# --- degenerate and small N ----------------------------------------------------------------------------


def test_all_parallel_rays_fall_back_to_the_first_centre() -> None:
    C, R_db, R_rel, _ = _exact()
    t = np.tile([0.0, 0.3, 1.0], (5, 1)) * np.array([1.0, -2.0, 1.0, 0.5, -1.0])[:, None]  # parallel lines
    fused = fuse_original(C, R_db, R_rel, t)
    assert fused.fallback
    assert np.isnan(fused.hypotheses).all()
    np.testing.assert_allclose(fused.pose.center, C[0], atol=1e-12)
    np.testing.assert_array_equal(fused.position_support, [True, False, False, False, False])
    assert not fused.position_chosen.any()
    # the rotation consensus runs regardless
    assert rotation_angle_deg(fused.pose.R @ QUERY.R.T) < 1e-6


def test_exactly_two_rays() -> None:
    C, R_db, R_rel, t = _exact(2)
    fused = fuse_original(C, R_db, R_rel, t)
    assert pose_error(fused.pose, QUERY)[0] < 1e-12
    np.testing.assert_array_equal(fused.hypothesis_pairs, [[0, 1]])
    np.testing.assert_array_equal(fused.hypothesis_scores, [2])
    # two rotations 10 degrees apart vote for each other: a tie, averaged to the midway rotation
    fused = fuse_original(C, np.stack([np.eye(3), np.eye(3)]), np.stack([Rz(0.0), Rz(10.0)]), t)
    np.testing.assert_allclose(fused.pose.R.T, Rz(5.0), atol=1e-10)
    np.testing.assert_array_equal(fused.rotation_votes, [1, 1])
    # 90 degrees apart nobody votes: still a tie (0 = 0), so even disagreeing rotations are averaged
    fused = fuse_original(C, np.stack([np.eye(3), np.eye(3)]), np.stack([Rz(0.0), Rz(90.0)]), t)
    np.testing.assert_allclose(fused.pose.R.T, Rz(45.0), atol=1e-10)
    np.testing.assert_array_equal(fused.rotation_votes, [0, 0])
    assert fused.rotation_chosen.all()


def test_a_single_image_gives_its_centre_and_its_rotation_hypothesis() -> None:
    C, R_db, _, t = _exact(1)
    fused = fuse_original(C, R_db, Rz(30.0)[None], t)
    assert fused.fallback and fused.hypotheses.shape == (0, 3)
    np.testing.assert_allclose(fused.pose.center, C[0], atol=1e-12)
    np.testing.assert_allclose(fused.pose.R.T, R_db[0] @ Rz(30.0), atol=1e-12)
    np.testing.assert_array_equal(fused.position_support, [True])
    np.testing.assert_array_equal(fused.rotation_support, [True])


# --- ties ----------------------------------------------------------------------------------------------


def test_tied_centre_hypotheses_are_averaged() -> None:
    # Rays 0 and 1 meet at A = (0,0,0), rays 2 and 3 at B = (1,1,2). Pairs (0,2) and (1,3) are parallel
    # (NaN); the cross pairs (0,3) and (1,2) give midpoints (1,0,1) and (0,1,1), which no ray sees within
    # 10 degrees (>= 26 degrees). A and B have two inliers each (the other two rays see them at >= 48
    # degrees): a tie, so the position is their mean (0.5, 0.5, 1).
    C = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    R_db = np.repeat(TILTED[None], 4, axis=0)
    R_rel = np.repeat(np.eye(3)[None], 4, axis=0)
    fused = fuse_original(C, R_db, R_rel, t)
    # pair order (0,1), (0,2), (1,2), (0,3), (1,3), (2,3)
    np.testing.assert_array_equal(np.isnan(fused.hypotheses).any(axis=1), [False, True, False, False, True, False])
    np.testing.assert_array_equal(fused.hypothesis_scores, [2, 0, 0, 0, 0, 2])
    np.testing.assert_array_equal(fused.position_chosen, [True, False, False, False, False, True])
    np.testing.assert_allclose(fused.pose.center, [0.5, 0.5, 1.0], atol=1e-12)
    assert fused.position_support.all()


def test_with_a_best_score_of_zero_every_valid_hypothesis_is_averaged() -> None:
    # Two skew lines 4 apart, 1 from their origins: the midpoint (0, 0, 2) is 63 degrees off both rays.
    C = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 4.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    fused = fuse_original(C, np.repeat(TILTED[None], 2, axis=0), np.repeat(np.eye(3)[None], 2, axis=0), t)
    np.testing.assert_array_equal(fused.hypothesis_scores, [0])
    np.testing.assert_allclose(fused.pose.center, [0.0, 0.0, 2.0], atol=1e-12)
    assert not fused.position_support.any()


def test_tied_rotations_are_l1_averaged() -> None:
    # About one axis: 0, 5 and 12 degrees see each other (2 votes each), 90 and 150 see nobody. The three
    # tie; their L1 mean is the median angle, 5 degrees.
    angles = [0.0, 5.0, 12.0, 90.0, 150.0]
    R_wc = np.stack([Rz(a) for a in angles])
    C, R_db, _, t = _exact()
    fused = fuse_original(C, R_db, _relative(R_db, R_wc), t)
    np.testing.assert_array_equal(fused.rotation_votes, [2, 2, 2, 0, 0])
    np.testing.assert_array_equal(fused.rotation_chosen, [True, True, True, False, False])
    np.testing.assert_array_equal(fused.rotation_support, [True, True, True, False, False])
    np.testing.assert_allclose(fused.pose.R.T, Rz(5.0), atol=1e-9)
    # what dqq_L1_mean_rotation_matrix.m really returns (it stops at its initialisation): the normalised
    # quaternion mean, about one axis 2 atan(sum sin(a/2) / sum cos(a/2)) = 5.6664 degrees
    half = np.radians([0.0, 5.0, 12.0]) / 2
    expected = np.degrees(2 * np.arctan2(np.sin(half).sum(), np.cos(half).sum()))
    assert expected == pytest.approx(5.6664, abs=1e-4)
    quat = fuse_original(C, R_db, _relative(R_db, R_wc), t, tie_rotation_mean="quaternion")
    np.testing.assert_allclose(quat.pose.R.T, Rz(expected), atol=1e-9)


def test_a_unique_rotation_winner_is_taken_as_it_is() -> None:
    # 0, 5, 10 degrees with a 7-degree agreement: votes 1, 2, 1 -> 5 alone, not averaged
    R_wc = np.stack([Rz(0.0), Rz(5.0), Rz(10.0), Rz(90.0), Rz(-90.0)])
    C, R_db, _, t = _exact()
    fused = fuse_original(C, R_db, _relative(R_db, R_wc), t, rotation_threshold_deg=7.0)
    np.testing.assert_array_equal(fused.rotation_votes, [1, 2, 1, 0, 0])
    np.testing.assert_allclose(fused.pose.R.T, Rz(5.0), atol=1e-12)
    np.testing.assert_array_equal(fused.rotation_support, [True, True, True, False, False])


# --- the inlier test -----------------------------------------------------------------------------------


def test_rays_are_lines_a_ray_pointing_away_still_supports() -> None:
    C, R_db, R_rel, t = _exact()
    ref = fuse_original(C, R_db, R_rel, t)
    flipped = t * np.array([1.0, -1.0, 1.0, -1.0, 1.0])[:, None]
    fused = fuse_original(C, R_db, R_rel, flipped)
    assert fused.position_support.all()
    # after the z = 1 normalisation the flipped rays are the same rays: identical hypotheses, bit for bit
    np.testing.assert_array_equal(fused.hypotheses, ref.hypotheses)
    # the signed option of the other fusions rejects them
    signed = fuse_rays(C, flipped, np.repeat(QUERY.R[None], 5, axis=0), RayFusionConfig(sign_agnostic=False))
    np.testing.assert_array_equal(signed.position_support, [True, False, True, False, True])


@pytest.mark.parametrize(("deg", "inside"), [(9.9, True), (10.1, False)])
def test_the_two_acos_threshold_is_a_ten_degree_cone(deg: float, inside: bool) -> None:
    # Four exact rays and a fifth from 10 m away, turned by `deg`: its residual at X is 2 * deg against
    # the threshold 20. Its own pairs miss X by metres and score at most 2, so X (from the six exact
    # pairs) wins alone and the fifth ray's membership is decided by the threshold only.
    C = np.vstack([DB_CENTERS[:4], X + np.array([0.0, 10.0, 0.0])])
    t = X - C
    t[4] = Rotation.from_rotvec(np.radians(deg) * np.array([1.0, 0.0, 0.0])).apply(t[4])
    fused = fuse_original(C, DB_ROTATIONS, _relative(DB_ROTATIONS, R_Q), t)
    np.testing.assert_allclose(fused.pose.center, X, atol=1e-12)
    np.testing.assert_array_equal(fused.position_chosen, [True] * 6 + [False] * 4)
    assert fused.hypothesis_scores[6:].max() <= 2
    np.testing.assert_array_equal(fused.hypothesis_scores[:6], 5 if inside else 4)
    np.testing.assert_array_equal(fused.position_support, [True, True, True, True, inside])


def test_a_hypothesis_on_a_database_centre_is_not_an_inlier_of_that_ray() -> None:
    # Three lines through the origin, which is also C_2: every hypothesis is the origin, exactly (the
    # rotations are signed permutations, so the z = 1 round trip is exact). unit(X - C_2) = 0/0 = NaN in
    # the MATLAB, so ray 2 never counts; fuse_rays counts a hypothesis on a ray origin as consistent.
    C = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    t = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    R_db = np.stack([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]],  # optical axis world x
                     [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]],  # optical axis world y
                     np.eye(3)])
    fused = fuse_original(C, R_db, np.repeat(np.eye(3)[None], 3, axis=0), t)
    np.testing.assert_array_equal(fused.hypotheses, np.zeros((3, 3)))
    np.testing.assert_array_equal(fused.position_support, [True, True, False])
    np.testing.assert_array_equal(fuse_rays(C, t, np.repeat(np.eye(3)[None], 3, axis=0)).position_support, True)


# --- the z = 1 normalisation -------------------------------------------------------------------------


def test_a_sideways_ray_gives_no_hypotheses_but_still_votes() -> None:
    # Ray 2 is perpendicular to its camera's optical axis (camera z exactly 0): t_x / 0 -> inf/NaN, so both
    # of its pairs are NaN. It still counts in the consensus, where the plain direction is used.
    C = np.vstack([DB_CENTERS[:2], X - [2.0, 0.0, 0.0]])
    t = X - C
    R_db = np.stack([DB_ROTATIONS[0], DB_ROTATIONS[1], np.eye(3)])  # camera z = world z; t[2] = (2, 0, 0)
    fused = fuse_original(C, R_db, _relative(R_db, R_Q), t)
    np.testing.assert_array_equal(np.isnan(fused.hypotheses).any(axis=1), [False, True, True])  # (0,1) (0,2) (1,2)
    np.testing.assert_allclose(fused.pose.center, X, atol=1e-12)
    np.testing.assert_array_equal(fused.hypothesis_scores, [3, 0, 0])
    assert fused.position_support.all()


def test_two_good_rays_one_sideways_fall_back_to_the_first_centre() -> None:
    # Perpendicular, intersecting at X: any triangulation finds X, but the MATLAB's normalisation of the
    # sideways ray divides by zero, so "all hypotheses are NaN" and the first centre is returned.
    C = np.array([X - [2.0, 0.0, 0.0], X - [0.0, 0.0, 3.0]])
    t = X - C
    R_db = np.repeat(np.eye(3)[None], 2, axis=0)
    fused = fuse_original(C, R_db, _relative(R_db, R_Q), t)
    assert fused.fallback
    np.testing.assert_allclose(fused.pose.center, C[0], atol=1e-12)
    np.testing.assert_allclose(fuse_rays(C, t, np.repeat(QUERY.R[None], 2, axis=0)).pose.center, X, atol=1e-12)
    # the same rays seen from a tilted camera have a non-zero camera z and triangulate to X
    tilted = fuse_original(C, np.repeat(TILTED[None], 2, axis=0), _relative(TILTED, R_Q)[None].repeat(2, 0), t)
    assert not tilted.fallback
    np.testing.assert_allclose(tilted.pose.center, X, atol=1e-12)


@pytest.mark.parametrize("z", [1e-12, -1e-12, 1e-150, -0.3])
def test_small_or_negative_camera_z_is_harmless(z: float) -> None:
    # [t_x / t_z, t_y / t_z, 1] normalises back to +-d to rounding however small t_z is (down to where
    # squaring overflows, below), and the sign of t_z does not matter.
    d = np.array([0.6, -0.8, z])  # in the frame of a camera with R = I
    C = np.array([X - 2.0 * d, X - [0.0, 1.0, 2.0]])
    R_db = np.repeat(np.eye(3)[None], 2, axis=0)
    # (C_1 - X is d to rounding, but X - C_1 would lose the tiny z: pass d itself)
    fused = fuse_original(C, R_db, _relative(R_db, R_Q), np.stack([d, X - C[1]]))
    assert not fused.fallback
    np.testing.assert_allclose(fused.pose.center, X, atol=1e-12)
    np.testing.assert_array_equal(fused.hypothesis_scores, [2])


def test_overflowing_normalisation_is_reproduced() -> None:
    # t_z = 1e-300: |[t_x/t_z, t_y/t_z, 1]|^2 overflows to inf, so the MATLAB's D = X / sqrt(sum(X.^2))
    # is 0 and the "midpoint" degenerates to [I + (I - D2 D2^T)]^-1 [C_1 + (I - D2 D2^T) C_2]. Not
    # reachable from real data; reproduced because the same floating-point operations are done.
    d = np.array([0.6, -0.8, 1e-300])
    C = np.array([X - 2.0 * d, X - [0.0, 1.0, 2.0]])
    R_db = np.repeat(np.eye(3)[None], 2, axis=0)
    fused = fuse_original(C, R_db, _relative(R_db, R_Q), np.stack([d, X - C[1]]))
    D2 = (X - C[1]) / np.linalg.norm(X - C[1])
    P2 = np.eye(3) - np.outer(D2, D2)
    np.testing.assert_allclose(fused.hypotheses[0], np.linalg.solve(np.eye(3) + P2, C[0] + P2 @ C[1]), atol=1e-12)
    assert np.linalg.norm(fused.hypotheses[0] - X) > 0.1


# --- inputs --------------------------------------------------------------------------------------------


def test_bad_inputs_are_rejected() -> None:
    C, R_db, R_rel, t = _exact()
    with pytest.raises(ValueError, match="expected"):
        fuse_original(C[:4], R_db, R_rel, t)
    with pytest.raises(ValueError, match="expected"):
        fuse_original(C, R_db, R_rel, t[:, :2])
    with pytest.raises(ValueError, match="zero quaternion"):
        fuse_original(C, R_db, np.zeros((5, 4)), t)
    with pytest.raises(ValueError, match="tie_rotation_mean"):
        fuse_original(C, R_db, R_rel, t, tie_rotation_mean="chordal")
    with pytest.raises(ValueError, match="expected"):
        fuse_original(C[:0], R_db[:0], R_rel[:0], t[:0])
