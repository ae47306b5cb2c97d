"""Essential matrix and Sampson distance, against closed-form configurations and OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose
from visloc.geometry.epipolar import essential_from_pose, sampson_distance, skew


def test_skew_is_cross_product() -> None:
    a, b = np.array([1.0, -2.0, 0.5]), np.array([0.3, 4.0, -1.0])
    np.testing.assert_allclose(skew(a) @ b, np.cross(a, b))


def test_essential_of_pure_x_translation_by_hand() -> None:
    E = essential_from_pose(Pose(np.eye(3), np.array([2.0, 0.0, 0.0])))
    # [t]_x with t = (2, 0, 0)
    np.testing.assert_array_equal(E, [[0, 0, 0], [0, 0, -2], [0, 2, 0]])


def _two_views(seed: int = 0):
    rng = np.random.default_rng(seed)
    cam1_from_cam0 = Pose(
        Rotation.from_euler("xyz", [5.0, -12.0, 3.0], degrees=True).as_matrix(), np.array([0.7, -0.1, 0.2])
    )
    X0 = np.c_[rng.uniform(-1, 1, (50, 2)), np.ones(50)] * rng.uniform(2, 6, (50, 1))
    X1 = cam1_from_cam0.transform(X0)
    return cam1_from_cam0, X0[:, :2] / X0[:, 2:], X1[:, :2] / X1[:, 2:]


def test_epipolar_constraint_and_essential_structure() -> None:
    pose, x0, x1 = _two_views()
    E = essential_from_pose(pose)
    h0, h1 = np.c_[x0, np.ones(len(x0))], np.c_[x1, np.ones(len(x1))]
    np.testing.assert_allclose(np.einsum("ni,ij,nj->n", h1, E, h0), 0.0, atol=1e-12)
    # an essential matrix has singular values (s, s, 0) with s = |t|
    np.testing.assert_allclose(np.linalg.svd(E, compute_uv=False), [np.linalg.norm(pose.t)] * 2 + [0.0], atol=1e-12)
    # the inverse pose does not satisfy the constraint (order matters: x1^T E x0)
    E_wrong = essential_from_pose(pose.inverse())
    assert np.abs(np.einsum("ni,ij,nj->n", h1, E_wrong, h0)).max() > 1e-2


def test_sampson_zero_for_exact_correspondences() -> None:
    pose, x0, x1 = _two_views()
    d = sampson_distance(essential_from_pose(pose), x0, x1)
    assert d.shape == (len(x0),)
    np.testing.assert_allclose(d, 0.0, atol=1e-12)
    assert sampson_distance(essential_from_pose(pose.inverse()), x0, x1).max() > 1e-3


@pytest.mark.parametrize("dy", [1e-3, 0.01, -0.05])
def test_sampson_of_vertical_offset_under_x_translation(dy: float) -> None:
    # R = I, t = (tx, 0, 0): epipolar lines are the rows y = const. A correspondence (u0, v) <-> (u1, v + dy)
    # violates it by dy; the cheapest fix moves each point by dy/2 vertically, so the geometric (and here
    # exactly the Sampson) distance is sqrt(2 (dy/2)^2) = |dy| / sqrt(2), independent of tx, u0, u1, v.
    for tx in (0.1, 3.0, -1.0):
        E = essential_from_pose(Pose(np.eye(3), np.array([tx, 0.0, 0.0])))
        x0 = np.array([[0.1, 0.2], [-0.5, 0.0], [0.3, -0.4]])
        x1 = x0 + np.array([[0.25, dy], [-0.1, dy], [0.0, dy]])
        np.testing.assert_allclose(sampson_distance(E, x0, x1), abs(dy) / np.sqrt(2), rtol=1e-12)
    # a horizontal offset stays on the epipolar line: zero
    x1 = x0 + np.array([[0.4, 0.0], [0.0, 0.0], [-0.2, 0.0]])
    np.testing.assert_allclose(sampson_distance(E, x0, x1), 0.0, atol=1e-15)


def test_sampson_matches_opencv_on_a_fundamental_matrix() -> None:
    # OpenCV's sampsonDistance(pt1, pt2, F) with pt2^T F pt1 = 0 returns the *squared* distance
    rng = np.random.default_rng(1)
    pose, x0, x1 = _two_views(1)
    K = np.array([[500.0, 0, 320], [0, 480, 240], [0, 0, 1]])
    F = np.linalg.inv(K).T @ essential_from_pose(pose) @ np.linalg.inv(K)
    p0 = x0 @ K[:2, :2].T + K[:2, 2] + rng.normal(scale=2.0, size=x0.shape)
    p1 = x1 @ K[:2, :2].T + K[:2, 2] + rng.normal(scale=2.0, size=x1.shape)
    ref = [np.sqrt(cv2.sampsonDistance(np.r_[a, 1.0], np.r_[b, 1.0], F)) for a, b in zip(p0, p1, strict=True)]
    np.testing.assert_allclose(sampson_distance(F, p0, p1), ref, rtol=1e-9)
    assert np.median(ref) > 0.5  # the noise is visible, so the comparison is not trivially 0 == 0
