"""What the ray fusions share: the result type, ray triangulation and the per-image hypotheses.

:class:`FusedPose` is what every fusion returns; :func:`triangulate_rays` is the least-squares midpoint
of ``triangmidpoints.m``; :func:`hypotheses_from_relative_poses` turns regressed relative poses into
world rays and query rotation hypotheses (steps 1-2 of ``filter_pose.m``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...geometry.pose import Pose
from ...geometry.rotation import quat_to_matrix

#: Condition number above which a pair of rays counts as parallel (pair angle below about 1.1e-4 deg).
PARALLEL_COND = 1e12


@dataclass(frozen=True, eq=False)
class FusedPose:
    """A fused estimate.

    Attributes:
        pose: the query ``cam_from_world`` or ``None`` when it cannot be determined.
        position_support: ``(N,)`` mask of the rays / images that support the position.
        rotation_support: ``(N,)`` mask of the rotation hypotheses that support the rotation.
        hypotheses: ``(K, 3)`` centre hypotheses, one per tried pair of rays (NaN where the pair gave
            none), or ``None`` where not recorded.
        hypothesis_pairs: ``(K, 2)`` the ray indices of each hypothesis.
        hypothesis_scores: ``(K,)`` inlier counts of the hypotheses (0 for NaN ones).
        position_chosen: ``(K,)`` the hypotheses the position was made from (the averaged tie of the
            original; the best sample of RANSAC, before its least-squares re-estimation).
        rotation_votes: ``(N,)`` how many *other* rotation hypotheses agree with each one.
        rotation_chosen: ``(N,)`` the rotation hypotheses averaged (or taken) into the rotation.
        fallback: the position is the first database centre because no centre could be formed.
    """

    pose: Pose | None
    position_support: np.ndarray
    rotation_support: np.ndarray
    hypotheses: np.ndarray | None = None
    hypothesis_pairs: np.ndarray | None = None
    hypothesis_scores: np.ndarray | None = None
    position_chosen: np.ndarray | None = None
    rotation_votes: np.ndarray | None = None
    rotation_chosen: np.ndarray | None = None
    fallback: bool = False

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
    if np.linalg.cond(A) > PARALLEL_COND:
        return None
    return np.linalg.solve(A, b)


def ray_angles_deg(point: np.ndarray, centers: np.ndarray, directions: np.ndarray, sign_agnostic: bool) -> np.ndarray:
    """Angle between each ray and the direction from its origin to ``point``.

    Args:
        point: ``(3,)`` centre hypothesis.
        centers: ``(N, 3)`` ray origins.
        directions: ``(N, 3)`` unit ray directions.
        sign_agnostic: rays are lines (``|cos|``), so no angle exceeds 90 degrees.

    Returns:
        ``(N,)`` angles in degrees; 0 where ``point`` sits on a ray's origin.
    """
    u = point[None] - centers
    norms = np.linalg.norm(u, axis=1)
    u = u / np.maximum(norms, 1e-12)[:, None]
    cos = np.sum(u * directions, axis=1)
    if sign_agnostic:
        cos = np.abs(cos)
    angles = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    angles[norms < 1e-12] = 0.0  # the hypothesis sits on the ray origin: consistent with that ray
    return angles


def as_rotations(x: np.ndarray, name: str) -> np.ndarray:
    """``(N, 3, 3)`` matrices, or ``(N, 4)`` w-first quaternions of any non-zero length."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if x.ndim == 2 and x.shape[1] == 4:
        norms = np.linalg.norm(x, axis=1)
        if np.any(norms == 0):
            raise ValueError(f"{name}: zero quaternion")
        return quat_to_matrix(x / norms[:, None])
    if x.ndim == 3 and x.shape[1:] == (3, 3):
        return x
    raise ValueError(f"{name}: expected (N, 4) quaternions or (N, 3, 3) matrices, got {x.shape}")


def hypotheses_from_relative_poses(
    db_rotations: np.ndarray, relative_rotations: np.ndarray, translations: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image query hypotheses from regressed relative poses (Publication V conventions).

    Args:
        db_rotations: ``(N, 3, 3)`` camera-to-world rotations ``R_i`` of the database images, or
            ``(N, 4)`` w-first quaternions of them.
        relative_rotations: ``(N, 4)`` w-first quaternions (normalised here; the network output) or
            ``(N, 3, 3)`` matrices of ``R_i^-1 R_q`` (camera-to-world rotations).
        translations: ``(N, 3)`` world-frame vectors from each database centre towards the query
            (any length; a zero vector gives a NaN direction, which supports nothing).

    Returns:
        ``(N, 3)`` unit world directions and ``(N, 3, 3)`` camera-to-world query rotation hypotheses
        ``R_q^i = R_i rot(q_i)`` (transpose them for ``cam_from_world``).
    """
    R_db = as_rotations(db_rotations, "db_rotations")
    R_rel = as_rotations(relative_rotations, "relative_rotations")
    t = np.asarray(translations, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 3 or not (len(t) == len(R_db) == len(R_rel)):
        raise ValueError(f"expected N rotations, N relative rotations and (N, 3) translations, got "
                         f"{R_db.shape}, {R_rel.shape}, {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("translations contain NaN or infinite values")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = t / np.linalg.norm(t, axis=1, keepdims=True)
    return d, R_db @ R_rel
