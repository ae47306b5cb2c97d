"""Geo-reference files: ``georef.json`` (a map's :class:`~visloc.geometry.geo.GeoReference`) and control
point lists (``x y z lat lon h`` per line: a map-world point and its WGS84 position)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..geometry.geo import GeoReference, GeoReferenceError
from .atomic import write_json
from .text import data_lines

#: Version of the ``georef.json`` layout.
GEOREF_VERSION = 1


def write_georef(path: str | Path, georef: GeoReference, fit: Mapping[str, Any] | None = None) -> None:
    """Write ``georef`` (and, when given, how it was obtained: ``fit``) as JSON, atomically.

    The file is ``{"version": 1, "origin": {"lat", "lon", "h"}, "scale", "qvec", "tvec", "fit": {...}}``:
    ``enu = scale * R(qvec) @ X_map + tvec`` in the East-North-Up frame at ``origin``.
    """
    write_json(path, {"version": GEOREF_VERSION, **georef.to_json(), **({"fit": dict(fit)} if fit else {})})


def read_georef(path: str | Path) -> GeoReference:
    """Read a ``georef.json``.

    Raises:
        InputError: the file is missing, not JSON, of another version, or holds no valid geo-reference.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "geo-reference file does not exist (write one with `visloc map georef`)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"cannot read the geo-reference as JSON ({e})") from None
    if not isinstance(d, dict):
        raise InputError(path, "a geo-reference is a JSON object")
    if d.get("version") != GEOREF_VERSION:
        raise InputError(path, f"unsupported geo-reference version {d.get('version')!r} (expected {GEOREF_VERSION})")
    try:
        return GeoReference.from_json(d)
    except GeoReferenceError as e:
        raise InputError(path, str(e)) from None


def read_control_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read control points: lines ``x y z lat lon h`` (``#`` comments and blank lines ignored).

    Returns:
        ``(N, 3)`` map-world points and ``(N, 3)`` latitude, longitude (degrees) and height (metres).

    Raises:
        InputError: the file is missing, a line has not 6 numbers, a number is not finite, or a latitude
            is outside [-90, 90]; the message names the line.
    """
    xyz, llh = [], []
    for lineno, parts in data_lines(path, "control point file"):
        if len(parts) != 6:
            raise InputError(path, f"line {lineno}: expected 'x y z lat lon h', got {len(parts)} fields")
        try:
            values = [float(v) for v in parts]
        except ValueError as e:
            raise InputError(path, f"line {lineno}: {e}") from None
        if not all(np.isfinite(values)):
            raise InputError(path, f"line {lineno}: values must be finite numbers")
        if abs(values[3]) > 90.0:
            raise InputError(path, f"line {lineno}: latitude {values[3]} is outside [-90, 90] "
                                   "(the order is x y z lat lon h)")
        xyz.append(values[:3])
        llh.append(values[3:])
    return np.array(xyz, dtype=np.float64).reshape(-1, 3), np.array(llh, dtype=np.float64).reshape(-1, 3)
