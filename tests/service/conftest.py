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


#: Where the geo-referenced copy of the tiny map is put on the Earth (as tests/service/test_geopose.py).
GEO_ORIGIN, GEO_HEADING = (60.1699, 24.9384, 25.0), 30.0


@pytest.fixture(scope="session")
def geo_map(tiny_map: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny map with ``georef.json`` (origin and heading), for ``/geopose`` and GPS priors."""
    import shutil

    from visloc.localization.georef import georeference_map

    out = tmp_path_factory.mktemp("geomap") / "map"
    shutil.copytree(tiny_map, out)
    georeference_map(out, origin=GEO_ORIGIN, heading=GEO_HEADING)
    return out


@pytest.fixture(scope="module")
def geo_server(geo_map: Path) -> Iterator[LiveServer]:
    """One ready server of the geo-referenced tiny map for a test module."""
    server = LiveServer(create_app(geo_map, SMALL_LIMITS)).start().wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def map_server(tiny_map: Path) -> Iterator[LiveServer]:
    """One ready server of the tiny map for a test module."""
    server = LiveServer(create_app(tiny_map, SMALL_LIMITS)).start().wait_ready()
    yield server
    server.stop()
