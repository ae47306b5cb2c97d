"""Geodetic ↔ ECEF ↔ ENU conversions on hand-computed cases, the map geo-reference (origin + heading, fitted
similarity, JSON) and GeoPoses of known camera poses.

Hand formulas here are independent of the module (which leaves the ellipsoid to PROJ): WGS84 ``a`` and
``f``, ``N = a / sqrt(1 - e² sin² φ)``, ``X = (N + h) cos φ cos λ``, ``Y = (N + h) cos φ sin λ``,
``Z = (N (1 - e²) + h) sin φ``. Degrees round-trip to 1e-9 (0.1 mm); ECEF and ENU metres to 1e-8 / 1e-7,
heights to 1e-6 (PROJ's closed-form ECEF → geodetic inverse is good to a micrometre up to 9 km; one ULP
of an ECEF coordinate is 9e-10 m).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from visloc.geometry import Pose
from visloc.geometry.geo import (
    BODY_FRAMES,
    GeoPose,
    GeoReference,
    GeoReferenceError,
    ecef_from_geodetic,
    enu_from_geodetic,
    enu_rotation,
    geodetic_from_ecef,
    geodetic_from_enu,
    geopose_from_pose,
    pose_from_geopose,
)

A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
B = A * (1 - F)  # 6356752.314245179


def hand_ecef(lat: float, lon: float, h: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    n = A / math.sqrt(1 - E2 * math.sin(phi) ** 2)
    return np.array([(n + h) * math.cos(phi) * math.cos(lam), (n + h) * math.cos(phi) * math.sin(lam),
                     (n * (1 - E2) + h) * math.sin(phi)])


def hand_enu_rows(lat: float, lon: float) -> np.ndarray:
    """East, north, up unit vectors in ECEF (as the rows), from the partial derivatives of hand_ecef."""
    phi, lam = math.radians(lat), math.radians(lon)
    east = np.array([-math.sin(lam), math.cos(lam), 0.0])
    up = np.array([math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)])
    return np.stack([east, np.cross(up, east), up])


# --- geodetic <-> ECEF ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("llh", "xyz"), [
    ((0.0, 0.0, 0.0), (A, 0.0, 0.0)),
    ((0.0, 90.0, 0.0), (0.0, A, 0.0)),
    ((0.0, 180.0, 0.0), (-A, 0.0, 0.0)),
    ((0.0, -90.0, 100.0), (0.0, -(A + 100.0), 0.0)),
    ((90.0, 0.0, 0.0), (0.0, 0.0, 6356752.314245)),
    ((-90.0, 0.0, 10.0), (0.0, 0.0, -(B + 10.0))),
])
def test_ecef_of_hand_computed_points(llh: tuple[float, float, float], xyz: tuple[float, float, float]) -> None:
    assert np.allclose(ecef_from_geodetic(llh), xyz, rtol=0, atol=1e-6)


def test_ecef_matches_the_closed_form_at_mid_latitudes() -> None:
    for llh in [(45.0, 45.0, 0.0), (60.1699, 24.9384, 25.0), (-33.8568, 151.2153, -12.5), (47.3769, 8.5417, 408.0)]:
        assert np.allclose(ecef_from_geodetic(llh), hand_ecef(*llh), rtol=0, atol=1e-8)
    # 45°N 45°E by hand: N = a / sqrt(1 - e²/2); X = Y = N / 2; Z = N (1 - e²) / sqrt(2)
    n = A / math.sqrt(1 - E2 / 2)
    assert np.allclose(ecef_from_geodetic([45.0, 45.0, 0.0]), [n / 2, n / 2, n * (1 - E2) / math.sqrt(2)], atol=1e-8)


def test_geodetic_of_ecef_inverts_it_to_1e9() -> None:
    rng = np.random.default_rng(0)
    llh = np.stack([rng.uniform(-89.9, 89.9, 200), rng.uniform(-179.9, 179.9, 200), rng.uniform(-500, 9000, 200)], 1)
    back = geodetic_from_ecef(ecef_from_geodetic(llh))
    assert np.abs(back[:, :2] - llh[:, :2]).max() < 1e-9
    assert np.abs(back[:, 2] - llh[:, 2]).max() < 1e-6
    xyz = ecef_from_geodetic(llh)
    assert np.abs(ecef_from_geodetic(geodetic_from_ecef(xyz)) - xyz).max() < 1e-6
    assert np.allclose(geodetic_from_ecef([0.0, 0.0, B]), [90.0, 0.0, 0.0], atol=1e-9)


def test_latitude_out_of_range_is_refused() -> None:
    with pytest.raises(GeoReferenceError, match="latitude"):
        ecef_from_geodetic([91.0, 0.0, 0.0])


# --- ENU ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lat", "lon", "rows"), [
    (0.0, 0.0, [[0, 1, 0], [0, 0, 1], [1, 0, 0]]),
    (90.0, 0.0, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
    (0.0, 90.0, [[-1, 0, 0], [0, 0, 1], [0, 1, 0]]),
    (45.0, 90.0, [[-1, 0, 0], [0, -math.sqrt(0.5), math.sqrt(0.5)], [0, math.sqrt(0.5), math.sqrt(0.5)]]),
    (-30.0, 180.0, [[0, -1, 0], [-0.5, 0, math.sqrt(0.75)], [-math.sqrt(0.75), 0, -0.5]]),
])
def test_enu_rotation_by_hand(lat: float, lon: float, rows: list[list[float]]) -> None:
    R = enu_rotation(lat, lon)
    assert np.allclose(R, rows, atol=1e-15)
    assert np.allclose(R, hand_enu_rows(lat, lon), atol=1e-15)
    assert np.isclose(np.linalg.det(R), 1.0)


def test_one_metre_east_north_up_of_the_origin() -> None:
    # At (0, 0, 0): east is ECEF +y, north +z, up +x.
    east = geodetic_from_ecef([A, 1.0, 0.0])
    assert np.allclose(east, [0.0, math.degrees(math.atan2(1.0, A)), math.hypot(A, 1.0) - A], rtol=0, atol=1e-12)
    # 1 m along the meridian at the equator: the meridian radius there is a (1 - e²).
    north = geodetic_from_enu([0.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    assert np.allclose(north[:2], [math.degrees(1.0 / (A * (1 - E2))), 0.0], rtol=0, atol=1e-13)
    up = geodetic_from_enu([0.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    assert np.allclose(up, [0.0, 0.0, 1.0], atol=1e-9)
    # Anywhere: up is the ellipsoid normal, so 1 m up changes the height only.
    origin = np.array([60.1699, 24.9384, 25.0])
    assert np.allclose(geodetic_from_enu([0.0, 0.0, 1.0], origin), origin + np.array([0.0, 0.0, 1.0]), rtol=0, atol=1e-9)
    # and ECEF + a unit vector of hand_enu_rows is 1 m along that axis of the ENU frame.
    for axis in range(3):
        p = geodetic_from_ecef(hand_ecef(*origin) + hand_enu_rows(*origin[:2])[axis])
        assert np.allclose(enu_from_geodetic(p, origin), np.eye(3)[axis], rtol=0, atol=1e-8)


def test_enu_round_trip() -> None:
    origin = [-33.8568, 151.2153, 5.0]
    rng = np.random.default_rng(1)
    enu = rng.uniform(-2000, 2000, (100, 3))
    assert np.abs(enu_from_geodetic(geodetic_from_enu(enu, origin), origin) - enu).max() < 1e-7
    assert np.allclose(enu_from_geodetic(origin, origin), 0.0, atol=1e-9)


# --- GeoReference ---------------------------------------------------------------------------------------
def test_heading_places_the_map_axes() -> None:
    g = GeoReference.from_heading(47.0, 8.0, 400.0, heading_deg=90.0)  # x east, y north
    assert np.allclose(g.enu_from_map([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), np.eye(3), atol=1e-15)
    g = GeoReference.from_heading(47.0, 8.0, 400.0, heading_deg=0.0)  # x north, y west
    assert np.allclose(g.enu_from_map([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-15)
    g = GeoReference.from_heading(47.0, 8.0, 400.0, heading_deg=30.0, scale=2.0)
    assert np.allclose(g.enu_from_map([1.0, 0.0, 0.0]), [2 * 0.5, 2 * math.sqrt(0.75), 0.0])
    assert np.allclose(g.up, [0, 0, 1])
    assert np.allclose(g.geodetic_from_map([0.0, 0.0, 0.0]), [47.0, 8.0, 400.0], atol=1e-9)
    assert np.allclose(g.map_from_geodetic(g.geodetic_from_map([[10.0, -20.0, 3.0]])), [[10.0, -20.0, 3.0]], atol=1e-8)


def test_fit_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(2)
    truth = GeoReference(np.array([60.1699, 24.9384, 25.0]), 1.7, Rotation.from_rotvec([0.3, -0.2, 1.1]).as_matrix(),
                         np.array([120.0, -40.0, 3.0]))
    X = rng.uniform(-50, 50, (6, 3))
    georef, residuals = GeoReference.fit(X, truth.geodetic_from_map(X))
    assert residuals.shape == (6,) and residuals.max() < 1e-6
    assert georef.scale == pytest.approx(1.7, rel=1e-10)
    test = rng.uniform(-100, 100, (20, 3))
    llh = georef.geodetic_from_map(test)
    assert np.abs(llh[:, :2] - truth.geodetic_from_map(test)[:, :2]).max() < 1e-9
    assert np.abs(llh[:, 2] - truth.geodetic_from_map(test)[:, 2]).max() < 1e-6
    # three points are enough
    georef3, residuals3 = GeoReference.fit(X[:3], truth.geodetic_from_map(X[:3]))
    assert residuals3.max() < 1e-6 and np.allclose(georef3.geodetic_from_map(test), llh, rtol=0, atol=1e-6)


def test_fit_reports_residuals_of_noisy_points() -> None:
    truth = GeoReference.from_heading(47.0, 8.0, 400.0, 45.0)
    X = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [10, 10, 1]])
    llh = truth.geodetic_from_map(X)
    llh[3, 2] += 0.4  # 40 cm off in height
    _, residuals = GeoReference.fit(X, llh)
    assert 0.05 < residuals.max() < 0.4


@pytest.mark.parametrize(("X", "problem"), [
    ([[0, 0, 0], [1, 0, 0]], "at least 3 points"),
    ([[0, 0, 0], [1, 1, 1], [2, 2, 2], [5, 5, 5]], "collinear"),
    ([[1, 2, 3], [1, 2, 3], [1, 2, 3]], "coincide"),
])
def test_degenerate_fit_is_refused(X: list[list[float]], problem: str) -> None:
    X = np.asarray(X, dtype=np.float64)
    llh = GeoReference.from_heading(10.0, 20.0, 0.0, 0.0).geodetic_from_map(X)
    with pytest.raises(GeoReferenceError, match=problem):
        GeoReference.fit(X, llh)


def test_collinear_geodetic_points_are_refused() -> None:
    X = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    llh = np.array([[10.0, 20.0, 0.0], [10.001, 20.0, 0.0], [10.002, 20.0, 0.0]])
    with pytest.raises(GeoReferenceError, match="geodetic coordinates of the points are collinear"):
        GeoReference.fit(X, llh)


def test_json_round_trip_and_bad_json() -> None:
    g = GeoReference(np.array([-33.8568, 151.2153, 5.0]), 0.5, Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(),
                     np.array([1.0, 2.0, 3.0]))
    back = GeoReference.from_json(g.to_json())
    assert np.allclose(back.R, g.R, atol=1e-15) and np.array_equal(back.t, g.t) and back.scale == g.scale
    assert np.array_equal(back.origin, g.origin)
    with pytest.raises(GeoReferenceError, match="expected keys"):
        GeoReference.from_json({"origin": {"lat": 1.0}})
    with pytest.raises(GeoReferenceError, match="scale"):
        GeoReference(np.zeros(3), -1.0, np.eye(3), np.zeros(3))


# --- GeoPose --------------------------------------------------------------------------------------------
def _camera(center: list[float], forward: list[float], up: list[float]) -> Pose:
    """A camera at ``center`` looking along ``forward`` with the top of the image towards ``up``."""
    f = np.asarray(forward, dtype=np.float64) / np.linalg.norm(forward)
    down = -np.asarray(up, dtype=np.float64)
    right = np.cross(down, f)
    return Pose.from_world_from_cam(np.stack([right, down, f], axis=1), np.asarray(center, dtype=np.float64))


def _quat(q: tuple[float, float, float, float]) -> np.ndarray:
    """Rotation matrix of an x, y, z, w quaternion, written out."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_level_camera_looking_east_is_the_identity() -> None:
    g = GeoReference.from_heading(60.1699, 24.9384, 25.0, heading_deg=90.0)  # map = ENU at the origin
    gp = geopose_from_pose(_camera([0, 0, 1.5], [1, 0, 0], [0, 0, 1]), g)
    assert gp.lat == pytest.approx(60.1699, abs=1e-12) and gp.lon == pytest.approx(24.9384, abs=1e-12)
    assert gp.h == pytest.approx(26.5, abs=1e-8)
    assert np.allclose(gp.quaternion, [0, 0, 0, 1], atol=1e-12)
    # looking north: 90° about up; looking down at the ground: +90° pitch about y (left) in the body frame
    north = geopose_from_pose(_camera([0, 0, 1.5], [0, 1, 0], [0, 0, 1]), g)
    assert np.allclose(north.quaternion, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    down = geopose_from_pose(_camera([0, 0, 1.5], [0, 0, -1], [1, 0, 0]), g)
    assert np.allclose(down.quaternion, [0, math.sqrt(0.5), 0, math.sqrt(0.5)], atol=1e-12)
    # the same camera in the graphics (ARKit / WebXR) body frame: x right (south), y up, z back (west)
    rub = geopose_from_pose(_camera([0, 0, 1.5], [1, 0, 0], [0, 0, 1]), g, "right-up-back")
    assert np.allclose(_quat(rub.quaternion), np.stack([[0, -1, 0], [0, 0, 1], [-1, 0, 0]], axis=1), atol=1e-12)
    assert set(BODY_FRAMES) == {"forward-left-up", "right-up-back", "right-down-forward"}


def test_camera_far_from_the_origin_uses_its_own_tangent_frame() -> None:
    """1 km north of the origin (map x = north), looking along map x and level in the origin's frame: its
    position by the hand formulas, and in its own ENU frame it looks north, pitched up by the angle the
    normal turned (about 1000 m / 6.38e6 m = 0.009°: the Earth curves away below the old horizontal)."""
    lat0, lon0, h0 = 47.3769, 8.5417, 408.0
    g = GeoReference.from_heading(lat0, lon0, h0, heading_deg=0.0)
    gp = geopose_from_pose(_camera([1000.0, 0.0, 2.0], [1, 0, 0], [0, 0, 1]), g)
    rows0 = hand_enu_rows(lat0, lon0)
    ecef = hand_ecef(lat0, lon0, h0) + rows0.T @ np.array([0.0, 1000.0, 2.0])
    # ECEF -> geodetic by hand: fixed-point iteration of Bowring's latitude
    p = math.hypot(ecef[0], ecef[1])
    lat = math.atan2(ecef[2], p * (1 - E2))
    for _ in range(10):
        n = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
        h = p / math.cos(lat) - n
        lat = math.atan2(ecef[2], p * (1 - E2 * n / (n + h)))
    lon = math.atan2(ecef[1], ecef[0])
    assert gp.lat == pytest.approx(math.degrees(lat), abs=1e-9) and gp.lon == pytest.approx(math.degrees(lon), abs=1e-9)
    assert gp.h == pytest.approx(h, abs=1e-6)
    rows = hand_enu_rows(math.degrees(lat), math.degrees(lon))
    forward, left, up = rows0[1], -rows0[0], rows0[2]  # body axes in ECEF: north, west, up of the origin
    expected = np.stack([rows @ forward, rows @ left, rows @ up], axis=1)
    assert np.allclose(_quat(gp.quaternion), expected, atol=1e-9)
    assert math.degrees(math.asin(expected[2, 0])) == pytest.approx(math.degrees(1000.0 / 6.38e6), rel=0.01)
    assert abs(np.linalg.norm(gp.quaternion) - 1) < 1e-12 and gp.quaternion[3] >= 0


def test_pose_from_geopose_inverts_it() -> None:
    g = GeoReference(np.array([35.0, 139.0, 40.0]), 0.8, Rotation.from_rotvec([0.2, -0.1, 2.0]).as_matrix(),
                     np.array([5.0, -3.0, 1.0]))
    pose = Pose(Rotation.from_rotvec([0.4, 1.2, -0.3]).as_matrix(), np.array([30.0, -12.0, 4.0]))
    for frame in BODY_FRAMES:
        back = pose_from_geopose(geopose_from_pose(pose, g, frame), g, frame)
        assert np.allclose(back.R, pose.R, atol=1e-12) and np.allclose(back.center, pose.center, atol=1e-8)
    with pytest.raises(GeoReferenceError, match="unknown body frame"):
        geopose_from_pose(pose, g, "up-down")
    assert GeoPose(1.0, 2.0, 3.0, (0.0, 0.0, 0.0, 1.0)).to_json() == {
        "position": {"lat": 1.0, "lon": 2.0, "h": 3.0}, "quaternion": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}


def test_georef_file_round_trip(tmp_path: Path) -> None:
    from visloc.errors import InputError
    from visloc.io.georef import read_control_points, read_georef, write_georef

    g = GeoReference.from_heading(47.0, 8.0, 400.0, 33.0, scale=1.25)
    write_georef(tmp_path / "georef.json", g, {"method": "test"})
    back = read_georef(tmp_path / "georef.json")
    assert np.allclose(back.R, g.R, atol=1e-15) and back.scale == 1.25 and np.array_equal(back.origin, g.origin)
    (tmp_path / "bad.json").write_text('{"version": 1, "origin": {"lat": 95, "lon": 0, "h": 0}, "scale": 1, '
                                       '"qvec": [1, 0, 0, 0], "tvec": [0, 0, 0]}')
    with pytest.raises(InputError, match=r"bad\.json: latitude"):
        read_georef(tmp_path / "bad.json")
    (tmp_path / "pts.txt").write_text("# x y z lat lon h\n0 0 0 47 8 400\n1 2 3 47.1 8.1\n")
    with pytest.raises(InputError, match="line 3: expected 'x y z lat lon h', got 5 fields"):
        read_control_points(tmp_path / "pts.txt")
