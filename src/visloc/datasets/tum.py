"""TUM RGB-D sequence reader.

Layout (one sequence per folder)::

    rgb/<timestamp>.png          colour images; the file name is the capture time
    rgb.txt                      optional: "timestamp filename" per line
    depth/<timestamp>.png        optional, 16-bit, 5000 units per metre, registered to rgb
    depth.txt                    optional: "timestamp filename" per line
    groundtruth.txt              "timestamp tx ty tz qx qy qz qw" (camera-to-world, quaternion w LAST)
    camera.txt                   optional intrinsics, "width height fx fy cx cy [k1 k2 p1 p2 [k3]]"

``groundtruth.txt`` holds **camera-to-world** poses with the quaternion **x-first**; they are turned
into visloc's ``cam_from_world`` :class:`~visloc.geometry.Pose` here and nowhere else. Each colour
frame gets the ground-truth row nearest in time (within ``max_dt``), as TUM's ``associate.py`` does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import CAMERA_MODELS, Camera, InvalidCameraError, InvalidPoseError, Pose
from ..io.images import IMAGE_SUFFIXES
from ..io.text import data_lines
from ._common import select_split, unknown_split
from .base import Frame, FrameSet, Skipped

logger = logging.getLogger(__name__)

#: TUM's default intrinsics (the ROS default for the Kinect), used when nothing better is known.
DEFAULT_CAMERA = Camera.pinhole(525.0, 525.0, 319.5, 239.5, 640, 480)
#: TUM depth PNGs store 5000 units per metre.
DEPTH_SCALE = 5000.0
#: Largest time difference (s) when associating an image with a ground-truth or depth sample.
DEFAULT_MAX_DT = 0.02
TUM_SPLITS = ("all", "even", "odd")
#: ``train`` / ``test`` are accepted for callers that pass them to every format; TUM defines no such
#: split, so they read every frame (with a warning: use ``even`` / ``odd`` to hold frames out).
_SPLIT_ALIASES = {"train": "all", "test": "all"}

GROUNDTRUTH_FILE = "groundtruth.txt"
CAMERA_FILE = "camera.txt"
_DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")
_PINHOLE_KEYS = ("fx", "fy", "cx", "cy")


@dataclass(frozen=True)
class Trajectory:
    """Rows of a TUM trajectory file, sorted by time.

    Attributes:
        path: the file.
        timestamps: ``(N,)`` seconds.
        values: ``(N, 7)`` ``tx ty tz qx qy qz qw`` as stored (camera-to-world, quaternion w last).
        lines: ``(N,)`` 1-based line numbers in the file, for messages.
    """

    path: Path
    timestamps: np.ndarray
    values: np.ndarray
    lines: np.ndarray

    def pose(self, index: int) -> Pose:
        """Row ``index`` as ``cam_from_world``.

        Raises:
            InvalidPoseError: NaN, or a quaternion that is not unit length.
        """
        tx, ty, tz, qx, qy, qz, qw = self.values[index]
        world_from_cam = Pose.from_qt((qw, qx, qy, qz), (tx, ty, tz))
        return world_from_cam.inverse()


def read_trajectory(path: str | Path) -> Trajectory:
    """Read a TUM trajectory file (``timestamp tx ty tz qx qy qz qw`` per line).

    Raises:
        InputError: the file is missing, or a line does not hold 8 numbers (the message names the line).
    """
    path = Path(path)
    stamps, values, lines = [], [], []
    for lineno, parts in data_lines(path, "trajectory file", commas=True):
        if len(parts) != 8:
            raise InputError(path, f"line {lineno}: expected 'timestamp tx ty tz qx qy qz qw', got {len(parts)} fields")
        try:
            numbers = [float(p) for p in parts]
        except ValueError as e:
            raise InputError(path, f"line {lineno}: {e}") from None
        if not np.isfinite(numbers[0]):
            raise InputError(path, f"line {lineno}: timestamp is not finite")
        stamps.append(numbers[0])
        values.append(numbers[1:])
        lines.append(lineno)
    if not stamps:
        raise InputError(path, "trajectory file holds no pose")
    order = np.argsort(stamps, kind="stable")
    return Trajectory(
        path,
        np.asarray(stamps, dtype=np.float64)[order],
        np.asarray(values, dtype=np.float64).reshape(-1, 7)[order],
        np.asarray(lines)[order],
    )


def _camera_from_numbers(size: list[str], named: dict[str, float]) -> Camera:
    width, height = (int(float(v)) for v in size)
    pinhole = [named[k] for k in _PINHOLE_KEYS]
    dist = [named.get(k, 0.0) for k in _DISTORTION_KEYS]
    if not any(dist):
        return Camera("PINHOLE", width, height, tuple(pinhole))
    if dist[4] == 0.0:
        return Camera("OPENCV", width, height, (*pinhole, *dist[:4]))
    return Camera("FULL_OPENCV", width, height, (*pinhole, *dist, 0.0, 0.0, 0.0))


def read_camera_file(path: str | Path) -> Camera:
    """Read intrinsics from a ``camera.txt``.

    Accepted contents (comments with ``#``): ``width height fx fy cx cy [k1 k2 p1 p2 [k3]]``, the same
    with ``name=value`` tokens after the size (``fx=520.9 ... k3=0.9``), or a COLMAP camera string
    (``PINHOLE 640 480 fx fy cx cy``). OpenCV distortion becomes COLMAP ``OPENCV`` (k3 = 0) or
    ``FULL_OPENCV`` (k4..k6 = 0); no distortion becomes ``PINHOLE``.

    Raises:
        InputError: the file is missing or cannot be parsed.
    """
    path = Path(path)
    tokens = [t for _, parts in data_lines(path, "camera file", commas=True) for t in parts]
    if not tokens:
        raise InputError(path, "camera file is empty")
    try:
        if tokens[0] in CAMERA_MODELS:
            return Camera.from_colmap_string(" ".join(tokens))
        plain = [t for t in tokens if "=" not in t]
        named = {k.strip().lower(): float(v) for k, v in (t.split("=", 1) for t in tokens if "=" in t)}
        if named:
            if len(plain) != 2:
                raise ValueError(f"expected 'width height' before the name=value pairs, got {plain}")
            missing = [k for k in _PINHOLE_KEYS if k not in named]
            if missing:
                raise ValueError(f"missing {missing}")
            unknown = sorted(set(named) - set(_PINHOLE_KEYS) - set(_DISTORTION_KEYS))
            if unknown:
                raise ValueError(f"unknown keys {unknown}")
            return _camera_from_numbers(plain, named)
        if len(plain) not in (6, 10, 11):
            raise ValueError(f"expected 6, 10 or 11 numbers (width height fx fy cx cy [k1 k2 p1 p2 [k3]]), got {len(plain)}")
        numbers = [float(t) for t in plain[2:]]
        keys = _PINHOLE_KEYS + _DISTORTION_KEYS
        return _camera_from_numbers(plain[:2], dict(zip(keys, numbers, strict=False)))
    except (ValueError, InvalidCameraError) as e:
        raise InputError(path, f"cannot parse intrinsics: {e}") from None


def _timestamp_list(root: Path, kind: str) -> list[tuple[float, Path]] | None:
    """``(timestamp, file)`` pairs of ``<kind>.txt`` or else of the ``<kind>/`` folder, time-sorted.

    Returns ``None`` when neither exists. Files in a folder whose name is not a number are ignored with
    a warning (they cannot be placed in time).
    """
    listing = root / f"{kind}.txt"
    folder = root / kind
    entries: list[tuple[float, Path]] = []
    if listing.is_file():
        for lineno, parts in data_lines(listing, f"{kind} list", commas=True):
            if len(parts) < 2:
                raise InputError(listing, f"line {lineno}: expected 'timestamp filename'")
            try:
                stamp = float(parts[0])
            except ValueError:
                raise InputError(listing, f"line {lineno}: timestamp {parts[0]!r} is not a number") from None
            entries.append((stamp, root / parts[1]))
    elif folder.is_dir():
        for path in folder.iterdir():
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            try:
                entries.append((float(path.stem), path))
            except ValueError:
                logger.warning("%s: file name is not a TUM timestamp; ignored", path)
    else:
        return None
    entries.sort(key=lambda e: e[0])
    return entries


def _nearest(sorted_stamps: np.ndarray, t: float) -> tuple[int, float]:
    """Index of the nearest value in a sorted array and the absolute difference."""
    i = int(np.searchsorted(sorted_stamps, t))
    candidates = [j for j in (i - 1, i) if 0 <= j < len(sorted_stamps)]
    j = min(candidates, key=lambda k: abs(sorted_stamps[k] - t))
    return j, float(abs(sorted_stamps[j] - t))


def _resolve_camera(root: Path, camera: Camera | None) -> Camera:
    camera_file = root / CAMERA_FILE
    if camera is not None:
        if camera_file.is_file():
            logger.info("%s: ignored, the camera given by the caller is used", camera_file)
        return camera
    if camera_file.is_file():
        return read_camera_file(camera_file)
    logger.warning(
        "%s: no %s and no camera given; using TUM's default intrinsics %s",
        root, CAMERA_FILE, DEFAULT_CAMERA.to_colmap_string(),
    )
    return DEFAULT_CAMERA


def read_tum(
    root: str | Path,
    split: str = "all",
    camera: Camera | None = None,
    max_dt: float = DEFAULT_MAX_DT,
    require_poses: bool = True,
    with_depth: bool = True,
) -> FrameSet:
    """Read a TUM RGB-D sequence folder.

    Args:
        root: the sequence folder (``rgb/`` or ``rgb.txt``, ``groundtruth.txt``).
        split: ``all``, ``even`` or ``odd`` (position of the frame in time order, before any frame is
            skipped). ``train`` and ``test`` read all frames, with a warning (TUM defines no split).
        camera: intrinsics; default ``camera.txt`` in ``root``, else TUM's default PINHOLE
            525 525 319.5 239.5 (with a warning). A given camera takes precedence over ``camera.txt``.
        max_dt: largest time difference (s) between an image and its ground-truth / depth sample.
        require_poses: ``True``: frames without ground truth are listed in :attr:`FrameSet.skipped`;
            ``False``: they are kept with ``pose=None`` (and ``groundtruth.txt`` may be absent).
        with_depth: attach the associated ``depth/`` image (registered, 5000 units per metre).

    Returns:
        Frames named ``rgb/<file>`` in time order, with ``cam_from_world`` poses.

    Raises:
        InputError: no ``rgb/`` nor ``rgb.txt``, no image, a malformed ``rgb.txt`` / ``depth.txt`` /
            ``groundtruth.txt`` / ``camera.txt``, or no ``groundtruth.txt`` while ``require_poses``.
        ConfigError: unknown ``split``.
        ValueError: a negative ``max_dt``.
    """
    if split in _SPLIT_ALIASES:
        logger.warning("TUM sequences define no %r split; reading all frames (even/odd hold frames out)", split)
        split = _SPLIT_ALIASES[split]
    if split not in TUM_SPLITS:
        raise unknown_split(split, TUM_SPLITS, "a TUM sequence", "train and test read every frame")
    if max_dt < 0:
        raise ValueError(f"max_dt must be >= 0, got {max_dt}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "TUM folder does not exist")
    images = _timestamp_list(root, "rgb")
    if images is None:
        raise InputError(root, "not a TUM RGB-D folder: neither rgb/ nor rgb.txt")
    if not images:
        raise InputError(root / "rgb", "no images found")
    gt_path = root / GROUNDTRUTH_FILE
    trajectory = read_trajectory(gt_path) if (require_poses or gt_path.is_file()) else None
    depths = _timestamp_list(root, "depth") if with_depth else None
    depth_stamps = np.array([t for t, _ in depths]) if depths else None
    cam = _resolve_camera(root, camera)

    frames: list[Frame] = []
    skipped: list[Skipped] = []
    for stamp, image_path in select_split(images, split, TUM_SPLITS, "a TUM sequence"):
        name = image_path.relative_to(root).as_posix()
        if not image_path.is_file():
            skipped.append(Skipped(name, image_path, "image listed in rgb.txt does not exist"))
            continue
        pose = None
        if trajectory is not None:
            index, dt = _nearest(trajectory.timestamps, stamp)
            line = int(trajectory.lines[index])
            if dt > max_dt:
                if require_poses:
                    reason = f"no ground truth within {max_dt} s (nearest is {dt:.3f} s away, line {line})"
                    skipped.append(Skipped(name, gt_path, reason))
                    continue
            else:
                try:
                    pose = trajectory.pose(index)
                except InvalidPoseError as e:
                    skipped.append(Skipped(name, gt_path, f"line {line}: invalid pose: {e}"))
                    continue
        depth_path = None
        if depths and depth_stamps is not None:
            j, ddt = _nearest(depth_stamps, stamp)
            if ddt <= max_dt and depths[j][1].is_file():
                depth_path = depths[j][1]
        frames.append(Frame(name, image_path, cam, pose, root.name, depth_path=depth_path, depth_scale=DEPTH_SCALE))

    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("TUM %s (%s): %d frames, %d skipped", root, split, len(frames), len(skipped))
    return FrameSet(root=root, frames=frames, skipped=skipped, format="tum")
