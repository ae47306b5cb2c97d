"""The one adapter around PoseLib and pycolmap (their APIs change between releases).

Every robust estimator visloc uses goes through this module, seeded, with thresholds in pixels, and
returns visloc types (:class:`~visloc.geometry.Pose`, boolean inlier masks). Nothing else imports
``poselib`` or ``pycolmap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib
import pycolmap

from .camera import Camera
from .pose import Pose
from .rotation import quat_to_matrix


@dataclass(frozen=True)
class RansacConfig:
    """Options shared by the robust estimators.

    Attributes:
        max_error_px: inlier threshold (reprojection error for PnP, Sampson error for relative pose).
        min_iterations / max_iterations: RANSAC trial bounds.
        seed: random seed, so that results are reproducible.
    """

    max_error_px: float = 4.0
    min_iterations: int = 100
    max_iterations: int = 10000
    success_prob: float = 0.9999
    seed: int = 0


def poselib_camera(camera: Camera) -> poselib.Camera:
    return poselib.Camera(camera.model, list(camera.params), camera.width, camera.height)


def pycolmap_camera(camera: Camera) -> pycolmap.Camera:
    return pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height, params=list(camera.params))


def cam_from_img(camera: Camera, points: np.ndarray) -> np.ndarray:
    """Undistort and normalise pixels ``(N, 2)`` -> normalised image coordinates ``(N, 2)`` (z = 1)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not camera.is_distorted:
        (fx, fy), (cx, cy) = camera.focal, camera.principal_point
        return (points - [cx, cy]) / [fx, fy]
    cam = pycolmap_camera(camera)
    # pycolmap's pixel centres are at +0.5 relative to visloc's (OpenCV) convention, but the principal
    # point stored in ``camera`` is already in visloc's convention, so the offsets cancel.
    if hasattr(cam, "cam_from_img"):
        out = cam.cam_from_img(points)
    else:  # pycolmap < 0.5
        out = cam.image_to_world(points)
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def img_from_cam(camera: Camera, points_cam: np.ndarray) -> np.ndarray:
    """Project camera-frame 3D points ``(N, 3)`` (z > 0) to distorted pixels ``(N, 2)``."""
    points_cam = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    if not camera.is_distorted:
        return camera.project_pinhole(points_cam)
    cam = poselib_camera(camera)
    return np.asarray(cam.project(points_cam[:, :2] / points_cam[:, 2:3]), dtype=np.float64)


def _pose_from_poselib(p: poselib.CameraPose) -> Pose:
    return Pose(quat_to_matrix(np.asarray(p.q)), np.asarray(p.t))


def _poselib_pose(pose: Pose) -> poselib.CameraPose:
    p = poselib.CameraPose()
    p.q = pose.qvec
    p.t = pose.t
    return p


def _ransac_opt(cfg: RansacConfig, key: str) -> dict:
    return {
        key: cfg.max_error_px,
        "min_iterations": cfg.min_iterations,
        "max_iterations": cfg.max_iterations,
        "success_prob": cfg.success_prob,
        "seed": cfg.seed,
    }


@dataclass(frozen=True)
class PoseEstimate:
    """Result of a robust pose estimation.

    Attributes:
        pose: the estimated transform (meaning depends on the estimator).
        inliers: ``(N,)`` boolean mask over the input correspondences.
    """

    pose: Pose
    inliers: np.ndarray

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def estimate_absolute_pose(
    points2D: np.ndarray, points3D: np.ndarray, camera: Camera, cfg: RansacConfig = RansacConfig()
) -> PoseEstimate | None:
    """PnP with LO-RANSAC (P3P) and non-linear refinement (PoseLib).

    Args:
        points2D: ``(N, 2)`` pixels (distorted, as detected).
        points3D: ``(N, 3)`` world points.
        camera: intrinsics of the image the pixels come from.

    Returns:
        ``cam_from_world`` estimate, or ``None`` with fewer than 4 correspondences or no solution.
    """
    if len(points2D) < 4:
        return None
    pose, info = poselib.estimate_absolute_pose(
        np.ascontiguousarray(points2D, dtype=np.float64),
        np.ascontiguousarray(points3D, dtype=np.float64),
        poselib_camera(camera),
        _ransac_opt(cfg, "max_reproj_error"),
        {},
    )
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if inliers.sum() < 4:
        return None
    return PoseEstimate(_pose_from_poselib(pose), inliers)


def refine_absolute_pose(
    points2D: np.ndarray, points3D: np.ndarray, camera: Camera, initial: Pose, loss_scale_px: float = 2.0
) -> Pose:
    """Non-linear refinement of a ``cam_from_world`` pose on given (inlier) correspondences (PoseLib)."""
    pose, _ = poselib.refine_absolute_pose(
        np.ascontiguousarray(points2D, dtype=np.float64),
        np.ascontiguousarray(points3D, dtype=np.float64),
        _poselib_pose(initial),
        poselib_camera(camera),
        {"loss_type": "CAUCHY", "loss_scale": loss_scale_px},
    )
    return _pose_from_poselib(pose)


def estimate_relative_pose(
    points1: np.ndarray,
    points2: np.ndarray,
    camera1: Camera,
    camera2: Camera,
    cfg: RansacConfig = RansacConfig(max_error_px=1.0),
) -> PoseEstimate | None:
    """Essential matrix (5-point LO-RANSAC, PoseLib) with cheirality, then refinement.

    Returns:
        ``cam2_from_cam1`` with a unit-norm translation, or ``None`` with fewer than 5 inliers.
    """
    if len(points1) < 5:
        return None
    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(points1, dtype=np.float64),
        np.ascontiguousarray(points2, dtype=np.float64),
        poselib_camera(camera1),
        poselib_camera(camera2),
        _ransac_opt(cfg, "max_epipolar_error"),
        {},
    )
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if inliers.sum() < 5:
        return None
    return PoseEstimate(_pose_from_poselib(pose), inliers)
