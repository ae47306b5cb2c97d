"""Fusing per-database-image estimates into one query pose.

Two kinds of evidence come from the retrieved database images:

* **Rays** (relative poses: from the essential matrix, or regressed by a network): database image i,
  with known centre ``C_i``, says the query centre lies on the ray ``C_i + s d_i`` (``d_i`` in world
  coordinates) and that the query rotation is ``R_q^i``. :func:`fuse_rays` is the fusion of
  Laskar et al. (ICCVW 2017, Publication V; ``filter_pose.m`` of the original code): every pair of rays
  is triangulated into a centre hypothesis, each hypothesis is scored by the number of rays that pass
  within an angle of it, the best (ties averaged) wins; rotations vote by mutual angle and the winners
  are averaged with the L1 (Weiszfeld) rotation mean.
* **Absolute poses** (PnP against database 3D points): :func:`consensus_of_poses` groups hypotheses
  that agree and reports the supporting images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.pose import Pose
from ..geometry.rotation import rotation_angle_deg
from ..geometry.rotation_averaging import l1_rotation_average


@dataclass(frozen=True)
class RayFusionConfig:
    """Attributes:
    ray_angle_deg: a ray supports a centre hypothesis when the angle between the ray and the
        direction from its origin to the hypothesis is below this (the original uses
        ``2 acos(|cos|) < 20``, i.e. 10 degrees, sign-agnostic).
    rotation_angle_deg: two rotation hypotheses agree below this angle (original: 20).
    sign_agnostic: treat rays as lines (the original: a regressed direction has no reliable sign);
        geometric rays from the essential matrix have a sign, so ``False`` is stricter there.
    min_parallax_deg: ray pairs closer to parallel than this give no hypothesis.
    fallback_to_first: with no valid centre hypothesis, return the first database centre (the original
        behaviour) instead of failing.
    """

    ray_angle_deg: float = 10.0
    rotation_angle_deg: float = 20.0
    sign_agnostic: bool = True
    min_parallax_deg: float = 0.5
    fallback_to_first: bool = False


@dataclass(frozen=True, eq=False)
class FusedPose:
    """A fused estimate.

    Attributes:
        pose: the query ``cam_from_world`` or ``None`` when it cannot be determined.
        position_support: ``(N,)`` mask of the rays / images that support the position.
        rotation_support: ``(N,)`` mask of the rotation hypotheses that support the rotation.
    """

    pose: Pose | None
    position_support: np.ndarray
    rotation_support: np.ndarray

    @property
    def num_support(self) -> int:
        return int(self.position_support.sum())


def triangulate_rays(centers: np.ndarray, directions: np.ndarray, min_parallax_deg: float = 0.0) -> np.ndarray | None:
    """Least-squares point closest to several rays (midpoint for two).

    Solves ``sum_i (I - d_i d_i^T) X = sum_i (I - d_i d_i^T) C_i`` (``triangmidpoints.m``).

    Args:
        centers: ``(N, 3)`` ray origins.
        directions: ``(N, 3)`` ray directions (any length; the sign does not matter).
        min_parallax_deg: ``None`` is returned when all rays are within this angle of parallel.

    Returns:
        ``(3,)`` point or ``None`` for (near-)parallel rays.
    """
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    c = np.asarray(centers, dtype=np.float64)
    cos = np.abs(d @ d.T)
    if np.degrees(np.arccos(np.clip(cos.min(), -1.0, 1.0))) <= max(min_parallax_deg, 1e-6):
        return None
    P = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = P.sum(axis=0)
    b = np.einsum("nij,nj->i", P, c)
    if np.linalg.cond(A) > 1e12:
        return None
    return np.linalg.solve(A, b)


def _ray_angles_deg(point: np.ndarray, centers: np.ndarray, directions: np.ndarray, sign_agnostic: bool) -> np.ndarray:
    u = point[None] - centers
    norms = np.linalg.norm(u, axis=1)
    u = u / np.maximum(norms, 1e-12)[:, None]
    cos = np.sum(u * directions, axis=1)
    if sign_agnostic:
        cos = np.abs(cos)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[norms < 1e-12] = 0.0  # the hypothesis sits on the ray origin: consistent with that ray
    return angles


def fuse_rays(
    centers: np.ndarray, directions: np.ndarray, rotations: np.ndarray, config: RayFusionConfig = RayFusionConfig()
) -> FusedPose:
    """Fuse relative-pose evidence from N database images into one pose.

    Args:
        centers: ``(N, 3)`` database camera centres (world).
        directions: ``(N, 3)`` world-frame directions from each database centre towards the query.
        rotations: ``(N, 3, 3)`` query rotation hypotheses ``R_q^i`` (``cam_from_world``).
        config: thresholds.

    Returns:
        The fused pose (``None`` when no pair of rays gives a hypothesis and no fallback is allowed).
    """
    centers = np.asarray(centers, dtype=np.float64)
    d = np.asarray(directions, dtype=np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    rotations = np.asarray(rotations, dtype=np.float64)
    n = len(centers)
    empty = np.zeros(n, dtype=bool)

    # --- position: triangulate every pair, score by ray consensus, average ties -------------------
    hypotheses = []
    for i in range(n):
        for j in range(i + 1, n):
            x = triangulate_rays(centers[[i, j]], d[[i, j]], config.min_parallax_deg)
            if x is not None:
                hypotheses.append(x)
    if hypotheses:
        H = np.stack(hypotheses)
        support = np.stack([_ray_angles_deg(h, centers, d, config.sign_agnostic) < config.ray_angle_deg for h in H])
        scores = support.sum(axis=1)
        best = scores == scores.max()
        position = H[best].mean(axis=0)
        position_support = support[best].any(axis=0)
    elif config.fallback_to_first and n:
        position, position_support = centers[0], empty.copy()
        position_support[0] = True
    else:
        return FusedPose(None, empty, empty)

    # --- rotation: vote by mutual angle, L1-average ties ------------------------------------------
    if n == 1:
        rotation, rotation_support = rotations[0], np.ones(1, dtype=bool)
    else:
        angles = rotation_angle_deg(rotations[:, None] @ np.swapaxes(rotations[None], -1, -2))
        agree = angles < config.rotation_angle_deg
        np.fill_diagonal(agree, False)
        counts = agree.sum(axis=1)
        tied = counts == counts.max()
        rotation = l1_rotation_average(rotations[tied]) if tied.sum() > 1 else rotations[tied][0]
        rotation_support = tied | agree[tied].any(axis=0)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, position_support, rotation_support)


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
