"""Bad requests get a 4xx with a clear message, and the server keeps answering: oversized bodies and images
(413), what is not a JPEG / PNG or not a form (415), truncated images, bad intrinsics and missing fields
(422), a missing or wrong token (401)."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from visloc import client
from visloc.datasets import load_frames
from visloc.io.images import read_image
from visloc.service.config import ServiceConfig

from .helpers import FakeEngine, LiveServer, engine_factory, jpeg_bytes, noise, png_bytes, post

CAMERA = "PINHOLE 64 48 50 50 31.5 23.5"


def _png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A PNG of ``width`` x ``height`` black grey pixels in a few kilobytes (a decompression bomb); with
    ``rows``, only that many rows of pixel data follow the header (the server must not read past it)."""
    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(min(height, rows or height))) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise()).save(buffer, format="GIF")
    return buffer.getvalue()


GOOD_PNG = png_bytes(noise())
GOOD_JPEG = jpeg_bytes(noise())
HUGE_BODY = np.random.default_rng(1).integers(0, 256, 1_200_000, dtype=np.uint8).tobytes()


def form(image: bytes | None, fields: dict[str, str], filename: str = "q.png") -> dict:
    """httpx arguments of a multipart form with the image part (left out when ``None``) and text fields."""
    files = {"image": (filename, image, "application/octet-stream")} if image is not None else {"name": (None, "q")}
    return {"files": files, "data": fields}


def raw(content: bytes, content_type: str | None) -> dict:
    """httpx arguments of a body sent as it is."""
    return {"content": content, "headers": {"content-type": content_type} if content_type else {}}


def multipart(*parts: tuple[str, bytes, str | None]) -> dict:
    """A multipart body written by hand: ``(name, data, filename or None)`` parts, in order (repeats allowed)."""
    body = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--b0undary\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return raw(body + b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary")


def geopose(**changes) -> dict:
    """A GeoPoseReq of GOOD_PNG (64x48) with ``changes`` to its camera reading (``None`` removes a key)."""
    reading = {"timestamp": 1, "sensorId": "cam", "sequenceNumber": 1, "imageFormat": "RGBA32", "size": [64, 48],
               "imageBytes": base64.b64encode(GOOD_PNG).decode(), "params": {"model": "PINHOLE",
                                                                            "modelParams": [50, 50, 32, 24]}}
    reading.update(changes)
    reading = {k: v for k, v in reading.items() if v is not None}
    return {"id": "bad-1", "timestamp": 1, "type": "geopose", "sensors": [{"id": "cam", "type": "camera"}],
            "sensorReadings": {"cameraReadings": [reading]}}


def json_body(document) -> dict:
    return raw(json.dumps(document).encode(), "application/json")


LOCALIZE, RETRIEVE, GEOPOSE = "/v1/localize", "/v1/retrieve", "/geopose"
CAM0 = "sensorReadings.cameraReadings[0]"

#: Every kind of malformed request: (status, a phrase of the message, route, httpx arguments).
CASES = {
    # images
    "header-declared pixel count": (413, "1000x1000 pixels", LOCALIZE,
                                    form(_png_bomb(1000, 1000), {"camera": "PINHOLE 1000 1000 900 900 499.5 499.5"})),
    "PNG decompression bomb": (413, "pixels", LOCALIZE, form(_png_bomb(30000, 30000, rows=16), {"camera": CAMERA})),
    "plain text as image": (415, "not a JPEG or PNG", LOCALIZE, form(b"hello, this is not an image", {"camera": CAMERA})),
    "GIF": (415, "not a JPEG or PNG", LOCALIZE, form(_gif(), {"camera": CAMERA})),
    "zero-byte file": (422, "empty", LOCALIZE, form(b"", {"camera": CAMERA})),
    "truncated JPEG": (422, "truncated", LOCALIZE, form(GOOD_JPEG[: len(GOOD_JPEG) // 2], {"camera": CAMERA})),
    "truncated PNG": (422, "truncated", LOCALIZE, form(GOOD_PNG[: len(GOOD_PNG) // 2], {"camera": CAMERA})),
    "JPEG header only": (422, "image header: truncated", LOCALIZE, form(GOOD_JPEG[:200], {"camera": CAMERA})),
    "GIF to retrieve": (415, "not a JPEG or PNG", RETRIEVE, form(b"GIF89a", {})),
    # intrinsics
    "NaN intrinsics": (422, "finite", LOCALIZE, form(GOOD_PNG, {"camera": "PINHOLE 64 48 nan 50 31.5 23.5"})),
    "infinite intrinsics": (422, "finite", LOCALIZE, form(GOOD_PNG, {"camera": "PINHOLE 64 48 inf 50 31.5 23.5"})),
    "negative focal length": (422, "focal length", LOCALIZE,
                              form(GOOD_PNG, {"camera": "PINHOLE 64 48 -50 50 31.5 23.5"})),
    "negative size": (422, "size", LOCALIZE, form(GOOD_PNG, {"camera": "PINHOLE -64 48 50 50 31.5 23.5"})),
    "NaN field by field": (422, "finite", LOCALIZE, form(GOOD_PNG, {"model": "PINHOLE", "width": "64", "height": "48",
                                                                    "params": "50 nan 31.5 23.5"})),
    "unknown camera model": (422, "unknown camera model", LOCALIZE, form(GOOD_PNG, {"camera": "FISHEYE 64 48 50"})),
    "wrong parameter count": (422, "4 parameters", LOCALIZE, form(GOOD_PNG, {"camera": "PINHOLE 64 48 50"})),
    "intrinsics fields missing": (422, "missing: height, params", LOCALIZE,
                                  form(GOOD_PNG, {"model": "PINHOLE", "width": "64"})),
    "both camera kinds": (422, "not both", LOCALIZE, form(GOOD_PNG, {"camera": CAMERA, "model": "PINHOLE"})),
    "intrinsics size is not the image's": (422, "640x480 but the image is 64x48", LOCALIZE,
                                           form(GOOD_PNG, {"camera": "PINHOLE 640 480 500 500 319.5 239.5"})),
    "no intrinsics, no EXIF": (422, "no intrinsics", LOCALIZE, form(GOOD_PNG, {})),
    # the form
    "missing image": (422, "missing form field(s): image", LOCALIZE, form(None, {"camera": CAMERA})),
    "unknown field": (422, "unknown form field 'focal'", LOCALIZE, form(GOOD_PNG, {"camera": CAMERA, "focal": "50"})),
    "duplicate field": (422, "'camera' is given twice", LOCALIZE,
                        multipart(("image", GOOD_PNG, "q.png"), ("camera", CAMERA.encode(), None),
                                  ("camera", CAMERA.encode(), None))),
    "non-UTF-8 field": (422, "not UTF-8", LOCALIZE,
                        multipart(("image", GOOD_PNG, "q.png"), ("camera", b"PINHOLE \xff\xfe 48", None))),
    "text field sent as a file": (422, "is text, not a file", LOCALIZE,
                                  multipart(("image", GOOD_PNG, "q.png"), ("camera", CAMERA.encode(), "cam.txt"))),
    "field over 4 KiB": (413, "longer than", LOCALIZE, form(GOOD_PNG, {"camera": CAMERA, "name": "x" * 5000})),
    "unknown method": (422, "magic", LOCALIZE, form(GOOD_PNG, {"camera": CAMERA, "method": "magic"})),
    "num out of range": (422, "between 1 and 100", RETRIEVE, form(GOOD_PNG, {"num": "101"})),
    "num not an integer": (422, "must be an integer", RETRIEVE, form(GOOD_PNG, {"num": "two"})),
    "bad prior": (422, "'prior_radius' (map units) must be positive", RETRIEVE,
                  form(GOOD_PNG, {"prior_center": "1 2 3", "prior_radius": "0"})),
    # the body
    "JSON to the form route": (415, "multipart/form-data, not application/json", LOCALIZE, json_body({"camera": CAMERA})),
    "no Content-Type": (415, "no Content-Type", LOCALIZE, raw(b"image=1", None)),
    "urlencoded form": (415, "not application/x-www-form-urlencoded", LOCALIZE,
                        raw(b"camera=x", "application/x-www-form-urlencoded")),
    "multipart without boundary": (422, "boundary", LOCALIZE, raw(b"", "multipart/form-data")),
    "garbage multipart": (422, "a part without 'Content-Disposition", LOCALIZE,
                          raw(b"--x\r\ngarbage", "multipart/form-data; boundary=x")),
    "huge multipart body": (413, "limit of 1000000 bytes", LOCALIZE, form(HUGE_BODY, {"camera": CAMERA})),
    "huge body, no Content-Length": (413, "limit of 1000000 bytes", LOCALIZE,
                                     {"content": [b"x" * 600_000, b"y" * 600_000],
                                      "headers": {"content-type": "multipart/form-data; boundary=x"}}),
    # GeoPose
    "GeoPose: invalid JSON": (422, "not valid JSON", GEOPOSE, raw(b'{"id": "x", "sensorReadings": ', "application/json")),
    "GeoPose: not JSON": (415, "application/json, not multipart/form-data", GEOPOSE, form(GOOD_PNG, {})),
    "GeoPose: empty body": (422, "empty", GEOPOSE, raw(b"", "application/json")),
    "GeoPose: not UTF-8": (422, "not UTF-8", GEOPOSE, raw(b'{"id": "\xff"}', "application/json")),
    "GeoPose: an array": (422, "GeoPoseReq: must be a JSON object, got an array", GEOPOSE, json_body([1, 2])),
    "GeoPose: base64 garbage": (422, f"{CAM0}.imageBytes: is not valid base64", GEOPOSE,
                                json_body(geopose(imageBytes="%%% not base64 %%%"))),
    "GeoPose: truncated PNG": (422, f"{CAM0}.imageBytes: ", GEOPOSE,
                               json_body(geopose(imageBytes=base64.b64encode(GOOD_PNG[:300]).decode(), imageFormat="PNG"))),
    "GeoPose: NaN intrinsics": (422, f"{CAM0}.params.modelParams: must be finite", GEOPOSE,
                                json_body(geopose(params={"model": "PINHOLE", "modelParams": [50, float("nan"), 32, 24]}))),
    "GeoPose: missing params": (422, f"{CAM0}.params: is required", GEOPOSE, json_body(geopose(params=None))),
    "GeoPose: missing id": (422, "id: is required", GEOPOSE, json_body({k: v for k, v in geopose().items() if k != "id"})),
}


def _send(server: LiveServer, route: str, request: dict) -> httpx.Response:
    request = dict(request)
    if isinstance(request.get("content"), list):
        request["content"] = iter(request["content"])
    return httpx.post(server.url + route, timeout=60, **request)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request(geo_server: LiveServer, case: str) -> None:
    """Each kind of malformed request gets its 4xx and a message that says what is wrong."""
    status, phrase, route, request = CASES[case]
    r = _send(geo_server, route, request)
    assert r.status_code == status, r.text
    assert phrase in r.json()["detail"], r.json()


def test_the_table_is_long_enough() -> None:
    assert len(CASES) >= 20 and len({route for _, _, route, _ in CASES.values()}) == 3


def test_server_still_answers_after_bad_requests(geo_server: LiveServer, tiny_world: Path) -> None:
    """Every malformed request again, then a normal one in each API: answered, and no 5xx was ever seen."""
    statuses = [_send(geo_server, route, request).status_code for _, _, route, request in CASES.values()]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert httpx.get(geo_server.url + "/v1/localize").status_code == 405
    assert httpx.get(geo_server.url + "/v1/health").status_code == 200
    frame = load_frames(tiny_world, split="test").frames[0]
    assert client.localize(geo_server.url, read_image(frame.image_path), frame.camera).localized
    body = geopose(imageBytes=base64.b64encode(frame.image_path.read_bytes()).decode(), size=None,
                   params={"model": "PINHOLE", "modelParams": [p + (0.5 if i >= 2 else 0.0)
                                                               for i, p in enumerate(frame.camera.params)]})
    assert httpx.post(geo_server.url + "/geopose", json=body, timeout=60).status_code == 200
    metrics = httpx.get(geo_server.url + "/metrics").text
    answered = [line for line in metrics.splitlines() if line.startswith("visloc_requests_total{")]
    assert answered and not [line for line in answered if 'status="5' in line], answered
    assert "visloc_queue_depth 0.0" in metrics and "visloc_requests_running 0.0" in metrics


def test_slow_loris_upload_gets_408_and_others_are_answered(live) -> None:
    """A client that sends its headers and then trickles the body in, slower than the body deadline: the
    server answers 408 and closes the connection, and answers other requests meanwhile."""
    server = live(engine_factory(FakeEngine()), ServiceConfig(body_timeout_s=1.0, queue_size=2)).wait_ready()
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /v1/localize HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                 b"Content-Type: multipart/form-data; boundary=b0undary\r\n\r\n--b0undary\r\n")
    stop = threading.Event()

    def trickle() -> None:
        try:
            while not stop.wait(0.2):
                sock.sendall(b"x")
        except OSError:  # the server closed the connection
            pass

    trickler = threading.Thread(target=trickle, daemon=True)
    start = time.monotonic()
    trickler.start()
    try:
        # others are answered while the slow body trickles in
        for _ in range(3):
            r = post(server.url, "/v1/localize", GOOD_PNG, {"camera": CAMERA})
            assert r.status_code == 200, r.text
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection without an answer"
            answer += chunk
        elapsed = time.monotonic() - start
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within the server's 1 s" in answer or b"did not arrive" in sock.recv(65536)
        assert 0.9 < elapsed < 5.0, elapsed
        # the connection is closed: nothing more is read from it
        sock.settimeout(5)
        while True:
            try:
                if not sock.recv(65536):
                    break
            except ConnectionResetError:
                break
    finally:
        stop.set()
        trickler.join(5)
        sock.close()
    assert post(server.url, "/v1/localize", GOOD_PNG, {"camera": CAMERA}).status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    assert 'route="/v1/localize",status="408"' in metrics and 'status="5' not in metrics
    assert "visloc_queue_depth 0.0" in metrics


def test_token(live) -> None:
    server = live(engine_factory(FakeEngine()), ServiceConfig(token="s3cret-token")).wait_ready()
    image = png_bytes(noise())
    fields = {"camera": CAMERA}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LXRva2Vu"},
                    {"Authorization": "Bearer s3cret-token-and-more"}, {"Authorization": "Bearer"}):
        r = post(server.url, "/v1/localize", image, fields, headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (headers, r.text)
        assert "bearer token" in r.json()["detail"]
        assert post(server.url, "/v1/retrieve", image, {}, headers).status_code == 401
    r = post(server.url, "/v1/localize", image, fields, {"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200, r.text
    assert client.localize(server.url, image, CAMERA, token="s3cret-token").localized
    with pytest.raises(client.ServiceError) as error:
        client.retrieve(server.url, image, token="wrong")
    assert error.value.status == 401
    # health and metrics stay open; the schema documents the bearer scheme
    assert httpx.get(server.url + "/v1/health").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "s3cret" not in httpx.get(server.url + "/openapi.json").text


def test_nothing_is_written_to_disk(live, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload larger than the 1 MB that Starlette's own form parser would spool to a temporary file."""

    def refuse(*args, **kwargs):
        raise AssertionError("the server wrote a temporary file")

    for name in ("TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    engine = FakeEngine()
    server = live(engine_factory(engine), ServiceConfig()).wait_ready()
    pixels = noise(900, 1200, seed=2)
    image = png_bytes(pixels)
    assert len(image) > 2_000_000
    answer = client.localize(server.url, image, "PINHOLE 1200 900 1000 1000 599.5 449.5")
    assert answer.localized and engine.finished == 1
