"""What every pose estimator of ``visloc localize`` receives and returns, and their registry.

An estimator turns the evidence gathered for one query -- its retrieved database images, its local
features and matches, its global descriptor -- into a pose (or a reason why there is none). The stages
before it (:mod:`~visloc.localization.retrieve`, :mod:`~visloc.localization.match`) fill the evidence,
either in process or from files written by any tool (hloc's included).

A plug-in is a class registered with its frozen config::

    @estimators.register("pnp", PnPConfig)
    class PnP:
        needs_local_features = True
        needs_global_descriptor = False                 # the query's raw global descriptor (relpose, unified)
        def check(self, map_): ...                      # refuse maps it cannot use (ConfigError)
        def points_only(self, map_) -> bool: ...        # match only database keypoints with a 3D point?
        def __call__(self, query, map_) -> Estimate: ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ...errors import ConfigError
from ...features import LocalFeatures
from ...geometry import Camera, Pose
from ...registry import Registry

if TYPE_CHECKING:
    from ..map import Map

estimators: Registry[Estimator] = Registry("pose estimator")


@dataclass(frozen=True, eq=False)
class QueryEvidence:
    """Everything known about one query before its pose is estimated.

    Attributes:
        name: the query's image name.
        camera: its intrinsics.
        retrieved: database image names, best first.
        features: the query's local features (``None`` when no estimator or retrieval needed them).
        matches: ``{db name: (M, 2) int}`` (query keypoint, database keypoint) per retrieved image.
        match_scores: ``{db name: (M,) float}`` similarity of each match.
        global_descriptor: the query's raw ``(D,)`` global descriptor (``None`` when pairs came from a file
            and no estimator needed it).
    """

    name: str
    camera: Camera
    retrieved: list[str]
    features: LocalFeatures | None = None
    matches: dict[str, np.ndarray] = field(default_factory=dict)
    match_scores: dict[str, np.ndarray] = field(default_factory=dict)
    global_descriptor: np.ndarray | None = None


@dataclass
class Estimate:
    """An estimator's answer for one query.

    Attributes:
        pose: ``cam_from_world``, or ``None`` when the query is not localized.
        status: ``"localized"`` (possibly with a remark in brackets) or the reason it is not.
        support: database images that agree with the pose.
        inliers: per retrieved image, the matches that agree with the pose (empty when not counted).
        extra: estimator-specific details (``unified``: both candidates and which one was chosen).
    """

    pose: Pose | None
    status: str
    support: list[str] = field(default_factory=list)
    inliers: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Estimator(Protocol):
    """What a registered pose estimator provides (see the module docstring)."""

    #: Whether the query's local features (and matches) are needed.
    needs_local_features: bool
    #: Whether the query's raw global descriptor of the map is needed (regression from the map's encoder).
    needs_global_descriptor: bool

    def check(self, map_: Map) -> None:
        """Raise :class:`~visloc.errors.ConfigError` when this estimator cannot use ``map_``."""
        ...

    def points_only(self, map_: Map) -> bool:
        """Whether the query should be matched only to database keypoints that have a 3D point."""
        ...

    def __call__(self, query: QueryEvidence, map_: Map) -> Estimate: ...


def require_poses(map_: Map, method: str) -> None:
    if not map_.has_poses:
        raise ConfigError(f"{map_.root}: a retrieval-only map (no database poses) cannot localize; method "
                          f"{method!r} needs a map built from posed images (`visloc retrieve` works on this one)")


def _replace_nested(config: Any, key: str, value: Any) -> Any:
    head, _, rest = key.partition(".")
    names = {f.name for f in dataclasses.fields(config)}
    if head not in names:
        raise ConfigError(f"unknown option {head!r} for {type(config).__name__}; known: {sorted(names)}")
    if rest:
        inner = getattr(config, head)
        if not dataclasses.is_dataclass(inner):
            raise ConfigError(f"{type(config).__name__}.{head} has no option {rest!r}")
        value = _replace_nested(inner, rest, value)
    return dataclasses.replace(config, **{head: value})


def estimator_config(method: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The config of estimator ``method`` with ``overrides`` applied; keys may be dotted for nested
    configs (``{"relpose.fusion": "original"}`` for ``unified``). Unknown keys raise ConfigError."""
    config = estimators.entry(method).config_cls()
    for key, value in (overrides or {}).items():
        config = _replace_nested(config, key, value)
    return config
