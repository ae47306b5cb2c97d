"""The server's web page: the routes it reads (``/v1/map``, ``/v1/images/...``, ``details=true``) over HTTP,
and the page itself in a real headless browser (Debian's ``chromium`` driven by Playwright's Python client),
which keeps a screenshot: ``$VISLOC_ARTIFACTS/service_page.png`` (else the test's tmp_path), and with
``VISLOC_UPDATE_DOCS_IMAGES=1`` also ``docs/images/service_page.png``."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from visloc.datasets import Frame, load_frames
from visloc.io.images import read_image
from visloc.localization import Map
from visloc.service.page import MAX_PAIRS, STATIC_FILES, static_text

from .helpers import SMALL_LIMITS, FakeEngine, LiveServer, engine_factory, noise, png_bytes, post

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGE = REPO / "docs" / "images" / "service_page.png"


@pytest.fixture(scope="module")
def query(tiny_world: Path) -> Frame:
    return load_frames(tiny_world, split="test").frames[0]


@pytest.fixture(scope="module")
def the_map(tiny_map: Path) -> Map:
    return Map(tiny_map)


def test_the_page_and_its_files_are_served_without_a_token(live: Any) -> None:
    server = live(engine_factory(FakeEngine()), dataclasses.replace(SMALL_LIMITS, token="s3cret")).wait_ready()
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'src="static/app.js"' in r.text and 'id="file"' in r.text and 'id="token"' in r.text
    for file, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = httpx.get(f"{server.url}/static/{file}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and r.text
    for bad in ("nope.js", "..%2Fpage.py", "%2e%2e%2fapp.py", "index.htm"):
        assert httpx.get(f"{server.url}/static/{bad}").status_code == 404, bad
    assert httpx.get(server.url + "/v1/health").status_code == 200
    # no build step and nothing from the internet: no absolute URL but the SVG namespace
    for file in STATIC_FILES:
        urls = set(re.findall(r"https?://[^\s\"')]+", static_text(file)))
        assert urls <= {"http://www.w3.org/2000/svg"}, (file, urls)


def test_the_map_and_its_images_need_the_token(live: Any) -> None:
    server = live(engine_factory(FakeEngine()), dataclasses.replace(SMALL_LIMITS, token="s3cret")).wait_ready()
    for route in ("/v1/map", "/v1/images/a"):
        r = httpx.get(server.url + route)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", route
        assert httpx.get(server.url + route, headers={"Authorization": "Bearer nope"}).status_code == 401
        # the token is right; a fake engine has no map to show
        r = httpx.get(server.url + route, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 404 and "no map" in r.json()["detail"], route
    # details of an engine without evidence: the answer, with no images
    r = post(server.url, "/v1/localize", png_bytes(noise()), {"camera": "PINHOLE 64 48 50 50 31.5 23.5",
                                                              "details": "true"},
             headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200, r.text
    assert r.json()["details"] == {"query_size": [64, 48], "max_pairs": MAX_PAIRS, "agree_px": 4.0, "images": []}


def test_map_lists_the_database_cameras(map_server: LiveServer, the_map: Map) -> None:
    r = httpx.get(map_server.url + "/v1/map")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["map"] == the_map.root.name and answer["up"] == [0.0, 0.0, 1.0] and answer["has_poses"] is True
    assert [m["name"] for m in answer["images"]] == the_map.names
    for m in answer["images"]:
        pose, camera = the_map.poses[m["name"]], the_map.cameras[m["name"]]
        assert m["center"] == pytest.approx(pose.center.tolist()) and m["size"] == [camera.width, camera.height]
        direction = np.array(m["direction"])
        assert np.linalg.norm(direction) == pytest.approx(1.0)
        assert pose.R @ direction == pytest.approx([0, 0, 1], abs=1e-9)  # the camera's optical axis


def test_thumbnails_only_of_the_maps_images(map_server: LiveServer, the_map: Map) -> None:
    name = the_map.names[0]
    r = httpx.get(f"{map_server.url}/v1/images/{name}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "JPEG" and max(image.size) <= 320
    assert max(image.size) == min(320, max(read_image(the_map.image_paths[name]).shape[:2]))
    small = Image.open(io.BytesIO(httpx.get(f"{map_server.url}/v1/images/{name}?size=64").content))
    assert max(small.size) == 64
    for size in ("5", "2000", "big"):
        r = httpx.get(f"{map_server.url}/v1/images/{name}?size={size}")
        assert r.status_code == 422 and "size" in r.json()["detail"], size
    path = str(the_map.image_paths[name])
    for bad in ("nope.png", "../map.json", "%2e%2e/map.json", "..%2F..%2Fmap.json", name + "/..", path.lstrip("/"),
                "map.json", f"{name.rsplit('/', 1)[0]}/../{name.rsplit('/', 1)[1]}"):
        r = httpx.get(f"{map_server.url}/v1/images/{bad}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/json", bad


def test_details_only_when_asked(map_server: LiveServer, query: Frame) -> None:
    data, camera = png_bytes(read_image(query.image_path)), query.camera.to_colmap_string()
    plain = post(map_server.url, "/v1/localize", data, {"camera": camera})
    detailed = post(map_server.url, "/v1/localize", data, {"camera": camera, "details": "true"})
    assert plain.status_code == 200 and detailed.status_code == 200, detailed.text
    plain_json, detailed_json = plain.json(), detailed.json()
    assert "details" not in plain_json and plain_json["localized"] is True
    details = detailed_json.pop("details")
    for answer in (plain_json, detailed_json):
        answer.pop("timings")
    assert detailed_json == plain_json  # the same answer, pose included
    assert details["query_size"] == [query.camera.width, query.camera.height] and details["max_pairs"] == MAX_PAIRS
    retrieved = {r["name"]: r for r in plain_json["retrieved"]}
    assert details["images"] and {d["name"] for d in details["images"]} <= set(retrieved)
    for d in details["images"]:
        r = retrieved[d["name"]]
        assert d["matches"] == r["matches"] and d["support"] is (d["name"] in plain_json["support"])
        assert 0 < len(d["pairs"]) <= min(MAX_PAIRS, d["matches"])
        pairs = np.array(d["pairs"], dtype=float)
        assert np.all(pairs[:, [0, 2]] >= -0.5) and np.all(pairs[:, 0] < query.camera.width)
        assert np.all(pairs[:, 2] < d["size"][0]) and np.all(pairs[:, 3] < d["size"][1])
        flags = pairs[:, 4]
        assert set(np.unique(flags)) <= {0, 1} and np.all(np.diff(flags) <= 0)  # those that agree first
        if d["support"]:  # the pose's inliers are (nearly all) matches that agree with it
            assert d["agree"] >= 0.8 * r["inliers"], (d["agree"], r["inliers"])
    assert post(map_server.url, "/v1/localize", data, {"camera": camera, "details": "maybe"}).status_code == 422


# --- the page in a browser ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except Exception as e:  # a chromium Playwright cannot drive
            pytest.skip(f"chromium at {executable} does not start under Playwright: {e}")
        yield browser
        browser.close()


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def _artifact_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VISLOC_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_page_localizes_a_photo_in_a_browser(browser: Any, map_server: LiveServer, the_map: Map, query: Frame,
                                                 tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None)
    try:
        page.goto(map_server.url + "/")
        page.wait_for_selector("#health.ok", timeout=15_000)
        # the top view: one marker per database image
        page.wait_for_function("document.querySelectorAll('#topview .db-camera').length > 0", timeout=15_000)
        assert page.locator("#topview .db-camera").count() == len(the_map.names)
        assert page.locator("#topview .db-camera .tick").count() == len(the_map.names)

        # an HTTP error is shown: intrinsics of another size than the photo's
        page.fill("#camera", "PINHOLE 100 100 50 50 49.5 49.5")
        page.set_input_files("#file", str(query.image_path))
        page.wait_for_selector("body[data-state=error]", timeout=20_000)
        assert re.search(r"HTTP 422: .*100x100", page.inner_text("#message"))

        # a photo that cannot be localized: the reason is shown
        noise_path = tmp_path / "noise.png"
        Image.fromarray(noise(query.camera.height, query.camera.width, seed=3)).save(noise_path)
        page.fill("#camera", query.camera.to_colmap_string())
        page.set_input_files("#file", str(noise_path))
        page.wait_for_selector("body[data-state=done]", timeout=20_000)
        assert page.inner_text("#message").startswith("not localized: ")
        assert page.inner_text("#pose-qvec") == "–" and page.locator("#query-camera").count() == 0

        # the query: the page shows the API's pose
        page.set_input_files("#file", str(query.image_path))
        page.wait_for_function("document.body.dataset.state === 'done' && "
                               "document.getElementById('pose-qvec').textContent !== '–'", timeout=20_000)
        r = post(map_server.url, "/v1/localize", png_bytes(read_image(query.image_path)),
                 {"camera": query.camera.to_colmap_string()})
        answer = r.json()
        assert answer["localized"] is True
        for key in ("qvec", "tvec", "center"):
            shown = _numbers(page.inner_text(f"#pose-{key}"))
            assert shown == pytest.approx(answer["pose"][key], abs=0.6e-4), key  # printed with 4 decimals
        assert page.inner_text("#message").startswith(f"localized with {answer['num_inliers']} inliers")
        assert page.locator("#query-camera").count() == 1
        assert page.locator("#topview .db-camera.support").count() == len(answer["support"])

        # the retrieved images' thumbnails load
        assert page.locator("#retrieved img.thumb").count() == len(answer["retrieved"])
        page.wait_for_function("[...document.querySelectorAll('#retrieved img.thumb')]"
                               ".every((img) => img.complete && img.naturalWidth > 0)", timeout=15_000)
        # the match view: the photo, a database image and lines between them
        page.wait_for_function("document.querySelectorAll('#match-view line.match').length > 0", timeout=15_000)
        assert page.locator("#match-view image").count() == 2
        agreeing = page.locator("#match-view line.match.agree").count()
        assert agreeing == page.locator("#match-view line.match").count() > 0  # only those that agree, by default
        page.check("#show-all")
        assert page.locator("#match-view line.match").count() >= agreeing

        # another retrieved image in the match view
        others = page.locator("#retrieved .card:not(.selected):not(.nomatch)")
        if others.count():
            name = others.first.get_attribute("data-name")
            others.first.click()
            page.wait_for_function(f"document.getElementById('match-info').textContent.includes({name!r})")
        page.uncheck("#show-all")
        select_best = page.locator("#retrieved .card.support").first
        select_best.click()
        page.wait_for_function("document.querySelectorAll('#match-view line.match').length > 0")

        path = _artifact_dir(tmp_path) / "service_page.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        print(f"screenshot: {path}")
        if os.environ.get("VISLOC_UPDATE_DOCS_IMAGES") == "1":
            _save_docs_image(path, DOCS_IMAGE)
        assert not problems, problems
        assert failed == [f"422 POST {map_server.url}/v1/localize"], failed  # the wrong intrinsics only
    finally:
        page.close()


def _save_docs_image(screenshot: Path, out: Path) -> None:
    """A smaller copy of the screenshot for the docs (256 colours, optimized PNG)."""
    with Image.open(screenshot) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out.parent.mkdir(parents=True, exist_ok=True)
        small.save(out, format="PNG", optimize=True)


def test_the_page_sends_the_token(browser: Any, live: Any, tmp_path: Path) -> None:
    server = live(engine_factory(FakeEngine()), dataclasses.replace(SMALL_LIMITS, token="s3cret")).wait_ready()
    page = browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_function("document.getElementById('map-info').textContent.includes('token')", timeout=15_000)
        photo = tmp_path / "photo.png"
        Image.fromarray(noise()).save(photo)
        page.fill("#camera", "PINHOLE 64 48 50 50 31.5 23.5")
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=error]", timeout=15_000)
        assert page.inner_text("#message").startswith("HTTP 401: missing or wrong bearer token")
        # with the token: the map route answers (a fake engine has no map) and the photo is localized
        page.fill("#token", "s3cret")
        page.dispatch_event("#token", "change")
        page.wait_for_function("document.getElementById('map-info').textContent.includes('no map')", timeout=15_000)
        page.click("#localize")
        page.wait_for_selector("body[data-state=done]", timeout=15_000)
        assert page.inner_text("#pose-qvec") == "1.0000 0.0000 0.0000 0.0000"
        assert page.inner_text("#message").startswith("localized with 12 inliers")
    finally:
        page.close()
