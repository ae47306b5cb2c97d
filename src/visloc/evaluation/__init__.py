"""Metrics with the published protocols (:mod:`visloc.evaluation.localization`: pose errors and
thresholds; :mod:`visloc.evaluation.semantic`: PCK with the PF-WILLOW and PF-PASCAL normalisations)."""

from .localization import (
    DEFAULT_THRESHOLDS,
    LocalizationResults,
    QueryError,
    SceneStats,
    default_scene_of,
    evaluate_localization,
    evaluate_localization_files,
    threshold_key,
)
from .semantic import PCKResults, evaluate_pck, pck

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LocalizationResults",
    "PCKResults",
    "QueryError",
    "SceneStats",
    "default_scene_of",
    "evaluate_localization",
    "evaluate_localization_files",
    "evaluate_pck",
    "pck",
    "threshold_key",
]
