"""hloc / COLMAP pose files: ``name qw qx qy qz tx ty tz`` per line, world-to-camera.

Lines starting with ``#`` and blank lines are ignored. Names may contain ``/`` but not spaces
(as in hloc). Errors name the file and the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..errors import InputError
from ..geometry.pose import InvalidPoseError, Pose
from .atomic import atomic_open
from .text import data_lines


def read_poses(path: str | Path) -> dict[str, Pose]:
    """Read an hloc pose file into ``{name: Pose}`` (``cam_from_world``).

    Raises:
        InputError: the file is missing, a line is malformed or holds an invalid pose, or an image name
            is listed twice (both line numbers are named: which pose is meant is unknown).
    """
    poses: dict[str, Pose] = {}
    first_line: dict[str, int] = {}
    for lineno, parts in data_lines(path, "pose file"):
        if len(parts) != 8:
            raise InputError(path, f"line {lineno}: expected 'name qw qx qy qz tx ty tz', got {len(parts)} fields")
        name = parts[0]
        if name in first_line:
            raise InputError(path, f"line {lineno}: image {name} is listed twice (lines {first_line[name]} "
                                   f"and {lineno})")
        first_line[name] = lineno
        try:
            values = [float(v) for v in parts[1:]]
            poses[name] = Pose.from_qt(values[:4], values[4:])
        except (ValueError, InvalidPoseError) as e:
            raise InputError(path, f"line {lineno} ({name}): {e}") from None
    return poses


def format_pose_line(name: str, pose: Pose) -> str:
    q, t = pose.qvec, pose.t
    return f"{name} " + " ".join(f"{v:.10g}" for v in (*q, *t))


def write_poses(path: str | Path, poses: Mapping[str, Pose]) -> None:
    """Write ``{name: Pose}`` atomically in hloc format (names must not contain whitespace)."""
    with atomic_open(path) as f:
        for name, pose in poses.items():
            if any(c.isspace() for c in name):
                raise ValueError(f"image name {name!r} contains whitespace; hloc pose files cannot hold it")
            f.write(format_pose_line(name, pose) + "\n")
