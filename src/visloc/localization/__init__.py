"""Maps of database images and the localization of queries against them, as stages with file contracts:
``build_map`` -> ``retrieve`` (pairs.txt) [-> ``verify_pairs`` (re-ranked pairs.txt)] -> ``match_pairs``
(features.h5, matches.h5) -> ``localize`` (poses.txt), the last one composing the others in process;
``add_to_map`` adds images to a built map."""

from .build import MapSummary, build_map
from .estimators import (
    EssentialConfig,
    PnPConfig,
    RelPoseEstimatorConfig,
    UnifiedConfig,
    estimator_config,
    estimators,
)
from .extend import AddSummary, add_to_map
from .localize import LocalizeConfig, Localizer, LocalizeSummary, QueryResult, localize
from .map import Map, MapConfig
from .match import MatchConfig, MatchSummary, PairMatcher, match_pairs
from .retrieve import RetrievalConfig, Retriever, RetrieveSummary, retrieve
from .verify import VerifyConfig, VerifySummary, verify_pairs

__all__ = [
    "AddSummary",
    "EssentialConfig",
    "LocalizeConfig",
    "LocalizeSummary",
    "Localizer",
    "Map",
    "MapConfig",
    "MapSummary",
    "MatchConfig",
    "MatchSummary",
    "PairMatcher",
    "PnPConfig",
    "QueryResult",
    "RelPoseEstimatorConfig",
    "RetrievalConfig",
    "RetrieveSummary",
    "Retriever",
    "UnifiedConfig",
    "VerifyConfig",
    "VerifySummary",
    "add_to_map",
    "build_map",
    "estimator_config",
    "estimators",
    "localize",
    "match_pairs",
    "retrieve",
    "verify_pairs",
]
