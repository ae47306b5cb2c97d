"""The server of a real map, over HTTP: its answers are the in-process localizer's, the poses are right, the
metrics count the requests and the OpenAPI schema describes the routes."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from visloc import client
from visloc.datasets import Frame, load_frames
from visloc.geometry.pose import pose_error
from visloc.io.images import read_image
from visloc.localization import Localizer, Map, Retriever

from .helpers import LiveServer, jpeg_bytes, post


@pytest.fixture(scope="module")
def queries(tiny_world: Path) -> list[Frame]:
    return load_frames(tiny_world, split="test").frames[::4]


@pytest.fixture(scope="module")
def localizer(tiny_map: Path) -> Localizer:
    return Localizer(tiny_map)


def test_health_reports_the_map(map_server: LiveServer, tiny_map: Path) -> None:
    answer = httpx.get(map_server.url + "/v1/health").json()
    assert answer["status"] == "ready"
    assert answer["engine"]["map"] == tiny_map.name and answer["engine"]["images"] == len(Map(tiny_map).names)


def test_localize_answers_the_localizers_pose(map_server: LiveServer, localizer: Localizer,
                                             queries: list[Frame]) -> None:
    localized = 0
    for frame in queries:
        answer = client.localize(map_server.url, frame.image_path, frame.camera, name=frame.name)
        expected = localizer.localize_image(read_image(frame.image_path), frame.camera, frame.name)
        d = answer.answer
        assert d["name"] == frame.name and d["status"] == expected.status and d["method"] == expected.method
        assert d["localized"] is (expected.pose is not None) and answer.camera == frame.camera
        assert d["support"] == expected.support and d["num_inliers"] == sum(expected.inliers)
        assert [(r["name"], r["score"], r["inliers"]) for r in d["retrieved"]] == list(
            zip(expected.retrieved, expected.retrieval_scores, expected.inliers, strict=True))
        assert set(d["timings"]) == {"decode", "queue", "extract", "retrieve", "match", "pose", "total"}
        if expected.pose is None:
            assert d["pose"] is None and d["reason"] == expected.status
            continue
        localized += 1
        # world-to-camera, exactly the localizer's numbers
        assert d["pose"]["qvec"] == expected.pose.qvec.tolist() and d["pose"]["tvec"] == expected.pose.t.tolist()
        assert d["pose"]["center"] == expected.pose.center.tolist()
        assert [float(v) for v in d["pose"]["line"].split()] == d["pose"]["qvec"] + d["pose"]["tvec"]
        dt, dr = pose_error(answer.pose, frame.pose)
        assert dt < 0.05 and dr < 1.0, (frame.name, dt, dr)
    assert localized >= len(queries) - 1


def test_intrinsics_field_by_field_and_a_jpeg(map_server: LiveServer, localizer: Localizer,
                                             queries: list[Frame]) -> None:
    frame = queries[0]
    data = jpeg_bytes(read_image(frame.image_path))
    cam = frame.camera
    r = post(map_server.url, "/v1/localize", data, {"model": cam.model, "width": str(cam.width),
                                                    "height": str(cam.height),
                                                    "params": ", ".join(map(repr, cam.params))}, filename="q.jpg")
    assert r.status_code == 200, r.text
    expected = localizer.localize_image(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), cam)
    assert expected.pose is not None and r.json()["pose"]["qvec"] == expected.pose.qvec.tolist()
    assert r.json()["camera"]["source"] == "request"


def test_exif_focal_length_is_the_fallback(map_server: LiveServer, queries: list[Frame]) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 30  # 35 mm-equivalent focal length: f = 30 / 36 * 320 px
    r = post(map_server.url, "/v1/localize", jpeg_bytes(read_image(queries[0].image_path), exif))
    assert r.status_code == 200, r.text
    camera = r.json()["camera"]
    assert camera["source"] == "exif" and camera["model"] == "SIMPLE_PINHOLE"
    assert camera["params"] == pytest.approx([30 / 36 * 320, 159.5, 119.5])


def test_retrieve_ranks_as_the_retriever(map_server: LiveServer, tiny_map: Path, queries: list[Frame]) -> None:
    frame = queries[1]
    retriever = Retriever(Map(tiny_map))
    names, scores = retriever(retriever.describe(read_image(frame.image_path)), frame.name)
    ranked = client.retrieve(map_server.url, frame.image_path)
    assert ranked == list(zip(names, scores, strict=True)) and len(ranked) == retriever.config.num_retrieved
    assert [s for _, s in ranked] == sorted(scores, reverse=True)
    assert frame.scene in ranked[0][0]  # the best image is of the query's room
    assert client.retrieve(map_server.url, frame.image_path, num=2) == ranked[:2]
    many = client.retrieve(map_server.url, frame.image_path, num=12)
    assert many[:5] == ranked and len(many) == 12


def test_metrics_count_the_requests(map_server: LiveServer, queries: list[Frame]) -> None:
    client.localize(map_server.url, queries[0].image_path, queries[0].camera)
    post(map_server.url, "/v1/localize", b"not an image", {"camera": queries[0].camera.to_colmap_string()})
    r = httpx.get(map_server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for line in ('visloc_requests_total{method="POST",route="/v1/localize",status="200"}',
                 'visloc_requests_total{method="POST",route="/v1/localize",status="415"}',
                 'visloc_request_seconds_count{route="/v1/localize"}',
                 'visloc_stage_seconds_count{route="/v1/localize",stage="match"}',
                 'visloc_stage_seconds_count{route="/v1/localize",stage="decode"}',
                 'visloc_localizations_total{localized="true"}',
                 "visloc_queue_depth 0.0", "visloc_requests_running 0.0", "visloc_ready 1.0"):
        assert line in text, line
    count = next(float(l.split()[-1]) for l in text.splitlines()
                 if l.startswith('visloc_requests_total{method="POST",route="/v1/localize",status="200"}'))
    assert count >= 1
    if sys.platform.startswith("linux"):  # the process collector reads /proc
        rss = next(float(l.split()[-1]) for l in text.splitlines() if l.startswith("process_resident_memory_bytes"))
        assert rss > 10 * 2**20
    # unknown paths share one label
    assert httpx.get(map_server.url + "/no/such/path").status_code == 404
    assert 'route="other",status="404"' in httpx.get(map_server.url + "/metrics").text


def test_openapi_describes_every_route_and_field(map_server: LiveServer) -> None:
    schema = httpx.get(map_server.url + "/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {"/v1/localize", "/v1/retrieve", "/v1/health", "/metrics"}
    assert set(paths["/v1/localize"]) == {"post"} and set(paths["/v1/health"]) == {"get"}
    form = paths["/v1/localize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    priors = {"prior_center", "prior_radius", "prior_lat", "prior_lon", "prior_h", "prior_accuracy"}
    assert set(form["properties"]) == {"image", "camera", "model", "width", "height", "params", "method", "name",
                                      "details"} | priors
    assert form["required"] == ["image"] and form["properties"]["image"]["format"] == "binary"
    assert all(p.get("description") for p in form["properties"].values())
    form = paths["/v1/retrieve"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"image", "num", "name"} | priors
    responses = paths["/v1/localize"]["post"]["responses"]
    assert set(responses) >= {"200", "413", "415", "422", "429", "503", "504"}
    answer = schema["components"]["schemas"]["LocalizeAnswer"]["properties"]
    assert {"localized", "reason", "pose", "num_inliers", "support", "timings", "camera"} <= set(answer)
    assert {"qvec", "tvec", "center"} <= set(schema["components"]["schemas"]["PoseAnswer"]["properties"])
    assert "securitySchemes" not in schema.get("components", {})  # no token: no authentication documented
    # every documented field is one the server takes
    fields = {"camera": "PINHOLE 64 48 50 50 31.5 23.5", "method": "auto", "name": "x"}
    r = post(map_server.url, "/v1/localize", jpeg_bytes(np.zeros((48, 64, 3), np.uint8)), fields)
    assert r.status_code == 200 and r.json()["name"] == "x" and r.json()["localized"] is False
