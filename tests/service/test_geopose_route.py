"""``POST /geopose`` and position priors over HTTP (a live uvicorn server on loopback, httpx): a GeoPoseReq
written by hand from the protocol text answered with the pose of ``/v1/localize`` for the same image, checked
against an independent computation (1e-6 degrees / 1 mm / 1e-6); a map without a geo-reference refused with
how to fix it; malformed GeoPose bodies named by field; priors (a previous pose, a GPS reading, the GeoPose
request's) restricting retrieval to the database images within their radius."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from visloc.datasets import load_frames
from visloc.geometry import Pose
from visloc.geometry.rotation import quat_to_matrix
from visloc.localization import Map
from visloc.localization.georef import read_map_georef
from visloc.localization.localize import NO_IMAGE_WITHIN_PRIOR
from visloc.localization.prior import GeoPrior, MapPrior, names_within_radius

from .conftest import GEO_HEADING, GEO_ORIGIN
from .helpers import LiveServer, post
from .test_geopose import CAM, HEADING, ORIGIN, _broken, expected_geopose, geopose_request

assert (GEO_ORIGIN, GEO_HEADING) == (ORIGIN, HEADING)  # expected_geopose computes with these


@pytest.fixture(scope="module")
def frame(tiny_world: Path):
    return load_frames(tiny_world, split="test").frames[0]


@pytest.fixture(scope="module")
def body(frame) -> dict:
    fx, fy, cx, cy = frame.camera.params
    request = geopose_request(frame.image_path, [fx, fy, cx + 0.5, cy + 0.5], frame.camera.width,
                              frame.camera.height)
    del request["sensorReadings"]["geolocationReadings"]  # no prior: the pose of /v1/localize without one
    return request


@pytest.fixture(scope="module")
def centres(geo_map: Path) -> dict[str, np.ndarray]:
    map_ = Map(geo_map)
    return {n: map_.poses[n].center for n in map_.names}


def _localize(server: LiveServer, frame, **fields: str) -> dict:
    r = post(server.url, "/v1/localize", frame.image_path.read_bytes(), {"camera": frame.camera.to_colmap_string(), **fields})
    assert r.status_code == 200, r.text
    return r.json()


def _pose(answer: dict) -> Pose:
    """The world-to-camera pose of a /v1/localize answer, from its qvec and tvec."""
    return Pose(quat_to_matrix(np.array(answer["pose"]["qvec"])), np.array(answer["pose"]["tvec"]))


def test_geopose_answers_the_pose_of_localize(geo_server: LiveServer, frame, body: dict) -> None:
    r = httpx.post(geo_server.url + "/geopose", json=body, timeout=60)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["id"] == body["id"] and resp["timestamp"] == body["timestamp"] and resp["type"] == "geopose"
    assert "prior" not in resp
    (lat, lon, h), q = expected_geopose(_pose(_localize(geo_server, frame)))
    pos, quat = resp["geopose"]["position"], resp["geopose"]["quaternion"]
    assert abs(pos["lat"] - lat) < 1e-6 and abs(pos["lon"] - lon) < 1e-6 and abs(pos["h"] - h) < 1e-3
    assert np.abs(np.array([quat[k] for k in "xyzw"]) - q).max() < 1e-6
    # and the GeoPose work is counted like /v1/localize's
    metrics = httpx.get(geo_server.url + "/metrics").text
    assert 'visloc_requests_total{method="POST",route="/geopose",status="200"}' in metrics
    assert 'visloc_stage_seconds_count{route="/geopose",stage="match"}' in metrics


def test_geopose_needs_a_georeferenced_map(map_server: LiveServer, body: dict) -> None:
    r = httpx.post(map_server.url + "/geopose", json=body, timeout=60)
    assert r.status_code == 409
    assert "not geo-referenced" in r.json()["detail"] and "visloc map georef" in r.json()["detail"]
    # and a GPS prior neither
    r = post(map_server.url, "/v1/retrieve", b"x", {"prior_lat": "60.17", "prior_lon": "24.94", "prior_accuracy": "5"})
    assert r.status_code == 422 and "visloc map georef" in r.json()["detail"]


@pytest.mark.parametrize(("path", "value", "field"), [
    (["id"], KeyError, "id"),
    ([*CAM, "params", "model"], "FOV", "sensorReadings.cameraReadings[0].params.model"),
    ([*CAM, "imageBytes"], "@@@ not base64 @@@", "sensorReadings.cameraReadings[0].imageBytes"),
    ([*CAM, "params", "modelParams"], [300.0, float("nan"), 160.0, 120.0],
     "sensorReadings.cameraReadings[0].params.modelParams"),
    (["priorPoses"], [{"geopose": {"position": {"lat": 91.0, "lon": 0.0}}, "accuracy": {"position": 5}}],
     "priorPoses[0].geopose.position"),
])
def test_bad_geopose_bodies_name_the_field(geo_server: LiveServer, body: dict, path: list, value, field: str) -> None:
    broken = _broken(body, path, value)
    r = httpx.post(geo_server.url + "/geopose", content=json.dumps(broken),
                   headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: "), r.json()


def test_prior_center_restricts_retrieval(geo_server: LiveServer, frame, centres) -> None:
    image = frame.image_path.read_bytes()
    full = post(geo_server.url, "/v1/retrieve", image, {"num": "100"}).json()
    assert full["prior"] is None and len(full["retrieved"]) == len(centres)
    ranking = [d["name"] for d in full["retrieved"]]
    x, y, z = frame.pose.center
    for radius in (0.7, 2.0):
        r = post(geo_server.url, "/v1/retrieve", image,
                 {"num": "5", "prior_center": f"{x} {y} {z}", "prior_radius": str(radius)})
        assert r.status_code == 200, r.text
        answer = r.json()
        within = names_within_radius(centres, MapPrior(frame.pose.center, radius))
        assert answer["prior"] == {"kind": "position", "source": "prior_center", "center": [x, y, z],
                                   "radius": radius, "candidates": len(within)}
        assert [d["name"] for d in answer["retrieved"]] == [n for n in ranking if n in set(within)][:5]
        assert all(np.linalg.norm(centres[d["name"]] - frame.pose.center) <= radius for d in answer["retrieved"])
    answer = _localize(geo_server, frame, prior_center=f"{x} {y} {z}", prior_radius="2")
    assert answer["localized"] and answer["prior"]["candidates"] == len(
        names_within_radius(centres, MapPrior(frame.pose.center, 2.0)))
    assert all(np.linalg.norm(centres[d["name"]] - frame.pose.center) <= 2.0 for d in answer["retrieved"])


def test_empty_prior_is_not_localized(geo_server: LiveServer, frame) -> None:
    answer = _localize(geo_server, frame, prior_center="100 100 100", prior_radius="1")
    assert answer["localized"] is False and answer["reason"] == NO_IMAGE_WITHIN_PRIOR
    assert answer["prior"]["candidates"] == 0 and answer["retrieved"] == []
    answer = post(geo_server.url, "/v1/retrieve", frame.image_path.read_bytes(),
                  {"prior_center": "100 100 100", "prior_radius": "1"}).json()
    assert answer["retrieved"] == [] and answer["prior"]["candidates"] == 0


def test_gps_prior_in_either_api(geo_server: LiveServer, geo_map: Path, frame, centres, body: dict) -> None:
    georef = read_map_georef(geo_map)
    lat, lon, _ = (float(v) for v in georef.geodetic_from_map(frame.pose.center))
    within = names_within_radius(centres, GeoPrior(lat, lon, None, 1.5).in_map(georef))
    assert 0 < len(within) < len(centres)
    answer = _localize(geo_server, frame, prior_lat=repr(lat), prior_lon=repr(lon), prior_accuracy="1.5")
    assert answer["prior"]["kind"] == "gps" and answer["prior"]["candidates"] == len(within)
    assert set(d["name"] for d in answer["retrieved"]) <= set(within) and answer["localized"]
    # the same reading in a GeoPoseReq: the same restriction and the same pose
    reading = {"timestamp": 1, "sensorId": "gps0", "latitude": lat, "longitude": lon, "accuracy": 1.5}
    with_gps = _broken(body, ["sensorReadings", "geolocationReadings"], [reading])
    r = httpx.post(geo_server.url + "/geopose", json=with_gps, timeout=60)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["prior"]["kind"] == "geopose" and resp["prior"]["candidates"] == len(within)
    assert resp["prior"]["source"] == "sensorReadings.geolocationReadings[0]"
    (elat, elon, eh), _ = expected_geopose(_pose(answer))
    pos = resp["geopose"]["position"]
    assert abs(pos["lat"] - elat) < 1e-6 and abs(pos["lon"] - elon) < 1e-6 and abs(pos["h"] - eh) < 1e-3
    # a reading far away leaves nothing: not localized (404 with the reason)
    far = _broken(with_gps, ["sensorReadings", "geolocationReadings", 0, "latitude"], lat + 0.01)
    r = httpx.post(geo_server.url + "/geopose", json=far, timeout=60)
    assert r.status_code == 404 and NO_IMAGE_WITHIN_PRIOR in r.json()["error"] and r.json()["prior"]["candidates"] == 0


@pytest.mark.parametrize(("fields", "phrase"), [
    ({"prior_center": "1 2"}, "'x y z'"),
    ({"prior_center": "1 2 3"}, "'prior_radius' (map units) is required"),
    ({"prior_center": "1 2 nan", "prior_radius": "2"}, "3 finite numbers"),
    ({"prior_radius": "2"}, "'prior_center'"),
    ({"prior_center": "1 2 3", "prior_radius": "-1"}, "must be positive"),
    ({"prior_center": "1 2 3", "prior_radius": "2", "prior_lat": "60"}, "not both"),
    ({"prior_lat": "60.17"}, "both 'prior_lat' and 'prior_lon'"),
    ({"prior_lat": "95", "prior_lon": "24", "prior_accuracy": "5"}, "[-90, 90]"),
    ({"prior_lat": "60.17", "prior_lon": "24.94"}, "'prior_accuracy' (metres) is required"),
    ({"prior_lat": "60.17", "prior_lon": "24.94", "prior_accuracy": "inf"}, "finite"),
])
def test_bad_priors(geo_server: LiveServer, frame, fields: dict, phrase: str) -> None:
    for route in ("/v1/localize", "/v1/retrieve"):
        extra = {"camera": frame.camera.to_colmap_string()} if route == "/v1/localize" else {}
        r = post(geo_server.url, route, frame.image_path.read_bytes(), {**extra, **fields})
        assert r.status_code == 422 and phrase in r.json()["detail"], (route, r.text)


def test_geopose_is_in_the_schema(geo_server: LiveServer) -> None:
    schema = httpx.get(geo_server.url + "/openapi.json").json()
    post_ = schema["paths"]["/geopose"]["post"]
    assert "application/json" in post_["requestBody"]["content"]
    assert {"404", "409", "413", "422", "429"} <= set(post_["responses"])


def test_library_answer_applies_the_prior(geo_map: Path, frame, centres, body: dict) -> None:
    from visloc.localization import Localizer
    from visloc.service.geopose import answer_geopose_request

    georef = read_map_georef(geo_map)
    lat, lon, _ = (float(v) for v in georef.geodetic_from_map(frame.pose.center))
    reading = {"timestamp": 1, "sensorId": "gps0", "latitude": lat, "longitude": lon, "accuracy": 1.5}
    with_gps = _broken(body, ["sensorReadings", "geolocationReadings"], [reading])
    seen: list[list[str]] = []

    def within(prior: MapPrior) -> list[str]:
        seen.append(names_within_radius(centres, prior))
        return seen[-1]

    localizer = Localizer(geo_map)
    status, resp = answer_geopose_request(with_gps, localizer, georef, within=within)
    assert status == 200 and len(seen) == 1 and 0 < len(seen[0]) < len(centres)
    status, resp = answer_geopose_request(_broken(with_gps, ["sensorReadings", "geolocationReadings", 0, "latitude"],
                                                  lat + 0.01), localizer, georef, within=within)
    assert status == 404 and NO_IMAGE_WITHIN_PRIOR in resp["error"] and seen[-1] == []
