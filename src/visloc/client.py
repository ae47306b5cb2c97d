"""A Python client of ``visloc serve``: :func:`localize` and :func:`retrieve` send one image and return the
answer; any answer other than 2xx (or no answer) raises :class:`ServiceError` with the server's reason.

    from visloc import client
    answer = client.localize("http://127.0.0.1:8080", "photo.jpg", "PINHOLE 640 480 525 525 319.5 239.5")
    if answer.pose is not None:
        print(answer.pose.qvec, answer.pose.t, answer.pose.center)
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from .errors import InputError, VislocError
from .geometry.camera import Camera
from .geometry.pose import Pose

#: Content types of the image files sent as they are.
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


class ServiceError(VislocError):
    """The server answered with an error status, or could not be reached.

    Attributes:
        url: the URL asked.
        status: the HTTP status (``None``: no answer).
        detail: the server's reason (its ``detail`` field) or what went wrong on the way.
        retry_after: a 429's or 503's ``Retry-After`` in seconds, else ``None``.
    """

    def __init__(self, url: str, status: int | None, detail: str, retry_after: float | None = None) -> None:
        self.url, self.status, self.detail, self.retry_after = url, status, detail, retry_after
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{url}: {what}: {detail}")


@dataclass(frozen=True)
class Localization:
    """The answer of ``/v1/localize``.

    Attributes:
        pose: world-to-camera (``cam_from_world``), or ``None`` when not localized.
        status: ``localized`` or why no pose was found.
        camera_source: ``request`` (the intrinsics sent) or ``exif`` (the server's fallback).
        retrieved: the database images and their retrieval scores, best first.
        answer: the whole JSON answer.
    """

    name: str
    pose: Pose | None
    status: str
    method: str
    camera: Camera
    camera_source: str
    num_inliers: int
    support: list[str]
    retrieved: list[tuple[str, float]]
    timings: dict[str, float]
    answer: dict[str, Any] = field(repr=False)

    @property
    def localized(self) -> bool:
        return self.pose is not None


def localize(
    url: str,
    image: str | Path | bytes | np.ndarray,
    camera: Camera | str | None = None,
    token: str | None = None,
    method: str | None = None,
    name: str | None = None,
    timeout: float = 120.0,
) -> Localization:
    """Localize one image with the server at ``url`` (e.g. ``http://127.0.0.1:8080``).

    Args:
        image: a JPEG / PNG file or its bytes (sent as they are), or an ``(H, W, 3)`` uint8 array (sent as
            a lossless PNG).
        camera: its intrinsics, a :class:`~visloc.geometry.camera.Camera` or a COLMAP camera line
            ``MODEL W H params...``; ``None`` lets the server use the image's EXIF focal length.
        token: the server's bearer token, if it has one.
        method: the pose estimator (default: the server's).

    Raises:
        ServiceError: a non-2xx answer (with the server's reason) or none.
        InputError: ``image`` is a file that does not exist.
    """
    data: dict[str, str] = {}
    if camera is not None:
        data["camera"] = camera.to_colmap_string() if isinstance(camera, Camera) else str(camera)
    if method:
        data["method"] = method
    if name:
        data["name"] = name
    d = _post(url, "/v1/localize", image, data, token, timeout)
    pose = None if d["pose"] is None else Pose.from_qt(d["pose"]["qvec"], d["pose"]["tvec"])
    c = d["camera"]
    return Localization(
        name=d["name"], pose=pose, status=d["status"], method=d["method"],
        camera=Camera(c["model"], c["width"], c["height"], tuple(c["params"])), camera_source=c["source"],
        num_inliers=d["num_inliers"], support=list(d["support"]),
        retrieved=[(r["name"], r["score"]) for r in d["retrieved"]], timings=dict(d["timings"]), answer=d)


def retrieve(
    url: str,
    image: str | Path | bytes | np.ndarray,
    num: int | None = None,
    token: str | None = None,
    timeout: float = 120.0,
) -> list[tuple[str, float]]:
    """The database images of the server's map most similar to ``image``, with their scores, best first
    (``num``: how many; default the server's). Raises as :func:`localize`."""
    data = {"num": str(num)} if num is not None else {}
    d = _post(url, "/v1/retrieve", image, data, token, timeout)
    return [(r["name"], r["score"]) for r in d["retrieved"]]


def _image_part(image: str | Path | bytes | np.ndarray) -> tuple[str, bytes, str]:
    if isinstance(image, np.ndarray):
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
        return "query.png", buffer.getvalue(), "image/png"
    if isinstance(image, (bytes, bytearray)):
        return "query", bytes(image), "application/octet-stream"
    path = Path(image)
    if not path.is_file():
        raise InputError(path, "image file does not exist")
    return path.name, path.read_bytes(), _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def _post(url: str, route: str, image: str | Path | bytes | np.ndarray, data: dict[str, str], token: str | None,
          timeout: float) -> dict[str, Any]:
    endpoint = url.rstrip("/") + route
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.post(endpoint, data=data, files={"image": _image_part(image)}, headers=headers,
                              timeout=timeout)
    except httpx.HTTPError as e:
        raise ServiceError(endpoint, None, f"{type(e).__name__}: {e}") from None
    if not response.is_success:
        try:
            detail = str(response.json()["detail"])
        except Exception:
            detail = response.text.strip()[:500] or response.reason_phrase
        retry = response.headers.get("retry-after")
        raise ServiceError(endpoint, response.status_code, detail,
                           float(retry) if retry and retry.replace(".", "", 1).isdigit() else None)
    try:
        return response.json()
    except ValueError:
        raise ServiceError(endpoint, response.status_code, "the answer is not JSON") from None
