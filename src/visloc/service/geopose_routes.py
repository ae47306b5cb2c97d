"""``POST /geopose``: the OSCP GeoPose protocol over HTTP (``docs/geopose.md``), for maps that carry a
geo-reference (``MAP/georef.json``, ``visloc map georef``).

The request goes the way of ``/v1/localize`` (:mod:`visloc.service.app`): token (401), engine loaded
(503), geo-reference (409), a place in the queue (429), body size (413) and body deadline (408), JSON
(415 / 422), the ``GeoPoseReq`` (422, the message names the field), then the engine's ``localize`` in a
worker within the deadline (504), with the request's prior (``priorPoses`` / ``geolocationReadings``)
restricting retrieval as the form's prior fields do. The answer is the ``GeoPoseResp`` (200), or 404 with
``{"id", "timestamp", "type", "error"}`` when the image is not localized.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from python_multipart.multipart import parse_options_header

from .errors import RequestError, invalid, unsupported
from .geopose import GeoPoseQuery, GeoPoseRequestError, geopose_response, parse_geopose_request
from .priors import NOT_GEOREFERENCED, bind_within, candidates, geo_prior, prior_answer
from .schemas import ErrorAnswer

if TYPE_CHECKING:
    from .app import ServiceState

#: The answers ``/geopose`` documents besides 200.
_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "Not localized: {id, timestamp, type, error} (the protocol defines no failure answer)."},
    **{code: {"model": ErrorAnswer, "description": text} for code, text in {
        401: "Missing or wrong bearer token (servers started with a token only).",
        408: "The body did not arrive within the server's body timeout.",
        409: "The map is not geo-referenced (run `visloc map georef`).",
        413: "Request body or image pixel count over the server's limits.",
        415: "Not application/json.",
        422: "Invalid JSON, or a malformed GeoPoseReq: the message names the field.",
        429: "The queue is full; retry after the Retry-After header's seconds.",
        503: "The map is still loading (or failed to load).",
        504: "No answer within the server's per-request timeout.",
    }.items()},
}

_REQUEST_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "An OSCP GeoPoseReq (version 2 candidate 1): id, timestamp, type "
                                     "'geopose', sensors, sensorReadings {cameraReadings, geolocationReadings}, "
                                     "priorPoses. See docs/geopose.md.",
    "required": ["id", "sensorReadings"]}}}}


def parse_json(content_type: str | None, body: bytes) -> Any:
    """The JSON document of a request body.

    Raises:
        RequestError: 415 not ``application/json`` (or ``+json``); 422 empty, not UTF-8 or not JSON.
    """
    kind = parse_options_header(content_type or "")[0].decode("latin-1").lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise unsupported(f"send the GeoPoseReq as application/json, not {kind or 'no Content-Type'}")
    if not body:
        raise invalid("the request body is empty: send a GeoPoseReq JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"the request body is not UTF-8 ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise invalid(f"the request body is not valid JSON ({e})") from None
    except RecursionError:
        raise invalid("the request body is not valid JSON (nested too deeply)") from None


def _parse(body: Any, max_pixels: int) -> GeoPoseQuery:
    try:
        return parse_geopose_request(body, max_pixels=max_pixels)
    except GeoPoseRequestError as e:
        raise invalid(str(e)) from None


def add_geopose_routes(app: FastAPI) -> None:
    """Add ``POST /geopose`` to a :func:`~visloc.service.app.create_app` app (``app.state.service``)."""
    state: ServiceState = app.state.service
    config = state.config

    @app.post("/geopose", responses=_RESPONSES, dependencies=state.auth, response_class=JSONResponse,
              openapi_extra={"requestBody": _REQUEST_BODY}, summary="Localize a photo: OSCP GeoPose")
    async def geopose(request: Request) -> JSONResponse:
        """The geodetic pose (``GeoPoseResp``: WGS84 position and ENU quaternion) of a ``GeoPoseReq``'s
        first camera image; the pose is ``/v1/localize``'s for the same image and intrinsics."""
        start = time.perf_counter()
        engine = state.require_engine()
        georef = getattr(engine, "georef", None)
        if georef is None:
            raise RequestError(409, f"POST /geopose needs a geo-referenced map: {NOT_GEOREFERENCED}")
        ticket = state.pool.admit()
        try:
            body = parse_json(request.headers.get("content-type"), await state.read_body(request))
            t = time.perf_counter()
            query = await run_in_threadpool(_parse, body, config.max_pixels)
            decode_s = time.perf_counter() - t
            prior = None if query.prior is None else geo_prior(query.prior, georef)
            within = candidates(engine, prior)
            worker = bind_within(engine, within)
            name = f"geopose/{query.request_id}"
            result, waited = await state.pool.run(
                ticket, lambda: worker.localize(query.image, query.camera, name, None), start + config.timeout_s,
                config.timeout_s)
        finally:
            if not ticket.submitted:
                ticket.release()
        timings = {"decode": decode_s, "queue": waited, **result.timings, "total": time.perf_counter() - start}
        state.metrics.observe_stages("/geopose", timings)
        state.metrics.localizations.labels(str(result.pose is not None).lower()).inc()
        stamp = body.get("timestamp")
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp):
            stamp = None
        answer = geopose_response(query.request_id, result.pose, georef, timestamp=stamp,
                                  reason=f"not localized ({result.status})")
        applied = prior_answer(prior, within)
        if applied is not None:  # beyond the protocol: which prior restricted retrieval
            answer["prior"] = applied.model_dump()
        return JSONResponse(answer, status_code=200 if result.pose is not None else 404)


__all__ = ["add_geopose_routes", "parse_json"]
