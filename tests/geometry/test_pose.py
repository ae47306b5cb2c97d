"""Pose (cam_from_world) and the rotation helpers, checked against hand-written rotations and geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import InvalidPoseError, Pose, pose_error
from visloc.geometry.rotation import (
    matrix_to_quat,
    project_to_rotation,
    quat_angle_deg,
    quat_to_matrix,
    rotation_angle_deg,
)

# 90 degrees about z, written out by hand: x -> y, y -> -x.
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
# 90 degrees about x: y -> z, z -> -y.
RX90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
S45 = np.sqrt(0.5)


def _random_pose(rng: np.random.Generator) -> Pose:
    return Pose(Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.normal(size=3))


# --- convention ------------------------------------------------------------------------------------


def test_transform_is_cam_from_world() -> None:
    # Camera at world (1, 2, 3) looking along world +x (camera z = world x, camera x = world -y,
    # camera y = world -z). A world point 5 m ahead of it must be at camera (0, 0, 5).
    R_wc = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns: camera axes in world
    pose = Pose.from_world_from_cam(R_wc, np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(pose.transform(np.array([[6.0, 2.0, 3.0]])), [[0.0, 0.0, 5.0]], atol=1e-12)
    # a point 1 m to the world -y (camera right) and 1 m to world -z (camera down)
    np.testing.assert_allclose(pose.transform(np.array([[6.0, 1.0, 2.0]])), [[1.0, 1.0, 5.0]], atol=1e-12)
    np.testing.assert_allclose(pose.center, [1.0, 2.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(pose.R, R_wc.T, atol=1e-12)


def test_center_is_minus_Rt_t_and_maps_to_origin() -> None:
    pose = Pose(RZ90, np.array([1.0, 2.0, 3.0]))
    # by hand: R^T = [[0,1,0],[-1,0,0],[0,0,1]], R^T t = (2, -1, 3)
    np.testing.assert_allclose(pose.center, [-2.0, 1.0, -3.0], atol=1e-12)
    np.testing.assert_allclose(pose.transform(pose.center[None]), [[0.0, 0.0, 0.0]], atol=1e-12)


def test_matrix_layout() -> None:
    pose = Pose(RZ90, np.array([1.0, 2.0, 3.0]))
    T = pose.matrix
    X = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose((T @ np.append(X, 1.0))[:3], RZ90 @ X + [1, 2, 3], atol=1e-12)
    np.testing.assert_array_equal(T[3], [0, 0, 0, 1])


def test_inverse_undoes_transform() -> None:
    rng = np.random.default_rng(0)
    pose = _random_pose(rng)
    X = rng.normal(size=(20, 3))
    np.testing.assert_allclose(pose.inverse().transform(pose.transform(X)), X, atol=1e-12)
    # the inverse (world_from_cam) has its 'centre' at the world origin seen from the camera: t
    np.testing.assert_allclose(pose.inverse().center, pose.t, atol=1e-12)
    np.testing.assert_allclose((pose @ pose.inverse()).matrix, np.eye(4), atol=1e-12)


def test_composition_applies_right_operand_first() -> None:
    a = Pose(RZ90, np.array([1.0, 0.0, 0.0]))
    b = Pose(RX90, np.array([0.0, 0.0, 2.0]))
    X = np.array([[0.0, 1.0, 0.0]])
    # b first: RX90 (0,1,0) = (0,0,1), + (0,0,2) -> (0,0,3); then a: RZ90 (0,0,3) = (0,0,3), + (1,0,0)
    np.testing.assert_allclose((a @ b).transform(X), [[1.0, 0.0, 3.0]], atol=1e-12)
    # the other order gives a different point: a first -> (-1,0,0)+(1,0,0) = (0,0,0); b -> (0,0,2)
    np.testing.assert_allclose((b @ a).transform(X), [[0.0, 0.0, 2.0]], atol=1e-12)
    np.testing.assert_allclose((a @ b).transform(X), a.transform(b.transform(X)), atol=1e-12)


def test_relative_to_maps_between_cameras() -> None:
    rng = np.random.default_rng(1)
    cam1, cam2 = _random_pose(rng), _random_pose(rng)
    X = rng.normal(size=(5, 3))
    cam2_from_cam1 = cam2.relative_to(cam1)
    np.testing.assert_allclose(cam2_from_cam1.transform(cam1.transform(X)), cam2.transform(X), atol=1e-12)


# --- quaternions -----------------------------------------------------------------------------------


def test_from_qt_is_w_first() -> None:
    pose = Pose.from_qt([S45, 0.0, 0.0, S45], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(pose.R, RZ90, atol=1e-12)
    pose = Pose.from_qt([S45, S45, 0.0, 0.0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(pose.R, RX90, atol=1e-12)
    np.testing.assert_allclose(pose.t, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(quat_to_matrix(np.array([S45, 0.0, 0.0, S45])), RZ90, atol=1e-12)


def test_qvec_has_nonnegative_w_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        pose = _random_pose(rng)
        q = pose.qvec
        assert q[0] >= 0.0
        assert abs(np.linalg.norm(q) - 1.0) < 1e-12
        np.testing.assert_allclose(Pose.from_qt(q, pose.t).R, pose.R, atol=1e-12)
    # -q is the same rotation; qvec returns the representative with w >= 0
    np.testing.assert_allclose(Pose.from_qt([-S45, 0, 0, -S45], [0, 0, 0]).qvec, [S45, 0, 0, S45], atol=1e-12)
    np.testing.assert_allclose(matrix_to_quat(RZ90), [S45, 0, 0, S45], atol=1e-12)


def test_qvec_matches_scipy_reordered() -> None:
    rng = np.random.default_rng(3)
    pose = _random_pose(rng)
    x, y, z, w = Rotation.from_matrix(pose.R).as_quat()
    expected = np.array([w, x, y, z]) * np.sign(w)
    np.testing.assert_allclose(pose.qvec, expected, atol=1e-12)


def test_slightly_non_unit_quaternion_is_normalised() -> None:
    q = np.array([S45, 0.0, 0.0, S45]) * 1.005  # 0.5 % off, inside QUAT_NORM_TOL (TUM has 4 decimals)
    np.testing.assert_allclose(Pose.from_qt(q, [0, 0, 0]).R, RZ90, atol=1e-12)


# --- constructors --------------------------------------------------------------------------------


def test_from_matrix_3x4_and_4x4() -> None:
    T = np.eye(4)
    T[:3, :3] = RZ90
    T[:3, 3] = [1.0, -2.0, 0.5]
    for M in (T, T[:3]):
        pose = Pose.from_matrix(M)
        np.testing.assert_allclose(pose.R, RZ90)
        np.testing.assert_allclose(pose.t, [1.0, -2.0, 0.5])
    np.testing.assert_allclose(Pose.from_matrix(T).matrix, T)


def test_from_world_from_cam() -> None:
    rng = np.random.default_rng(4)
    pose = _random_pose(rng)
    again = Pose.from_world_from_cam(pose.inverse().R, pose.center)
    np.testing.assert_allclose(again.matrix, pose.matrix, atol=1e-12)
    # camera at (0, 0, -4) with world axes: a world point at the origin is 4 m in front of it
    p = Pose.from_world_from_cam(np.eye(3), np.array([0.0, 0.0, -4.0]))
    np.testing.assert_allclose(p.transform(np.zeros((1, 3))), [[0.0, 0.0, 4.0]])


def test_pose_arrays_are_read_only() -> None:
    pose = Pose(RZ90, np.zeros(3))
    with pytest.raises(ValueError):
        pose.t[0] = 1.0


# --- JSON ----------------------------------------------------------------------------------------


def test_to_json_layout_of_a_hand_made_pose() -> None:
    # 90 degrees about z: q = (cos 45, 0, 0, sin 45), w first; t as given
    d = Pose(RZ90, np.array([1.0, -2.0, 0.5])).to_json()
    assert list(d) == ["qvec", "tvec"]
    assert all(type(x) is float for x in d["qvec"] + d["tvec"])
    np.testing.assert_allclose(d["qvec"], [S45, 0.0, 0.0, S45], atol=1e-15)
    assert d["tvec"] == [1.0, -2.0, 0.5]
    assert Pose.identity().to_json() == {"qvec": [1.0, 0.0, 0.0, 0.0], "tvec": [0.0, 0.0, 0.0]}


def test_json_round_trip_through_text() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        pose = _random_pose(rng)
        back = Pose.from_json(json.loads(json.dumps(pose.to_json())))
        np.testing.assert_allclose(back.R, pose.R, atol=1e-12)
        np.testing.assert_array_equal(back.t, pose.t)
        np.testing.assert_allclose(back.qvec, pose.qvec, atol=1e-12)


@pytest.mark.parametrize(
    ("d", "match"),
    [
        pytest.param([[1, 0, 0, 0], [0, 0, 0]], "object", id="not-a-mapping"),
        pytest.param({"qvec": [1, 0, 0, 0]}, "keys", id="no-tvec"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": [0, 0, 0], "t": [0, 0, 0]}, "keys", id="extra-key"),
        pytest.param({"qvec": [1, 0, 0], "tvec": [0, 0, 0]}, "qvec", id="qvec-3"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": [[0, 0, 0]]}, "tvec", id="tvec-nested"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": "0 0 0"}, "tvec", id="tvec-string"),
        pytest.param({"qvec": [True, False, False, False], "tvec": [0, 0, 0]}, "qvec", id="qvec-bools"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": [0, None, 0]}, "tvec", id="tvec-null"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": [0, "a", 0]}, "tvec", id="tvec-text-entry"),
        pytest.param({"qvec": [2, 0, 0, 0], "tvec": [0, 0, 0]}, "unit length", id="qvec-not-unit"),
        pytest.param({"qvec": [1, 0, 0, 0], "tvec": [0, float("nan"), 0]}, "NaN", id="tvec-nan"),
    ],
)
def test_from_json_rejects_bad_input(d: object, match: str) -> None:
    with pytest.raises(InvalidPoseError, match=match):
        Pose.from_json(d)  # type: ignore[arg-type]


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("R", "t"),
    [
        pytest.param(np.full((3, 3), np.nan), np.zeros(3), id="nan-R"),
        pytest.param(np.eye(3), np.array([0.0, np.inf, 0.0]), id="inf-t"),
        pytest.param(np.eye(3) * 1.01, np.zeros(3), id="scaled"),
        pytest.param(np.array([[1.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3), id="sheared"),
        pytest.param(np.diag([1.0, 1.0, -1.0]), np.zeros(3), id="reflection"),
        pytest.param(-np.eye(3), np.zeros(3), id="minus-identity"),
        pytest.param(np.eye(2), np.zeros(3), id="R-2x2"),
        pytest.param(np.eye(3), np.zeros(4), id="t-4"),
        pytest.param(np.eye(4), np.zeros(3), id="R-4x4"),
    ],
)
def test_invalid_pose_raises(R: np.ndarray, t: np.ndarray) -> None:
    with pytest.raises(InvalidPoseError):
        Pose(R, t)


@pytest.mark.parametrize(
    "q",
    [
        pytest.param([1.0, 0.0, 0.0], id="three-values"),
        pytest.param([np.nan, 0.0, 0.0, 1.0], id="nan"),
        pytest.param([1.1, 0.0, 0.0, 0.0], id="norm-1.1"),
        pytest.param([0.0, 0.0, 0.0, 0.0], id="zero"),
    ],
)
def test_invalid_quaternion_raises(q: list[float]) -> None:
    with pytest.raises(InvalidPoseError):
        Pose.from_qt(q, [0.0, 0.0, 0.0])


def test_from_matrix_rejects_bad_shape_and_last_row() -> None:
    with pytest.raises(InvalidPoseError, match="3x4 or 4x4"):
        Pose.from_matrix(np.eye(3))
    T = np.eye(4)
    T[3] = [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(InvalidPoseError, match="last row"):
        Pose.from_matrix(T)
    T = np.eye(4)
    T[3, 3] = 2.0  # a scaled homogeneous matrix is not a rigid pose either
    with pytest.raises(InvalidPoseError, match="last row"):
        Pose.from_matrix(T)


@pytest.mark.parametrize(
    ("R_wc", "center"), [(np.eye(2), np.zeros(3)), (np.eye(3), np.zeros(4))], ids=["R-2x2", "center-4"]
)
def test_from_world_from_cam_bad_shape_raises_invalid_pose(R_wc: np.ndarray, center: np.ndarray) -> None:
    with pytest.raises(InvalidPoseError):
        Pose.from_world_from_cam(R_wc, center)


def test_slightly_non_orthonormal_is_projected_to_rotation() -> None:
    rng = np.random.default_rng(5)
    R = Rotation.random(random_state=5).as_matrix()
    noisy = R + rng.normal(scale=1e-4, size=(3, 3))  # like 7-Scenes' slightly scaled rotations
    assert np.abs(noisy @ noisy.T - np.eye(3)).max() < 1e-3
    pose = Pose(noisy, np.zeros(3))
    np.testing.assert_allclose(pose.R @ pose.R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(pose.R) == pytest.approx(1.0, abs=1e-12)
    # the nearest rotation, so it stays within the perturbation of the original
    assert rotation_angle_deg(pose.R @ R.T) < 0.05
    # ...and it is the Frobenius-nearest one: no other rotation close by is nearer to the input
    for _ in range(20):
        other = Rotation.from_rotvec(rng.normal(scale=1e-4, size=3)).as_matrix() @ pose.R
        assert np.linalg.norm(other - noisy) >= np.linalg.norm(pose.R - noisy) - 1e-12


def test_project_to_rotation_of_a_reflection_gives_a_rotation() -> None:
    M = np.diag([1.0, 1.0, -1.0]) @ Rotation.random(random_state=6).as_matrix()
    R = project_to_rotation(M)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)


# --- errors ----------------------------------------------------------------------------------------


def test_pose_error_of_hand_made_offset() -> None:
    rng = np.random.default_rng(7)
    truth = _random_pose(rng)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    dR = Rotation.from_rotvec(np.radians(2.0) * axis).as_matrix()
    offset = rng.normal(size=3)
    offset *= 0.03 / np.linalg.norm(offset)
    # 2 degrees of extra rotation in the camera frame, centre moved by 3 cm in the world
    estimate = Pose.from_world_from_cam((dR @ truth.R).T, truth.center + offset)
    dt, dr = pose_error(estimate, truth)
    assert dt == pytest.approx(0.03, abs=1e-12)
    assert dr == pytest.approx(2.0, abs=1e-9)
    # translation error is measured on centres, not on t: a pure rotation about the centre moves t
    rotated = Pose.from_world_from_cam((dR @ truth.R).T, truth.center)
    assert pose_error(rotated, truth)[0] == pytest.approx(0.0, abs=1e-12)
    assert np.linalg.norm(rotated.t - truth.t) > 1e-3


@pytest.mark.parametrize("deg", [0.0, 1e-7, 1e-4, 0.01, 37.0, 90.0, 179.0, 179.9999, 180.0])
def test_rotation_angle_deg_accurate_near_0_and_180(deg: float) -> None:
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    R = Rotation.from_rotvec(np.radians(deg) * axis).as_matrix()
    # the arccos of the trace loses ~1e-4 deg near 0; the implementation must not
    assert rotation_angle_deg(R) == pytest.approx(deg, abs=1e-9)


def test_rotation_angle_deg_batched() -> None:
    Rs = np.stack([np.eye(3), RZ90, RX90 @ RX90])
    np.testing.assert_allclose(rotation_angle_deg(Rs), [0.0, 90.0, 180.0], atol=1e-9)


def test_quat_angle_deg() -> None:
    assert quat_angle_deg(np.array([1.0, 0, 0, 0]), np.array([S45, 0, 0, S45])) == pytest.approx(90.0)
    # sign-agnostic: q and -q are the same rotation
    assert quat_angle_deg(np.array([S45, 0, 0, S45]), -np.array([S45, 0, 0, S45])) == pytest.approx(0.0, abs=1e-6)
    # 180 degrees about x vs identity
    assert quat_angle_deg(np.array([1.0, 0, 0, 0]), np.array([0.0, 1, 0, 0])) == pytest.approx(180.0)
    # inputs need not be unit length
    assert quat_angle_deg(np.array([2.0, 0, 0, 0]), np.array([3 * S45, 0, 3 * S45, 0])) == pytest.approx(90.0)
    a, b = Rotation.random(2, random_state=8)
    qa, qb = matrix_to_quat(a.as_matrix()), matrix_to_quat(b.as_matrix())
    assert quat_angle_deg(qa, qb) == pytest.approx(np.degrees((a * b.inv()).magnitude()), abs=1e-6)
