"""Robust single-rotation averaging.

:func:`l1_rotation_average` is the Weiszfeld algorithm on SO(3) of Hartley, Aftab & Trumpf,
"L1 rotation averaging using the Weiszfeld algorithm" (CVPR 2011): it minimises the sum of geodesic
distances, so a minority of outlier rotations barely moves the result (unlike the chordal mean).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from .rotation import matrix_to_quat, quat_to_matrix


def quaternion_mean(rotations: np.ndarray) -> np.ndarray:
    """Sign-aligned normalised mean of the quaternions of ``(N, 3, 3)`` rotations -> ``(3, 3)``."""
    q = matrix_to_quat(rotations)
    q = np.where((q @ q[0])[:, None] < 0, -q, q)
    return quat_to_matrix(q.mean(axis=0))


def l1_rotation_average(rotations: np.ndarray, max_iterations: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Geodesic L1 mean (median) of rotations.

    Args:
        rotations: ``(N, 3, 3)`` rotation matrices.
        max_iterations: Weiszfeld iterations.
        tol: stop when the update angle (radians) falls below this.

    Returns:
        ``(3, 3)`` rotation ``S`` minimising ``sum_i angle(R_i S^T)``.
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3) or len(rotations) == 0:
        raise ValueError(f"expected (N, 3, 3) rotations, got {rotations.shape}")
    S = quaternion_mean(rotations)
    for _ in range(max_iterations):
        v = Rotation.from_matrix(rotations @ S.T).as_rotvec()  # (N, 3) residuals in the tangent space
        norms = np.linalg.norm(v, axis=1)
        near = norms < 1e-12
        if near.all():
            break
        weights = 1.0 / norms[~near]
        delta = (v[~near] * weights[:, None]).sum(axis=0) / weights.sum()
        S = Rotation.from_rotvec(delta).as_matrix() @ S
        if np.linalg.norm(delta) < tol:
            break
    return S
