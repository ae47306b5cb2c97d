"""Position priors of a request: the form fields of ``/v1/localize`` and ``/v1/retrieve`` (a previous pose
in map coordinates, or a GPS reading) and the GeoPose request's, read into a
:class:`~visloc.localization.prior.MapPrior` and applied through the engine's ``within``.

Form fields (:data:`~visloc.service.inputs.PRIOR_FIELDS`): ``prior_center`` ``"x y z"`` (map world) with
``prior_radius`` (map units, a 3-D distance), or ``prior_lat`` / ``prior_lon`` (degrees, WGS84), optional
``prior_h`` (ellipsoidal metres) and ``prior_accuracy`` (metres, a horizontal distance); the GPS kind needs a
geo-referenced map (``MAP/georef.json``). Every problem is a 422 naming the field.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, VislocError
from ..geometry.geo import GeoReference
from ..localization.prior import GeoPrior, MapPrior
from .errors import RequestError, invalid
from .inputs import Upload
from .schemas import PriorAnswer

#: What a request that needs a geo-reference is told when the map has none.
NOT_GEOREFERENCED = ("the map is not geo-referenced (no georef.json in the map folder): run `visloc map georef MAP "
                     "--origin LAT LON H --heading DEG` (or `--points FILE`) and restart the server")


@dataclass(frozen=True)
class RequestPrior:
    """A request's prior: ``kind`` (``position``, ``gps`` or ``geopose``), where it came from (``source``,
    e.g. the form fields or ``sensorReadings.geolocationReadings[0]``) and the prior in the map world."""

    kind: str
    source: str
    prior: MapPrior


def _float(form: dict[str, str | Upload], name: str) -> float | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    try:
        number = float(str(value))
    except ValueError:
        raise invalid(f"form field {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise invalid(f"form field {name!r} must be a finite number, got {value!r}")
    return number


def _positive(form: dict[str, str | Upload], name: str, what: str) -> float:
    value = _float(form, name)
    if value is None:
        raise invalid(f"form field {name!r} ({what}) is required with the prior's position")
    if value <= 0:
        raise invalid(f"form field {name!r} ({what}) must be positive, got {value:g}")
    return value


def parse_prior(form: dict[str, str | Upload], georef: GeoReference | None) -> RequestPrior | None:
    """The prior of a form, or ``None`` when it gives none.

    Raises:
        RequestError: 422 a malformed or non-finite number, a radius or accuracy that is not positive, a
            radius without a position (or the reverse), both kinds at once, or a GPS prior on a map without
            a geo-reference.
    """
    center, radius = form.get("prior_center"), form.get("prior_radius")
    gps = {k: form.get(k) for k in ("prior_lat", "prior_lon", "prior_h", "prior_accuracy")}
    given_pose = any(v not in (None, "") for v in (center, radius))
    given_gps = any(v not in (None, "") for v in gps.values())
    if given_pose and given_gps:
        raise invalid("give one prior: prior_center/prior_radius (map coordinates) or prior_lat/prior_lon/"
                      "prior_accuracy (GPS), not both")
    if given_pose:
        if center in (None, ""):
            raise invalid("form field 'prior_center' ('x y z', map coordinates) is required with 'prior_radius'")
        parts = str(center).replace(",", " ").split()
        try:
            xyz = [float(v) for v in parts]
        except ValueError:
            raise invalid(f"form field 'prior_center' must be 'x y z' (3 numbers), got {center!r}") from None
        if len(xyz) != 3 or not all(math.isfinite(v) for v in xyz):
            raise invalid(f"form field 'prior_center' must be 'x y z' (3 finite numbers), got {center!r}")
        r = _positive(form, "prior_radius", "map units")
        return RequestPrior("position", "prior_center", MapPrior(xyz, r))
    if given_gps:
        lat, lon, h = _float(form, "prior_lat"), _float(form, "prior_lon"), _float(form, "prior_h")
        if lat is None or lon is None:
            raise invalid("a GPS prior needs both 'prior_lat' and 'prior_lon' (degrees, WGS84)")
        if not -90.0 <= lat <= 90.0:
            raise invalid(f"form field 'prior_lat' must be in [-90, 90], got {lat:g}")
        if not -180.0 <= lon <= 180.0:
            raise invalid(f"form field 'prior_lon' must be in [-180, 180], got {lon:g}")
        accuracy = _positive(form, "prior_accuracy", "metres")
        if georef is None:
            raise invalid(f"a GPS prior (prior_lat/prior_lon) needs a geo-referenced map: {NOT_GEOREFERENCED}")
        return geo_prior(GeoPrior(lat, lon, h, accuracy, "prior_lat/prior_lon"), georef, "gps")
    return None


def geo_prior(prior: GeoPrior, georef: GeoReference, kind: str = "geopose") -> RequestPrior:
    """A geodetic prior (a GeoPose request's, or the form's GPS fields) in the map world (422 if it cannot
    be placed there)."""
    try:
        return RequestPrior(kind, prior.source, prior.in_map(georef))
    except (ConfigError, VislocError) as e:
        raise invalid(f"{prior.source or 'prior'}: {e}") from None


def prior_answer(prior: RequestPrior | None, within: list[str] | None) -> PriorAnswer | None:
    """What the answer says of the prior (``None`` without one)."""
    if prior is None or within is None:
        return None
    return PriorAnswer(kind=prior.kind, source=prior.source, center=prior.prior.position.tolist(),
                       radius=prior.prior.radius, candidates=len(within))


class _Within:
    """An engine whose ``localize`` / ``localize_with`` / ``retrieve`` search only ``within``."""

    def __init__(self, engine: Any, within: list[str]) -> None:
        self._engine, self._within = engine, within

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if name in ("localize", "localize_with", "retrieve") and callable(attr):
            return functools.partial(attr, within=self._within)
        return attr


def bind_within(engine: Any, within: list[str] | None) -> Any:
    """``engine`` itself without a prior (``within`` ``None``); else a view of it whose ``localize``,
    ``localize_with`` and ``retrieve`` are called with ``within=`` (the names the prior leaves)."""
    return engine if within is None else _Within(engine, within)


def candidates(engine: object, prior: RequestPrior | None) -> list[str] | None:
    """The database images the prior leaves (``engine.within``), or ``None`` without a prior.

    Raises:
        RequestError: 422 when the engine cannot apply priors.
    """
    if prior is None:
        return None
    within = getattr(engine, "within", None)
    if within is None:
        raise RequestError(422, "this server's engine does not take position priors")
    return list(within(prior.prior))


__all__ = ["NOT_GEOREFERENCED", "RequestPrior", "bind_within", "candidates", "geo_prior", "parse_prior",
           "prior_answer"]
