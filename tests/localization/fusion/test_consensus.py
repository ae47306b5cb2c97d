"""``consensus_of_poses``: the largest group of agreeing absolute pose hypotheses."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose
from visloc.localization.fusion import PoseConsensusConfig, consensus_of_poses

QUERY = Pose.from_world_from_cam(Rotation.from_euler("xyz", [5.0, 40.0, -3.0], degrees=True).as_matrix(),
                                 np.array([0.4, -0.2, 1.5]))


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
