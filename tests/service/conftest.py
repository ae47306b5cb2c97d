"""Fixtures of the service tests: live servers (uvicorn on a loopback socket in a background thread, spoken to
with the real httpx client) of the session's tiny map (``tests/conftest.py``) or of a fake engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from visloc.service.app import create_app
from visloc.service.config import ServiceConfig

from .helpers import SMALL_LIMITS, LiveServer


@pytest.fixture
def live() -> Iterator[Callable[..., LiveServer]]:
    """``live(engine_or_map, config)``: a started server, stopped after the test."""
    servers: list[LiveServer] = []

    def start(engine: Any, config: ServiceConfig = SMALL_LIMITS, **kwargs: Any) -> LiveServer:
        server = LiveServer(create_app(engine, config, **kwargs)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def map_server(tiny_map: Path) -> Iterator[LiveServer]:
    """One ready server of the tiny map for a test module."""
    server = LiveServer(create_app(tiny_map, SMALL_LIMITS)).start().wait_ready()
    yield server
    server.stop()
