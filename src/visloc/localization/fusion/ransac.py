"""RANSAC over pairs of rays for any N, then least squares over the inlier rays.

Pairs of rays are sampled at random (seeded, so deterministic), scored by inlier count with a
truncated-residual tie-break; the centre is re-estimated by least squares from all inlier rays and the
rotation by the L1 mean of the inlier rotations. With at most ``exhaustive_up_to`` (default 8) usable
rays every pair is enumerated instead (at most 28 pairs, fewer than the samples the confidence bound
would ask for at high outlier ratios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...geometry.pose import Pose
from .common import FusedPose, ray_angles_deg, triangulate_rays
from .consensus import rotation_consensus


@dataclass(frozen=True)
class RansacRayFusionConfig:
    """Thresholds of :func:`fuse_rays_ransac`.

    Attributes:
        ray_angle_deg: a ray is an inlier of a centre when the angle between it and the direction from
            its origin to the centre is below this (10 = the original's ``2 acos(|cos|) < 20``).
        rotation_angle_deg: a rotation hypothesis is an inlier of another below this angle (original: 20).
        sign_agnostic: rays are lines (the original) or, when ``False``, a ray pointing away from the
            centre is an outlier (geometric rays from the essential matrix).
        max_iterations: random pair samples at most.
        confidence: stop sampling once the probability of having drawn an all-inlier pair, at the
            best inlier ratio so far, reaches this.
        seed: seed of the pair sampler (the result is a function of the inputs and the seed).
        min_support: the best centre needs at least this many inlier rays, else the fusion fails (or
            falls back, see ``fallback_to_first``).
        exhaustive_up_to: with at most this many usable rays every pair is tried (in order) instead of
            sampling; the seed then plays no part.
        min_parallax_deg: ray pairs closer to parallel than this give no hypothesis.
        residual_tie_break: among centres with the same inlier count prefer the smaller sum of angular
            residuals truncated at ``ray_angle_deg`` (MSAC); ``False``: the first one found.
        refine_iterations: least-squares re-estimations from the inlier rays, each followed by a new
            inlier test (stops when the inlier set no longer grows or changes).
        fallback_to_first: with no centre of enough support, return the first database centre instead
            of failing (the original's fallback).
    """

    ray_angle_deg: float = 10.0
    rotation_angle_deg: float = 20.0
    sign_agnostic: bool = True
    max_iterations: int = 1000
    confidence: float = 0.999
    seed: int = 0
    min_support: int = 2
    exhaustive_up_to: int = 8
    min_parallax_deg: float = 0.5
    residual_tie_break: bool = True
    refine_iterations: int = 5
    fallback_to_first: bool = False

    def __post_init__(self) -> None:
        if not (self.ray_angle_deg > 0 and self.rotation_angle_deg > 0):
            raise ValueError("angle thresholds must be positive")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.max_iterations < 1 or self.min_support < 1 or self.refine_iterations < 0:
            raise ValueError("max_iterations and min_support must be >= 1, refine_iterations >= 0")


def _ransac_iterations(inliers: int, usable: int, confidence: float) -> float:
    """Samples needed to draw an all-inlier pair with ``confidence`` at ``inliers`` of ``usable`` rays."""
    if usable < 2:
        return 0.0
    p = inliers / usable * max(inliers - 1, 0) / (usable - 1)
    if p >= 1.0:
        return 0.0
    if p <= 0.0:
        return math.inf
    return math.log(1.0 - confidence) / math.log(1.0 - p)


def fuse_rays_ransac(
    centers: np.ndarray,
    directions: np.ndarray,
    rotations: np.ndarray,
    config: RansacRayFusionConfig = RansacRayFusionConfig(),
) -> FusedPose:
    """Robust fusion of N rays and rotation hypotheses by RANSAC, then least squares over the inliers.

    Position: pairs of usable rays (finite, non-zero directions) are triangulated into centre
    hypotheses. With at most ``config.exhaustive_up_to`` usable rays every pair is tried in order;
    otherwise pairs are drawn at random (seeded) until the usual confidence bound at the best inlier
    ratio so far is met or ``max_iterations`` is reached. A hypothesis is scored by its inlier count
    (ties: the smaller truncated angular residual sum, if ``residual_tie_break``). The best one's inlier
    rays are then triangulated together by least squares (:func:`.common.triangulate_rays`), re-tested,
    and re-triangulated while the inlier set grows or changes without shrinking (``refine_iterations``).

    Rotation: every hypothesis ``R_q^i`` is a minimal sample (one rotation), so all N are tried; its
    inliers are the hypotheses within ``rotation_angle_deg`` (itself included); the best (most inliers,
    then smaller truncated residual sum, then lower index) gives the inlier set, whose L1 mean
    (:func:`~visloc.geometry.rotation_averaging.l1_rotation_average`) is re-tested and re-averaged in
    the same way as the centre. Rotations are fused independently of the rays, as in the original.

    Args:
        centers: ``(N, 3)`` database camera centres (world).
        directions: ``(N, 3)`` world-frame directions from each database centre towards the query (any
            length; rows that are zero or not finite are never sampled and never inliers).
        rotations: ``(N, 3, 3)`` query rotation hypotheses (``cam_from_world``).
        config: thresholds, sampling and seed.

    Returns:
        The fused pose; ``position_support`` holds the rays of the final least-squares centre and
        ``rotation_support`` (= ``rotation_chosen``) the rotations of the final L1 mean.
        ``hypotheses`` / ``hypothesis_pairs`` / ``hypothesis_scores`` list the tried pairs in order and
        ``position_chosen`` marks the winning sample. With fewer than ``min_support`` inlier rays for
        the best centre (all rays parallel, N < 2, ...) ``pose`` is ``None`` and both supports are
        empty, unless ``fallback_to_first``: then the centre is the first database centre
        (``fallback`` set, support = the first image) and the rotation is fused as usual.
    """
    C = np.asarray(centers, dtype=np.float64)
    R = np.asarray(rotations, dtype=np.float64)
    raw = np.asarray(directions, dtype=np.float64)
    n = len(C)
    if C.shape != (n, 3) or raw.shape != (n, 3) or R.shape != (n, 3, 3):
        raise ValueError(f"expected (N, 3) centres and directions and (N, 3, 3) rotations, got "
                         f"{C.shape}, {raw.shape}, {R.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    usable = np.all(np.isfinite(d), axis=1) & np.all(np.isfinite(C), axis=1)
    idx = np.flatnonzero(usable)
    thr = config.ray_angle_deg

    def score(x: np.ndarray) -> tuple[np.ndarray, float]:
        angles = np.full(n, np.inf)
        angles[usable] = ray_angles_deg(x, C[usable], d[usable], config.sign_agnostic)
        return angles < thr, float(np.minimum(angles[usable], thr).sum())

    # --- hypotheses: all pairs for small N, else seeded random pairs with adaptive stopping -----
    tried: list[tuple[int, int]] = []
    H: list[np.ndarray] = []
    scores: list[int] = []
    best: tuple[int, float] | None = None
    best_k, best_inliers, best_x = -1, np.zeros(n, dtype=bool), None

    def consider(i: int, j: int) -> None:
        nonlocal best, best_k, best_inliers, best_x
        tried.append((i, j))
        x = triangulate_rays(C[[i, j]], d[[i, j]], config.min_parallax_deg)
        if x is None:
            H.append(np.full(3, np.nan))
            scores.append(0)
            return
        inl, residual = score(x)
        H.append(x)
        scores.append(int(inl.sum()))
        key = (int(inl.sum()), -residual if config.residual_tie_break else 0.0)
        if best is None or key > best:
            best, best_k, best_inliers, best_x = key, len(tried) - 1, inl, x

    if len(idx) <= config.exhaustive_up_to:
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                consider(int(idx[a]), int(idx[b]))
    else:
        rng = np.random.default_rng(config.seed)
        while len(tried) < config.max_iterations:
            i, j = rng.choice(idx, size=2, replace=False)
            consider(int(i), int(j))
            if best is not None and len(tried) >= _ransac_iterations(best[0], len(idx), config.confidence):
                break

    hypotheses = np.array(H, dtype=np.float64).reshape(-1, 3)
    pairs = np.array(tried, dtype=np.int64).reshape(-1, 2)
    hypothesis_scores = np.array(scores, dtype=np.int64)
    chosen = np.zeros(len(pairs), dtype=bool)
    empty = np.zeros(n, dtype=bool)
    info = dict(hypotheses=hypotheses, hypothesis_pairs=pairs, hypothesis_scores=hypothesis_scores)

    # --- centre: least squares over the inliers of the best sample -------------------------------
    fallback = False
    if best_x is not None and best_inliers.sum() >= config.min_support:
        chosen[best_k] = True
        inliers, position = best_inliers, best_x
        x = triangulate_rays(C[inliers], d[inliers]) if inliers.sum() >= 2 else None
        if x is not None:
            position = x
            for _ in range(config.refine_iterations):
                new_inliers, _ = score(position)
                if new_inliers.sum() < inliers.sum() or np.array_equal(new_inliers, inliers):
                    break
                x = triangulate_rays(C[new_inliers], d[new_inliers])
                if x is None:
                    break
                inliers, position = new_inliers, x
        position_support = inliers
    elif config.fallback_to_first and n:
        position, position_support, fallback = C[0], empty.copy(), True
        position_support[0] = True
    else:
        return FusedPose(None, empty, empty.copy(), position_chosen=chosen, **info)

    rotation, rot_inliers, votes = rotation_consensus(R, config.rotation_angle_deg, config.residual_tie_break,
                                                       config.refine_iterations)
    pose = Pose.from_world_from_cam(rotation.T, position)
    return FusedPose(pose, position_support, rot_inliers, position_chosen=chosen, rotation_votes=votes,
                     rotation_chosen=rot_inliers, fallback=fallback, **info)
