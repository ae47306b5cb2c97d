"""``relpose``: regress the query's pose relative to every retrieved image with the Siamese network of
Publication V and fuse the regressed poses (maps built with ``--global-descriptor relpose``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ConfigError
from ...geometry.relative_pose import label_translation_to_world
from ..fusion import (
    FusedPose,
    MetricFusionConfig,
    RansacRayFusionConfig,
    fuse_metric,
    fuse_original,
    fuse_rays_ransac,
    hypotheses_from_relative_poses,
)
from .base import Estimate, QueryEvidence, estimators, require_poses

if TYPE_CHECKING:
    from ..map import Map

#: How the regressed relative poses are fused (see :class:`RelPoseEstimatorConfig`).
RELPOSE_FUSIONS = ("metric", "original", "ransac")


@dataclass(frozen=True)
class RelPoseEstimatorConfig:
    """Attributes:
    fusion: ``metric`` (default: each regressed translation taken with its length, one centre hypothesis
        per image, :func:`~visloc.localization.fusion.fuse_metric`; best on every scene of
        ``benchmarks/relpose.py``), ``original`` (Publication V's exhaustive ray triangulation,
        :func:`~visloc.localization.fusion.fuse_original`) or ``ransac`` (rays, any N, sampled).
    rays: settings of the ``ransac`` fusion.
    metric: settings of the ``metric`` fusion.
    max_relative_rotation_deg: a regressed relative rotation larger than this is not plausible between a
        query and an image retrieved for sharing its view, so that image is left out of the fusion; with
        none left the query is not localized. The shipped model regresses at most 24 deg on the embedded
        world (the true relative rotation of retrieved images: 15 deg at the 90th percentile), while a
        model trained for 2 epochs regressed about 70 deg on TUM and reported every query 70 deg off.
    """

    fusion: str = "metric"
    max_relative_rotation_deg: float = 45.0
    rays: RansacRayFusionConfig = RansacRayFusionConfig(sign_agnostic=True, fallback_to_first=True)
    metric: MetricFusionConfig = MetricFusionConfig()

    def __post_init__(self) -> None:
        if self.fusion not in RELPOSE_FUSIONS:
            raise ConfigError(f"relpose fusion must be one of {', '.join(RELPOSE_FUSIONS)}, got {self.fusion!r}")


def require_relpose_map(map_: Map, method: str) -> None:
    require_poses(map_, method)
    if map_.config.global_descriptor != "relpose":
        raise ConfigError(f"{map_.root}: method {method!r} needs a map built with the relpose global descriptor "
                          f"(`visloc map build --global-descriptor relpose`), this one has "
                          f"{map_.config.global_descriptor!r}")


@estimators.register("relpose", RelPoseEstimatorConfig)
class RelPose:
    """Regressed relative poses to the retrieved images, fused into one pose."""

    needs_local_features = False
    needs_global_descriptor = True

    def __init__(self, config: RelPoseEstimatorConfig = RelPoseEstimatorConfig()) -> None:
        self.config = config

    def check(self, map_: Map) -> None:
        require_relpose_map(map_, "relpose")

    def points_only(self, map_: Map) -> bool:
        return False

    def regress(self, query: QueryEvidence, map_: Map) -> tuple[np.ndarray, np.ndarray]:
        """The regressed relative poses to ``query.retrieved``: ``t (N, 3)`` in the model's frame, ``q (N, 4)``."""
        return map_.descriptor.regress(np.stack([map_.global_descriptor(db) for db in query.retrieved]),
                                       query.global_descriptor)

    def plausible(self, q_pred: np.ndarray) -> np.ndarray:
        """``(N,)`` mask of regressed rotations ``(N, 4)`` within ``max_relative_rotation_deg`` of identity."""
        q = q_pred / np.maximum(np.linalg.norm(q_pred, axis=1, keepdims=True), 1e-12)
        angle = np.degrees(2.0 * np.arccos(np.clip(np.abs(q[:, 0]), 0.0, 1.0)))
        return angle <= self.config.max_relative_rotation_deg

    def fuse(self, query: QueryEvidence, map_: Map, t_pred: np.ndarray, q_pred: np.ndarray) -> FusedPose:
        """Fuse the regressed relative poses ``t (N, 3)``, ``q (N, 4)`` to ``query.retrieved``."""
        descriptor = map_.descriptor
        dbs = query.retrieved
        poses = [map_.poses[db] for db in dbs]
        world_t = np.stack([label_translation_to_world(p, ti, descriptor.translation_frame)
                            for p, ti in zip(poses, t_pred, strict=True)])
        centers = np.stack([p.center for p in poses])
        R_wc = np.stack([p.R.T for p in poses])
        if self.config.fusion == "original":
            return fuse_original(centers, R_wc, q_pred, world_t)
        directions, rotations = hypotheses_from_relative_poses(R_wc, q_pred, world_t)
        R_cw = np.swapaxes(rotations, -1, -2)
        if self.config.fusion == "metric":
            return fuse_metric(centers, world_t, R_cw, self.config.metric)
        return fuse_rays_ransac(centers, directions, R_cw, self.config.rays)

    def __call__(self, query: QueryEvidence, map_: Map) -> Estimate:
        if not query.retrieved:
            return Estimate(None, "no retrieved image")
        t_pred, q_pred = self.regress(query, map_)
        keep = self.plausible(q_pred)
        if not keep.any():
            return Estimate(None, f"every regressed relative rotation exceeds "
                                  f"{self.config.max_relative_rotation_deg:g} deg (implausible for retrieved views)")
        kept = dataclasses.replace(query, retrieved=[db for db, k in zip(query.retrieved, keep, strict=True) if k])
        fused = self.fuse(kept, map_, t_pred[keep], q_pred[keep])
        support = [db for db, s in zip(kept.retrieved, fused.position_support, strict=True) if s]
        if fused.pose is None:
            return Estimate(None, "no relative-pose consensus", support)
        status = "localized (first retrieved centre: no ray pair)" if fused.fallback else "localized"
        return Estimate(fused.pose, status, support)
