"""3D points of a database with known poses but no depth.

Each keypoint of a database image is triangulated from its own observation and its matches in the
images paired with it (a star-shaped track: no track merging, so a wrong match elsewhere in the graph
cannot poison it). Per image, all keypoints are processed at once: two-view hypotheses (the reference with each other
view) scored by how many views reproject within the threshold, multi-view DLT on the agreeing
views, Gauss-Newton refinement of the reprojection error, and a parallax check. This is the job hloc gives to COLMAP's point triangulator, in vectorised numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..geometry import Camera, Pose
from ..geometry.backends import cam_from_img

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriangulationConfig:
    """Attributes:
    num_neighbors: database images paired with each image (by pose proximity).
    max_reprojection_px: an observation is kept when it reprojects within this many pixels.
    min_angle_deg: the widest angle between two viewing rays of a point must reach this.
    min_views: observations (the reference keypoint included) a point needs.
    refine_iterations: Gauss-Newton iterations on the reprojection error after DLT.
    """

    num_neighbors: int = 10
    max_reprojection_px: float = 4.0
    min_angle_deg: float = 1.5
    min_views: int = 2
    refine_iterations: int = 3


def triangulate_dlt(rays: np.ndarray, P: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Batched multi-view linear triangulation.

    Args:
        rays: ``(N, V, 2)`` normalised image coordinates.
        P: ``(N, V, 3, 4)`` ``[R | t]`` cam_from_world matrices of the observing cameras.
        mask: ``(N, V)`` which observations to use (at least 2 per point).

    Returns:
        ``(N, 3)`` world points; NaN where a used observation is not finite or the solution lies at
        infinity (rays that do not meet in front of any finite point, e.g. parallel rays).
    """
    A = np.concatenate(
        [rays[..., :1] * P[:, :, 2] - P[:, :, 0], rays[..., 1:] * P[:, :, 2] - P[:, :, 1]], axis=1
    )  # (N, 2V, 4)
    A = np.where(np.concatenate([mask, mask], axis=1)[..., None], A, 0.0)  # masked rows: zero, even if NaN
    X = np.full((len(A), 4), np.nan)
    finite = np.isfinite(A).all(axis=(1, 2))
    if finite.any():
        _, _, Vt = np.linalg.svd(A[finite])
        X[finite] = Vt[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = X[:, :3] / X[:, 3:4]
    out[~np.isfinite(out).all(axis=1)] = np.nan
    return out


def _project(X: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points ``(N, V, 3)`` and their normalised projections ``(N, V, 2)``."""
    x_cam = np.einsum("nvij,nj->nvi", P[..., :3], X) + P[..., 3]
    z = np.where(np.abs(x_cam[..., 2:]) < 1e-12, 1e-12, x_cam[..., 2:])
    return x_cam, x_cam[..., :2] / z


#: A point whose Gauss-Newton normal matrix has ``smallest / largest eigenvalue`` below this is not fixed
#: by its observations (e.g. every ray leaves the same camera centre: its depth is free).
_DEGENERATE_RCOND = 1e-12


def refine_points(X: np.ndarray, rays: np.ndarray, P: np.ndarray, mask: np.ndarray, iterations: int) -> np.ndarray:
    """Gauss-Newton on the reprojection error of each point (poses fixed). Shapes as :func:`triangulate_dlt`.

    A point its observations do not fix (fewer than two views, or every ray through one camera centre,
    as for two images taken from the same pose: the normal equations are singular), or that is not
    finite, comes back NaN; a degenerate point never stops the others from being refined.
    """
    X = np.array(X, dtype=np.float64)
    w = mask[..., None].astype(np.float64)
    for _ in range(iterations):
        x_cam, proj = _project(X, P)
        z = x_cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = (proj - rays) * w  # (N, V, 2)
            # d(proj)/d(x_cam) = [[1/z, 0, -x/z^2], [0, 1/z, -y/z^2]]
            dproj = np.zeros((*z.shape, 2, 3))
            dproj[..., 0, 0] = 1.0 / z
            dproj[..., 1, 1] = 1.0 / z
            dproj[..., :, 2] = -proj / z[..., None]
            J = np.einsum("nvab,nvbc->nvac", dproj, P[..., :3]) * w[..., None]  # (N, V, 2, 3)
            H = np.einsum("nvai,nvaj->nij", J, J)
            g = np.einsum("nvai,nva->ni", J, r)
        ok = np.isfinite(H).all(axis=(1, 2)) & np.isfinite(g).all(axis=1) & np.isfinite(X).all(axis=1)
        eig = np.zeros((len(X), 3))
        if ok.any():
            eig[ok] = np.linalg.eigvalsh(H[ok])  # ascending
        ok &= eig[:, 0] > _DEGENERATE_RCOND * eig[:, 2]
        if ok.any():
            X[ok] -= np.linalg.solve(H[ok], g[ok][..., None])[..., 0]
        X[~ok] = np.nan
    return X


def _triangulate_image(rays: np.ndarray, P: np.ndarray, centers: np.ndarray, focal: np.ndarray,
                       mask: np.ndarray, config: TriangulationConfig) -> np.ndarray:
    """Points for one image's keypoints; column 0 of every array is the image itself."""
    n = len(rays)
    ok = mask.sum(axis=1) >= max(2, config.min_views)
    X = np.full((n, 3), np.nan)
    if not ok.any():
        return X
    rays, P, centers, focal, mask = rays[ok], P[ok], centers[ok], focal[ok], mask[ok]

    def inliers(X: np.ndarray, idx: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        """Observations (among ``allowed``) in front of the camera and within the threshold."""
        x_cam, proj = _project(X, P[idx])
        err = np.linalg.norm(proj - rays[idx], axis=-1) * focal[idx]
        return allowed[idx] & (x_cam[..., 2] > 0) & (err < config.max_reprojection_px)

    # Hypotheses: the reference view with each other view (a gross wrong match cannot drag the fit),
    # keep the one most views agree with, then refit on those views.
    best = np.zeros_like(mask)
    for v in range(1, mask.shape[1]):
        idx = np.flatnonzero(mask[:, v])
        if not len(idx):
            continue
        pair = np.zeros((len(idx), mask.shape[1]), dtype=bool)
        pair[:, [0, v]] = True
        agree = inliers(triangulate_dlt(rays[idx], P[idx], pair), idx, mask)
        better = agree.sum(axis=1) > best[idx].sum(axis=1)
        best[idx[better]] = agree[better]
    chosen = best & best[:, :1]
    usable = chosen.sum(axis=1) >= 2
    # NaN: not triangulated (refine_points also drops points whose views share one centre)
    Xo = np.full((len(rays), 3), np.nan)
    Xo[usable] = refine_points(triangulate_dlt(rays[usable], P[usable], chosen[usable]), rays[usable], P[usable],
                               chosen[usable], config.refine_iterations)
    with np.errstate(invalid="ignore"):
        mask = inliers(Xo, np.arange(len(rays)), mask)
    v = Xo[:, None] - centers
    with np.errstate(divide="ignore", invalid="ignore"):
        v /= np.linalg.norm(v, axis=-1, keepdims=True)
    cos = np.einsum("nvi,nwi->nvw", v, v)
    cos = np.where(mask[:, :, None] & mask[:, None, :], cos, 1.0)
    max_angle = np.degrees(np.arccos(np.clip(cos.min(axis=(1, 2)), -1.0, 1.0)))
    good = mask[:, 0] & (mask.sum(axis=1) >= max(2, config.min_views)) & (max_angle >= config.min_angle_deg)
    Xo[~good] = np.nan
    X[ok] = Xo
    return X


def triangulate_database(
    keypoints: Mapping[str, np.ndarray],
    cameras: Mapping[str, Camera],
    poses: Mapping[str, Pose],
    pair_matches: Mapping[tuple[str, str], np.ndarray],
    config: TriangulationConfig = TriangulationConfig(),
) -> dict[str, np.ndarray]:
    """A world point for the keypoints of every database image (see the module docstring).

    Args:
        keypoints: ``{name: (N, 2)}`` pixel keypoints of each database image.
        cameras, poses: intrinsics and ``cam_from_world`` of each image.
        pair_matches: ``{(name0, name1): (M, 2)}`` keypoint index pairs.

    Returns:
        ``{name: (N, 3) float32}`` world point of every keypoint, NaN where none was triangulated.
    """
    names = list(keypoints)
    rays = {n: cam_from_img(cameras[n], keypoints[n]) for n in names}
    P = {n: np.hstack([poses[n].R, poses[n].t[:, None]]) for n in names}
    partners: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {n: [] for n in names}
    for (a, b), m in pair_matches.items():
        partners[a].append((b, m[:, 0], m[:, 1]))
        partners[b].append((a, m[:, 1], m[:, 0]))
    out = {}
    total = 0
    for name in names:
        n, views = len(keypoints[name]), [name] + [p[0] for p in partners[name]]
        V = len(views)
        obs_rays = np.zeros((n, V, 2))
        mask = np.zeros((n, V), dtype=bool)
        obs_rays[:, 0], mask[:, 0] = rays[name], True
        for v, (other, mine, theirs) in enumerate(partners[name], start=1):
            obs_rays[mine, v] = rays[other][theirs]
            mask[mine, v] = True
        Pv = np.broadcast_to(np.stack([P[v] for v in views]), (n, V, 3, 4))
        Cv = np.broadcast_to(np.stack([poses[v].center for v in views]), (n, V, 3))
        fv = np.broadcast_to(np.array([np.mean(cameras[v].focal) for v in views]), (n, V))
        points = _triangulate_image(obs_rays, Pv, Cv, fv, mask, config).astype(np.float32)
        total += int(np.isfinite(points[:, 0]).sum())
        out[name] = points
    logger.info("triangulated %d keypoints in %d images from %d pairs", total, len(out), len(pair_matches))
    return out
