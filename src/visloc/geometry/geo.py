"""Geo-referencing: WGS84 geodetic ↔ ECEF ↔ local East-North-Up frames, the similarity that places a map
on the Earth, and OGC GeoPose (Basic-Quaternion) poses.

Frames:

* **geodetic**: WGS84 latitude / longitude in degrees and ellipsoidal height in metres (EPSG:4979). Arrays
  of positions are ``(..., 3)`` in the order ``(lat, lon, h)``.
* **ECEF**: WGS84 Earth-centred, Earth-fixed cartesian metres (EPSG:4978). pyproj (PROJ) converts between
  geodetic and ECEF; nothing here re-implements the ellipsoid.
* **ENU at (lat0, lon0, h0)**: the local tangent plane of the GeoPose standard (EPSG 4461-CS, LTP-ENU):
  x east, y north, z up (the ellipsoid normal), origin at the tangent point. ``enu = R_enu(lat0, lon0)
  (ecef - ecef(origin))`` with the rotation of :func:`enu_rotation`.
* **map world**: the frame of a visloc map (the embedded world: z up, metres). A :class:`GeoReference`
  is the similarity ``enu = scale * R @ X + t`` from map world to the ENU frame at its origin.

A :class:`GeoPose` is OGC GeoPose 1.0 Basic-Quaternion: the position of the camera and the rotation that
takes vectors of the camera's body frame to the ENU frame **at the camera's own position**
(``v_enu = R(q) v_body``), quaternion ``x, y, z, w``. The body frame is not fixed by the standard; the
default, :data:`FORWARD_LEFT_UP`, is the one OpenVPS (the Open AR Cloud reference GeoPose server) answers
in: x along the optical axis, y to the left of the image, z towards the top of the image, so the identity
quaternion is a level camera looking east. See ``docs/geopose.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import VislocError
from .pose import Pose, frozen_array
from .rotation import matrix_to_quat, quat_to_matrix

#: Body frames a GeoPose orientation can be expressed in: ``R_colmap_from_body`` for each, the columns
#: being the body axes in visloc's camera frame (x right, y down, z forward).
BODY_FRAMES: dict[str, np.ndarray] = {
    # x forward (optical axis), y left, z up: OpenVPS, ROS REP 103 body frame. The default.
    "forward-left-up": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
    # x right, y up, z backwards: the camera of ARKit, ARCore, WebXR, OpenGL.
    "right-up-back": np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]),
    # x right, y down, z forward: COLMAP / OpenCV, visloc's own camera frame.
    "right-down-forward": np.eye(3),
}
FORWARD_LEFT_UP = "forward-left-up"

#: Smallest ratio of the second to the first singular value of centred control points: below it the
#: points are (nearly) collinear and a similarity is not determined.
COLLINEAR_TOL = 1e-3


class GeoReferenceError(VislocError):
    """Geo-referencing input that determines no transform: too few, coincident or collinear control
    points, a latitude outside [-90, 90], a non-positive scale, an unknown body frame."""


# --- geodetic <-> ECEF <-> ENU ------------------------------------------------------------------------
@lru_cache(maxsize=2)
def _transformer(inverse: bool) -> Any:
    from pyproj import Transformer

    src, dst = ("EPSG:4978", "EPSG:4979") if inverse else ("EPSG:4979", "EPSG:4978")
    return Transformer.from_crs(src, dst, always_xy=True)


def _as_points(a: Any, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape[-1:] != (3,) or not np.all(np.isfinite(a)):
        raise GeoReferenceError(f"{what} must be finite (..., 3) coordinates, got shape {a.shape}")
    return a


def _check_latitudes(llh: np.ndarray) -> None:
    lat = llh[..., 0]
    if np.any(np.abs(lat) > 90.0):
        raise GeoReferenceError(f"latitude must be in [-90, 90] degrees, got {lat[np.abs(lat) > 90.0].ravel()[0]}")


def ecef_from_geodetic(llh: Any) -> np.ndarray:
    """WGS84 ECEF metres of geodetic positions (through PROJ, EPSG:4979 → EPSG:4978).

    Args:
        llh: ``(..., 3)`` latitude, longitude (degrees), ellipsoidal height (metres).

    Returns:
        ``(..., 3)`` ECEF ``x, y, z``.
    """
    llh = _as_points(llh, "geodetic positions")
    _check_latitudes(llh)
    x, y, z = _transformer(False).transform(llh[..., 1], llh[..., 0], llh[..., 2])
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1).astype(np.float64)


def geodetic_from_ecef(xyz: Any) -> np.ndarray:
    """Geodetic ``(..., 3)`` latitude, longitude (degrees), height (metres) of ECEF points ``(..., 3)``."""
    xyz = _as_points(xyz, "ECEF points")
    lon, lat, h = _transformer(True).transform(xyz[..., 0], xyz[..., 1], xyz[..., 2])
    return np.stack(np.broadcast_arrays(lat, lon, h), axis=-1).astype(np.float64)


def enu_rotation(lat: float, lon: float) -> np.ndarray:
    """``(3, 3)`` rotation ``R_enu_from_ecef`` of the tangent plane at ``lat, lon`` (degrees).

    Its rows are the east, north and up unit vectors in ECEF::

        e = (-sin λ,        cos λ,       0    )
        n = (-sin φ cos λ, -sin φ sin λ, cos φ)
        u = ( cos φ cos λ,  cos φ sin λ, sin φ)

    with φ the geodetic latitude and λ the longitude.
    """
    phi, lam = np.radians(float(lat)), np.radians(float(lon))
    sp, cp, sl, cl = np.sin(phi), np.cos(phi), np.sin(lam), np.cos(lam)
    return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])


def enu_from_geodetic(llh: Any, origin: Any) -> np.ndarray:
    """ENU metres ``(..., 3)`` of geodetic positions ``(..., 3)`` in the tangent frame at ``origin``
    ``(lat0, lon0, h0)``."""
    origin = _as_points(origin, "the ENU origin").reshape(3)
    d = ecef_from_geodetic(llh) - ecef_from_geodetic(origin)
    return d @ enu_rotation(origin[0], origin[1]).T


def geodetic_from_enu(enu: Any, origin: Any) -> np.ndarray:
    """Geodetic ``(..., 3)`` of ENU points ``(..., 3)`` of the tangent frame at ``origin``."""
    origin = _as_points(origin, "the ENU origin").reshape(3)
    enu = _as_points(enu, "ENU points")
    return geodetic_from_ecef(ecef_from_geodetic(origin) + enu @ enu_rotation(origin[0], origin[1]))


# --- the map's geo-reference --------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class GeoReference:
    """Where a map lies on the Earth: the similarity ``enu = scale * R @ X_map + t`` from map-world
    coordinates to the ENU frame at ``origin``.

    Attributes:
        origin: ``(3,)`` latitude, longitude (degrees, WGS84) and ellipsoidal height (metres) of the ENU
            tangent point.
        scale: ENU metres per map unit (1 for a metric map).
        R: ``(3, 3)`` rotation map world → ENU.
        t: ``(3,)`` ENU position of the map-world origin.
    """

    origin: np.ndarray
    scale: float
    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        origin = _as_points(self.origin, "the origin").reshape(-1)
        _check_latitudes(origin)
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise GeoReferenceError(f"scale must be a positive number, got {self.scale}")
        try:
            pose = Pose(self.R, self.t)  # checks the rotation (orthonormal, no reflection) and shapes
        except ValueError as e:
            raise GeoReferenceError(f"invalid map-to-ENU transform: {e}") from None
        object.__setattr__(self, "origin", frozen_array(origin))
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "R", pose.R)
        object.__setattr__(self, "t", pose.t)

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_heading(cls, lat: float, lon: float, h: float, heading_deg: float, scale: float = 1.0) -> GeoReference:
        """A map whose origin is at ``(lat, lon, h)``, whose +z axis is up and whose +x axis points along
        the compass bearing ``heading_deg`` (degrees clockwise from true north; 90 = east).

        The map is right-handed, so +y points to ``heading_deg - 90`` (heading 90: x east, y north).
        """
        b = np.radians(float(heading_deg))
        x_axis = np.array([np.sin(b), np.cos(b), 0.0])
        y_axis = np.array([-np.cos(b), np.sin(b), 0.0])
        R = np.stack([x_axis, y_axis, [0.0, 0.0, 1.0]], axis=1)
        return cls(np.array([lat, lon, h], dtype=np.float64), scale, R, np.zeros(3))

    @classmethod
    def fit(cls, map_points: Any, llh: Any) -> tuple[GeoReference, np.ndarray]:
        """The least-squares similarity (Umeyama, with scale) from map points to their geodetic positions.

        The ENU origin is the geodetic position of the control points' ECEF centroid. ENU is a rigid
        image of ECEF, so the fit is exact for a rigid map of any extent.

        Args:
            map_points: ``(N, 3)`` map-world coordinates, ``N >= 3``, not collinear.
            llh: ``(N, 3)`` their latitude, longitude (degrees) and ellipsoidal height (metres).

        Returns:
            The geo-reference and the ``(N,)`` residuals in metres (ENU distance of each mapped point to
            its geodetic position).

        Raises:
            GeoReferenceError: fewer than 3 points, shapes that differ, coincident or collinear points.
        """
        X = _as_points(map_points, "map points")
        llh = _as_points(llh, "geodetic positions")
        if X.ndim != 2 or llh.shape != X.shape:
            raise GeoReferenceError(f"expected (N, 3) map points and (N, 3) geodetic positions, got {X.shape} and {llh.shape}")
        if len(X) < 3:
            raise GeoReferenceError(f"a similarity needs at least 3 points with known coordinates, got {len(X)}")
        origin = geodetic_from_ecef(ecef_from_geodetic(llh).mean(axis=0))
        Y = enu_from_geodetic(llh, origin)
        _check_spread(X, "map")
        _check_spread(Y, "geodetic")
        scale, R, t = umeyama(X, Y)
        georef = cls(origin, scale, R, t)
        return georef, np.linalg.norm(georef.enu_from_map(X) - Y, axis=1)

    # --- transforms ---------------------------------------------------------------------------
    def enu_from_map(self, X: Any) -> np.ndarray:
        """ENU metres ``(..., 3)`` (frame at :attr:`origin`) of map-world points ``(..., 3)``."""
        return self.scale * _as_points(X, "map points") @ self.R.T + self.t

    def map_from_enu(self, enu: Any) -> np.ndarray:
        """Map-world points ``(..., 3)`` of ENU points ``(..., 3)`` (frame at :attr:`origin`)."""
        return (_as_points(enu, "ENU points") - self.t) @ self.R / self.scale

    def geodetic_from_map(self, X: Any) -> np.ndarray:
        """Latitude, longitude, height ``(..., 3)`` of map-world points ``(..., 3)``."""
        return geodetic_from_enu(self.enu_from_map(X), self.origin)

    def map_from_geodetic(self, llh: Any) -> np.ndarray:
        """Map-world points ``(..., 3)`` of geodetic positions ``(..., 3)`` (e.g. a GPS prior)."""
        return self.map_from_enu(enu_from_geodetic(llh, self.origin))

    @property
    def up(self) -> np.ndarray:
        """``(3,)`` unit vector of the map world pointing up (ENU up at the origin)."""
        return self.R[2].copy()

    # --- files --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """``{"origin": {"lat", "lon", "h"}, "scale", "qvec": [w, x, y, z], "tvec"}``; ``qvec`` / ``tvec``
        are the rotation and translation of map world → ENU, as in visloc's JSON poses."""
        lat, lon, h = self.origin.tolist()
        return {"origin": {"lat": lat, "lon": lon, "h": h}, "scale": self.scale,
                "qvec": matrix_to_quat(self.R).tolist(), "tvec": self.t.tolist()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GeoReference:
        """From the layout of :meth:`to_json` (other keys are ignored).

        Raises:
            GeoReferenceError: a missing key or a value of the wrong kind.
        """
        try:
            o = d["origin"]
            origin = [float(o["lat"]), float(o["lon"]), float(o["h"])]
            q = np.asarray(d["qvec"], dtype=np.float64)
            if q.shape != (4,) or not np.all(np.isfinite(q)) or abs(np.linalg.norm(q) - 1.0) > 1e-6:
                raise GeoReferenceError(f"qvec must be a unit quaternion [w, x, y, z], got {d['qvec']}")
            return cls(np.array(origin), float(d["scale"]), quat_to_matrix(q), np.asarray(d["tvec"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as e:
            raise GeoReferenceError(f"not a geo-reference ({type(e).__name__}: {e}); expected keys origin "
                                    "{lat, lon, h}, scale, qvec, tvec") from None


def _check_spread(P: np.ndarray, what: str) -> None:
    s = np.linalg.svd(P - P.mean(axis=0), compute_uv=False)
    if s[0] <= 1e-9 * max(1.0, float(np.abs(P).max())):
        raise GeoReferenceError(f"the {what} coordinates of the points coincide: a similarity needs at least 3 "
                                "points that are not on one line")
    if s[1] < COLLINEAR_TOL * s[0]:
        raise GeoReferenceError(f"the {what} coordinates of the points are collinear (singular values "
                                f"{s[0]:.3g}, {s[1]:.3g}): rotation about that line is undetermined; give at least "
                                "3 points that are not on one line")


def umeyama(X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``Y ≈ s R X + t`` (Umeyama 1991).

    Args:
        X, Y: ``(N, 3)`` corresponding points.

    Returns:
        ``s`` (> 0), ``R`` ``(3, 3)`` (a rotation, never a reflection) and ``t`` ``(3,)``.
    """
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    U, D, Vt = np.linalg.svd(Yc.T @ Xc / len(X))
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / (Xc**2).sum(axis=1).mean())
    return s, R, my - s * R @ mx


# --- GeoPose ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeoPose:
    """OGC GeoPose Basic-Quaternion: WGS84 position and the orientation of the body frame in the ENU frame
    at that position.

    Attributes:
        lat, lon: degrees (WGS84).
        h: ellipsoidal height in metres.
        quaternion: ``(x, y, z, w)`` unit quaternion of ``R_enu_from_body``, ``w >= 0``.
    """

    lat: float
    lon: float
    h: float
    quaternion: tuple[float, float, float, float]

    def to_json(self) -> dict[str, dict[str, float]]:
        """``{"position": {"lat", "lon", "h"}, "quaternion": {"x", "y", "z", "w"}}`` (the GeoPose JSON
        encoding, as in the OSCP GeoPose protocol's ``geopose`` field)."""
        x, y, z, w = self.quaternion
        return {"position": {"lat": self.lat, "lon": self.lon, "h": self.h},
                "quaternion": {"x": x, "y": y, "z": z, "w": w}}


def _body(body_frame: str) -> np.ndarray:
    if body_frame not in BODY_FRAMES:
        raise GeoReferenceError(f"unknown body frame {body_frame!r}; known: {', '.join(BODY_FRAMES)}")
    return BODY_FRAMES[body_frame]


def geopose_from_pose(pose: Pose, georef: GeoReference, body_frame: str = FORWARD_LEFT_UP) -> GeoPose:
    """The GeoPose of a camera localized in a geo-referenced map.

    Args:
        pose: ``cam_from_world`` of the camera in the map world.
        georef: the map's geo-reference.
        body_frame: the axes the orientation describes, a key of :data:`BODY_FRAMES`.

    Returns:
        Position of the camera centre; quaternion of ``R_enu(camera)_from_body``, where ``enu(camera)`` is
        the tangent frame at the camera's own latitude and longitude.
    """
    M = _body(body_frame)
    llh = georef.geodetic_from_map(pose.center)
    R_ecef_from_map = enu_rotation(*georef.origin[:2]).T @ georef.R
    R = enu_rotation(llh[0], llh[1]) @ R_ecef_from_map @ pose.R.T @ M
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    q = np.array([x, y, z, w]) * (1.0 if w >= 0 else -1.0)
    return GeoPose(float(llh[0]), float(llh[1]), float(llh[2]), tuple(float(v) for v in q))


def pose_from_geopose(geopose: GeoPose, georef: GeoReference, body_frame: str = FORWARD_LEFT_UP) -> Pose:
    """The map-world ``cam_from_world`` of a GeoPose (the inverse of :func:`geopose_from_pose`)."""
    M = _body(body_frame)
    q = np.asarray(geopose.quaternion, dtype=np.float64)
    if q.shape != (4,) or not np.all(np.isfinite(q)) or np.linalg.norm(q) < 1e-12:
        raise GeoReferenceError(f"GeoPose quaternion must be 4 finite numbers, not all zero, got {geopose.quaternion}")
    R_enu_from_body = Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()
    R_map_from_ecef = georef.R.T @ enu_rotation(*georef.origin[:2])
    R_world_from_cam = R_map_from_ecef @ enu_rotation(geopose.lat, geopose.lon).T @ R_enu_from_body @ M.T
    center = georef.map_from_geodetic([geopose.lat, geopose.lon, geopose.h])
    return Pose.from_world_from_cam(R_world_from_cam, center)
