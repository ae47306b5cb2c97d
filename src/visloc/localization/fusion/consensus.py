"""Consensus helpers: rotation votes and rotation consensus of the ray fusions, and the consensus of
absolute (PnP) pose hypotheses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry.pose import Pose
from ...geometry.rotation import matrix_to_quat, quat_angle_deg, rotation_angle_deg
from ...geometry.rotation_averaging import l1_rotation_average


def vote_rotations(rotations: np.ndarray, threshold_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise agreement of rotation hypotheses by the quaternion angle ``2 acos(|q_h . q_k|)``.

    Args:
        rotations: ``(N, 3, 3)`` hypotheses (any one convention).
        threshold_deg: two hypotheses agree below this angle.

    Returns:
        ``(N, N)`` agreement (self excluded) and ``(N,)`` votes (how many others agree with each).
    """
    q = matrix_to_quat(rotations)
    agree = quat_angle_deg(q[:, None], q[None]) < threshold_deg
    np.fill_diagonal(agree, False)
    return agree, agree.sum(axis=1)


def rotation_consensus(
    R: np.ndarray, threshold_deg: float, residual_tie_break: bool, refine_iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every rotation hypothesis a sample; the L1 mean of the best one's inliers, then re-scored.

    Args:
        R: ``(N, 3, 3)`` hypotheses (any one convention).
        threshold_deg: two hypotheses agree when their relative angle is below this.
        residual_tie_break: among equal votes prefer the smaller sum of truncated angles.
        refine_iterations: re-score against the mean and re-average while the inlier set grows.

    Returns:
        The mean ``(3, 3)``, the ``(N,)`` inlier mask and the ``(N,)`` votes (others that agree).
    """
    n = len(R)
    angles = rotation_angle_deg(R[:, None] @ np.swapaxes(R[None], -1, -2))
    agree = angles < threshold_deg
    np.fill_diagonal(agree, True)
    votes = agree.sum(axis=1) - 1
    residual = np.minimum(angles, threshold_deg).sum(axis=1)
    order = np.lexsort((np.arange(n), residual if residual_tie_break else np.zeros(n), -votes))
    inliers = agree[order[0]]
    rotation = l1_rotation_average(R[inliers])
    for _ in range(refine_iterations):
        new = rotation_angle_deg(R @ rotation.T) < threshold_deg
        if new.sum() < inliers.sum() or np.array_equal(new, inliers):
            break
        inliers, rotation = new, l1_rotation_average(R[new])
    return rotation, inliers, votes


@dataclass(frozen=True)
class PoseConsensusConfig:
    """Attributes:
    position_threshold: two absolute hypotheses agree when their centres are closer than this
        (in map units) ...
    rotation_threshold_deg: ... and their rotations closer than this.
    """

    position_threshold: float = 0.25
    rotation_threshold_deg: float = 5.0


def consensus_of_poses(
    poses: list[Pose], weights: np.ndarray | None = None, config: PoseConsensusConfig = PoseConsensusConfig()
) -> np.ndarray:
    """Largest group of mutually consistent absolute pose hypotheses.

    Each hypothesis is scored by the summed ``weights`` (e.g. inlier counts) of the hypotheses that
    agree with it; the mask of the best one's agreeing set is returned.

    Args:
        poses: N hypotheses of the same query's ``cam_from_world``.
        weights: ``(N,)`` non-negative weights (default 1).

    Returns:
        ``(N,)`` boolean mask of the supporting hypotheses (empty input -> empty mask).
    """
    n = len(poses)
    if n == 0:
        return np.zeros(0, dtype=bool)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    C = np.stack([p.center for p in poses])
    R = np.stack([p.R for p in poses])
    dist = np.linalg.norm(C[:, None] - C[None], axis=-1)
    ang = rotation_angle_deg(R[:, None] @ np.swapaxes(R[None], -1, -2))
    agree = (dist < config.position_threshold) & (ang < config.rotation_threshold_deg)
    scores = agree.astype(np.float64) @ w
    return agree[int(np.argmax(scores))]
