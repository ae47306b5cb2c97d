"""Relative-pose labels: hand-computed pairs, exact pair swaps, and the test-time inverse."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from visloc.errors import ConfigError
from visloc.geometry import Pose
from visloc.geometry.relative_pose import (
    label_translation_to_world,
    quat_conjugate,
    quat_rotate,
    query_pose_from_label,
    relative_pose_label,
    swap_label,
)

S45 = np.sqrt(0.5)
# +90 degrees about the camera y axis (y points down: a yaw), written out by hand: z -> x, x -> -z.
RY90 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
FRAMES = ("world", "camera")


def _random_pose(rng: np.random.Generator) -> Pose:
    return Pose(Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.normal(size=3) * 2.0)


def _pairs(n: int = 40, seed: int = 0) -> list[tuple[Pose, Pose]]:
    rng = np.random.default_rng(seed)
    return [(_random_pose(rng), _random_pose(rng)) for _ in range(n)]


def _same_rotation(q1: np.ndarray, q2: np.ndarray) -> None:
    q1, q2 = q1 / np.linalg.norm(q1), q2 / np.linalg.norm(q2)
    np.testing.assert_allclose(q1 * np.sign(q1 @ q2), q2, atol=1e-10)


# --- hand-computed cases ----------------------------------------------------------------------------


def test_query_yawed_one_metre_along_world_x() -> None:
    # database camera at the origin with camera axes = world axes; query camera 1 m along world x,
    # turned 90 degrees about the vertical axis.
    db = Pose.from_world_from_cam(np.eye(3), np.zeros(3))
    query = Pose.from_world_from_cam(RY90.T, np.array([1.0, 0.0, 0.0]))  # cam_from_world = RY90
    for frame in FRAMES:  # the database frame is the world frame here: both labels agree
        t, q = relative_pose_label(db, query, frame)
        np.testing.assert_allclose(t, [1.0, 0.0, 0.0], atol=1e-12)
        # R_db R_q^T = RY90^T: -90 degrees about y
        np.testing.assert_allclose(q, [S45, 0.0, -S45, 0.0], atol=1e-12)


def test_yawed_database_camera_world_against_camera_frame() -> None:
    # database camera at the origin, cam_from_world = RY90: its optical axis (row 3) is world -x.
    # The query, 1 m along world +x with axes = world axes, is therefore 1 m *behind* it.
    db = Pose(RY90, np.zeros(3))
    query = Pose.from_world_from_cam(np.eye(3), np.array([1.0, 0.0, 0.0]))
    t_world, q = relative_pose_label(db, query, "world")
    t_cam, q_cam = relative_pose_label(db, query, "camera")
    np.testing.assert_allclose(t_world, [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(t_cam, [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(q, [S45, 0.0, S45, 0.0], atol=1e-12)  # R_db R_q^T = RY90
    np.testing.assert_allclose(q_cam, q)

    # swapped pair, by hand: the database centre is 1 m along -x of the query camera (= world axes)
    t_sw, q_sw = swap_label(t_cam, q, "camera")
    np.testing.assert_allclose(t_sw, [-1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(q_sw, [S45, 0.0, -S45, 0.0], atol=1e-12)
    assert not np.allclose(t_sw, -t_cam)  # the camera-frame swap is not simply -t
    t_sw, q_sw = swap_label(t_world, q, "world")
    np.testing.assert_allclose(t_sw, [-1.0, 0.0, 0.0], atol=1e-12)

    # test-time inverse: the query rotation and the ray from the database centre towards +x
    for frame, t in (("world", t_world), ("camera", t_cam)):
        R_q, direction = query_pose_from_label(db, 2.5 * t, 3.0 * q, frame)
        np.testing.assert_allclose(R_q, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(direction, [1.0, 0.0, 0.0], atol=1e-12)


# --- random round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("frame", FRAMES)
def test_swap_gives_the_label_of_the_swapped_pair(frame: str) -> None:
    for db, query in _pairs():
        t, q = relative_pose_label(db, query, frame)
        t_sw, q_sw = swap_label(t, q, frame)
        t_ref, q_ref = relative_pose_label(query, db, frame)
        np.testing.assert_allclose(t_sw, t_ref, atol=1e-10)
        _same_rotation(q_sw, q_ref)
        assert q_sw[0] >= 0  # the swap keeps labels in the w >= 0 hemisphere


@pytest.mark.parametrize("frame", FRAMES)
def test_swap_is_an_involution(frame: str) -> None:
    rng = np.random.default_rng(1)
    t, q = rng.normal(size=(20, 3)), rng.normal(size=(20, 4)) * 0.7  # batched, not unit
    t2, q2 = swap_label(*swap_label(t, q, frame), frame)
    np.testing.assert_allclose(t2, t, atol=1e-12)
    np.testing.assert_allclose(q2, q, atol=1e-12)


def test_world_swap_is_the_original_rule() -> None:
    rng = np.random.default_rng(2)
    t, q = rng.normal(size=3), rng.normal(size=4)
    t_sw, q_sw = swap_label(t, q, "world")
    np.testing.assert_array_equal(t_sw, -t)
    np.testing.assert_array_equal(q_sw, [q[0], -q[1], -q[2], -q[3]])


@pytest.mark.parametrize("frame", FRAMES)
def test_inverse_recovers_query_rotation_and_direction(frame: str) -> None:
    rng = np.random.default_rng(3)
    for db, query in _pairs(seed=4):
        t, q = relative_pose_label(db, query, frame)
        scale_t, scale_q = rng.uniform(0.1, 5.0), rng.uniform(0.1, 5.0) * rng.choice([-1.0, 1.0])
        R_q, direction = query_pose_from_label(db, scale_t * t, scale_q * q, frame)
        np.testing.assert_allclose(R_q, query.R, atol=1e-10)
        baseline = query.center - db.center
        np.testing.assert_allclose(direction, baseline / np.linalg.norm(baseline), atol=1e-10)
        np.testing.assert_allclose(
            db.center + label_translation_to_world(db, t, frame), query.center, atol=1e-10
        )


def test_camera_label_does_not_depend_on_the_world_frame() -> None:
    rng = np.random.default_rng(5)
    world_change = _random_pose(rng)  # new_world_from_old_world
    for db, query in _pairs(10, seed=6):
        db2, query2 = db @ world_change.inverse(), query @ world_change.inverse()
        t, q = relative_pose_label(db, query, "camera")
        t2, q2 = relative_pose_label(db2, query2, "camera")
        np.testing.assert_allclose(t2, t, atol=1e-10)
        _same_rotation(q2, q)
        tw, _ = relative_pose_label(db, query, "world")
        tw2, _ = relative_pose_label(db2, query2, "world")
        np.testing.assert_allclose(tw2, world_change.R @ tw, atol=1e-10)  # world label moves with the world


def test_torch_swap_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    t, q = rng.normal(size=(5, 3)), rng.normal(size=(5, 4))
    for frame in FRAMES:
        t_np, q_np = swap_label(t, q, frame)
        t_th, q_th = swap_label(torch.from_numpy(t).float(), torch.from_numpy(q).float(), frame)
        assert t_th.dtype == torch.float32 and t_th.shape == (5, 3) and q_th.shape == (5, 4)
        np.testing.assert_allclose(t_th.numpy(), t_np, atol=1e-5)
        np.testing.assert_allclose(q_th.numpy(), q_np, atol=1e-6)


def test_quaternion_helpers_against_scipy() -> None:
    rng = np.random.default_rng(8)
    q, v = rng.normal(size=(10, 4)), rng.normal(size=(10, 3))
    R = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()
    np.testing.assert_allclose(quat_rotate(q, v), np.einsum("nij,nj->ni", R, v), atol=1e-12)
    np.testing.assert_allclose(quat_rotate(quat_conjugate(q), v), np.einsum("nji,nj->ni", R, v), atol=1e-12)


def test_bad_inputs() -> None:
    db, query = _pairs(1)[0]
    with pytest.raises(ConfigError, match="unknown translation frame 'body'"):
        relative_pose_label(db, query, "body")
    with pytest.raises(ConfigError, match="unknown translation frame"):
        swap_label(np.zeros(3), np.array([1.0, 0, 0, 0]), "World")
    with pytest.raises(ValueError, match="no direction"):
        query_pose_from_label(db, np.zeros(3), np.array([1.0, 0, 0, 0]), "camera")
    with pytest.raises(ValueError, match="quaternion prediction is zero"):
        query_pose_from_label(db, np.ones(3), np.zeros(4), "world")
    with pytest.raises(ValueError, match="4 finite numbers"):
        query_pose_from_label(db, np.ones(3), np.array([1.0, np.nan, 0, 0]), "world")


def test_module_does_not_import_torch() -> None:
    code = "import sys, visloc.geometry.relative_pose; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
