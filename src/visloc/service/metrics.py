"""The server's Prometheus metrics, in a registry of its own (two apps in one process never share counts).

``visloc_requests_total{route,method,status}``, ``visloc_request_seconds{route}`` (latency histogram),
``visloc_stage_seconds{route,stage}`` (decode, queue, extract, retrieve, match, pose),
``visloc_localizations_total{localized}``, ``visloc_queue_depth`` (admitted requests waiting for a
worker), ``visloc_requests_running`` and ``visloc_ready``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

#: Latency buckets (seconds): a localization takes tens of milliseconds to seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """The metrics of one app; :meth:`render` gives the text a ``/metrics`` scrape returns."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU seconds, open fds (Linux)
        self.requests = Counter("visloc_requests", "HTTP requests answered, by route, method and status code.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("visloc_request_seconds", "Seconds from a request to its answer, by route.",
                                 ["route"], buckets=BUCKETS, registry=self.registry)
        self.stages = Histogram("visloc_stage_seconds", "Seconds per stage of the requests that reached it.",
                                ["route", "stage"], buckets=BUCKETS, registry=self.registry)
        self.localizations = Counter("visloc_localizations", "Localize answers, by whether a pose was found.",
                                     ["localized"], registry=self.registry)
        self.queue_depth = Gauge("visloc_queue_depth", "Admitted requests not yet running in a worker.",
                                 registry=self.registry)
        self.running = Gauge("visloc_requests_running", "Requests running in a worker.", registry=self.registry)
        self.ready = Gauge("visloc_ready", "1 once the map is loaded, else 0.", registry=self.registry)

    def track(self, queue_depth: Callable[[], float], running: Callable[[], float], ready: Callable[[], float]) -> None:
        """Read the gauges from these functions at every scrape."""
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)
        self.ready.set_function(ready)

    def observe_stages(self, route: str, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            if stage != "total":
                self.stages.labels(route, stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware that counts every HTTP answer and times it, labelled by the route's path template
    (``other`` for paths no route matches, so that scanners cannot grow the label set)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "other"
            self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
