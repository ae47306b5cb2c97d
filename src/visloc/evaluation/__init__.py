"""Metrics with the published protocols (see :mod:`visloc.evaluation.localization`)."""

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

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LocalizationResults",
    "QueryError",
    "SceneStats",
    "default_scene_of",
    "evaluate_localization",
    "evaluate_localization_files",
    "threshold_key",
]
