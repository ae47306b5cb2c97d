"""The bounded queue and the lifecycle, with a fake engine that answers when the test lets it: 429 with
Retry-After when the queue is full, 504 past the timeout, 503 until the map is loaded, the work in the
bounded worker pool, and a graceful shutdown that finishes the requests in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from visloc import client
from visloc.errors import InputError
from visloc.service.config import ServiceConfig

from .helpers import FakeEngine, LiveServer, engine_factory, noise, png_bytes, post

CAMERA = "PINHOLE 64 48 50 50 31.5 23.5"
IMAGE = png_bytes(noise())


def _localize(server: LiveServer) -> httpx.Response:
    return post(server.url, "/v1/localize", IMAGE, {"camera": CAMERA})


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_full_queue_is_429_with_retry_after(live) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate)
    server = live(engine_factory(engine), ServiceConfig(workers=1, queue_size=1, retry_after_s=3)).wait_ready()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(_localize, server)
        assert engine.entered.acquire(timeout=10)  # the first one runs in the worker
        waiting = pool.submit(_localize, server)
        _wait(lambda: server.state.pool.waiting == 1, "the second request to queue")
        metrics = httpx.get(server.url + "/metrics").text
        assert "visloc_queue_depth 1.0" in metrics and "visloc_requests_running 1.0" in metrics
        for route in ("/v1/localize", "/v1/retrieve"):
            r = post(server.url, route, IMAGE, {"camera": CAMERA} if route == "/v1/localize" else {})
            assert r.status_code == 429 and r.headers["retry-after"] == "3", r.text
            assert "busy" in r.json()["detail"]
        with pytest.raises(client.ServiceError) as error:
            client.localize(server.url, IMAGE, CAMERA)
        assert error.value.status == 429 and error.value.retry_after == 3.0
        assert httpx.get(server.url + "/v1/health").status_code == 200  # health is never queued
        gate.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
    assert _localize(server).status_code == 200  # the places are free again
    assert "visloc_queue_depth 0.0" in httpx.get(server.url + "/metrics").text
    assert 'route="/v1/localize",status="429"} 2.0' in httpx.get(server.url + "/metrics").text


def test_work_runs_in_the_bounded_worker_pool(live) -> None:
    engine = FakeEngine()
    server = live(engine_factory(engine), ServiceConfig(workers=2, queue_size=0)).wait_ready()
    with ThreadPoolExecutor(2) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda _: _localize(server), range(6)))
    assert client.retrieve(server.url, IMAGE, num=1) == [("a", 0.9)]
    assert len(engine.threads) == 7 and all(t.startswith("visloc-worker") for t in engine.threads)
    assert len(set(engine.threads)) <= 2


def test_timeout_is_504_and_the_server_recovers(live) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate)
    server = live(engine_factory(engine), ServiceConfig(workers=1, queue_size=2, timeout_s=0.3)).wait_ready()
    t = time.monotonic()
    r = _localize(server)
    assert r.status_code == 504 and "timeout of 0.3 s" in r.json()["detail"]
    assert time.monotonic() - t < 5
    # the timed-out work still holds its place until it finishes in its worker
    assert server.state.pool.running == 1
    gate.set()
    _wait(lambda: engine.finished == 1 and server.state.pool.waiting == 0, "the timed-out work to finish")
    assert _localize(server).status_code == 200


def test_health_is_503_until_the_map_is_loaded(live) -> None:
    loaded = threading.Event()
    server = live(engine_factory(FakeEngine(), loaded))
    r = httpx.get(server.url + "/v1/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = _localize(server)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "still loading" in r.json()["detail"]
    assert "visloc_ready 0.0" in httpx.get(server.url + "/metrics").text
    loaded.set()
    server.wait_ready(timeout=10)
    assert httpx.get(server.url + "/v1/health").json() == {"status": "ready", "detail": None,
                                                           "engine": {"map": "fake", "images": 2}}
    assert _localize(server).status_code == 200
    assert "visloc_ready 1.0" in httpx.get(server.url + "/metrics").text


def test_a_map_that_fails_to_load_is_reported(live, tmp_path) -> None:
    errors: list[BaseException] = []
    server = live(tmp_path / "no_map", on_load_error=errors.append)
    _wait(lambda: bool(errors), "the load to fail")
    assert isinstance(errors[0], InputError)
    r = httpx.get(server.url + "/v1/health")
    assert r.status_code == 503 and r.json()["status"] == "failed" and "no_map" in r.json()["detail"]
    r = _localize(server)
    assert r.status_code == 503 and "failed to load" in r.json()["detail"]


def test_shutdown_finishes_the_requests_in_flight(live) -> None:
    gate = threading.Event()
    engine = FakeEngine(gate)
    server = live(engine_factory(engine), ServiceConfig(workers=1, queue_size=2)).wait_ready()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_localize, server)
        assert engine.entered.acquire(timeout=10)
        second = pool.submit(_localize, server)
        _wait(lambda: server.state.pool.waiting == 1, "the second request to queue")
        server.server.should_exit = True  # what SIGTERM / Ctrl-C does
        time.sleep(0.2)
        assert server.thread.is_alive()  # still serving the two requests
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/v1/health")  # but no new connections
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    server.thread.join(timeout=10)
    assert not server.thread.is_alive() and engine.finished == 2


def test_an_engine_failure_is_500_and_the_server_goes_on(live) -> None:
    class Broken(FakeEngine):
        def localize(self, *args, **kwargs):
            raise RuntimeError("boom")

    server = live(engine_factory(Broken())).wait_ready()
    r = _localize(server)
    assert r.status_code == 500 and r.json() == {"detail": "internal error (RuntimeError); see the server's log"}
    assert server.state.pool.waiting == 0 and server.state.pool.running == 0
    assert client.retrieve(server.url, IMAGE) == [("a", 0.9), ("b", 0.5)]
    assert 'route="/v1/localize",status="500"} 1.0' in httpx.get(server.url + "/metrics").text
