"""Pose estimators of ``visloc localize``, registered by name (``visloc models`` lists them)."""

from . import essential, pnp, relpose, unified  # noqa: F401  (registers the plug-ins)
from .base import Estimate, Estimator, QueryEvidence, estimator_config, estimators
from .essential import EssentialConfig
from .pnp import PnPConfig
from .relpose import RELPOSE_FUSIONS, RelPoseEstimatorConfig
from .unified import UnifiedConfig

__all__ = [
    "RELPOSE_FUSIONS",
    "EssentialConfig",
    "Estimate",
    "Estimator",
    "PnPConfig",
    "QueryEvidence",
    "RelPoseEstimatorConfig",
    "UnifiedConfig",
    "estimator_config",
    "estimators",
]
