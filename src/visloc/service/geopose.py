"""The OSCP GeoPose protocol (Open AR Cloud): a ``GeoPoseReq`` in, a ``GeoPoseResp`` out, as plain
functions over JSON dictionaries (no web framework here; the HTTP route calls
:func:`answer_geopose_request`).

Followed: the TypeScript interfaces of ``OpenArCloud/oscp-geopose-protocol`` (README, "version 2
candidate 1", the version OpenVPS serves as v2.0)::

    GeoPoseReq  {id, timestamp, type: "geopose", sensors: Sensor[], sensorReadings: SensorReadings,
                 priorPoses?: GeoPoseResp[]}
    SensorReadings {cameraReadings?: CameraReading[], geolocationReadings?: GeolocationReading[], ...}
    CameraReading {timestamp, sensorId, privacy, sequenceNumber, imageFormat, size: [width, height],
                   imageBytes: base64, imageOrientation?: {mirrored, rotation}, params?: {model, modelParams}}
    GeolocationReading {timestamp, sensorId, privacy, latitude, longitude, altitude, accuracy,
                        altitudeAccuracy, heading, speed}
    GeoPoseResp {id, timestamp, accuracy: {position (m), orientation (deg)}, type: "geopose",
                 geopose: {position: {lat, lon, h}, quaternion: {x, y, z, w}}}

``imageBytes`` is an encoded image file (JPEG, PNG) as the reference clients send it; raw ``RGBA32`` /
``GRAY8`` pixels of ``size`` are accepted too. ``modelParams`` are COLMAP's (pixel centres at ``+0.5``):
the principal point is shifted into visloc's convention here. The answer's orientation is in the body
frame of :data:`~visloc.geometry.geo.FORWARD_LEFT_UP` unless asked otherwise (``docs/geopose.md``).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..geometry.camera import CAMERA_MODELS, Camera, InvalidCameraError
from ..geometry.geo import FORWARD_LEFT_UP, GeoReference, geopose_from_pose
from ..geometry.pose import Pose
from ..localization.prior import GeoPrior, MapPrior

if TYPE_CHECKING:
    from ..localization.localize import Localizer

#: Offset added to a COLMAP pixel coordinate to get visloc's (OpenCV) pixel coordinate.
COLMAP_TO_VISLOC_PX = -0.5
#: Raw pixel formats of ``imageFormat`` and their bytes per pixel.
RAW_FORMATS = {"RGBA32": 4, "GRAY8": 1}
#: ``accuracy`` values of a response when the caller gives none (the protocol has no "unknown").
UNKNOWN_ACCURACY = -1.0


class GeoPoseRequestError(InputError):
    """A ``GeoPoseReq`` that cannot be answered; the message names the field (``sensorReadings.
    cameraReadings[0].params.model: ...``). Answer it with HTTP :attr:`status` (422)."""

    status = 422

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        super().__init__(field, problem)


class GeoPoseQuery(NamedTuple):
    """A parsed ``GeoPoseReq``: the image ``(H, W, 3)`` uint8 RGB, its camera (visloc convention), the
    position prior (``None`` without one) and the request ``id``."""

    image: np.ndarray
    camera: Camera
    prior: GeoPrior | None
    request_id: str


# --- request ------------------------------------------------------------------------------------------
def _get(d: Mapping[str, Any], key: str, field: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    if key not in d or d[key] is None:
        if required:
            raise GeoPoseRequestError(f"{field}.{key}" if field else key, "is required")
        return None
    value = d[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise GeoPoseRequestError(f"{field}.{key}" if field else key, f"must be {_json_kind(names)}, got "
                                  f"{_json_kind(type(value).__name__)}")
    return value


def _json_kind(python: str) -> str:
    return {"dict": "an object", "list": "an array", "str": "a string", "int": "a number", "float": "a number",
            "int or float": "a number", "bool": "true or false", "NoneType": "null"}.get(python, python)


def _number(d: Mapping[str, Any], key: str, field: str, required: bool = True) -> float | None:
    value = _get(d, key, field, (int, float), required)
    if value is not None and not math.isfinite(value):
        raise GeoPoseRequestError(f"{field}.{key}", f"must be a finite number, got {value}")
    return None if value is None else float(value)


def _decode_image(reading: Mapping[str, Any], field: str, max_pixels: int | None) -> np.ndarray:
    text = _get(reading, "imageBytes", field, str)
    if text.startswith("data:") and "," in text:  # a data URL, as browsers make them
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as e:
        raise GeoPoseRequestError(f"{field}.imageBytes", f"is not valid base64 ({e})") from None
    if not data:
        raise GeoPoseRequestError(f"{field}.imageBytes", "is empty")
    fmt = reading.get("imageFormat")
    size = reading.get("size")
    try:
        img = Image.open(io.BytesIO(data))
        if max_pixels is not None and img.width * img.height > max_pixels:
            raise GeoPoseRequestError(f"{field}.imageBytes", f"the image has {img.width}x{img.height} pixels, more "
                                      f"than the {max_pixels} accepted")
        img.load()
    except Image.DecompressionBombError as e:
        raise GeoPoseRequestError(f"{field}.imageBytes", f"the image declares too many pixels ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if fmt in RAW_FORMATS and isinstance(size, list) and len(size) == 2:
            return _raw_image(data, fmt, size, field, max_pixels)
        raise GeoPoseRequestError(f"{field}.imageBytes", f"cannot decode the image ({type(e).__name__}: {e}); "
                                  "send a JPEG or PNG file, or raw RGBA32 / GRAY8 pixels of 'size'") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable image unusable
        pass
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise GeoPoseRequestError(f"{field}.imageBytes", f"{img.mode} images (depth?) cannot be localized; send "
                                  "an 8-bit colour or grey image")
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def _raw_image(data: bytes, fmt: str, size: list[Any], field: str, max_pixels: int | None) -> np.ndarray:
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise GeoPoseRequestError(f"{field}.size", f"must be [width, height], positive integers, got {size}")
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise GeoPoseRequestError(f"{field}.size", f"{w}x{h} pixels, more than the {max_pixels} accepted")
    channels = RAW_FORMATS[fmt]
    if len(data) != w * h * channels:
        raise GeoPoseRequestError(f"{field}.imageBytes", f"is neither an image file nor {fmt} pixels of size "
                                  f"{w}x{h} ({len(data)} bytes, expected {w * h * channels})")
    pixels = np.frombuffer(data, dtype=np.uint8).reshape(h, w, channels)
    if channels == 1:
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2))
    alpha = pixels[..., 3:4].astype(np.float64) / 255.0
    return np.round(pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def _camera(reading: Mapping[str, Any], field: str, width: int, height: int) -> Camera:
    params = _get(reading, "params", field, dict)
    field = f"{field}.params"
    model = _get(params, "model", field, str)
    if model not in CAMERA_MODELS:
        raise GeoPoseRequestError(f"{field}.model", f"{model!r} is not supported; known COLMAP models: "
                                  f"{', '.join(CAMERA_MODELS)}")
    values = _get(params, "modelParams", field, list)
    names = CAMERA_MODELS[model]
    if len(values) != len(names):
        raise GeoPoseRequestError(f"{field}.modelParams", f"{model} takes {len(names)} parameters "
                                  f"({' '.join(names)}), got {len(values)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise GeoPoseRequestError(f"{field}.modelParams", f"must be finite numbers, got {values}")
    p = [float(v) for v in values]
    p[names.index("cx")] += COLMAP_TO_VISLOC_PX
    p[names.index("cy")] += COLMAP_TO_VISLOC_PX
    try:
        return Camera(model, width, height, tuple(p))
    except InvalidCameraError as e:
        raise GeoPoseRequestError(f"{field}.modelParams", str(e)) from None


def _position_prior(lat: float, lon: float, h: float | None, radius: float | None, field: str,
                    default_radius_m: float | None) -> GeoPrior | None:
    if not -90.0 <= lat <= 90.0:
        raise GeoPoseRequestError(field, f"latitude {lat} is outside [-90, 90]")
    if not -180.0 <= lon <= 180.0:
        raise GeoPoseRequestError(field, f"longitude {lon} is outside [-180, 180]")
    if radius is None or radius <= 0:  # unknown accuracy (the protocol's clients send -1 or nothing)
        radius = default_radius_m
    return None if radius is None else GeoPrior(lat, lon, h, float(radius), field)


def _prior(body: Mapping[str, Any], readings: Mapping[str, Any], default_radius_m: float | None) -> GeoPrior | None:
    """The tightest prior of the request: its last prior pose and its geolocation readings."""
    candidates: list[GeoPrior | None] = []
    priors = _get(body, "priorPoses", "", list, required=False) or []
    if priors:
        i = len(priors) - 1
        field = f"priorPoses[{i}]"
        prior = priors[i]
        if not isinstance(prior, dict):
            raise GeoPoseRequestError(field, "must be a GeoPoseResp object")
        position = _get(_get(prior, "geopose", field, dict), "position", f"{field}.geopose", dict)
        pf = f"{field}.geopose.position"
        accuracy = _get(prior, "accuracy", field, dict, required=False) or {}
        candidates.append(_position_prior(
            _number(position, "lat", pf), _number(position, "lon", pf), _number(position, "h", pf, required=False),
            _number(accuracy, "position", f"{field}.accuracy", required=False), pf, default_radius_m))
    for i, reading in enumerate(_get(readings, "geolocationReadings", "sensorReadings", list, required=False) or []):
        field = f"sensorReadings.geolocationReadings[{i}]"
        if not isinstance(reading, dict):
            raise GeoPoseRequestError(field, "must be a GeolocationReading object")
        candidates.append(_position_prior(
            _number(reading, "latitude", field), _number(reading, "longitude", field),
            _number(reading, "altitude", field, required=False), _number(reading, "accuracy", field, required=False),
            field, default_radius_m))
    found = [c for c in candidates if c is not None]
    return min(found, key=lambda c: c.radius_m) if found else None


def parse_geopose_request(
    body: Any,
    default_prior_radius_m: float | None = None,
    max_pixels: int | None = None,
) -> GeoPoseQuery:
    """Read a ``GeoPoseReq`` (the parsed JSON body).

    The first camera reading is localized. Its ``params`` give the intrinsics (COLMAP model name and
    ``modelParams``); ``size``, when given, must be the decoded image's; ``imageOrientation``, when given,
    must be unrotated and not mirrored (the intrinsics would not fit a turned image). The prior is the
    tightest of the last ``priorPoses`` entry (its position, radius ``accuracy.position``) and the
    ``geolocationReadings`` (radius ``accuracy``); one without a positive accuracy gets
    ``default_prior_radius_m``, or is ignored when that is ``None``.

    Args:
        body: the request JSON.
        default_prior_radius_m: radius in metres of a prior whose accuracy is unknown.
        max_pixels: largest image accepted (checked before decoding); ``None``: no limit but Pillow's.

    Returns:
        ``(image, camera, prior, request_id)``.

    Raises:
        GeoPoseRequestError: a missing or malformed field; the message names it.
    """
    if not isinstance(body, dict):
        raise GeoPoseRequestError("GeoPoseReq", f"must be a JSON object, got {_json_kind(type(body).__name__)}")
    request_id = _get(body, "id", "", str)
    kind = _get(body, "type", "", str, required=False)
    if kind is not None and kind != "geopose":
        raise GeoPoseRequestError("type", f"must be 'geopose', got {kind!r}")
    readings = _get(body, "sensorReadings", "", dict)
    cameras = _get(readings, "cameraReadings", "sensorReadings", list)
    if not cameras:
        raise GeoPoseRequestError("sensorReadings.cameraReadings", "holds no camera reading (an image is needed)")
    field = "sensorReadings.cameraReadings[0]"
    reading = cameras[0]
    if not isinstance(reading, dict):
        raise GeoPoseRequestError(field, "must be a CameraReading object")
    fmt = _get(reading, "imageFormat", field, str, required=False)
    if fmt is not None and fmt.upper() == "DEPTH":
        raise GeoPoseRequestError(f"{field}.imageFormat", "DEPTH images cannot be localized")
    orientation = _get(reading, "imageOrientation", field, dict, required=False)
    if orientation:
        rotation = _number(orientation, "rotation", f"{field}.imageOrientation", required=False) or 0.0
        mirrored = _get(orientation, "mirrored", f"{field}.imageOrientation", bool, required=False)
        if rotation % 360.0 != 0.0 or mirrored:
            raise GeoPoseRequestError(f"{field}.imageOrientation", f"rotation {rotation:g} / mirrored {mirrored} is "
                                      "not supported: send the image as the camera sees it (rotation 0, not mirrored)")
    image = _decode_image(reading, field, max_pixels)
    height, width = image.shape[:2]
    size = _get(reading, "size", field, list, required=False)
    if size is not None and list(size) != [width, height]:
        raise GeoPoseRequestError(f"{field}.size", f"is {size} but the image is [{width}, {height}] (width, height)")
    camera = _camera(reading, field, width, height)
    return GeoPoseQuery(image, camera, _prior(body, readings, default_prior_radius_m), request_id)


# --- response -----------------------------------------------------------------------------------------
def geopose_response(
    request_id: str,
    pose: Pose | None,
    georef: GeoReference,
    accuracy: tuple[float, float] | None = None,
    timestamp: float | None = None,
    body_frame: str = FORWARD_LEFT_UP,
    reason: str = "not localized",
) -> dict[str, Any]:
    """The ``GeoPoseResp`` of a localized query.

    Args:
        request_id: the request's ``id`` (echoed).
        pose: ``cam_from_world`` in the map world, or ``None`` when the query was not localized.
        georef: the map's geo-reference.
        accuracy: ``(position in metres, orientation in degrees)``; ``None``: unknown, written as ``-1``.
        timestamp: milliseconds since the Unix epoch (the request's); ``None``: now.
        body_frame: the axes of the orientation (:data:`~visloc.geometry.geo.BODY_FRAMES`).
        reason: why there is no pose (with ``pose=None``).

    Returns:
        ``{"id", "timestamp", "type": "geopose", "accuracy": {"position", "orientation"}, "geopose":
        {"position": {"lat", "lon", "h"}, "quaternion": {"x", "y", "z", "w"}}}``; without a pose,
        ``{"id", "timestamp", "type", "error": reason}`` (the protocol defines no failure answer).
    """
    out: dict[str, Any] = {"id": request_id, "timestamp": time.time() * 1000.0 if timestamp is None else timestamp,
                           "type": "geopose"}
    if pose is None:
        out["error"] = reason
        return out
    position, orientation = accuracy if accuracy is not None else (UNKNOWN_ACCURACY, UNKNOWN_ACCURACY)
    out["accuracy"] = {"position": float(position), "orientation": float(orientation)}
    out["geopose"] = geopose_from_pose(pose, georef, body_frame).to_json()
    return out


def answer_geopose_request(
    body: Any,
    localizer: Localizer,
    georef: GeoReference,
    body_frame: str = FORWARD_LEFT_UP,
    default_prior_radius_m: float | None = None,
    max_pixels: int | None = None,
    within: Callable[[MapPrior], Collection[str]] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Answer ``POST /geopose``: parse the ``GeoPoseReq``, localize its image, return the ``GeoPoseResp``.

    Args:
        body: the request JSON.
        localizer: the map's :class:`~visloc.localization.localize.Localizer` (``localize_image`` is called).
        georef: the map's geo-reference (:func:`visloc.localization.georef.read_map_georef`).
        body_frame / default_prior_radius_m / max_pixels: see :func:`geopose_response` and
            :func:`parse_geopose_request`.
        within: the database images a prior in the map world leaves (e.g. ``MapEngine.within``, or
            :func:`~visloc.localization.prior.names_within_radius` over the map's camera centres); with it, the
            request's prior restricts retrieval (``localize_image(..., within=...)``); without it, the prior
            is parsed and validated only.

    Returns:
        ``(HTTP status, JSON body)``: ``200`` and the ``GeoPoseResp``; ``404`` and ``{"id", "timestamp",
        "type", "error"}`` when the image could not be localized; ``422`` and ``{"detail": message}``
        for a malformed request (the message names the field).

    The server's route (:mod:`visloc.service.geopose_routes`) runs the same steps through its work queue.
    """
    try:
        query = parse_geopose_request(body, default_prior_radius_m, max_pixels)
    except GeoPoseRequestError as e:
        return e.status, {"detail": str(e)}
    timestamp = body.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        timestamp = None
    name = f"geopose/{query.request_id}"
    if within is not None and query.prior is not None:
        names = within(query.prior.in_map(georef))
        result = localizer.localize_image(query.image, query.camera, name=name, within=names)
    else:
        result = localizer.localize_image(query.image, query.camera, name=name)
    response = geopose_response(query.request_id, result.pose, georef, timestamp=timestamp, body_frame=body_frame,
                                reason=f"not localized ({result.status})")
    return (200 if result.pose is not None else 404), response
