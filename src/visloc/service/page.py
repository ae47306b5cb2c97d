"""The web page of the server and the read-only routes it needs.

``GET /`` is a plain HTML page (``static/index.html``, ``static/app.js``, ``static/style.css``: package data,
no build step, nothing loaded from elsewhere): upload or drop a photo, and it shows the pose on a top view of
the map with the database cameras, the retrieved images and the matches. It asks:

* ``GET /v1/map``: the database images, their camera centres and viewing directions in the map's world frame
  (:class:`MapAnswer`);
* ``GET /v1/images/{name}``: a JPEG thumbnail of a database image (only names of the map are served);
* ``POST /v1/localize`` with ``details=true``: the usual answer plus ``details``, the query's matches per
  retrieved image (:func:`match_details`).

``/`` and ``/static/...`` need no token (the page holds none; the user types it in); ``/v1/map`` and
``/v1/images`` need the server's token when it has one, as ``/v1/localize`` does.
"""

from __future__ import annotations

import hmac
import io
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, ImageOps
from pydantic import BaseModel, Field

from ..geometry.camera import Camera
from ..geometry.epipolar import essential_from_pose, sampson_distance
from ..geometry.pose import Pose
from ..localization.map import Map
from .errors import RequestError, invalid

if TYPE_CHECKING:
    from ..localization.estimators import QueryEvidence
    from ..localization.localize import QueryResult
    from .engine import Engine

#: Matches per retrieved image in a ``details`` answer (those that agree with the pose first).
MAX_PAIRS = 200
#: A match agrees with the pose when its reprojection (or epipolar) error is under this many pixels.
AGREE_PX = 4.0
#: Thumbnail sizes (longest side, pixels): default, smallest and largest accepted.
THUMBNAIL_PX, MIN_THUMBNAIL_PX, MAX_THUMBNAIL_PX = 320, 16, 1024
#: The page's files (package data under ``visloc/service/static``) and their media types.
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}
#: The world frame's up axis: visloc maps (the embedded world, geo-referenced maps) are +z up.
UP = (0.0, 0.0, 1.0)


class MapImage(BaseModel):
    name: str
    size: list[int] = Field(description="Width and height of the image in pixels.")
    center: list[float] | None = Field(description="Camera centre in world coordinates (null: no pose).")
    direction: list[float] | None = Field(description="Unit viewing direction (the camera's +z) in world "
                                                      "coordinates (null: no pose).")


class MapAnswer(BaseModel):
    map: str = Field(description="The map folder's name.")
    up: list[float] = Field(description="The world frame's up axis; the page's top view looks down it.")
    has_poses: bool = Field(description="False for a retrieval-only map (images without poses).")
    images: list[MapImage] = Field(description="The database images, in the map's order.")


def static_text(file: str) -> str:
    """A file of the page, from the package data (works from a wheel and from an editable install)."""
    return resources.files("visloc.service").joinpath("static", file).read_text(encoding="utf-8")


def parse_details(form: dict[str, Any]) -> bool:
    """The ``details`` form field: ``true`` / ``false`` (also ``1`` / ``0``, ``yes`` / ``no``; absent: false).

    Raises:
        RequestError: 422 any other value.
    """
    value = str(form.get("details") or "false").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise invalid(f"details must be true or false, not {value!r}")


def localize_in_worker(engine: Engine, image: np.ndarray, camera: Camera, name: str, method: str | None,
                       details: bool) -> tuple[QueryResult, dict[str, Any] | None]:
    """What ``/v1/localize`` runs in its worker: the engine's result and, when asked, the ``details`` of
    its matches (an engine without evidence, e.g. a test's fake, gives details without images)."""
    if not details:
        return engine.localize(image, camera, name, method), None
    height, width = image.shape[:2]
    with_evidence = getattr(engine, "localize_with", None)
    if with_evidence is None:
        return engine.localize(image, camera, name, method), _details_header(width, height, [])
    result, images = with_evidence(image, camera, name, method, match_details)
    return result, _details_header(width, height, images)


def _details_header(width: int, height: int, images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"query_size": [width, height], "max_pairs": MAX_PAIRS, "agree_px": AGREE_PX, "images": images}


def match_details(map_: Map, result: QueryResult, evidence: QueryEvidence,
                  max_pairs: int = MAX_PAIRS) -> list[dict[str, Any]]:
    """Per retrieved image with matches, in retrieval order: ``{name, rank, support, size, matches,
    agree, pairs}``; ``pairs`` holds at most ``max_pairs`` ``[qx, qy, dbx, dby, agree]`` (keypoints in
    pixels, visloc's convention: the top-left pixel's centre is ``(0, 0)``), those that agree with the pose
    first, then by match score. ``agree`` is 1 when the match's error under the pose is below
    :data:`AGREE_PX` (reprojection of the database keypoint's 3D point, or the Sampson distance to the
    epipolar line without one; distortion ignored), 0 when not, ``None`` without a pose."""
    out: list[dict[str, Any]] = []
    if evidence.features is None:
        return out
    query_kp = np.asarray(evidence.features.keypoints, dtype=np.float64)
    support = set(result.support)
    for rank, db in enumerate(result.retrieved, start=1):
        m = np.asarray(evidence.matches.get(db, np.zeros((0, 2), int)), dtype=np.int64).reshape(-1, 2)
        if not len(m):
            continue
        db_features = map_.local_features(db)
        q, d = query_kp[m[:, 0]], np.asarray(db_features.keypoints, dtype=np.float64)[m[:, 1]]
        agree = _agreement(map_, result.pose, evidence.camera, db, m[:, 1], q, d)
        scores = np.asarray(evidence.match_scores.get(db, np.ones(len(m))), dtype=np.float64).reshape(-1)
        if len(scores) != len(m):
            scores = np.ones(len(m))
        order = np.lexsort((-scores, -(agree if agree is not None else np.zeros(len(m)))))[:max_pairs]
        pairs = [[round(float(q[i, 0]), 1), round(float(q[i, 1]), 1), round(float(d[i, 0]), 1),
                  round(float(d[i, 1]), 1), None if agree is None else int(agree[i])] for i in order]
        out.append({"name": db, "rank": rank, "support": db in support, "size": list(db_features.image_size),
                    "matches": len(m), "agree": None if agree is None else int(agree.sum()), "pairs": pairs})
    return out


def _agreement(map_: Map, pose: Pose | None, camera: Camera, db: str, db_index: np.ndarray, q: np.ndarray,
               d: np.ndarray) -> np.ndarray | None:
    """``(M,)`` 0/1: whether each match agrees with ``pose`` (``None`` without a pose)."""
    if pose is None:
        return None
    error = np.full(len(q), np.inf)
    points = map_.points3D(db)
    has_point = np.zeros(len(q), bool)
    if points is not None:
        X = points[db_index]
        has_point = np.all(np.isfinite(X), axis=1)
        if has_point.any():
            cam = pose.transform(X[has_point])
            front = cam[:, 2] > 1e-9
            err = np.full(len(cam), np.inf)
            err[front] = np.linalg.norm(camera.project_pinhole(cam[front]) - q[has_point][front], axis=1)
            error[has_point] = err
    db_pose, db_camera = map_.poses.get(db), map_.cameras.get(db)
    rest = ~has_point
    if rest.any() and db_pose is not None and db_camera is not None:
        relative = pose @ db_pose.inverse()  # query camera from database camera
        if np.linalg.norm(relative.t) > 1e-9:
            E = essential_from_pose(relative)
            x0, x1 = _normalized(db_camera, d[rest]), _normalized(camera, q[rest])
            error[rest] = sampson_distance(E, x0, x1) * float(np.mean(camera.focal))
    return (error < AGREE_PX).astype(np.int64)


def _normalized(camera: Camera, points: np.ndarray) -> np.ndarray:
    (fx, fy), (cx, cy) = camera.focal, camera.principal_point
    return (points - np.array([cx, cy])) / np.array([fx, fy])


def map_answer(map_: Map) -> MapAnswer:
    """The database images of ``map_`` with their cameras, for the page's top view."""
    images = []
    for name in map_.names:
        camera, pose = map_.cameras[name], map_.poses.get(name)
        images.append(MapImage(name=name, size=[camera.width, camera.height],
                               center=None if pose is None else [float(v) for v in pose.center],
                               direction=None if pose is None else [float(v) for v in pose.R[2]]))
    return MapAnswer(map=map_.root.name, up=list(UP), has_poses=map_.has_poses, images=images)


def _thumbnail_size(text: str | None) -> int:
    if text is None or not text.strip():
        return THUMBNAIL_PX
    try:
        size = int(text)
    except ValueError:
        raise invalid(f"size must be an integer, got {text!r}") from None
    if not MIN_THUMBNAIL_PX <= size <= MAX_THUMBNAIL_PX:
        raise invalid(f"size must be between {MIN_THUMBNAIL_PX} and {MAX_THUMBNAIL_PX}, got {size}")
    return size


@lru_cache(maxsize=512)
def _thumbnail(path: Path, size: int) -> bytes:
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def add_page_routes(app: FastAPI) -> None:
    """Add ``GET /``, ``GET /static/{file}``, ``GET /v1/map`` and ``GET /v1/images/{name}`` to a
    :func:`~visloc.service.app.create_app` app (its ``app.state.service`` holds the config and the engine)."""
    state = app.state.service
    token = state.config.token
    bearer = HTTPBearer(auto_error=False, description="The server's token (visloc serve --token-file).")

    def check_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = b"" if credentials is None else credentials.credentials.encode()
        if not hmac.compare_digest(given, token.encode()):
            raise RequestError(401, "missing or wrong bearer token (send 'Authorization: Bearer TOKEN')",
                               {"WWW-Authenticate": "Bearer"})

    auth = [Depends(check_token)] if token is not None else []

    def the_map() -> Map:
        found = getattr(state.require_engine(), "map", None)
        if not isinstance(found, Map):
            raise RequestError(404, "this server's engine has no map to show")
        return found

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static_text("index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/static/{file}", include_in_schema=False)
    async def static(file: str) -> Response:
        if file not in STATIC_FILES:
            raise RequestError(404, f"no static file {file!r}")
        return Response(static_text(file), media_type=STATIC_FILES[file], headers={"Cache-Control": "no-cache"})

    @app.get("/v1/map", response_model=MapAnswer, dependencies=auth, summary="The map's database cameras",
             responses={401: {"description": "Missing or wrong bearer token."},
                        404: {"description": "The engine has no map to show."},
                        503: {"description": "The map is still loading (or failed to load)."}})
    async def map_route() -> MapAnswer:
        """The database images with their camera centres and viewing directions in the map's world frame
        (world-to-camera poses inverted), and the frame's up axis (+z): what the web page draws."""
        return map_answer(the_map())

    @app.get("/v1/images/{name:path}", dependencies=auth, summary="A database image's thumbnail",
             response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG thumbnail."},
                        401: {"description": "Missing or wrong bearer token."},
                        404: {"description": "No database image of that name (or its file is gone)."},
                        503: {"description": "The map is still loading (or failed to load)."}})
    async def image_route(name: str, size: str | None = Query(
            None, description=f"Longest side in pixels, {MIN_THUMBNAIL_PX} to {MAX_THUMBNAIL_PX} "
                              f"(default {THUMBNAIL_PX}).")) -> Response:
        """A JPEG thumbnail (longest side ``size``) of the database image ``name`` (a name of the map's
        image list; nothing else is read)."""
        pixels = _thumbnail_size(size)
        map_ = the_map()
        path = map_.image_paths.get(name) if name in map_.cameras else None
        if path is None:
            raise RequestError(404, f"no database image {name!r} in the map")
        try:
            data = await run_in_threadpool(_thumbnail, path, pixels)
        except (OSError, ValueError) as e:  # the file moved since the map was built, or is unreadable
            raise RequestError(404, f"the image file of {name!r} cannot be read ({type(e).__name__})") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})
