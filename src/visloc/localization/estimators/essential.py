"""``essential``: a relative pose per retrieved image from the essential matrix, fused by ray triangulation
(no 3D points needed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...geometry.backends import RansacConfig, estimate_relative_pose
from ..fusion import RayFusionConfig, fuse_rays
from .base import Estimate, QueryEvidence, estimators, require_poses

if TYPE_CHECKING:
    from ..map import Map


@dataclass(frozen=True)
class EssentialConfig:
    """Attributes:
    ransac: RANSAC settings (threshold: Sampson error in pixels).
    min_matches: a retrieved image with fewer matches is not used.
    min_inliers: a relative pose needs at least this many inliers.
    min_inlier_ratio: ... and this share of the image's matches as inliers: RANSAC finds 13-26 "inliers" in
        100-160 random matches (the heavily compressed 7-Scenes stairs sample: 12-17 %, relative poses 100-180
        deg off), while correct pairs have 75-90 % (TUM fr2/desk, the embedded world).
    min_support: supporting images needed (at least 2, to triangulate the centre).
    rays: thresholds of the ray fusion (:func:`~visloc.localization.fusion.fuse_rays`).
    """

    ransac: RansacConfig = RansacConfig(max_error_px=1.0)
    min_matches: int = 15
    min_inliers: int = 12
    min_inlier_ratio: float = 0.25
    min_support: int = 1
    rays: RayFusionConfig = RayFusionConfig(sign_agnostic=False)


@estimators.register("essential", EssentialConfig)
class Essential:
    """Each relative pose gives a rotation hypothesis and a world ray from the database centre;
    :func:`~visloc.localization.fusion.fuse_rays` triangulates the centre and averages the rotations."""

    needs_local_features = True
    needs_global_descriptor = False

    def __init__(self, config: EssentialConfig = EssentialConfig()) -> None:
        self.config = config

    def check(self, map_: Map) -> None:
        require_poses(map_, "essential")

    def points_only(self, map_: Map) -> bool:
        return False

    def __call__(self, query: QueryEvidence, map_: Map) -> Estimate:
        cfg = self.config
        centers, dirs, rots, used = [], [], [], []
        inliers = [0] * len(query.retrieved)
        for i, db in enumerate(query.retrieved):
            m = query.matches.get(db, np.zeros((0, 2), int))
            if len(m) < cfg.min_matches:
                continue
            db_kps = map_.local_features(db).keypoints
            est = estimate_relative_pose(db_kps[m[:, 1]], query.features.keypoints[m[:, 0]], map_.cameras[db],
                                         query.camera, cfg.ransac)
            if est is None or est.num_inliers < max(cfg.min_inliers, cfg.min_inlier_ratio * len(m)):
                continue
            inliers[i] = est.num_inliers
            db_pose = map_.poses[db]
            rel = est.pose  # query_from_db, unit translation
            rots.append(rel.R @ db_pose.R)
            centers.append(db_pose.center)
            dirs.append(db_pose.R.T @ (-rel.R.T @ rel.t))
            used.append(db)
        needed = max(2, cfg.min_support)
        if len(used) < needed:
            return Estimate(None, f"only {len(used)} relative poses with enough inliers (2 needed to triangulate)",
                            inliers=inliers)
        fused = fuse_rays(np.stack(centers), np.stack(dirs), np.stack(rots), cfg.rays)
        if fused.pose is None:
            return Estimate(None, "rays do not intersect", inliers=inliers)
        # an image supports the pose when its ray passes through the centre AND its rotation agrees
        agree = fused.position_support & fused.rotation_support
        support = [db for db, s in zip(used, agree, strict=True) if s]
        if len(support) < needed:
            reason = ("the rotations of the relative poses disagree" if fused.position_support.sum() >= needed
                      else "no consensus among relative poses")
            return Estimate(None, reason, support, inliers)
        return Estimate(fused.pose, "localized", support, inliers)
