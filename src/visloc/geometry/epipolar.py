"""Two-view epipolar quantities (numpy; used for verification figures and tests)."""

from __future__ import annotations

import numpy as np

from .pose import Pose


def skew(v: np.ndarray) -> np.ndarray:
    """``(3, 3)`` cross-product matrix ``[v]_x``."""
    x, y, z = np.asarray(v, dtype=np.float64)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def essential_from_pose(cam1_from_cam0: Pose) -> np.ndarray:
    """Essential matrix ``E = [t]_x R`` with ``x1^T E x0 = 0`` for normalised points."""
    return skew(cam1_from_cam0.t) @ cam1_from_cam0.R


def sampson_distance(E: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """First-order geometric error of correspondences under ``E``.

    Args:
        E: ``(3, 3)`` essential (or fundamental) matrix mapping view 0 to view 1.
        x0: ``(N, 2)`` points in view 0 (normalised coordinates for an essential matrix).
        x1: ``(N, 2)`` corresponding points in view 1.

    Returns:
        ``(N,)`` Sampson distances, in the unit of the points.
    """
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], axis=1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], axis=1)
    Ex0 = h0 @ E.T
    Etx1 = h1 @ E
    num = np.sum(h1 * Ex0, axis=1)
    den = Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2 + Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2
    return np.abs(num) / np.sqrt(np.maximum(den, 1e-30))
