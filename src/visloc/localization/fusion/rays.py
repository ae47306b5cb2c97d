"""Exhaustive pairwise consensus on world rays (the skeleton of ``filter_pose.m`` without its quirks).

Used by ``localize --method essential``: rays from essential-matrix relative poses, which carry a sign
(tested with ``sign_agnostic=False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry.pose import Pose
from ...geometry.rotation import rotation_angle_deg
from ...geometry.rotation_averaging import l1_rotation_average
from .common import FusedPose, ray_angles_deg, triangulate_rays


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


def fuse_rays(
    centers: np.ndarray, directions: np.ndarray, rotations: np.ndarray, config: RayFusionConfig = RayFusionConfig()
) -> FusedPose:
    """Fuse relative-pose evidence from N database images into one pose (exhaustive pairwise consensus).

    The skeleton of ``filter_pose.m`` on world rays: every pair of rays is triangulated into a centre
    hypothesis, each hypothesis is scored by the number of rays that pass within ``ray_angle_deg`` of
    it, the best (ties averaged) wins; rotations vote by mutual angle and tied winners are L1-averaged.
    Unlike :func:`~visloc.localization.fusion.original.fuse_original` it has no z-normalisation, drops
    pairs below ``min_parallax_deg``, counts a hypothesis on a ray's origin as consistent with that ray,
    can test signed rays, and by default fails instead of falling back to the first centre.

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
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)], dtype=np.int64).reshape(-1, 2)
    H = np.full((len(pairs), 3), np.nan)
    for k, (i, j) in enumerate(pairs):
        x = triangulate_rays(centers[[i, j]], d[[i, j]], config.min_parallax_deg)
        if x is not None:
            H[k] = x
    valid = np.all(np.isfinite(H), axis=1)
    scores = np.zeros(len(H), dtype=np.int64)
    chosen = np.zeros(len(H), dtype=bool)
    fallback = False
    if valid.any():
        support = np.zeros((len(H), n), dtype=bool)
        for k in np.flatnonzero(valid):
            support[k] = ray_angles_deg(H[k], centers, d, config.sign_agnostic) < config.ray_angle_deg
        scores = support.sum(axis=1)
        chosen = valid & (scores == scores[valid].max())
        position = H[chosen].mean(axis=0)
        position_support = support[chosen].any(axis=0)
    elif config.fallback_to_first and n:
        position, position_support, fallback = centers[0], empty.copy(), True
        position_support[0] = True
    else:
        return FusedPose(None, empty, empty, hypotheses=H, hypothesis_pairs=pairs, hypothesis_scores=scores,
                         position_chosen=chosen)

    # --- rotation: vote by mutual angle, L1-average ties ------------------------------------------
    if n == 1:
        rotation, rotation_support = rotations[0], np.ones(1, dtype=bool)
        votes, tied = np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool)
    else:
        angles = rotation_angle_deg(rotations[:, None] @ np.swapaxes(rotations[None], -1, -2))
        agree = angles < config.rotation_angle_deg
        np.fill_diagonal(agree, False)
        votes = agree.sum(axis=1)
        tied = votes == votes.max()
        rotation = l1_rotation_average(rotations[tied]) if tied.sum() > 1 else rotations[tied][0]
        rotation_support = tied | agree[tied].any(axis=0)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, position_support, rotation_support, hypotheses=H, hypothesis_pairs=pairs,
                     hypothesis_scores=scores, position_chosen=chosen, rotation_votes=votes,
                     rotation_chosen=tied, fallback=fallback)
