"""Dense-matching metrics (AEPE, PCK; DGC-Net's HPatches protocol) and relative-pose AUC (SuperGlue's).

**Dense part (torch).** A correspondence map is a float tensor ``(B, 2, Ht, Wt)`` (or ``(2, Ht, Wt)``)
that gives, for every TARGET pixel, the ``(x, y)`` pixel of its match in the SOURCE image, OpenCV's
pixel convention (the centre of the top-left pixel is ``(0, 0)``); its validity mask is ``(B, 1, Ht,
Wt)``. Estimated maps are compared with the ground truth in target pixels. Functions take torch tensors
(numpy arrays are converted) and compute on the tensors' device.

* Ground truth from a homography ``H`` (source -> target): :func:`homography_correspondence` applies
  ``H^-1`` to the target lattice; a pixel is valid when its source point lies in ``[0, Ws - 1] x [0,
  Hs - 1]``, the hull of the source pixel centres. That is DGC-Net's mask (``grid in [-1, 1]`` with its
  ``align_corners=True`` normalisation, ``utils/evaluate.py``).
* Resized images: :func:`scale_homography` (DGC-Net's ``S2 H S1^-1``, pixel centres handled exactly).
* :func:`endpoint_errors` (Euclidean, px), :func:`aepe` (their mean over one pair; DGC-Net then averages
  the per-pair AEPE over the pairs of one viewpoint ID), :func:`pck` (share of errors ``<=`` each
  threshold, inclusive as DGC-Net's ``le``).
* DGC-Net's PCK curve (:func:`dgcnet_pck`): thresholds ``linspace(0.005, 0.1, 200) * 240`` px, errors
  pooled over all pixels of all pairs (one count, not a mean of per-pair values). DGC-Net's released
  ``calculate_pck_hpatches`` flattens x and y into one vector before taking the norm, so it thresholds
  ``|dx|`` and ``|dy|`` separately; feed :func:`component_errors` instead of :func:`endpoint_errors` to
  reproduce that code's number. The Euclidean error is what the metric's definition (and the paper) says.

**Pose part (numpy)**, SuperGlue's ScanNet protocol (``models/utils.py`` and ``match_pairs.py`` of
magicleap/SuperGluePretrainedNetwork):

* :func:`pose_errors`: rotation error = angle of ``R_est R_gt^T``; translation error = angle between the
  translation directions, sign-agnostic as SuperGlue's ``np.minimum(err, 180 - err)`` (an essential
  matrix fixes ``t`` up to sign). A failed estimate has infinite errors. SuperGlue's AUC is computed on
  ``max(rotation error, translation error)`` per pair.
* :func:`pose_auc`: SuperGlue's ``pose_auc`` exactly (AUC@5/10/20 deg).
* :func:`estimate_relative_pose`: the project's one relative-pose estimator,
  :func:`visloc.geometry.backends.estimate_relative_pose` (PoseLib 5-point LO-RANSAC with cheirality and
  refinement), behind SuperGlue's ``estimate_pose`` signature (pixels and ``K`` matrices, threshold in
  pixels). SuperGlue itself runs OpenCV's ``findEssentialMat`` (RANSAC) + ``recoverPose`` on normalised
  points with the threshold divided by the mean focal length; PoseLib's threshold is also a pixel
  (Sampson) error normalised by the focal lengths, but its LO-RANSAC and refinement make it more accurate,
  so AUCs are comparable in protocol, not bit-identical to SuperGlue's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from scipy.integrate import trapezoid

from ..geometry.backends import RansacConfig
from ..geometry.backends import estimate_relative_pose as _poselib_relative_pose
from ..geometry.camera import Camera
from ..geometry.flow import homography_map
from ..geometry.rotation import rotation_angle_deg

#: DGC-Net's PCK thresholds as fractions of the image size (``eval.py``: ``np.linspace(0.005, 0.1, 200)``).
DGCNET_PCK_ALPHAS = np.linspace(0.005, 0.1, 200)
#: Side of the square images DGC-Net evaluates HPatches at.
DGCNET_IMAGE_SIZE = 240
#: PCK thresholds (px) reported by default.
DEFAULT_PCK_THRESHOLDS = (1.0, 3.0, 5.0)
#: SuperGlue's pose-AUC thresholds (degrees).
DEFAULT_AUC_THRESHOLDS = (5.0, 10.0, 20.0)
#: SuperGlue's RANSAC settings in ``match_pairs.py`` (1 px, confidence 0.99999).
SUPERGLUE_THRESHOLD_PX = 1.0
SUPERGLUE_CONFIDENCE = 0.99999

Errors = torch.Tensor | np.ndarray | Sequence[float]


# --- dense ground truth -----------------------------------------------------------------------------------


def _tensor(x: torch.Tensor | np.ndarray | Sequence[float]) -> torch.Tensor:
    """``x`` as a tensor (a read-only numpy array, e.g. a frozen dataclass field, is copied)."""
    if isinstance(x, torch.Tensor):
        return x
    a = np.asarray(x)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


def _homography(H: np.ndarray | torch.Tensor) -> torch.Tensor:
    H = _tensor(H).detach().to("cpu", torch.float64)
    if H.shape != (3, 3) or not bool(torch.isfinite(H).all()):
        raise ValueError(f"H must be a finite (3, 3) matrix, got shape {tuple(H.shape)}")
    if not torch.linalg.cond(H) < 1e12:
        raise ValueError("H is singular")
    return H


def homography_correspondence(
    H: np.ndarray | torch.Tensor,
    target_shape: tuple[int, int],
    source_shape: tuple[int, int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth correspondence map of a homography: every target pixel's source pixel.

    Args:
        H: ``(3, 3)`` homography mapping SOURCE pixels to TARGET pixels (``x_t ~ H x_s``), OpenCV pixel
            convention (as :class:`~visloc.datasets.homography.HomographyPair` holds it).
        target_shape: ``(Ht, Wt)`` of the target image.
        source_shape: ``(Hs, Ws)`` of the source image.
        device: where the result lives (default: ``H``'s device if it is a tensor, else the CPU).
        dtype: of the map (computed in float64 either way).

    Returns:
        ``map (2, Ht, Wt)``: ``H^-1 [x_t, y_t, 1]^T`` dehomogenised, x first (non-finite where a target
        pixel maps to infinity), and ``mask (1, Ht, Wt)`` bool: the source point is finite and inside
        ``[0, Ws - 1] x [0, Hs - 1]``.
    """
    if device is None:
        device = H.device if isinstance(H, torch.Tensor) else "cpu"
    H_inv = torch.linalg.inv(_homography(H))
    (ht, wt), (hs, ws) = (int(s) for s in target_shape), (int(s) for s in source_shape)
    if min(ht, wt, hs, ws) <= 0:
        raise ValueError(f"image shapes must be positive, got target {target_shape} and source {source_shape}")
    xy = homography_map(H_inv, (ht, wt), device=device)
    x, y = xy[0], xy[1]
    mask = torch.isfinite(x) & torch.isfinite(y) & (x >= 0) & (x <= ws - 1) & (y >= 0) & (y <= hs - 1)
    return xy.to(dtype), mask[None]


def _resize_matrix(scale_xy: tuple[float, float]) -> np.ndarray:
    """``x' = s (x + 0.5) - 0.5``: pixel centres of an image resized by ``s`` (OpenCV's ``cv2.resize``)."""
    sx, sy = (float(s) for s in scale_xy)
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0):
        raise ValueError(f"scale factors must be positive and finite, got {scale_xy}")
    return np.array([[sx, 0.0, (sx - 1.0) / 2.0], [0.0, sy, (sy - 1.0) / 2.0], [0.0, 0.0, 1.0]])


def scale_homography(
    H: np.ndarray, source_scale_xy: tuple[float, float], target_scale_xy: tuple[float, float]
) -> np.ndarray:
    """The homography between resized images: ``S_t H S_s^-1`` (DGC-Net's ``S2 H S1^-1``).

    Pixel centres are handled exactly: resizing an image by ``s`` (new size / old size, per axis) moves
    the pixel ``x`` to ``s (x + 0.5) - 0.5``, which is where ``cv2.resize`` (any interpolation) puts it,
    so ``S = [[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2], [0, 0, 1]]``. DGC-Net uses ``S =
    diag(sx, sy, 1)`` (the corner convention), which is off by ``(s - 1) / 2`` px (0.31 px for 640 -> 240).

    Args:
        H: ``(3, 3)`` homography of the full-resolution images (source -> target pixels).
        source_scale_xy: ``(new width / old width, new height / old height)`` of the source image.
        target_scale_xy: the same for the target image.

    Returns:
        ``(3, 3)`` float64 homography from resized-source to resized-target pixels (not renormalised).
    """
    H = np.asarray(H, dtype=np.float64)
    if H.shape != (3, 3):
        raise ValueError(f"H must be (3, 3), got {H.shape}")
    S_source = _resize_matrix(source_scale_xy)
    S_source_inv = _resize_matrix((1.0 / S_source[0, 0], 1.0 / S_source[1, 1]))  # exact inverse
    return _resize_matrix(target_scale_xy) @ H @ S_source_inv


# --- dense errors ------------------------------------------------------------------------------------------


def _as_map(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    t = _tensor(x)
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4 or t.shape[1] != 2:
        raise ValueError(f"{name} must have shape (B, 2, H, W) or (2, H, W), got {tuple(t.shape)}")
    return t


def _valid_differences(
    pred_map: torch.Tensor | np.ndarray,
    gt_map: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None,
) -> torch.Tensor:
    """``(2, N)`` differences ``pred - gt`` at the valid pixels, in ``(B, H, W)`` order."""
    pred = _as_map(pred_map, "pred_map")
    gt = _as_map(gt_map, "gt_map").to(pred.device)
    b_pred, b_gt = pred.shape[0], gt.shape[0]
    if pred.shape[-2:] != gt.shape[-2:] or (b_pred != b_gt and 1 not in (b_pred, b_gt)):
        raise ValueError(f"pred_map {tuple(pred.shape)} and gt_map {tuple(gt.shape)} do not match")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, gt.dtype), torch.float32)
    diff = pred.to(dtype) - gt.to(dtype)  # (B, 2, H, W)
    b, _, h, w = diff.shape
    if mask is None:
        valid = torch.ones(b, h, w, dtype=torch.bool, device=diff.device)
    else:
        m = _tensor(mask).to(diff.device)
        m = m if m.dtype == torch.bool else m > 0.5
        if m.ndim == 2:
            m = m[None, None]
        elif m.ndim == 3:
            m = m[None] if m.shape[0] == 1 else m[:, None]
        if m.ndim != 4 or m.shape[1] != 1 or m.shape[-2:] != (h, w) or m.shape[0] not in (b, 1):
            raise ValueError(f"mask must have shape (B, 1, H, W) matching the maps, got {tuple(m.shape)}")
        valid = m[:, 0].expand(b, h, w)
    gt_bad = ~torch.isfinite(gt.expand(b, 2, h, w)).all(1) & valid
    if bool(gt_bad.any()):
        raise ValueError(f"gt_map is not finite at {int(gt_bad.sum())} pixels inside the mask")
    return diff.permute(1, 0, 2, 3)[:, valid]


def endpoint_errors(
    pred_map: torch.Tensor | np.ndarray,
    gt_map: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Per-pixel Euclidean end-point errors at the valid target pixels.

    Args:
        pred_map: ``(B, 2, H, W)`` or ``(2, H, W)`` estimated source pixels of the target pixels.
        gt_map: the ground truth, same layout (a batch of 1 broadcasts).
        mask: ``(B, 1, H, W)`` / ``(1, H, W)`` validity, bool or float (``> 0.5`` is valid); ``None``:
            every pixel. The ground truth must be finite where it is valid.

    Returns:
        ``(N,)`` errors in pixels (``inf`` where the estimate is not finite), in ``(B, H, W)`` order.
    """
    err = torch.linalg.vector_norm(_valid_differences(pred_map, gt_map, mask), dim=0)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def component_errors(
    pred_map: torch.Tensor | np.ndarray,
    gt_map: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """``|dx|`` of the valid pixels followed by their ``|dy|`` (``(2N,)``), what DGC-Net's released PCK
    code thresholds; same arguments as :func:`endpoint_errors`."""
    err = _valid_differences(pred_map, gt_map, mask).abs().reshape(-1)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def aepe(
    pred_map: torch.Tensor | np.ndarray,
    gt_map: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
) -> float:
    """Average end-point error (px) over the valid pixels (:func:`endpoint_errors`); ``NaN`` without any."""
    err = endpoint_errors(pred_map, gt_map, mask)
    return float(err.mean()) if err.numel() else math.nan


def _pooled(errors: Errors | Iterable[Errors]) -> torch.Tensor:
    """All errors in one 1-D float64 CPU tensor (a list of per-pair tensors / arrays is concatenated)."""
    if isinstance(errors, (torch.Tensor, np.ndarray)):
        return _tensor(errors).detach().reshape(-1).to("cpu", torch.float64)
    parts = [_tensor(e).detach().reshape(-1).to("cpu", torch.float64) for e in errors]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def pck(errors: Errors | Iterable[Errors], thresholds_px: Iterable[float] = DEFAULT_PCK_THRESHOLDS) -> dict[float, float]:
    """Percentage of correct keypoints (as a fraction): the share of errors ``<=`` each threshold.

    Args:
        errors: per-pixel errors (px), e.g. :func:`endpoint_errors`; a list of them is pooled (every
            pixel of every pair counts once). NaN errors count as wrong.
        thresholds_px: thresholds in pixels (``>= 0``).

    Returns:
        ``{threshold: fraction in [0, 1]}``; ``NaN`` fractions when there is no error at all.
    """
    err = _pooled(errors)
    out: dict[float, float] = {}
    for t in thresholds_px:
        t = float(t)
        if not t >= 0:
            raise ValueError(f"PCK thresholds must be >= 0, got {t}")
        out[t] = float((err <= t).sum()) / err.numel() if err.numel() else math.nan
    return out


def dgcnet_pck(errors: Errors | Iterable[Errors], image_size: int = DGCNET_IMAGE_SIZE) -> dict[float, float]:
    """DGC-Net's HPatches PCK curve: thresholds ``linspace(0.005, 0.1, 200) * image_size`` px, errors
    pooled over all pixels of all pairs (pass the list of per-pair errors of one viewpoint ID).

    Returns:
        ``{threshold_px: fraction}`` for the 200 thresholds, in increasing order.
    """
    return pck(errors, (DGCNET_PCK_ALPHAS * float(image_size)).tolist())


# --- relative pose -----------------------------------------------------------------------------------------


def _vector_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two 3-vectors in degrees (``atan2(|a x b|, a . b)``: accurate near 0 and 180)."""
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))))


def _matrix(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.size != math.prod(shape):
        raise ValueError(f"{name} must have {math.prod(shape)} entries {shape}, got shape {a.shape}")
    return a.reshape(shape)


def pose_errors(
    R_est: np.ndarray | None,
    t_est: np.ndarray | None,
    R_gt: np.ndarray,
    t_gt: np.ndarray,
    sign_agnostic: bool = True,
) -> tuple[float, float]:
    """Rotation and translation-direction errors of a relative pose, SuperGlue's ``compute_pose_error``.

    Args:
        R_est, t_est: the estimate (``(3, 3)``, ``(3,)``, any translation scale), or ``None`` when the
            estimation failed.
        R_gt, t_gt: the ground truth, same convention (e.g. ``T_0to1``: ``X1 = R X0 + t``).
        sign_agnostic: translation error ``min(e, 180 - e)`` as SuperGlue (an essential matrix gives
            ``t`` up to sign); ``False``: the plain angle.

    Returns:
        ``(rotation error, translation error)`` in degrees: the angle of ``R_est R_gt^T`` and the angle
        between ``t_est`` and ``t_gt``. ``(inf, inf)`` for a failed estimate (``None``, non-finite or a
        zero translation).

    Raises:
        ValueError: the ground truth is malformed or has a zero translation (no direction to compare).
    """
    R_gt = _matrix(R_gt, (3, 3), "R_gt")
    t_gt = _matrix(t_gt, (3,), "t_gt")
    if not (np.all(np.isfinite(R_gt)) and np.all(np.isfinite(t_gt))) or np.linalg.norm(t_gt) == 0:
        raise ValueError("the ground-truth pose must be finite with a non-zero translation")
    if R_est is None or t_est is None:
        return math.inf, math.inf
    R_est = _matrix(R_est, (3, 3), "R_est")
    t_est = _matrix(t_est, (3,), "t_est")
    if not (np.all(np.isfinite(R_est)) and np.all(np.isfinite(t_est))) or np.linalg.norm(t_est) == 0:
        return math.inf, math.inf
    error_R = float(rotation_angle_deg(R_est @ R_gt.T))
    error_t = _vector_angle_deg(t_est, t_gt)
    if sign_agnostic:
        error_t = min(error_t, 180.0 - error_t)
    return error_R, error_t


def pose_auc(errors_deg: Errors, thresholds: Iterable[float] = DEFAULT_AUC_THRESHOLDS) -> dict[float, float]:
    """Area under the recall-vs-error curve up to each threshold, divided by it (SuperGlue's ``pose_auc``).

    The errors are sorted; the curve runs through ``(0, 0)`` and ``(e_i, i / n)`` for the sorted errors
    ``e_1 <= ... <= e_n``, linearly between them, and is held flat from the last error below the threshold
    to the threshold; the trapezoid integral up to ``t`` divided by ``t`` is AUC@t.

    Args:
        errors_deg: one error per pair (degrees; SuperGlue uses ``max(rotation, translation)`` error of
            :func:`pose_errors`). ``inf`` / ``NaN`` (failed estimates) count as never correct.
        thresholds: in degrees, ``> 0``.

    Returns:
        ``{threshold: AUC in [0, 1]}``; ``NaN`` values when there is no error at all.
    """
    errors = np.asarray(errors_deg, dtype=np.float64).reshape(-1)
    errors = np.where(np.isnan(errors), np.inf, errors)
    if np.any(errors < 0):
        raise ValueError("pose errors must be >= 0")
    thresholds = [float(t) for t in thresholds]
    if not all(t > 0 for t in thresholds):
        raise ValueError(f"AUC thresholds must be > 0, got {thresholds}")
    if errors.size == 0:
        return {t: math.nan for t in thresholds}
    errors = np.r_[0.0, np.sort(errors)]
    recall = np.r_[0.0, np.arange(1, errors.size) / (errors.size - 1)]
    out: dict[float, float] = {}
    for t in thresholds:
        last = int(np.searchsorted(errors, t))  # errors[:last] < t
        r = np.r_[recall[:last], recall[last - 1]]
        e = np.r_[errors[:last], t]
        out[t] = float(trapezoid(r, x=e) / t)
    return out


def _pinhole(K: np.ndarray, name: str) -> Camera:
    K = _matrix(K, (3, 3), name)
    if not np.all(np.isfinite(K)) or K[0, 1] != 0 or K[1, 0] != 0 or not np.array_equal(K[2], [0.0, 0.0, 1.0]):
        raise ValueError(f"{name} must be [[fx 0 cx] [0 fy cy] [0 0 1]], got {K.tolist()}")
    # PoseLib's camera needs an image size; the relative-pose solver does not use it.
    width, height = (max(1, math.ceil(2.0 * c + 1.0)) for c in (K[0, 2], K[1, 2]))
    return Camera.pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)


def estimate_relative_pose(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    threshold_px: float = SUPERGLUE_THRESHOLD_PX,
    confidence: float = SUPERGLUE_CONFIDENCE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Relative pose of two calibrated views from matches (essential matrix, PoseLib LO-RANSAC).

    Calls :func:`visloc.geometry.backends.estimate_relative_pose` (the project's one estimator; see the
    module docstring for how it compares with SuperGlue's OpenCV ``findEssentialMat`` + ``recoverPose``).

    Args:
        kpts0: ``(N, 2)`` pixels in image 0 (OpenCV convention, undistorted).
        kpts1: ``(N, 2)`` the matching pixels in image 1.
        K0, K1: ``(3, 3)`` pinhole intrinsics (no skew).
        threshold_px: inlier threshold, Sampson error in pixels (SuperGlue: 1 px).
        confidence: RANSAC success probability (SuperGlue: 0.99999).
        seed: RANSAC seed (results are reproducible).

    Returns:
        ``(R (3, 3), t (3,), inliers (N,) bool)`` with ``X1 = R X0 + t`` (``t`` unit length; compare with
        ``T_0to1`` via :func:`pose_errors`), or ``None`` with fewer than 5 matches or 5 inliers.
    """
    kpts0 = np.asarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ValueError(f"kpts0 and kpts1 must have the same length, got {len(kpts0)} and {len(kpts1)}")
    if not (threshold_px > 0 and 0 < confidence < 1):
        raise ValueError(f"need threshold_px > 0 and 0 < confidence < 1, got {threshold_px}, {confidence}")
    camera0, camera1 = _pinhole(K0, "K0"), _pinhole(K1, "K1")
    if len(kpts0) < 5:
        return None
    cfg = RansacConfig(max_error_px=float(threshold_px), success_prob=float(confidence), seed=int(seed))
    estimate = _poselib_relative_pose(kpts0, kpts1, camera0, camera1, cfg)
    if estimate is None:
        return None
    t = estimate.pose.t / np.linalg.norm(estimate.pose.t)
    return estimate.pose.R.copy(), t, estimate.inliers.copy()
