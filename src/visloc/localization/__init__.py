"""Maps of database images and the localization of queries against them."""

from .build import MapSummary, build_map
from .localize import LocalizeConfig, Localizer, LocalizeSummary, QueryResult, localize
from .map import Map, MapConfig

__all__ = [
    "LocalizeConfig",
    "LocalizeSummary",
    "Localizer",
    "Map",
    "MapConfig",
    "MapSummary",
    "QueryResult",
    "build_map",
    "localize",
]
