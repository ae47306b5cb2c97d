"""Fusion of relative poses whose translations are trusted in scale (full centre hypotheses, no rays)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry.pose import Pose
from .common import FusedPose
from .consensus import rotation_consensus


@dataclass(frozen=True)
class MetricFusionConfig:
    """Settings of :func:`fuse_metric`.

    Attributes:
        position_threshold: two centre hypotheses agree when closer than this (map units).
        rotation_angle_deg: two rotation hypotheses agree when their relative angle is below this.
        refine_iterations: re-score against the averaged estimate while the inlier set grows.
    """

    position_threshold: float = 0.25
    rotation_angle_deg: float = 20.0
    refine_iterations: int = 2


def fuse_metric(
    centers: np.ndarray, offsets: np.ndarray, rotations: np.ndarray, config: MetricFusionConfig = MetricFusionConfig()
) -> FusedPose:
    """Fuse relative poses whose translations are trusted in scale (a generalised variant).

    The original fusion uses only the direction of each regressed translation and triangulates pairs
    of rays, which amplifies direction errors when the retrieved images are close together (a small
    baseline). A network trained on metric labels also predicts the length, so every retrieved image
    gives a full centre hypothesis ``X_i = C_i + offset_i``. The hypothesis with most others within
    ``position_threshold`` wins (ties: the smaller sum of truncated distances, then the order of
    retrieval); the position is the mean of its agreeing set, re-scored while it grows. The rotation
    is the consensus of the hypotheses with L1 averaging, as in
    :func:`~visloc.localization.fusion.ransac.fuse_rays_ransac`.

    Args:
        centers: ``(N, 3)`` database camera centres.
        offsets: ``(N, 3)`` world vectors from each database centre to the query centre.
        rotations: ``(N, 3, 3)`` query ``cam_from_world`` rotation hypotheses.
        config: thresholds.

    Returns:
        The fused pose (``None`` only for ``N = 0``).
    """
    C = np.asarray(centers, dtype=np.float64)
    X = C + np.asarray(offsets, dtype=np.float64)
    R = np.asarray(rotations, dtype=np.float64)
    n = len(C)
    if X.shape != (n, 3) or R.shape != (n, 3, 3):
        raise ValueError(f"expected (N, 3) centres and offsets and (N, 3, 3) rotations, got "
                         f"{C.shape}, {np.shape(offsets)}, {R.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(R))):
        raise ValueError("centres, offsets and rotations must be finite")
    if n == 0:
        empty = np.zeros(0, dtype=bool)
        return FusedPose(None, empty, empty.copy())
    dist = np.linalg.norm(X[:, None] - X[None], axis=-1)
    agree = dist < config.position_threshold
    votes = agree.sum(axis=1)
    residual = np.minimum(dist, config.position_threshold).sum(axis=1)
    best = int(np.lexsort((np.arange(n), residual, -votes))[0])
    inliers = agree[best]
    position = X[inliers].mean(axis=0)
    for _ in range(config.refine_iterations):
        new = np.linalg.norm(X - position, axis=1) < config.position_threshold
        if new.sum() < inliers.sum() or np.array_equal(new, inliers):
            break
        inliers, position = new, X[new].mean(axis=0)
    chosen = np.zeros(n, dtype=bool)
    chosen[best] = True
    rotation, rot_inliers, rot_votes = rotation_consensus(R, config.rotation_angle_deg, True,
                                                           config.refine_iterations)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, inliers, rot_inliers, hypotheses=X, hypothesis_scores=votes.astype(np.float64),
                     position_chosen=chosen, rotation_votes=rot_votes, rotation_chosen=rot_inliers)
