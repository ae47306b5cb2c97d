"""The one rigid-pose type of visloc.

:class:`Pose` is ``cam_from_world``: a world point ``X`` maps to camera coordinates ``x = R X + t``
(COLMAP / hloc convention; camera axes x right, y down, z forward). Its quaternion is **w-first**.
Dataset readers convert their own convention (7-Scenes and TUM store camera-to-world) into this type,
and no other code converts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rotation import matrix_to_quat, project_to_rotation, quat_to_matrix, rotation_angle_deg

#: Largest deviation from orthonormality accepted (then projected to the nearest rotation). Text pose
#: files carry 6-8 significant digits; 7-Scenes rotations are also slightly scaled (|R R^T - I| about
#: 1.5e-4 in the sample), so the tolerance leaves an order of magnitude of room.
ORTHONORMAL_TOL = 1e-3
#: Largest deviation of a quaternion norm from 1 accepted before normalisation (TUM stores 4 decimals).
QUAT_NORM_TOL = 1e-2


class InvalidPoseError(ValueError):
    """The numbers do not describe a rigid transform (NaN, not orthonormal, reflection, bad shape)."""


def frozen_array(a: np.ndarray) -> np.ndarray:
    """A read-only float64 copy (for the array fields of frozen dataclasses)."""
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Pose:
    """Rigid transform ``cam_from_world``: ``x_cam = R @ X_world + t``.

    Attributes:
        R: ``(3, 3)`` rotation matrix.
        t: ``(3,)`` translation (metres in every visloc data set).

    Construct from files through the readers in :mod:`visloc.io.poses` and :mod:`visloc.datasets`.
    Invalid numbers raise :class:`InvalidPoseError`.
    """

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = np.asarray(self.R, dtype=np.float64)
        t = np.asarray(self.t, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,):
            raise InvalidPoseError(f"expected R (3,3) and t (3,), got {R.shape} and {t.shape}")
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise InvalidPoseError("pose contains NaN or infinite values")
        deviation = np.abs(R @ R.T - np.eye(3)).max()
        if deviation > ORTHONORMAL_TOL:
            raise InvalidPoseError(f"rotation is not orthonormal (|R R^T - I| = {deviation:.2e})")
        if np.linalg.det(R) < 0:
            raise InvalidPoseError("rotation has determinant -1 (a reflection)")
        if deviation > 1e-9:
            R = project_to_rotation(R)
        object.__setattr__(self, "R", frozen_array(R))
        object.__setattr__(self, "t", frozen_array(t))

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Pose:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_qt(cls, qvec: Iterable[float], tvec: Iterable[float]) -> Pose:
        """From a w-first quaternion ``(qw, qx, qy, qz)`` and a translation, both ``cam_from_world``."""
        q = np.asarray(list(qvec), dtype=np.float64)
        if q.shape != (4,) or not np.all(np.isfinite(q)):
            raise InvalidPoseError(f"quaternion must be 4 finite numbers, got {q}")
        norm = np.linalg.norm(q)
        if abs(norm - 1.0) > QUAT_NORM_TOL:
            raise InvalidPoseError(f"quaternion is not unit length (|q| = {norm:.4f})")
        return cls(quat_to_matrix(q / norm), np.asarray(list(tvec), dtype=np.float64))

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> Pose:
        """From a ``(4, 4)`` or ``(3, 4)`` ``cam_from_world`` matrix."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape not in ((4, 4), (3, 4)):
            raise InvalidPoseError(f"expected a 3x4 or 4x4 matrix, got shape {T.shape}")
        if T.shape == (4, 4) and not np.allclose(T[3], [0, 0, 0, 1], atol=1e-6):
            raise InvalidPoseError(f"last row of a homogeneous pose must be [0 0 0 1], got {T[3]}")
        return cls(T[:3, :3], T[:3, 3])

    @classmethod
    def from_world_from_cam(cls, R_wc: np.ndarray, center: np.ndarray) -> Pose:
        """From a camera-to-world rotation and the camera centre in world coordinates."""
        R_wc = np.asarray(R_wc, dtype=np.float64)
        center = np.asarray(center, dtype=np.float64).reshape(-1)
        if R_wc.shape != (3, 3) or center.shape != (3,):
            raise InvalidPoseError(f"expected R (3,3) and a centre (3,), got {R_wc.shape} and {center.shape}")
        return cls(R_wc.T, -R_wc.T @ center)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Pose:
        """From the layout of :meth:`to_json`: ``{"qvec": [w, x, y, z], "tvec": [x, y, z]}``.

        Raises:
            InvalidPoseError: ``d`` is not a mapping with exactly the keys ``qvec`` and ``tvec``, a value
                is not a list of 4 (``qvec``) or 3 (``tvec``) finite numbers, or the quaternion is not
                unit length (see :meth:`from_qt`).
        """
        if not isinstance(d, Mapping):
            raise InvalidPoseError(f"a JSON pose must be an object with qvec and tvec, got {type(d).__name__}")
        if set(d) != {"qvec", "tvec"}:
            raise InvalidPoseError(f"a JSON pose has exactly the keys 'qvec' and 'tvec', got {sorted(map(str, d))}")
        return cls.from_qt(_json_vector(d["qvec"], "qvec", 4), _json_vector(d["tvec"], "tvec", 3))

    # --- views --------------------------------------------------------------------------------
    @property
    def qvec(self) -> np.ndarray:
        """Unit quaternion ``(qw, qx, qy, qz)`` of ``R`` with ``qw >= 0``."""
        return matrix_to_quat(self.R)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, ``-R^T t``."""
        return -self.R.T @ self.t

    @property
    def matrix(self) -> np.ndarray:
        """``(4, 4)`` homogeneous ``cam_from_world`` matrix."""
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T

    def to_json(self) -> dict[str, list[float]]:
        """``{"qvec": [w, x, y, z], "tvec": [x, y, z]}`` of ``cam_from_world`` (``w >= 0``), plain floats.

        The layout of the ``pose`` fields in visloc's JSON outputs; :meth:`from_json` reads it back.
        """
        return {"qvec": self.qvec.tolist(), "tvec": self.t.tolist()}

    def inverse(self) -> Pose:
        """The inverse transform (``world_from_cam`` as a :class:`Pose` object)."""
        return Pose(self.R.T, -self.R.T @ self.t)

    def __matmul__(self, other: Pose) -> Pose:
        """Composition: ``(a @ b)(X) = a(b(X))``, e.g. ``cam2_from_world = cam2_from_cam1 @ cam1_from_world``."""
        if not isinstance(other, Pose):
            return NotImplemented
        return Pose(self.R @ other.R, self.R @ other.t + self.t)

    def transform(self, points: np.ndarray) -> np.ndarray:
        """Apply to points ``(N, 3)`` -> ``(N, 3)``."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.R.T + self.t

    def relative_to(self, other: Pose) -> Pose:
        """``self_from_other``: maps ``other``'s camera frame into this one's (``self @ other.inverse()``)."""
        return self @ other.inverse()

    def __repr__(self) -> str:
        q = np.array2string(self.qvec, precision=5, separator=", ")
        t = np.array2string(self.t, precision=4, separator=", ")
        return f"Pose(qvec={q}, t={t})"


def _json_vector(value: Any, key: str, size: int) -> np.ndarray:
    """``(size,)`` float64 from a JSON list of numbers; :class:`InvalidPoseError` naming ``key`` otherwise."""
    problem = InvalidPoseError(f"{key} must be a list of {size} numbers, got {value!r}")
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise problem
    if any(isinstance(x, (bool, np.bool_, str, bytes)) or x is None for x in value):
        raise problem
    try:
        a = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise problem from e
    if a.shape != (size,):
        raise problem
    return a


def pose_error(estimate: Pose, truth: Pose) -> tuple[float, float]:
    """Position error (distance between camera centres, in the poses' unit) and rotation error (deg)."""
    dt = float(np.linalg.norm(estimate.center - truth.center))
    dR = float(rotation_angle_deg(estimate.R @ truth.R.T))
    return dt, dR
