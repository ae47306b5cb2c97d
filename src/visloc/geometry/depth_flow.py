"""Exact dense correspondences between two posed views with registered depth.

:func:`correspondence_from_depth` gives, for every pixel of a TARGET view, the pixel of a SOURCE view that
sees the same surface point (visloc's dense-matching contract: a ``(2, H, W)`` map of source ``(x, y)``
pixel coordinates per target pixel, OpenCV pixel centres, plus a validity mask). A target pixel is valid
when

1. its depth is finite and positive,
2. the back-projected point lies in front of the source camera (camera ``z > MIN_DEPTH``),
3. it projects inside the source image's area, ``-0.5 <= x <= Ws - 0.5`` and ``-0.5 <= y <= Hs - 0.5``
   (the pixel *area*, i.e. normalised coordinates in ``[-1, 1]`` for ``grid_sample(align_corners=False)``),
4. it is not occluded: the source depth **bilinearly** interpolated at the projected pixel (coordinates
   clamped to the pixel-centre range ``[0, Ws - 1] x [0, Hs - 1]``) agrees with the point's depth in the
   source camera within ``occlusion_tolerance`` (relative to the latter). Every one of the (up to four)
   source pixels with a non-zero bilinear weight must have a finite, positive depth, so a point next to
   a hole of the source depth is invalid.

Bilinear (not nearest) sampling keeps slanted surfaces valid: a nearest sample is off by up to half a
pixel's depth gradient, more than 2 % at grazing angles. Across a depth edge the bilinear blend of the
two surfaces matches neither, so the pixels along a silhouette are invalid (conservative).

Cameras may carry distortion (pixels are undistorted / distorted with
:mod:`visloc.geometry.backends`); depth is the camera-frame ``z`` (7-Scenes, TUM, the embedded world).

:func:`resize_depth` resamples a depth map on the lattice of a resized image (bilinear in *inverse*
depth, which is exact on planar surfaces seen by a pinhole camera; depth edges are invalid), so that
correspondences can be computed directly on the lattice of a resized target image.
"""

from __future__ import annotations

import numpy as np

from .backends import cam_from_img, img_from_cam
from .camera import Camera
from .pose import Pose

#: Points closer than this (metres, camera z) to the source camera count as behind it.
MIN_DEPTH = 1e-6
#: Map value of the target pixels without a 3D point in front of the source camera (masked out anyway).
NO_CORRESPONDENCE = -1.0


def _check_depth(depth: np.ndarray, camera: Camera, what: str) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"{what} depth must be (H, W), got shape {depth.shape}")
    if depth.shape != (camera.height, camera.width):
        raise ValueError(
            f"{what} depth is {depth.shape[1]}x{depth.shape[0]} but its camera is {camera.width}x{camera.height}"
        )
    return depth.astype(np.float64)


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def _footprint(shape: tuple[int, int], x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows, columns and weights of the four bilinear neighbours of each point (coordinates clamped)."""
    h, w = shape
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, w - 1.0)
    y = np.clip(np.asarray(y, dtype=np.float64), 0.0, h - 1.0)
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    return [(y0, x0, (1 - fx) * (1 - fy)), (y0, x1, fx * (1 - fy)), (y1, x0, (1 - fx) * fy), (y1, x1, fx * fy)]


def bilinear_sample(values: np.ndarray, valid: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear interpolation at pixel coordinates, only from valid pixels.

    Args:
        values: ``(H, W)`` samples at the pixel centres (OpenCV convention).
        valid: ``(H, W)`` bool; invalid samples may hold anything (NaN included).
        x: ``(N,)`` column coordinates; clamped to ``[0, W - 1]``.
        y: ``(N,)`` row coordinates; clamped to ``[0, H - 1]``.

    Returns:
        ``(N,)`` float64 interpolated values (0 where invalid) and ``(N,)`` bool: every pixel with a
        non-zero weight is valid.
    """
    clean = np.where(valid, values, 0.0).astype(np.float64)
    out = np.zeros(np.shape(x), dtype=np.float64)
    ok = np.ones(np.shape(x), dtype=bool)
    for rows, cols, weight in _footprint(values.shape, x, y):
        out += weight * clean[rows, cols]
        ok &= (weight == 0) | valid[rows, cols]
    return np.where(ok, out, 0.0), ok


def correspondence_from_depth(
    target_depth: np.ndarray,
    target_camera: Camera,
    target_pose: Pose,
    source_depth: np.ndarray,
    source_camera: Camera,
    source_pose: Pose,
    occlusion_tolerance: float = 0.02,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth correspondence map from the target view to the source view (see the module docstring).

    Args:
        target_depth: ``(H, W)`` camera-frame z of the target in metres (NaN or <= 0: no depth).
        target_camera: intrinsics of the target, ``H x W``.
        target_pose: ``cam_from_world`` of the target.
        source_depth: ``(Hs, Ws)`` depth of the source, registered to its image.
        source_camera: intrinsics of the source, ``Hs x Ws``.
        source_pose: ``cam_from_world`` of the source.
        occlusion_tolerance: relative depth agreement needed for a point to be visible in the source.

    Returns:
        ``map`` ``(2, H, W)`` float32: the source pixel ``(x, y)`` of every target pixel -- the projection
        wherever the point lies in front of the source camera (also outside the image or occluded),
        :data:`NO_CORRESPONDENCE` where there is no such point; and ``mask`` ``(1, H, W)`` bool: the
        correspondence is valid (the only authority on which map values mean something).
    """
    if not occlusion_tolerance > 0:
        raise ValueError(f"occlusion_tolerance must be positive, got {occlusion_tolerance!r}")
    zt = _check_depth(target_depth, target_camera, "target")
    zs_map = _check_depth(source_depth, source_camera, "source")
    h, w = zt.shape
    out = np.full((2, h, w), NO_CORRESPONDENCE, dtype=np.float64)
    mask = np.zeros((h, w), dtype=bool)
    vs, us = np.nonzero(_valid_depth(zt))
    if vs.size:
        z = zt[vs, us]
        rays = cam_from_img(target_camera, np.stack([us, vs], axis=1).astype(np.float64))
        points_t = np.concatenate([rays * z[:, None], z[:, None]], axis=1)
        points_s = source_pose.relative_to(target_pose).transform(points_t)
        front = points_s[:, 2] > MIN_DEPTH
        vs, us, points_s = vs[front], us[front], points_s[front]
        xy = img_from_cam(source_camera, points_s)
        out[:, vs, us] = xy.T
        x, y = xy[:, 0], xy[:, 1]
        inside = (x >= -0.5) & (x <= source_camera.width - 0.5) & (y >= -0.5) & (y <= source_camera.height - 0.5)
        seen, ok = bilinear_sample(zs_map, _valid_depth(zs_map), x, y)
        zp = points_s[:, 2]
        visible = inside & ok & (np.abs(seen - zp) <= occlusion_tolerance * zp)
        mask[vs[visible], us[visible]] = True
    return out.astype(np.float32), mask[None]


def resize_depth(depth: np.ndarray, size: tuple[int, int], edge_tolerance: float | None = 0.05) -> np.ndarray:
    """Depth on the pixel lattice of the image resized to ``size`` (pixel-centre aware).

    Output pixel ``(u', v')`` sits at input coordinate ``((u' + 0.5) W / W' - 0.5, (v' + 0.5) H / H' - 0.5)``
    (OpenCV's ``resize`` mapping, and :meth:`visloc.geometry.Camera.scaled`'s). Its depth is the bilinear
    interpolation of the *inverse* depth there -- exact when the (up to four) input pixels with a non-zero
    weight see one plane through a pinhole camera. It is invalid (NaN) unless every one of them has a
    finite, positive depth and, with ``edge_tolerance``, their depths differ by at most that fraction of
    the largest (a larger step is a depth edge, where any interpolation puts the point between two
    surfaces). Across a crease (two planes meeting, continuous depth) the value stays an interpolation:
    off the surface by less than the kink within one input pixel.

    Args:
        depth: ``(H, W)`` depth in metres (NaN or <= 0: invalid).
        size: output ``(H', W')``.
        edge_tolerance: largest relative depth step inside a footprint; ``None``: no edge test.

    Returns:
        ``(H', W')`` float32 depth, NaN where invalid.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if edge_tolerance is not None and not edge_tolerance >= 0:
        raise ValueError(f"edge_tolerance must be >= 0 or None, got {edge_tolerance!r}")
    h, w = depth.shape
    ho, wo = (int(s) for s in size)
    if ho < 1 or wo < 1:
        raise ValueError(f"size must be positive, got {size}")
    valid = _valid_depth(depth)
    if (ho, wo) == (h, w):
        return np.where(valid, depth, np.nan).astype(np.float32)
    inverse = np.where(valid, 1.0 / np.where(valid, depth, 1.0), 0.0)
    vs, us = np.mgrid[0:ho, 0:wo].astype(np.float64)
    x = (us.ravel() + 0.5) * (w / wo) - 0.5
    y = (vs.ravel() + 0.5) * (h / ho) - 0.5
    inv, ok = bilinear_sample(inverse, valid, x, y)
    if edge_tolerance is not None:
        near = np.full(x.shape, np.inf)
        far = np.zeros(x.shape)
        for rows, cols, weight in _footprint(depth.shape, x, y):
            used = (weight > 0) & valid[rows, cols]
            z = np.where(used, depth[rows, cols], np.nan)
            near = np.where(used, np.minimum(near, z), near)
            far = np.where(used, np.maximum(far, z), far)
        ok &= far - near <= edge_tolerance * far
    ok &= inv > 0
    out = np.full(inv.shape, np.nan)
    out[ok] = 1.0 / inv[ok]
    return out.reshape(ho, wo).astype(np.float32)


__all__ = ["MIN_DEPTH", "NO_CORRESPONDENCE", "bilinear_sample", "correspondence_from_depth", "resize_depth"]
