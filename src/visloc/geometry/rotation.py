"""Rotation helpers. Quaternions are always **w-first** ``(qw, qx, qy, qz)`` in visloc (COLMAP, hloc,
PoseLib and kornia order); SciPy stores them x-first, so the reordering happens here and nowhere else.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def quat_to_matrix(qvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion.

    Args:
        qvec: ``(..., 4)`` quaternion ``(w, x, y, z)``; it is normalised first.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    q = np.asarray(qvec, dtype=np.float64)
    return Rotation.from_quat(q[..., [1, 2, 3, 0]]).as_matrix()


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a rotation matrix, with ``w >= 0``.

    Args:
        R: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 4)`` quaternions.
    """
    q = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_quat()[..., [3, 0, 1, 2]]
    return np.where(q[..., :1] < 0, -q, q)


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle in degrees of rotation matrices ``(..., 3, 3)`` (numerically safe near 0 and 180)."""
    R = np.asarray(R, dtype=np.float64)
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    sin = np.linalg.norm(
        np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1),
        axis=-1,
    ) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def quat_angle_deg(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """Angle between two rotations given as quaternions: ``2 acos(|q1 . q2|)`` in degrees."""
    q1 = np.asarray(q1, dtype=np.float64)
    q2 = np.asarray(q2, dtype=np.float64)
    q1 = q1 / np.linalg.norm(q1, axis=-1, keepdims=True)
    q2 = q2 / np.linalg.norm(q2, axis=-1, keepdims=True)
    dot = np.clip(np.abs(np.sum(q1 * q2, axis=-1)), 0.0, 1.0)
    return np.degrees(2.0 * np.arccos(dot))


def project_to_rotation(M: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix (Frobenius) to a ``3x3`` matrix, via SVD."""
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt
