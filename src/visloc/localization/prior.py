"""Position priors: restrict retrieval to database images near where the query is known to be.

A prior is a position and a radius: the previous pose of the device, or a GPS reading with its accuracy,
as commercial visual positioning APIs take them. :func:`names_within_radius` gives the database images
whose camera centres lie within the radius; a retriever ranks only those. A geodetic prior (latitude,
longitude, accuracy in metres) reaches the map world through the map's
:class:`~visloc.geometry.geo.GeoReference`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..geometry.geo import GeoReference
from ..geometry.pose import Pose, frozen_array


@dataclass(frozen=True, eq=False)
class MapPrior:
    """A prior in map-world coordinates.

    Attributes:
        position: ``(3,)`` map-world point.
        radius: map units; database cameras farther away are excluded.
        up: ``(3,)`` unit up vector of the map world, or ``None``. With it the distance is horizontal
            (measured in the plane normal to ``up``: GPS heights are poor and cameras are at eye level);
            without it, three-dimensional.
    """

    position: np.ndarray
    radius: float
    up: np.ndarray | None = None

    def __post_init__(self) -> None:
        position = np.asarray(self.position, dtype=np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ConfigError(f"a prior position is 3 finite numbers, got {self.position}")
        if not (np.isfinite(self.radius) and self.radius > 0):
            raise ConfigError(f"a prior radius must be a positive number, got {self.radius}")
        object.__setattr__(self, "position", frozen_array(position))
        object.__setattr__(self, "radius", float(self.radius))
        if self.up is not None:
            up = np.asarray(self.up, dtype=np.float64).reshape(-1)
            norm = np.linalg.norm(up) if up.shape == (3,) else 0.0
            if not (np.isfinite(norm) and norm > 0):
                raise ConfigError(f"a prior's up vector is 3 finite numbers, not all zero, got {self.up}")
            object.__setattr__(self, "up", frozen_array(up / norm))

    @classmethod
    def from_pose(cls, pose: Pose, radius: float, up: np.ndarray | None = None) -> MapPrior:
        """The prior of a previous pose (``cam_from_world``): its camera centre."""
        return cls(pose.center, radius, up)


@dataclass(frozen=True)
class GeoPrior:
    """A prior on the Earth: a GPS reading, or the position of a previous GeoPose.

    Attributes:
        lat, lon: degrees (WGS84).
        h: ellipsoidal height in metres, or ``None`` when unknown.
        radius_m: metres (the reading's accuracy, or the previous pose's position accuracy).
        source: where it came from (e.g. ``geolocationReadings[0]``), for logs and errors.
    """

    lat: float
    lon: float
    h: float | None
    radius_m: float
    source: str = ""

    def in_map(self, georef: GeoReference) -> MapPrior:
        """The prior in the map world of ``georef``: the radius in map units; the distance is horizontal
        (about the map's up direction), always, since GPS heights are far less accurate than positions.

        Raises:
            ConfigError: a non-positive radius.
            GeoReferenceError: a latitude outside [-90, 90].
        """
        h = float(georef.origin[2]) if self.h is None else float(self.h)
        position = georef.map_from_geodetic([self.lat, self.lon, h])
        return MapPrior(position, self.radius_m / georef.scale, georef.up)


def names_within_radius(centres: Mapping[str, np.ndarray], prior: MapPrior) -> list[str]:
    """The database images whose camera centre lies within ``prior.radius`` of ``prior.position``.

    Args:
        centres: ``{name: (3,) camera centre}`` in map-world coordinates (``Pose.center`` of the map's
            database poses), in the order the result keeps.
        prior: position, radius and (for horizontal distances) the up direction.

    Returns:
        Names in the order of ``centres``; empty when no camera is that close.
    """
    if not centres:
        return []
    names = list(centres)
    C = np.stack([np.asarray(centres[n], dtype=np.float64).reshape(3) for n in names])
    d = C - prior.position
    if prior.up is not None:
        d = d - np.outer(d @ prior.up, prior.up)
    keep = np.linalg.norm(d, axis=1) <= prior.radius
    return [n for n, k in zip(names, keep, strict=True) if k]
