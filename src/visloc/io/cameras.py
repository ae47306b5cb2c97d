"""Camera lists in hloc's query-list format: ``name MODEL WIDTH HEIGHT params...`` per line."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..geometry.camera import Camera, InvalidCameraError
from .atomic import write_text
from .text import data_lines


def read_cameras(path: str | Path) -> dict[str, Camera]:
    """Read ``{name: Camera}``; errors name the file and the line.

    Raises:
        InputError: the file is missing, a line is malformed, or an image name is listed twice (both
            line numbers are named).
    """
    cameras: dict[str, Camera] = {}
    first_line: dict[str, int] = {}
    for lineno, parts in data_lines(path, "camera file"):
        if parts[0] in first_line:
            raise InputError(path, f"line {lineno}: image {parts[0]} is listed twice (lines {first_line[parts[0]]} "
                                   f"and {lineno})")
        first_line[parts[0]] = lineno
        try:
            cameras[parts[0]] = Camera.from_colmap_string(" ".join(parts[1:]))
        except InvalidCameraError as e:
            raise InputError(path, f"line {lineno} ({parts[0]}): {e}") from None
    return cameras


def format_camera_line(name: str, camera: Camera) -> str:
    """``name MODEL W H params...``: one line of a camera file (query-list format)."""
    return f"{name} {camera.to_colmap_string()}"


def write_cameras(path: str | Path, cameras: Mapping[str, Camera]) -> None:
    """Write ``{name: Camera}`` atomically."""
    write_text(path, "".join(format_camera_line(n, c) + "\n" for n, c in cameras.items()))
