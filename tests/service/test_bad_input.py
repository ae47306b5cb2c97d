"""Bad requests get a 4xx with a clear message, and the server keeps answering: oversized bodies and images
(413), what is not a JPEG / PNG or not a form (415), truncated images, bad intrinsics and missing fields
(422), a missing or wrong token (401)."""

from __future__ import annotations

import io
import struct
import tempfile
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

#: (status, image bytes, form fields, a phrase of the message)
CASES = {
    "pixel count": (413, _png_bomb(1000, 1000), {"camera": "PINHOLE 1000 1000 900 900 499.5 499.5"},
                    "1000x1000 pixels"),
    "decompression bomb": (413, _png_bomb(30000, 30000, rows=16), {"camera": CAMERA}, "pixels"),
    "text file": (415, b"hello, this is not an image", {"camera": CAMERA}, "not a JPEG or PNG"),
    "GIF": (415, _gif(), {"camera": CAMERA}, "not a JPEG or PNG"),
    "empty image": (422, b"", {"camera": CAMERA}, "empty"),
    "truncated JPEG": (422, GOOD_JPEG[: len(GOOD_JPEG) // 2], {"camera": CAMERA}, "truncated"),
    "truncated PNG": (422, GOOD_PNG[: len(GOOD_PNG) // 2], {"camera": CAMERA}, "truncated"),
    "JPEG header only": (422, GOOD_JPEG[:200], {"camera": CAMERA}, "image header: truncated"),
    "NaN intrinsics": (422, GOOD_PNG, {"camera": "PINHOLE 64 48 nan 50 31.5 23.5"}, "finite"),
    "infinite intrinsics": (422, GOOD_PNG, {"camera": "PINHOLE 64 48 inf 50 31.5 23.5"}, "finite"),
    "negative focal length": (422, GOOD_PNG, {"camera": "PINHOLE 64 48 -50 50 31.5 23.5"}, "focal length"),
    "negative size": (422, GOOD_PNG, {"camera": "PINHOLE -64 48 50 50 31.5 23.5"}, "size"),
    "NaN field": (422, GOOD_PNG, {"model": "PINHOLE", "width": "64", "height": "48", "params": "50 nan 31.5 23.5"},
                  "finite"),
    "unknown model": (422, GOOD_PNG, {"camera": "FISHEYE 64 48 50"}, "unknown camera model"),
    "too few parameters": (422, GOOD_PNG, {"camera": "PINHOLE 64 48 50"}, "4 parameters"),
    "fields missing": (422, GOOD_PNG, {"model": "PINHOLE", "width": "64"}, "missing: height, params"),
    "both camera kinds": (422, GOOD_PNG, {"camera": CAMERA, "model": "PINHOLE"}, "not both"),
    "size mismatch": (422, GOOD_PNG, {"camera": "PINHOLE 640 480 500 500 319.5 239.5"}, "640x480 but the image is 64x48"),
    "no intrinsics": (422, GOOD_PNG, {}, "no intrinsics"),
    "no image": (422, None, {"camera": CAMERA}, "missing form field(s): image"),
    "unknown field": (422, GOOD_PNG, {"camera": CAMERA, "focal": "50"}, "unknown form field 'focal'"),
    "unknown method": (422, GOOD_PNG, {"camera": CAMERA, "method": "magic"}, "magic"),
    "long field": (413, GOOD_PNG, {"camera": CAMERA, "name": "x" * 5000}, "longer than"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_localize_request(map_server: LiveServer, case: str) -> None:
    status, image, fields, phrase = CASES[case]
    r = post(map_server.url, "/v1/localize", image, fields)
    assert r.status_code == status, r.text
    assert phrase in r.json()["detail"], r.json()


def test_bad_retrieve_request(map_server: LiveServer) -> None:
    for num, phrase in (("0", "between 1 and 100"), ("101", "between 1 and 100"), ("two", "integer")):
        r = post(map_server.url, "/v1/retrieve", GOOD_PNG, {"num": num})
        assert r.status_code == 422 and phrase in r.json()["detail"]
    assert post(map_server.url, "/v1/retrieve", b"GIF89a", {}).status_code == 415


def test_bad_bodies(map_server: LiveServer) -> None:
    url = map_server.url + "/v1/localize"
    too_big = np.random.default_rng(1).integers(0, 256, 1_200_000, dtype=np.uint8).tobytes()
    r = httpx.post(url, files={"image": ("q.png", too_big)}, data={"camera": CAMERA}, timeout=30)
    assert r.status_code == 413 and "limit of 1000000 bytes" in r.json()["detail"]
    r = httpx.post(url, json={"camera": CAMERA})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
    r = httpx.post(url, content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 422, r.text
    r = httpx.post(url, content=b"", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 422 and "boundary" in r.json()["detail"]
    # a body longer than declared in no Content-Length: streamed in chunks, cut at the limit
    r = httpx.post(url, content=iter([b"x" * 600_000, b"y" * 600_000]),
                   headers={"content-type": "multipart/form-data; boundary=x"}, timeout=30)
    assert r.status_code == 413
    assert httpx.get(map_server.url + "/v1/localize").status_code == 405


def test_server_still_answers_after_bad_requests(map_server: LiveServer, tiny_world: Path) -> None:
    for case in CASES.values():
        post(map_server.url, "/v1/localize", case[1], case[2])
    assert httpx.get(map_server.url + "/v1/health").status_code == 200
    frame = load_frames(tiny_world, split="test").frames[0]
    assert client.localize(map_server.url, read_image(frame.image_path), frame.camera).localized
    metrics = httpx.get(map_server.url + "/metrics").text
    assert 'route="/v1/localize",status="500"' not in metrics and "visloc_queue_depth 0.0" in metrics


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
