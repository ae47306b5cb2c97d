"""Geo-referencing a map (``visloc map georef``): ``MAP/georef.json``, from an origin and a heading or
fitted to control points, and its reader for services that answer in WGS84 (GeoPose)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..geometry.geo import GeoReference, GeoReferenceError
from ..io.georef import read_control_points, read_georef, write_georef
from .map import MANIFEST

#: The geo-reference of a map, in the map folder.
GEOREF = "georef.json"


@dataclass(frozen=True, eq=False)
class GeorefSummary:
    """What :func:`georeference_map` wrote.

    Attributes:
        path: the ``georef.json`` written.
        georef: the geo-reference.
        residuals: ``(N,)`` metres per control point (``None`` for an origin and a heading).
    """

    path: Path
    georef: GeoReference
    residuals: np.ndarray | None = None

    def format(self) -> str:
        """A few lines for the terminal: origin, scale, residuals."""
        lat, lon, h = self.georef.origin
        lines = [f"geo-reference written to {self.path}",
                 f"  ENU origin: lat {lat:.9f} lon {lon:.9f} h {h:.3f} m; scale {self.georef.scale:.9g} m per map unit"]
        if self.residuals is None:
            lines.append("  residuals: none (origin and heading, nothing fitted)")
        else:
            r = self.residuals
            lines.append(f"  residuals over {len(r)} points: rms {np.sqrt(np.mean(r**2)):.4f} m, max {r.max():.4f} m")
            lines += [f"    point {i + 1}: {v:.4f} m" for i, v in enumerate(r)]
        return "\n".join(lines)


def georeference_map(
    map_dir: str | Path,
    origin: tuple[float, float, float] | None = None,
    heading: float | None = None,
    points: str | Path | None = None,
    scale: float = 1.0,
) -> GeorefSummary:
    """Geo-reference a map and write ``MAP/georef.json`` atomically.

    Give either ``origin`` and ``heading`` or ``points``:

    Args:
        map_dir: a map folder (``visloc map build``).
        origin: latitude, longitude (degrees, WGS84) and ellipsoidal height (metres) of the map-world
            origin.
        heading: compass bearing of the map's +x axis in degrees (clockwise from true north); the map's
            +z axis is up (the embedded world's convention).
        points: a control point file, lines ``x y z lat lon h`` (at least 3 points, not collinear): the
            similarity (scale, rotation, translation) is fitted to them.
        scale: metres per map unit, with ``origin`` and ``heading``.

    Raises:
        ConfigError: both or neither of (``origin``, ``heading``) and ``points``, or a bad value.
        InputError: ``map_dir`` is not a map; a malformed or degenerate control point file.
    """
    map_dir = Path(map_dir)
    if not (map_dir / MANIFEST).is_file():
        raise InputError(map_dir, f"not a visloc map (no {MANIFEST}; build it with `visloc map build`)")
    if points is not None and (origin is not None or heading is not None):
        raise ConfigError("give either --origin and --heading or --points, not both")
    residuals = None
    if points is not None:
        xyz, llh = read_control_points(points)
        try:
            georef, residuals = GeoReference.fit(xyz, llh)
        except GeoReferenceError as e:
            raise InputError(points, str(e)) from None
        fit = {"method": "similarity fitted to control points", "points": str(points),
               "residuals_m": residuals.tolist(), "rms_m": float(np.sqrt(np.mean(residuals**2)))}
    elif origin is not None and heading is not None:
        try:
            georef = GeoReference.from_heading(*origin, heading_deg=heading, scale=scale)
        except GeoReferenceError as e:
            raise ConfigError(f"--origin {' '.join(map(str, origin))} --heading {heading}: {e}") from None
        fit = {"method": "origin and heading", "heading_deg": float(heading)}
    else:
        raise ConfigError("give --origin LAT LON H with --heading DEG, or --points FILE")
    path = map_dir / GEOREF
    write_georef(path, georef, fit)
    return GeorefSummary(path, georef, residuals)


def read_map_georef(map_dir: str | Path) -> GeoReference | None:
    """The geo-reference of a map, or ``None`` when it has none.

    Raises:
        InputError: ``georef.json`` exists but cannot be read.
    """
    path = Path(map_dir) / GEOREF
    return read_georef(path) if path.exists() else None
