"""Helpers of the service tests: a live uvicorn server in a background thread, a fake engine, images."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import uvicorn
from PIL import Image

from visloc.geometry import Camera, Pose
from visloc.localization import QueryResult
from visloc.service.config import ServiceConfig
from visloc.service.engine import Engine

#: Limits small enough to test cheaply, large enough for the tiny world's 320x240 PNGs.
SMALL_LIMITS = ServiceConfig(max_body_bytes=1_000_000, max_pixels=500_000, queue_size=4, timeout_s=20.0)


class LiveServer:
    """A uvicorn server of ``app`` on 127.0.0.1 (an OS-chosen port) in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    @property
    def state(self) -> Any:
        return self.app.state.service

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 60.0) -> LiveServer:
        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/v1/health").status_code != 200:
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()
        assert not self.thread.is_alive(), "the server did not stop"


class FakeEngine:
    """An engine that answers at once, or once ``gate`` is set; it records the threads it ran in."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.entered = threading.Semaphore(0)
        self.threads: list[str] = []
        self.finished = 0

    def info(self) -> dict[str, Any]:
        return {"map": "fake", "images": 2}

    def _work(self) -> None:
        self.threads.append(threading.current_thread().name)
        self.entered.release()
        if self.gate is not None:
            assert self.gate.wait(30)
        self.finished += 1

    def localize(self, image: np.ndarray, camera: Camera, name: str, method: str | None) -> QueryResult:
        self._work()
        return QueryResult(name=name, pose=Pose.identity(), status="localized", method=method or "fake",
                           retrieved=["a", "b"], retrieval_scores=[0.9, 0.5], matches=[20, 10], inliers=[12, 0],
                           support=["a"], timings={"extract": 0.0, "retrieve": 0.0, "match": 0.0, "pose": 0.0})

    def retrieve(self, image: np.ndarray, name: str, num: int | None) -> tuple[list[str], list[float]]:
        self._work()
        return ["a", "b"][: num or 2], [0.9, 0.5][: num or 2]


def engine_factory(engine: Engine, loaded: threading.Event | None = None) -> Callable[[], Engine]:
    """A factory that returns ``engine`` once ``loaded`` is set (at once without it)."""

    def make() -> Engine:
        if loaded is not None:
            assert loaded.wait(30)
        return engine

    return make


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(pixels: np.ndarray, exif: Image.Exif | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95, **({"exif": exif} if exif is not None else {}))
    return buffer.getvalue()


def noise(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def post(url: str, route: str, image: bytes | None, data: dict[str, str] | None = None,
         headers: dict[str, str] | None = None, filename: str = "q.png") -> httpx.Response:
    """A multipart POST with the image part ``image`` (left out when ``None``) and text fields ``data``."""
    files = {"image": (filename, image, "application/octet-stream")} if image is not None else None
    if files is None:  # a multipart body without a file part
        files = {"name": (None, "query")}
    return httpx.post(url + route, data=data or {}, files=files, headers=headers or {}, timeout=60)
