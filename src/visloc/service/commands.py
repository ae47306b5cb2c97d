"""``visloc serve`` and ``visloc query``: thin wrappers over :func:`~visloc.service.app.create_app` and
:mod:`visloc.client`. This module imports only typer; each command imports what it runs."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError, InputError, VislocError
from ..runtime import limit_malloc_arenas

logger = logging.getLogger(__name__)


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped).

    Raises:
        InputError: the file is missing, unreadable, not UTF-8 or empty.
    """
    if not path.is_file():
        raise InputError(path, "token file does not exist")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"cannot read the token file ({e})") from None
    if not token:
        raise InputError(path, "token file is empty")
    return token


def serve(
    map_dir: Annotated[Path, typer.Argument(metavar="MAP", help="Map folder made by `visloc map build`.")],
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    method: Annotated[str, typer.Option(help="Default pose estimator: auto, pnp, essential, relpose or unified "
                                             "(a request may ask for another).")] = "auto",
    workers: Annotated[int, typer.Option(help="Worker threads that run the localizer (its calls are serialized).")]
    = 1,
    queue_size: Annotated[int, typer.Option(
        help="Requests waiting beyond the running ones; more get 429 (a short queue keeps the answered requests' "
             "latency bounded: docs/results/service.md).")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds per request before a 504.")] = 30.0,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a request has to send its whole body; slower gets 408 and the connection closed.")] = 30.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB; larger gets 413.")] = 20.0,
    max_megapixels: Annotated[float, typer.Option(help="Largest image in megapixels; larger gets 413.")] = 40.0,
    token_file: Annotated[Path | None, typer.Option(
        help="File holding a bearer token that /v1/localize and /v1/retrieve requests must send.")] = None,
) -> None:
    """Serve localization over HTTP: POST /v1/localize, /v1/retrieve; GET /v1/health, /metrics, /docs."""
    import uvicorn

    from ..localization.localize import LocalizeConfig
    from ..localization.map import MANIFEST
    from .app import create_app
    from .config import ServiceConfig

    if not (map_dir / MANIFEST).is_file():
        what = "does not exist" if not map_dir.exists() else f"is not a visloc map (no {MANIFEST})"
        raise InputError(map_dir, f"map folder {what}; build one with `visloc map build`")
    for option, value in (("--max-body-mb", max_body_mb), ("--max-megapixels", max_megapixels)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{option} must be a positive number, got {value}")
    config = ServiceConfig(max_body_bytes=int(max_body_mb * 1024 * 1024), max_pixels=int(max_megapixels * 1e6),
                           workers=workers, queue_size=queue_size,
                           timeout_s=timeout, body_timeout_s=body_timeout,
                           token=read_token(token_file) if token_file else None)
    failures: list[BaseException] = []

    def stop(error: BaseException) -> None:
        failures.append(error)
        server.should_exit = True

    limit_malloc_arenas()
    app = create_app(map_dir, config, LocalizeConfig(method), on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info",
                                           timeout_graceful_shutdown=int(timeout) + 5))
    logger.info("serving %s on http://%s:%d (docs: /docs)", map_dir, host, port)
    server.run()
    if failures:
        error = failures[0]
        raise error if isinstance(error, VislocError) else VislocError(f"{map_dir}: cannot load the map ({error})")


def query(
    url: Annotated[str, typer.Argument(metavar="URL", help="The server, e.g. http://127.0.0.1:8080.")],
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="Query image (JPEG or PNG).")],
    camera: Annotated[str | None, typer.Option(
        help="Intrinsics 'MODEL W H params...', e.g. 'PINHOLE 640 480 525 525 319.5 239.5' (default: the "
             "server falls back on the image's EXIF focal length).")] = None,
    method: Annotated[str | None, typer.Option(help="Pose estimator (default: the server's).")] = None,
    retrieve: Annotated[bool, typer.Option("--retrieve", help="Only retrieve similar map images.")] = False,
    num: Annotated[int | None, typer.Option(help="--retrieve: images to return.")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the server's bearer token.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's whole JSON answer.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 120.0,
) -> None:
    """Ask a `visloc serve` server where IMAGE was taken (or, with --retrieve, what it looks like)."""
    from .. import client
    from ..geometry.camera import Camera, InvalidCameraError

    if not image.is_file():
        raise InputError(image, "image file does not exist")
    cam = None
    if camera is not None:
        try:
            cam = Camera.from_colmap_string(camera)
        except InvalidCameraError as e:
            raise ConfigError(f"--camera {camera!r}: {e}") from None
    token = read_token(token_file) if token_file else None
    if retrieve:
        ranked = client.retrieve(url, image, num=num, token=token, timeout=timeout)
        if as_json:
            typer.echo(json.dumps([{"name": n, "score": s} for n, s in ranked], indent=2))
            return
        for n, s in ranked:
            typer.echo(f"{s:.4f} {n}")
        return
    answer = client.localize(url, image, cam, token=token, method=method, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(answer.answer, indent=2))
        return
    if answer.pose is None:
        typer.echo(f"{image.name}: not localized ({answer.status})")
        return
    typer.echo(f"{image.name} {answer.answer['pose']['line']}")
    typer.echo(f"  centre {' '.join(f'{c:.4f}' for c in answer.pose.center)}, {answer.num_inliers} inliers, "
               f"{len(answer.support)} supporting images, intrinsics from the {answer.camera_source}, "
               f"{answer.timings.get('total', 0.0):.3f} s")


__all__ = ["query", "read_token", "serve"]
