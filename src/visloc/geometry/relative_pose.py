"""Relative-pose labels of an image pair (Publication V, Laskar et al. 2017) and their inverses.

Pair order is the original's: image 1 = **database**, image 2 = **query**. With visloc poses
(``cam_from_world``: ``x = R X + t``, centre ``C = -R^T t``):

* rotation label ``q``: w-first unit quaternion (``w >= 0``) of ``R_rel = R_db @ R_q^T``, which maps
  query-camera coordinates to database-camera coordinates. It equals the original's ``R_db^-1 R_q``
  with camera-to-world matrices.
* translation label ``t``, by ``frame``:

  - ``"world"`` (the original): ``t = C_q - C_db`` in world coordinates. Scene-specific: the same
    image pair in a rotated copy of the world has another label.
  - ``"camera"`` (visloc's default): ``t = R_db @ (C_q - C_db)``, the query centre in the database
    camera frame. It depends on the two images only, so one model can serve many scenes.

Every function takes numpy arrays; those that say so take torch tensors too. torch is never imported
here: a tensor can only be passed once torch is loaded.

Swapping the pair (the training augmentation) gives exactly (:func:`swap_label`):

* ``world``:  ``t' = -t``, ``q' = conj(q) = (w, -x, -y, -z)`` (the original's rule);
* ``camera``: ``t' = -R(q)^T t`` (the database centre in the query frame), ``q' = conj(q)``.

At test time (:func:`query_pose_from_label`) a prediction for database image ``db`` gives the query
rotation ``R_q = R(q)^T @ R_db`` and the world direction of the ray from ``C_db`` towards the query:
``t / |t|`` (world) or ``R_db^T t / |t|`` (camera).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import ConfigError
from .pose import Pose
from .rotation import matrix_to_quat, quat_to_matrix

if TYPE_CHECKING:
    import torch

#: Frames a translation label can be expressed in.
TRANSLATION_FRAMES = ("world", "camera")

Array = TypeVar("Array", np.ndarray, "torch.Tensor")


def check_frame(frame: str) -> str:
    """Return ``frame`` if it is one of :data:`TRANSLATION_FRAMES`, else raise :class:`ConfigError`."""
    if frame not in TRANSLATION_FRAMES:
        raise ConfigError(f"unknown translation frame {frame!r}; known: {', '.join(TRANSLATION_FRAMES)}")
    return frame


def _is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# --- quaternion helpers working on numpy arrays and torch tensors alike ---------------------------------


def quat_conjugate(q: Array) -> Array:
    """``(w, x, y, z) -> (w, -x, -y, -z)`` on ``(..., 4)``: the inverse rotation (for unit ``q``)."""
    sign = [1.0, -1.0, -1.0, -1.0]
    if _is_tensor(q):
        return q * q.new_tensor(sign)
    return np.asarray(q, dtype=np.float64) * np.asarray(sign)


def _cross(a: Array, b: Array) -> Array:
    if _is_tensor(a):
        import torch

        return torch.linalg.cross(a, b, dim=-1)
    return np.cross(a, b)


def _normalize(q: Array) -> Array:
    if _is_tensor(q):
        import torch

        return q / torch.linalg.norm(q, dim=-1, keepdim=True)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_rotate(q: Array, v: Array) -> Array:
    """Rotate vectors by quaternions (normalised first): ``R(q) @ v``.

    Args:
        q: ``(..., 4)`` w-first quaternions.
        v: ``(..., 3)`` vectors (broadcast against ``q``).

    Returns:
        ``(..., 3)`` rotated vectors.
    """
    if not _is_tensor(q):
        q = np.asarray(q, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
    q = _normalize(q)
    w, u = q[..., :1], q[..., 1:]
    uv = _cross(u, v)
    return v + 2.0 * (w * uv + _cross(u, uv))


# --- labels ----------------------------------------------------------------------------------------------


def relative_pose_label(db: Pose, query: Pose, frame: str) -> tuple[np.ndarray, np.ndarray]:
    """Regression target of the pair (database image, query image).

    Args:
        db: pose of image 1, the database image.
        query: pose of image 2, the query image.
        frame: ``"world"`` (the original: ``C_q - C_db``) or ``"camera"`` (``R_db (C_q - C_db)``).

    Returns:
        ``t (3,)`` and ``q (4,)`` (w-first, unit, ``w >= 0``, rotation ``R_db @ R_q^T``), float64.
    """
    check_frame(frame)
    t = query.center - db.center
    if frame == "camera":
        t = db.R @ t
    return t, matrix_to_quat(db.R @ query.R.T)


def swap_label(t: Array, q: Array, frame: str) -> tuple[Array, Array]:
    """The exact label of the swapped pair (query first), from the label of (database, query).

    Works on numpy arrays and torch tensors, batched over leading dimensions.

    Args:
        t: ``(..., 3)`` translation label.
        q: ``(..., 4)`` rotation label (normalised here where it rotates ``t``).
        frame: the frame of ``t``.

    Returns:
        ``t'``: ``-t`` (world) or ``-R(q)^T t`` (camera); ``q' = (w, -x, -y, -z)``.
    """
    check_frame(frame)
    q_swapped = quat_conjugate(q)
    if frame == "world":
        return -t, q_swapped
    return -quat_rotate(q_swapped, t), q_swapped


def _as_vector(x: np.ndarray | torch.Tensor, n: int, what: str) -> np.ndarray:
    if _is_tensor(x):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (n,) or not np.all(np.isfinite(x)):
        raise ValueError(f"{what} must be {n} finite numbers, got {x}")
    return x


def label_translation_to_world(db: Pose, t: np.ndarray | torch.Tensor, frame: str) -> np.ndarray:
    """The translation label as a world vector ``C_q - C_db`` (``db.center + result`` is the query centre
    if the label's scale is trusted).

    Args:
        db: the database pose of the pair.
        t: ``(3,)`` translation label or prediction.
        frame: its frame.

    Returns:
        ``(3,)`` world vector.
    """
    check_frame(frame)
    t = _as_vector(t, 3, "translation")
    return t if frame == "world" else db.R.T @ t


def query_pose_from_label(
    db: Pose, t: np.ndarray | torch.Tensor, q: np.ndarray | torch.Tensor, frame: str
) -> tuple[np.ndarray, np.ndarray]:
    """Query rotation and ray direction implied by a (predicted) label for database image ``db``.

    This is step 1-2 of the original pose fusion (``filter_pose.m``): ``R_q^i = R_i rot(q_i)`` with
    camera-to-world matrices, and the translation as a direction from the database centre.

    Args:
        db: pose of the database image (image 1 of the pair).
        t: ``(3,)`` translation prediction (any scale).
        q: ``(4,)`` w-first quaternion prediction (any norm).
        frame: frame of ``t``.

    Returns:
        ``R_q (3, 3)``: the query rotation hypothesis, ``cam_from_world`` (``R(q)^T @ db.R``), and
        ``d (3,)``: unit world direction from ``C_db`` towards the query centre.

    Raises:
        ValueError: ``q`` or ``t`` is zero or not finite.
    """
    q = _as_vector(q, 4, "quaternion")
    q_norm = np.linalg.norm(q)
    if q_norm < 1e-12:
        raise ValueError("quaternion prediction is zero")
    t_world = label_translation_to_world(db, t, frame)
    t_norm = np.linalg.norm(t_world)
    if t_norm < 1e-12:
        raise ValueError("translation prediction is zero: it has no direction")
    R_rel = quat_to_matrix(q / q_norm)
    return R_rel.T @ db.R, t_world / t_norm
