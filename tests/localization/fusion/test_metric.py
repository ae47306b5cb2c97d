"""``fuse_metric``: consensus of metric centre hypotheses ``C_i + offset_i``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose, pose_error
from visloc.localization.fusion import MetricFusionConfig, fuse_metric


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
