"""The web app: :func:`create_app` builds a FastAPI app over an engine that loads in the background.

Routes: ``POST /v1/localize``, ``POST /v1/retrieve``, ``GET /v1/health`` (503 until the engine is loaded),
``GET /metrics`` (Prometheus text); the web page (``GET /``) and the routes it reads (``GET /v1/map``,
``GET /v1/images/{name}``) are added by :func:`~visloc.service.page.add_page_routes`. More routes plug in on the returned app (``app.include_router``); they
reach the engine, the work pool, the metrics and the config through ``request.app.state.service``
(:class:`ServiceState`) and answer errors by raising :class:`~visloc.service.errors.RequestError`.

A request is checked in this order: token (401), engine loaded (503), a place in the queue (429), body
size (413) and body deadline (408), form (415 / 422), intrinsics and prior (422), image header and pixel
count (415 / 413), decoding (422), then it runs in a worker within the deadline (504). Nothing is written
to disk. ``POST /geopose`` (geo-referenced maps) is added by
:func:`~visloc.service.geopose_routes.add_geopose_routes` and goes the same way.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from .. import __version__
from ..errors import ConfigError
from ..localization.localize import LocalizeConfig
from .config import ServiceConfig
from .engine import Engine, MapEngine
from .errors import RequestError, invalid, too_large
from .geopose_routes import add_geopose_routes
from .inputs import (
    LOCALIZE_FIELDS,
    RETRIEVE_FIELDS,
    decode_image,
    form_schema,
    parse_camera,
    parse_form,
    parse_int,
    query_camera,
)
from .metrics import MetricsMiddleware, ServiceMetrics
from .page import add_page_routes, localize_in_worker, parse_details
from .pool import Ticket, WorkPool
from .priors import bind_within, candidates, parse_prior, prior_answer
from .schemas import ErrorAnswer, HealthAnswer, LocalizeAnswer, RetrieveAnswer, RetrievedImage

logger = logging.getLogger(__name__)

#: The error answers every upload route documents.
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorAnswer, "description": text} for code, text in {
        401: "Missing or wrong bearer token (servers started with a token only).",
        413: "Request body or image pixel count over the server's limits.",
        415: "Not multipart/form-data, or the image is not a JPEG or PNG.",
        422: "Malformed form, missing field, bad intrinsics, truncated or corrupt image.",
        429: "The queue is full; retry after the Retry-After header's seconds.",
        503: "The map is still loading (or failed to load).",
        504: "No answer within the server's per-request timeout.",
    }.items()
}


@dataclass
class ServiceState:
    """What the routes share: the config, the engine once loaded (or why it failed), the pool, the metrics."""

    config: ServiceConfig
    pool: WorkPool
    metrics: ServiceMetrics
    engine: Engine | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    #: The dependencies of every work route: the bearer-token check when the server has a token.
    auth: list[Any] = field(default_factory=list)

    async def read_body(self, request: Request) -> bytes:
        """The request body within the server's size limit (413) and body deadline (408)."""
        return await read_body(request, self.config.max_body_bytes, self.config.body_timeout_s)

    def require_engine(self) -> Engine:
        if self.engine is None:
            message = f"the map failed to load: {self.error}" if self.error else "the map is still loading"
            raise RequestError(503, message, {"Retry-After": str(self.config.retry_after_s)})
        return self.engine


def create_app(
    engine: str | Path | Callable[[], Engine],
    config: ServiceConfig = ServiceConfig(),
    localize_config: LocalizeConfig = LocalizeConfig(),
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The app of one map.

    Args:
        engine: a map folder (served by :class:`~visloc.service.engine.MapEngine` with ``localize_config``)
            or a function that makes the engine. It runs in a thread after start-up; until it returns,
            ``/v1/health`` and the work routes answer 503.
        config: limits, queue, workers, timeout and token.
        on_load_error: called with the exception when making the engine fails (``visloc serve`` stops the
            server then).
    """
    factory: Callable[[], Engine]
    if isinstance(engine, (str, Path)):
        map_dir = Path(engine)
        factory = lambda: MapEngine(map_dir, localize_config)  # noqa: E731
    else:
        factory = engine
    state = ServiceState(config, WorkPool(config.workers, config.capacity, config.retry_after_s), ServiceMetrics(),
                         auth=_auth(config))
    state.metrics.track(lambda: state.pool.waiting, lambda: state.pool.running,
                        lambda: float(state.engine is not None))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state, factory, on_load_error))
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.to_thread(state.pool.shutdown)

    app = FastAPI(title="visloc", version=__version__, lifespan=lifespan,
                  description="Visual localization as a service: the 6-DoF pose of a photo in a visloc map.")
    app.state.service = state
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(ConfigError, _config_error)
    app.add_exception_handler(Exception, _unexpected_error)
    _add_routes(app, state)
    add_geopose_routes(app)  # POST /geopose for geo-referenced maps (service/geopose_routes.py)
    add_page_routes(app)  # GET /, /static/*, /v1/map, /v1/images/*: the web page (service/page.py)
    return app


async def _load(state: ServiceState, factory: Callable[[], Engine],
                on_load_error: Callable[[BaseException], None] | None) -> None:
    t = time.perf_counter()
    try:
        engine = await asyncio.to_thread(factory)
        info = dict(engine.info())
    except Exception as e:
        state.error = str(e) or type(e).__name__
        logger.error("the engine failed to load: %s", state.error)
        if on_load_error is not None:
            on_load_error(e)
        return
    state.info, state.engine = info, engine
    logger.info("ready in %.1f s: %s", time.perf_counter() - t, info)


def _error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return _error_response(exc.status, exc.message, exc.headers)


async def _config_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(422, str(exc))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    return _error_response(500, f"internal error ({type(exc).__name__}); see the server's log")


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes (from
    ``Content-Length`` before anything is read, else while it streams in), and with 408 (closing the
    connection) when it has not all arrived ``timeout_s`` seconds after reading began: uvicorn's own
    timeouts do not cover a body trickled in slowly (slow loris)."""
    length = request.headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise invalid(f"Content-Length {length!r} is not a number") from None
        if declared > limit:
            raise too_large(f"the request body is {declared} bytes, more than the server's limit of {limit} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large(f"the request body is more than the server's limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within the server's {timeout_s:g} s "
                                f"({size} bytes came)", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise RequestError(400, "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _auth(config: ServiceConfig) -> list[Any]:
    """The dependencies of the work routes: the bearer-token check when the server has a token."""
    if config.token is None:
        return []
    expected = config.token.encode()
    bearer = HTTPBearer(auto_error=False, description="The server's token (visloc serve --token-file).")

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = b"" if credentials is None else credentials.credentials.encode()
        if not hmac.compare_digest(given, expected):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
                               {"WWW-Authenticate": "Bearer"})

    return [Depends(check_token)]


def _add_routes(app: FastAPI, state: ServiceState) -> None:
    config = state.config
    auth = state.auth

    async def upload(request: Request, fields: tuple) -> tuple[Ticket, dict]:
        """Admit the request and read its form (the caller releases the ticket unless it ran)."""
        state.require_engine()
        ticket = state.pool.admit()
        try:
            body = await state.read_body(request)
            form = parse_form(request.headers.get("content-type"), body, fields)
        except BaseException:
            ticket.release()
            raise
        return ticket, form

    async def decode_upload(form: dict) -> tuple[Any, float]:
        """The form's image, decoded in a thread (the request holds its ticket meanwhile); and the seconds."""
        t = time.perf_counter()
        image = await run_in_threadpool(decode_image, form["image"].data, config.max_pixels)
        return image, time.perf_counter() - t

    @app.post("/v1/localize", response_model=LocalizeAnswer, responses=_ERRORS, dependencies=auth,
              openapi_extra={"requestBody": form_schema(LOCALIZE_FIELDS)}, summary="Localize a photo")
    async def localize(request: Request) -> LocalizeAnswer:
        """The 6-DoF pose of the image in the map, world-to-camera, with its evidence and timings; a query
        that cannot be localized is answered 200 with ``localized: false`` and the reason."""
        start = time.perf_counter()
        ticket, form = await upload(request, LOCALIZE_FIELDS)
        try:
            given = parse_camera(form)
            name, method = form.get("name") or "query", form.get("method") or None
            details = parse_details(form)
            prior = parse_prior(form, getattr(state.require_engine(), "georef", None))
            within = candidates(state.require_engine(), prior)
            image, decode_s = await decode_upload(form)
            camera, source = query_camera(given, image)
            engine = bind_within(state.require_engine(), within)
            (result, matches), waited = await state.pool.run(
                ticket, lambda: localize_in_worker(engine, image.pixels, camera, name, method, details),
                start + config.timeout_s,
                config.timeout_s)
        finally:
            if not ticket.submitted:
                ticket.release()
        timings = {"decode": decode_s, "queue": waited, **result.timings, "total": time.perf_counter() - start}
        state.metrics.observe_stages("/v1/localize", timings)
        state.metrics.localizations.labels(str(result.pose is not None).lower()).inc()
        answer = LocalizeAnswer.of(result, camera, source, timings)
        answer.prior = prior_answer(prior, within)
        if matches is not None:  # details=true: the answer and the matches the web page draws
            return JSONResponse({**answer.model_dump(mode="json"), "details": matches})  # type: ignore[return-value]
        return answer

    @app.post("/v1/retrieve", response_model=RetrieveAnswer, responses=_ERRORS, dependencies=auth,
              openapi_extra={"requestBody": form_schema(RETRIEVE_FIELDS)}, summary="Retrieve similar map images")
    async def retrieve(request: Request) -> RetrieveAnswer:
        """The database images most similar to the image (global descriptor search), best first."""
        start = time.perf_counter()
        ticket, form = await upload(request, RETRIEVE_FIELDS)
        try:
            num = parse_int(form, "num", 1, config.max_retrieve)
            name = form.get("name") or "query"
            prior = parse_prior(form, getattr(state.require_engine(), "georef", None))
            within = candidates(state.require_engine(), prior)
            image, decode_s = await decode_upload(form)
            engine = bind_within(state.require_engine(), within)
            ((names, scores), retrieve_s), waited = await state.pool.run(
                ticket, lambda: _timed(lambda: engine.retrieve(image.pixels, name, num)), start + config.timeout_s,
                config.timeout_s)
        finally:
            if not ticket.submitted:
                ticket.release()
        timings = {"decode": decode_s, "queue": waited, "retrieve": retrieve_s, "total": time.perf_counter() - start}
        state.metrics.observe_stages("/v1/retrieve", timings)
        return RetrieveAnswer(name=name, timings=timings, prior=prior_answer(prior, within),
                              retrieved=[RetrievedImage(name=n, score=float(s)) for n, s in zip(names, scores, strict=True)])

    @app.get("/v1/health", response_model=HealthAnswer, summary="Readiness",
             responses={503: {"model": HealthAnswer, "description": "Loading, or loading failed."}})
    async def health() -> Any:
        """``ready`` (200) once the map is loaded; ``loading`` or ``failed`` (503) before."""
        if state.engine is not None:
            return HealthAnswer(status="ready", engine=state.info)
        answer = HealthAnswer(status="failed" if state.error else "loading", detail=state.error)
        return JSONResponse(answer.model_dump(), status_code=503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def metrics() -> Response:
        """Request counts by route and status, latency histograms per route and stage, queue depth."""
        return Response(state.metrics.render(), media_type=state.metrics.content_type)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    return fn(), time.perf_counter() - t
