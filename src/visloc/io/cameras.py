"""Camera lists in hloc's query-list format: ``name MODEL WIDTH HEIGHT params...`` per line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..geometry.camera import Camera, InvalidCameraError
from .atomic import write_text
from .text import data_lines


def read_cameras(path: str | Path) -> dict[str, Camera]:
    """Read ``{name: Camera}``; errors name the file and the line."""
    cameras: dict[str, Camera] = {}
    for lineno, parts in data_lines(path, "camera file"):
        try:
            cameras[parts[0]] = Camera.from_colmap_string(" ".join(parts[1:]))
        except InvalidCameraError as e:
            raise InputError(path, f"line {lineno} ({parts[0]}): {e}") from None
    return cameras


def write_cameras(path: str | Path, cameras: Mapping[str, Camera]) -> None:
    """Write ``{name: Camera}`` atomically."""
    write_text(path, "".join(f"{n} {c.to_colmap_string()}\n" for n, c in cameras.items()))
