"""``pnp``: the 2D-3D matches of all retrieved images pooled into one LO-RANSAC PnP (maps with 3D points)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ConfigError
from ...geometry.backends import RansacConfig, estimate_absolute_pose
from .base import Estimate, QueryEvidence, estimators, require_poses

if TYPE_CHECKING:
    from ..map import Map


@dataclass(frozen=True)
class PnPConfig:
    """Attributes:
    ransac: RANSAC settings (threshold: reprojection error in pixels).
    min_matches: a retrieved image with fewer 2D-3D matches is not used.
    min_inliers: a retrieved image supports the pose with at least this many inliers.
    min_support: supporting images needed to accept the pose.
    """

    ransac: RansacConfig = RansacConfig(max_error_px=4.0)
    min_matches: int = 15
    min_inliers: int = 12
    min_support: int = 1


@estimators.register("pnp", PnPConfig)
class PnP:
    """Pooled PnP; the images whose own correspondences agree with the result (``min_inliers``) support it."""

    needs_local_features = True
    needs_global_descriptor = False

    def __init__(self, config: PnPConfig = PnPConfig()) -> None:
        self.config = config

    def check(self, map_: Map) -> None:
        require_poses(map_, "pnp")
        if not map_.has_points:
            raise ConfigError(f"{map_.root}: method 'pnp' needs a map with 3D points (depth or triangulation)")

    def points_only(self, map_: Map) -> bool:
        return True

    def __call__(self, query: QueryEvidence, map_: Map) -> Estimate:
        cfg = self.config
        p2d, p3d, owner = [], [], []
        for i, db in enumerate(query.retrieved):
            m = query.matches.get(db, np.zeros((0, 2), int))
            pts = map_.points3D(db)
            if pts is None or len(m) == 0:
                continue
            m = m[np.all(np.isfinite(pts[m[:, 1]]), axis=1)]  # matches from a file may hit points-less keypoints
            if len(m) < cfg.min_matches:
                continue
            p2d.append(query.features.keypoints[m[:, 0]])
            p3d.append(pts[m[:, 1]])
            owner.append(np.full(len(m), i))
        inliers = [0] * len(query.retrieved)
        if not p2d or sum(len(p) for p in p2d) < cfg.min_inliers:
            return Estimate(None, "too few 2D-3D matches", inliers=inliers)
        est = estimate_absolute_pose(np.concatenate(p2d), np.concatenate(p3d), query.camera, cfg.ransac)
        if est is None:
            return Estimate(None, "PnP failed", inliers=inliers)
        counts = np.bincount(np.concatenate(owner)[est.inliers], minlength=len(query.retrieved))
        inliers = [int(c) for c in counts]
        support = [db for db, c in zip(query.retrieved, counts, strict=True) if c >= cfg.min_inliers]
        if len(support) < cfg.min_support:
            return Estimate(None, f"only {len(support)} supporting images", support, inliers)
        return Estimate(est.pose, "localized", support, inliers)
