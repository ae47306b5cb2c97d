"""The OSCP GeoPose protocol on the embedded world: a ``GeoPoseReq`` written by hand from the protocol's
TypeScript interfaces (OpenArCloud/oscp-geopose-protocol README), parsed; the ``GeoPoseResp`` of a known
pose checked against an independent computation (closed-form WGS84 formulas, ENU axes by hand) to
1e-6 degrees / 1 mm / 1e-6; a request answered end to end by a real localizer; malformed requests named
by field; position priors; and ``visloc map georef``."""

from __future__ import annotations

import base64
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from visloc.cli import app, main
from visloc.datasets import load_frames
from visloc.errors import ConfigError, InputError
from visloc.geometry import Pose
from visloc.geometry.geo import GeoReference, enu_from_geodetic
from visloc.io.images import read_image
from visloc.localization import Localizer, Map
from visloc.localization.georef import GEOREF, read_map_georef
from visloc.localization.prior import GeoPrior, MapPrior, names_within_radius
from visloc.service.geopose import (
    GeoPoseRequestError,
    answer_geopose_request,
    geopose_response,
    parse_geopose_request,
)

A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
#: Where the embedded world is put on the Earth: Helsinki, map +x towards bearing 30° (NNE), +z up.
ORIGIN = (60.1699, 24.9384, 25.0)
HEADING = 30.0
runner = CliRunner()


# --- independent geodesy ----------------------------------------------------------------------------------
def hand_ecef(lat: float, lon: float, h: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    n = A / math.sqrt(1 - E2 * math.sin(phi) ** 2)
    return np.array([(n + h) * math.cos(phi) * math.cos(lam), (n + h) * math.cos(phi) * math.sin(lam),
                     (n * (1 - E2) + h) * math.sin(phi)])


def hand_geodetic(x: float, y: float, z: float) -> tuple[float, float, float]:
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1 - E2))
    for _ in range(10):
        n = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
        h = p / math.cos(lat) - n
        lat = math.atan2(z, p * (1 - E2 * n / (n + h)))
    n = A / math.sqrt(1 - E2 * math.sin(lat) ** 2)
    return math.degrees(lat), math.degrees(math.atan2(y, x)), p / math.cos(lat) - n


def hand_enu_rows(lat: float, lon: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    east = np.array([-math.sin(lam), math.cos(lam), 0.0])
    up = np.array([math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)])
    return np.stack([east, np.cross(up, east), up])


def hand_quaternion_xyzw(R: np.ndarray) -> np.ndarray:
    """Shepperd's method, written out; ``w >= 0``."""
    t = np.trace(R)
    cases = [t, R[0, 0], R[1, 1], R[2, 2]]
    k = int(np.argmax(cases))
    if k == 0:
        w = math.sqrt(1 + t) / 2
        q = [(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w), w]
    else:
        i, j, m = [(0, 1, 2), (1, 2, 0), (2, 0, 1)][k - 1]
        s = math.sqrt(1 + R[i, i] - R[j, j] - R[m, m]) * 2
        q = [0.0] * 4
        q[i], q[j], q[m], q[3] = s / 4, (R[j, i] + R[i, j]) / s, (R[m, i] + R[i, m]) / s, (R[m, j] - R[j, m]) / s
    q = np.array(q)
    return q if q[3] >= 0 else -q


def expected_geopose(pose: Pose) -> tuple[tuple[float, float, float], np.ndarray]:
    """Position and x, y, z, w quaternion (camera body frame x forward, y left, z up in the ENU frame at the
    camera) of a world-camera pose, from the origin, the heading and the formulas above only."""
    b = math.radians(HEADING)
    map_axes_in_enu = np.array([[math.sin(b), -math.cos(b), 0.0], [math.cos(b), math.sin(b), 0.0], [0.0, 0.0, 1.0]])
    rows0 = hand_enu_rows(ORIGIN[0], ORIGIN[1])
    center_enu = map_axes_in_enu @ (-pose.R.T @ pose.t)
    lat, lon, h = hand_geodetic(*(hand_ecef(*ORIGIN) + rows0.T @ center_enu))
    # body axes in the camera frame (x right, y down, z forward): forward, left, up
    body_in_cam = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    R = hand_enu_rows(lat, lon) @ rows0.T @ map_axes_in_enu @ pose.R.T @ body_in_cam
    return (lat, lon, h), hand_quaternion_xyzw(R)


# --- the request, by hand -------------------------------------------------------------------------------
def geopose_request(image_path: Path, colmap_params: list[float], width: int, height: int, **extra) -> dict:
    """A GeoPoseReq as the protocol's interfaces spell it (version 2 candidate 1)."""
    privacy = {"dataRetention": [], "dataAcceptableUse": [], "dataSanitizationApplied": [],
               "dataSanitizationRequested": []}
    request = {
        "id": "3f1c2b9e-7a44-4c1e-9d2a-0b5e6f7a8c90",
        "timestamp": 1733390000123,
        "type": "geopose",
        "sensors": [{"id": "camera0", "type": "camera"}, {"id": "gps0", "type": "geolocation"}],
        "sensorReadings": {
            "cameraReadings": [{
                "timestamp": 1733390000100,
                "sensorId": "camera0",
                "privacy": privacy,
                "sequenceNumber": 1,
                "imageFormat": "RGBA32",  # what the reference clients write for a JPEG/PNG file
                "size": [width, height],
                "imageBytes": base64.b64encode(image_path.read_bytes()).decode("ascii"),
                "imageOrientation": {"mirrored": False, "rotation": 0},
                "params": {"model": "PINHOLE", "modelParams": colmap_params},
            }],
            "geolocationReadings": [{
                "timestamp": 1733390000000, "sensorId": "gps0", "privacy": privacy,
                "latitude": ORIGIN[0], "longitude": ORIGIN[1], "altitude": ORIGIN[2], "accuracy": 12.0,
                "altitudeAccuracy": 30.0, "heading": 0.0, "speed": 0.0,
            }],
        },
    }
    request.update(extra)
    return request


@pytest.fixture(scope="module")
def frame(tiny_world: Path):
    return load_frames(tiny_world, split="test").frames[0]


@pytest.fixture(scope="module")
def request_body(frame) -> dict:
    fx, fy, cx, cy = frame.camera.params
    # COLMAP's convention (pixel centres at +0.5), as the protocol's modelParams are COLMAP's
    return geopose_request(frame.image_path, [fx, fy, cx + 0.5, cy + 0.5], frame.camera.width, frame.camera.height)


@pytest.fixture(scope="module")
def georef() -> GeoReference:
    return GeoReference.from_heading(*ORIGIN, heading_deg=HEADING)


def test_request_is_parsed(frame, request_body: dict) -> None:
    image, camera, prior, request_id = parse_geopose_request(request_body)
    assert request_id == "3f1c2b9e-7a44-4c1e-9d2a-0b5e6f7a8c90"
    assert np.array_equal(image, read_image(frame.image_path)) and image.dtype == np.uint8
    assert camera.model == "PINHOLE" and (camera.width, camera.height) == (frame.camera.width, frame.camera.height)
    assert np.allclose(camera.params, frame.camera.params, atol=1e-12)
    assert prior == GeoPrior(ORIGIN[0], ORIGIN[1], ORIGIN[2], 12.0, "sensorReadings.geolocationReadings[0]")


def test_response_of_a_known_pose_is_right_to_a_millimetre(frame, request_body: dict, georef: GeoReference) -> None:
    resp = geopose_response("req-1", frame.pose, georef, accuracy=(0.05, 0.5), timestamp=request_body["timestamp"])
    assert resp["id"] == "req-1" and resp["type"] == "geopose" and resp["timestamp"] == 1733390000123
    assert resp["accuracy"] == {"position": 0.05, "orientation": 0.5}
    assert set(resp["geopose"]) == {"position", "quaternion"}
    (lat, lon, h), q = expected_geopose(frame.pose)
    pos, quat = resp["geopose"]["position"], resp["geopose"]["quaternion"]
    assert abs(pos["lat"] - lat) < 1e-6 and abs(pos["lon"] - lon) < 1e-6 and abs(pos["h"] - h) < 1e-3
    assert abs(pos["lat"] - lat) < 1e-10 and abs(pos["lon"] - lon) < 1e-10 and abs(pos["h"] - h) < 1e-6
    assert np.abs(np.array([quat[k] for k in "xyzw"]) - q).max() < 1e-6
    json.dumps(resp, allow_nan=False)
    assert geopose_response("req-2", None, georef, timestamp=5.0) == {
        "id": "req-2", "timestamp": 5.0, "type": "geopose", "error": "not localized"}


def test_request_is_answered_by_the_localizer(tiny_map: Path, frame, request_body: dict, georef: GeoReference) -> None:
    localizer = Localizer(tiny_map)
    status, resp = answer_geopose_request(request_body, localizer, georef)
    assert status == 200, resp
    assert resp["id"] == request_body["id"] and resp["timestamp"] == request_body["timestamp"]
    result = localizer.localize_image(read_image(frame.image_path), frame.camera)
    assert resp["geopose"] == geopose_response("x", result.pose, georef)["geopose"]
    # and it is where the camera was: the world's ground truth, to the localization error (centimetres)
    (lat, lon, h), q = expected_geopose(frame.pose)
    p = resp["geopose"]["position"]
    assert np.linalg.norm(enu_from_geodetic([p["lat"], p["lon"], p["h"]], [lat, lon, h])) < 0.05
    got = np.array([resp["geopose"]["quaternion"][k] for k in "xyzw"])
    assert math.degrees(2 * math.acos(min(1.0, abs(float(got @ q))))) < 1.0

    class Lost:
        def localize_image(self, image, camera, name="query"):
            return type("R", (), {"pose": None, "status": "too few inliers"})()

    status, resp = answer_geopose_request(request_body, Lost(), georef)
    assert status == 404 and resp["error"] == "not localized (too few inliers)" and "geopose" not in resp
    status, resp = answer_geopose_request({"id": "x"}, Lost(), georef)
    assert status == 422 and resp == {"detail": "sensorReadings: is required"}


def _broken(body: dict, path: list, value) -> dict:
    body = json.loads(json.dumps(body))
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


CAM = ["sensorReadings", "cameraReadings", 0]


@pytest.mark.parametrize(("path", "value", "field", "problem"), [
    (["id"], KeyError, "id", "is required"),
    (["type"], "pose", "type", "must be 'geopose'"),
    (["sensorReadings", "cameraReadings"], [], "sensorReadings.cameraReadings", "no camera reading"),
    ([*CAM, "imageBytes"], KeyError, "sensorReadings.cameraReadings[0].imageBytes", "is required"),
    ([*CAM, "imageBytes"], "not base64!", "sensorReadings.cameraReadings[0].imageBytes", "not valid base64"),
    ([*CAM, "imageBytes"], base64.b64encode(b"hello").decode(), "sensorReadings.cameraReadings[0].imageBytes",
     "neither an image file nor RGBA32 pixels"),
    ([*CAM, "params"], KeyError, "sensorReadings.cameraReadings[0].params", "is required"),
    ([*CAM, "params", "model"], "FOV", "sensorReadings.cameraReadings[0].params.model", "'FOV' is not supported"),
    ([*CAM, "params", "modelParams"], [300.0, 160.0, 120.0], "sensorReadings.cameraReadings[0].params.modelParams",
     "PINHOLE takes 4 parameters (fx fy cx cy), got 3"),
    ([*CAM, "params", "modelParams"], [-1.0, 300.0, 160.0, 120.0],
     "sensorReadings.cameraReadings[0].params.modelParams", "focal length must be positive"),
    ([*CAM, "size"], [640, 480], "sensorReadings.cameraReadings[0].size", "is [640, 480] but the image is [320, 240]"),
    ([*CAM, "imageOrientation", "rotation"], 90, "sensorReadings.cameraReadings[0].imageOrientation",
     "rotation 90 / mirrored False is not supported"),
    (["sensorReadings", "geolocationReadings", 0, "latitude"], 123.0, "sensorReadings.geolocationReadings[0]",
     "latitude 123.0 is outside [-90, 90]"),
    (["sensorReadings", "geolocationReadings", 0, "longitude"], "east",
     "sensorReadings.geolocationReadings[0].longitude", "must be a number, got a string"),
])
def test_malformed_request_names_the_field(request_body: dict, path: list, value, field: str, problem: str) -> None:
    with pytest.raises(GeoPoseRequestError) as e:
        parse_geopose_request(_broken(request_body, path, value))
    assert e.value.field == field and problem in str(e.value) and str(e.value).startswith(f"{field}: ")
    assert isinstance(e.value, InputError)


def test_request_must_be_an_object_and_images_may_be_limited(request_body: dict) -> None:
    with pytest.raises(GeoPoseRequestError, match="GeoPoseReq: must be a JSON object, got an array"):
        parse_geopose_request([request_body])
    with pytest.raises(GeoPoseRequestError, match="320x240 pixels, more than the 1000 accepted"):
        parse_geopose_request(request_body, max_pixels=1000)


def test_raw_rgba_pixels_are_accepted(frame, request_body: dict) -> None:
    rgb = read_image(frame.image_path)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=2)
    body = _broken(request_body, [*CAM, "imageBytes"], base64.b64encode(rgba.tobytes()).decode())
    assert np.array_equal(parse_geopose_request(body).image, rgb)


def test_priors_in_either_api(request_body: dict, georef: GeoReference, tiny_map: Path) -> None:
    prior_pose = {"id": "prev", "timestamp": 1, "type": "geopose", "accuracy": {"position": 3.0, "orientation": 2.0},
                  "geopose": {"position": {"lat": 60.17, "lon": 24.94, "h": 26.0},
                              "quaternion": {"x": 0, "y": 0, "z": 0, "w": 1}}}
    body = dict(request_body, priorPoses=[prior_pose])
    assert parse_geopose_request(body).prior == GeoPrior(60.17, 24.94, 26.0, 3.0, "priorPoses[0].geopose.position")
    # unknown accuracies (-1): no prior unless a default radius is given
    body = _broken(dict(request_body, priorPoses=[dict(prior_pose, accuracy={"position": -1, "orientation": -1})]),
                   ["sensorReadings", "geolocationReadings", 0, "accuracy"], -1)
    assert parse_geopose_request(body).prior is None
    assert parse_geopose_request(body, default_prior_radius_m=20.0).prior.radius_m == 20.0
    # into the map: a GPS reading at a database camera selects the cameras within its radius
    map_ = Map(tiny_map)
    centres = {n: p.center for n, p in map_.poses.items()}
    name = map_.names[5]
    lat, lon, _ = georef.geodetic_from_map(centres[name])
    prior = GeoPrior(lat, lon, None, 0.5).in_map(georef)
    assert np.allclose(prior.position[:2], centres[name][:2], atol=1e-6) and np.allclose(prior.up, [0, 0, 1])
    near = names_within_radius(centres, prior)
    assert name in near and all(np.linalg.norm(centres[n][:2] - centres[name][:2]) <= 0.5 for n in near)
    far = [n for n in centres if n not in near]
    assert all(np.linalg.norm(centres[n][:2] - centres[name][:2]) > 0.5 for n in far)
    # the previous pose, in visloc's own API, with a 3-D radius
    assert names_within_radius(centres, MapPrior.from_pose(map_.poses[name], 1e-6)) == [name]
    assert names_within_radius({}, prior) == []
    with pytest.raises(ConfigError, match="radius"):
        MapPrior([0, 0, 0], 0.0)


# --- visloc map georef ----------------------------------------------------------------------------------
def _fake_map(tmp_path: Path) -> Path:
    root = tmp_path / "map"
    root.mkdir()
    (root / "map.json").write_text("{}")
    return root


def test_cli_georef_origin_heading_and_points(tmp_path: Path, georef: GeoReference) -> None:
    root = _fake_map(tmp_path)
    result = runner.invoke(app, ["map", "georef", str(root), "--origin", *map(str, ORIGIN), "--heading", str(HEADING)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "residuals: none" in result.output
    written = read_map_georef(root)
    assert np.allclose(written.R, georef.R, atol=1e-15) and np.array_equal(written.origin, georef.origin)
    assert json.loads((root / GEOREF).read_text())["fit"]["heading_deg"] == HEADING

    X = np.array([[0.0, 0.0, 0.0], [12.0, 0.0, 0.5], [0.0, 8.0, 0.0], [10.0, 9.0, 3.0]])
    llh = georef.geodetic_from_map(X)
    pts = tmp_path / "points.txt"
    pts.write_text("# x y z lat lon h\n" + "".join(f"{x!r} {y!r} {z!r} {a!r} {b!r} {c!r}\n"
                                                   for (x, y, z), (a, b, c) in zip(X.tolist(), llh.tolist(), strict=True)))
    result = runner.invoke(app, ["map", "georef", str(root), "--points", str(pts)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "residuals over 4 points: rms 0.0000 m" in result.output and "point 4:" in result.output
    fitted = read_map_georef(root)
    test = np.array([[5.0, 5.0, 1.0], [-30.0, 20.0, 2.0]])
    diff = np.abs(fitted.geodetic_from_map(test) - georef.geodetic_from_map(test))
    assert diff[:, :2].max() < 1e-9 and diff[:, 2].max() < 1e-6
    assert json.loads((root / GEOREF).read_text())["fit"]["rms_m"] < 1e-6


@pytest.mark.parametrize(("args", "error", "message"), [
    (["--origin", "1", "2", "3"], ConfigError, "give --origin LAT LON H with --heading DEG, or --points FILE"),
    (["--origin", "95", "2", "3", "--heading", "0"], ConfigError, "latitude must be in [-90, 90]"),
    (["--points", "PTS", "--heading", "0"], ConfigError, "not both"),
    (["--points", "PTS"], InputError, "collinear"),
])
def test_cli_georef_bad_input(tmp_path: Path, args: list[str], error: type, message: str) -> None:
    root = _fake_map(tmp_path)
    pts = tmp_path / "pts.txt"
    pts.write_text("0 0 0 60 24 0\n1 0 0 60.00001 24 0\n2 0 0 60.00002 24 0\n")
    result = runner.invoke(app, ["map", "georef", str(root), *[str(pts) if a == "PTS" else a for a in args]])
    assert isinstance(result.exception, error) and message in str(result.exception), result.output
    assert not (root / GEOREF).exists()


def test_cli_georef_exit_code_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["visloc", "map", "georef", str(tmp_path / "nomap"), "--origin", "1", "2", "3",
                                      "--heading", "0"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
