"""The one adapter around PoseLib and pycolmap (their APIs change between releases).

Every robust estimator visloc uses goes through this module, seeded, with thresholds in pixels, and
returns visloc types (:class:`~visloc.geometry.Pose`, boolean inlier masks). COLMAP sparse models are
read here too (:func:`read_colmap_reconstruction`), as stored: :mod:`visloc.datasets.colmap` converts their
pixel convention. Nothing else imports ``poselib`` or ``pycolmap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import poselib
import pycolmap

from ..errors import InputError
from .camera import Camera
from .pose import InvalidPoseError, Pose
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


@dataclass(frozen=True)
class TwoViewModel:
    """A robustly fitted 3x3 two-view model and its inliers.

    Attributes:
        matrix: ``H`` (``x1 ~ H x0``) or ``F`` (``x1^T F x0 = 0``), pixels.
        inliers: ``(N,)`` boolean mask over the input correspondences.
    """

    matrix: np.ndarray
    inliers: np.ndarray

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


#: Minimal sample sizes of :func:`estimate_two_view_model`'s models.
TWO_VIEW_MIN_POINTS = {"homography": 4, "fundamental": 7}


def estimate_two_view_model(
    points0: np.ndarray, points1: np.ndarray, model: str, cfg: RansacConfig = RansacConfig(max_error_px=3.0)
) -> TwoViewModel | None:
    """A homography (reprojection error in image 1) or a fundamental matrix (Sampson error) by PoseLib's
    LO-RANSAC, uncalibrated pixels in both images.

    Returns:
        The model, or ``None`` with fewer correspondences than its minimal sample or no model found.
    """
    if model not in TWO_VIEW_MIN_POINTS:
        raise ValueError(f"unknown two-view model {model!r}; known: {', '.join(TWO_VIEW_MIN_POINTS)}")
    if len(points0) < TWO_VIEW_MIN_POINTS[model]:
        return None
    x0 = np.ascontiguousarray(points0, dtype=np.float64)
    x1 = np.ascontiguousarray(points1, dtype=np.float64)
    if model == "homography":
        matrix, info = poselib.estimate_homography(x0, x1, _ransac_opt(cfg, "max_reproj_error"), {})
    else:
        matrix, info = poselib.estimate_fundamental(x0, x1, _ransac_opt(cfg, "max_epipolar_error"), {})
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if len(inliers) != len(x0) or not inliers.any():
        return None
    return TwoViewModel(np.asarray(matrix, np.float64), inliers)


def two_view_errors(matrix: np.ndarray, model: str, points0: np.ndarray, points1: np.ndarray) -> np.ndarray:
    """``(N,)`` errors in pixels of matches under a two-view model, as :func:`estimate_two_view_model` scores
    them: the reprojection error in image 1 (``homography``, ``x1 ~ H x0``) or the Sampson error
    (``fundamental``, ``x1^T F x0 = 0``)."""
    if model not in TWO_VIEW_MIN_POINTS:
        raise ValueError(f"unknown two-view model {model!r}; known: {', '.join(TWO_VIEW_MIN_POINTS)}")
    x0 = np.concatenate([np.asarray(points0, np.float64).reshape(-1, 2), np.ones((len(points0), 1))], axis=1)
    x1 = np.concatenate([np.asarray(points1, np.float64).reshape(-1, 2), np.ones((len(points1), 1))], axis=1)
    M = np.asarray(matrix, np.float64)
    if model == "homography":
        proj = x0 @ M.T
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.linalg.norm(proj[:, :2] / proj[:, 2:] - x1[:, :2], axis=1)
        return np.where(np.isfinite(err), err, np.inf)
    Fx0, Ftx1 = x0 @ M.T, x1 @ M
    num = np.einsum("ij,ij->i", x1, Fx0) ** 2
    den = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, np.sqrt(num / den), np.inf)


# --- COLMAP sparse models -------------------------------------------------------------------------------
#: The files of a COLMAP sparse model (``rigs`` and ``frames``, COLMAP >= 3.12, are optional).
COLMAP_MODEL_FILES = ("cameras", "images", "points3D")


@dataclass(frozen=True)
class ColmapCamera:
    """A camera of a COLMAP model as stored: pixel coordinates in **COLMAP's** convention (the centre of
    the top-left pixel is ``(0.5, 0.5)``). Not a :class:`Camera`: the dataset reader converts it."""

    model: str
    width: int
    height: int
    params: tuple[float, ...]


@dataclass(frozen=True)
class ColmapImage:
    """A registered image of a COLMAP model.

    Attributes:
        name: the model's image name (a path relative to the image folder).
        camera_id: key into :attr:`ColmapModel.cameras`.
        cam_from_world: the pose, same convention as :class:`Pose` (read as a rotation matrix, so the
            quaternion order of the pycolmap release does not matter).
        points2D: ``(N, 2)`` the observations that have a 3D point, COLMAP pixel convention; empty unless
            read with ``observations=True``.
        points3D: ``(N, 3)`` their world points.
    """

    name: str
    camera_id: int
    cam_from_world: Pose
    points2D: np.ndarray
    points3D: np.ndarray


@dataclass(frozen=True)
class ColmapModel:
    """A COLMAP sparse model read by :func:`read_colmap_reconstruction`.

    Attributes:
        path: the model folder.
        file_format: ``bin`` or ``txt``.
        cameras: by camera id.
        images: the registered images, by name.
        unregistered: names of the images the model lists without a pose.
    """

    path: Path
    file_format: str
    cameras: dict[int, ColmapCamera]
    images: dict[str, ColmapImage]
    unregistered: list[str]


def colmap_model_format(model_dir: str | Path) -> str:
    """``bin`` or ``txt``: the first format in which ``cameras``, ``images`` and ``points3D`` all exist.

    Raises:
        InputError: ``model_dir`` is not a folder or holds neither a complete binary nor a complete text model.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "COLMAP model folder does not exist" if not model_dir.exists()
                         else "expected a COLMAP model folder, got a file")
    for ext in ("bin", "txt"):
        if all((model_dir / f"{n}.{ext}").is_file() for n in COLMAP_MODEL_FILES):
            return ext
    found = sorted(p.name for p in model_dir.iterdir() if p.suffix in (".bin", ".txt"))
    raise InputError(
        model_dir,
        "not a COLMAP model: expected cameras, images and points3D as .bin or as .txt, found "
        + (", ".join(found) if found else "none of them"),
    )


def _cam_from_world(image: pycolmap.Image) -> Pose:
    """The image's ``cam_from_world`` (a method since pycolmap 3.12, a property before; ``qvec``/``tvec``
    with a w-first quaternion before 0.5)."""
    if hasattr(image, "cam_from_world"):
        rigid = image.cam_from_world
        rigid = rigid() if callable(rigid) else rigid
        return Pose.from_matrix(np.asarray(rigid.matrix(), dtype=np.float64))
    return Pose(quat_to_matrix(np.asarray(image.qvec, dtype=np.float64)), np.asarray(image.tvec))


def _has_pose(image: pycolmap.Image) -> bool:
    flag = image.has_pose if hasattr(image, "has_pose") else image.registered
    return bool(flag() if callable(flag) else flag)


def _model_name(camera: pycolmap.Camera) -> str:
    name = camera.model_name if hasattr(camera, "model_name") else camera.model.name
    return str(name)


def read_colmap_reconstruction(model_dir: str | Path, observations: bool = False) -> ColmapModel:
    """Read a COLMAP sparse model (binary or text) with pycolmap, as stored (no convention converted).

    Args:
        model_dir: the folder with ``cameras``, ``images`` and ``points3D`` (``.bin``, else ``.txt``).
        observations: also read every image's 2D observations that have a 3D point (slow on large models).

    Raises:
        InputError: the folder is not a model, or pycolmap cannot parse it (the message says why).
    """
    model_dir = Path(model_dir)
    ext = colmap_model_format(model_dir)
    rec = pycolmap.Reconstruction()
    try:
        (rec.read_binary if ext == "bin" else rec.read_text)(str(model_dir))
    except (ValueError, RuntimeError, OSError, IndexError) as e:
        raise InputError(model_dir, f"cannot read the COLMAP {ext} model ({e})") from None
    cameras = {
        int(cid): ColmapCamera(_model_name(c), int(c.width), int(c.height), tuple(float(p) for p in c.params))
        for cid, c in rec.cameras.items()
    }
    images: dict[str, ColmapImage] = {}
    unregistered: list[str] = []
    points = rec.points3D
    for image in rec.images.values():
        if not _has_pose(image):
            unregistered.append(image.name)
            continue
        xy = np.zeros((0, 2))
        xyz = np.zeros((0, 3))
        if observations:
            obs = [(p.xy, p.point3D_id) for p in image.points2D if p.has_point3D()]
            if obs:
                xy = np.array([o[0] for o in obs], dtype=np.float64).reshape(-1, 2)
                xyz = np.array([points[o[1]].xyz for o in obs], dtype=np.float64).reshape(-1, 3)
        try:
            pose = _cam_from_world(image)
        except InvalidPoseError as e:
            raise InputError(model_dir, f"image {image.name}: invalid pose in the COLMAP model ({e})") from None
        images[image.name] = ColmapImage(image.name, int(image.camera_id), pose, xy, xyz)
    return ColmapModel(model_dir, ext, cameras, images, unregistered)
