"""``unified``: geometry (PnP on maps with 3D points, else the essential-matrix fusion) with the regressed
relative-pose estimate as prior and fallback (maps built with ``--global-descriptor relpose``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...geometry import pose_error
from .base import Estimate, QueryEvidence, estimators
from .essential import Essential, EssentialConfig
from .pnp import PnP, PnPConfig
from .relpose import RelPose, RelPoseEstimatorConfig, require_relpose_map

if TYPE_CHECKING:
    from ..map import Map


@dataclass(frozen=True)
class UnifiedConfig:
    """Attributes:
    relpose: the regressed estimate (prior and fallback).
    pnp / essential: the geometric estimate on maps with / without 3D points.
    gate_m / gate_deg: the geometric pose is kept when ``support_images`` retrieved images each support it,
        when it has ``strong_inliers`` inliers in one image, or when it lies within this distance and angle
        of the regressed prior; otherwise (or when geometry fails) the regressed pose is reported. With the
        default of one supporting image every geometric pose is kept and the regressed pose is the fallback
        only: on the embedded world a localized PnP pose was right whenever the prior disagreed with it
        (``benchmarks/relpose.py``). Raise ``support_images`` to 2 to let the prior veto poses that rest on a
        single image.
    """

    relpose: RelPoseEstimatorConfig = RelPoseEstimatorConfig()
    pnp: PnPConfig = PnPConfig()
    essential: EssentialConfig = EssentialConfig()
    gate_m: float = 1.0
    gate_deg: float = 30.0
    strong_inliers: int = 100
    support_images: int = 1


@estimators.register("unified", UnifiedConfig)
class Unified:
    """Both estimates for every query; ``extra`` records both poses, the choice and its reason."""

    needs_local_features = True
    needs_global_descriptor = True

    def __init__(self, config: UnifiedConfig = UnifiedConfig()) -> None:
        self.config = config
        self.relpose = RelPose(config.relpose)
        self.pnp = PnP(config.pnp)
        self.essential = Essential(config.essential)

    def geometric(self, map_: Map) -> PnP | Essential:
        return self.pnp if map_.has_points else self.essential

    def check(self, map_: Map) -> None:
        require_relpose_map(map_, "unified")

    def points_only(self, map_: Map) -> bool:
        return self.geometric(map_).points_only(map_)

    def __call__(self, query: QueryEvidence, map_: Map) -> Estimate:
        cfg = self.config
        prior = self.relpose(query, map_)
        geometry = self.geometric(map_)(query, map_)
        chosen, reason = "relpose", "geometry failed: " + geometry.status
        if geometry.pose is not None and prior.pose is None:
            chosen, reason = "geometry", "no regressed prior: " + prior.status
        elif geometry.pose is not None:
            dt, dR = pose_error(geometry.pose, prior.pose)
            strong = max(geometry.inliers, default=0) >= cfg.strong_inliers
            multi_view = len(geometry.support) >= cfg.support_images
            if strong or multi_view or (dt <= cfg.gate_m and dR <= cfg.gate_deg):
                chosen = "geometry"
                reason = ("strong" if strong else f"{len(geometry.support)} supporting images" if multi_view
                          else "agrees with the prior")
            else:
                reason = f"geometry {dt:.2f} m / {dR:.1f} deg from the prior with weak support"
        extra = {
            "chosen": chosen,
            "reason": reason,
            "relpose": None if prior.pose is None else prior.pose.to_json(),
            "geometry": None if geometry.pose is None else geometry.pose.to_json(),
        }
        if chosen == "relpose":
            return Estimate(prior.pose, prior.status, prior.support, geometry.inliers, extra)
        return Estimate(geometry.pose, geometry.status, geometry.support, geometry.inliers, extra)
