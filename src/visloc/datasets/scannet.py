"""ScanNet (and YFCC) image pairs with ground truth in SuperGlue's ``pairs_with_gt.txt`` format.

One pair per line, 38 whitespace-separated fields::

    name0 name1 rot0 rot1 K0(9, row-major) K1(9, row-major) T_0to1(16, row-major)

``T_0to1`` maps 3-D points from camera-0 coordinates into camera-1 coordinates (``X1 = R X0 + t``),
which is visloc's ``cam1_from_cam0`` :class:`~visloc.geometry.Pose` as it stands (converted here and
nowhere else). ``rot0`` / ``rot1`` are SuperGlue's EXIF rotation codes (multiples of 90 degrees
clockwise that SuperGlue applies when it loads the image); they are passed through, and the cameras
describe the images *as stored*.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import Camera, InvalidCameraError, InvalidPoseError, Pose
from ._common import image_size
from .base import Skipped

logger = logging.getLogger(__name__)

PAIRS_FILE = "pairs_with_gt.txt"
_NUM_FIELDS = 38


@dataclass(frozen=True)
class PairWithGT:
    """One image pair with its ground-truth relative pose.

    Attributes:
        name0, name1: image names as written in the pairs file.
        path0, path1: the image files.
        camera0, camera1: PINHOLE intrinsics of the stored images (size read from the files).
        rot0, rot1: SuperGlue rotation codes in {0, 1, 2, 3} (90 degrees clockwise each), as stored.
        cam1_from_cam0: ``X1 = R X0 + t`` (metres).
    """

    name0: str
    name1: str
    path0: Path
    path1: Path
    camera0: Camera
    camera1: Camera
    rot0: int
    rot1: int
    cam1_from_cam0: Pose


@dataclass
class PairSet:
    """Pairs read from one file, plus the pairs that could not be used and why.

    Iterating, ``len`` and indexing act on :attr:`pairs`.
    """

    path: Path
    pairs: list[PairWithGT]
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PairWithGT]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> PairWithGT:
        return self.pairs[index]


def _camera(K: np.ndarray, size: tuple[int, int]) -> Camera:
    if abs(K[0, 1]) > 1e-9 or not np.allclose(K[2], [0.0, 0.0, 1.0]) or abs(K[1, 0]) > 1e-9:
        raise InvalidCameraError(f"K must be [[fx 0 cx] [0 fy cy] [0 0 1]], got {K.tolist()}")
    return Camera.pinhole(K[0, 0], K[1, 1], K[0, 2], K[1, 2], *size)


def _parse_line(parts: list[str]) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    rot0, rot1 = int(parts[2]), int(parts[3])
    if rot0 not in range(4) or rot1 not in range(4):
        raise ValueError(f"rotation codes must be 0..3, got {rot0} {rot1}")
    numbers = np.array([float(v) for v in parts[4:]])
    return rot0, rot1, numbers[:9].reshape(3, 3), numbers[9:18].reshape(3, 3), numbers[18:].reshape(4, 4)


def read_scannet_pairs(path: str | Path, image_dir: str | Path | None = None) -> PairSet:
    """Read a SuperGlue ``pairs_with_gt.txt``.

    Args:
        path: the pairs file, or a folder that contains ``pairs_with_gt.txt``.
        image_dir: folder the image names are relative to; default ``images/`` next to the pairs
            file when it exists, else the pairs file's folder.

    Returns:
        The pairs in file order. Pairs with a missing / unreadable image, a non-rigid ``T_0to1`` or a
        bad ``K`` are listed in :attr:`PairSet.skipped` instead.

    Raises:
        InputError: the file is missing or empty, or a line does not hold 38 fields of the right types
            (the message names the line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / PAIRS_FILE
    if not path.is_file():
        raise InputError(path, "pairs file does not exist")
    if image_dir is None:
        image_dir = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    image_dir = Path(image_dir)

    pairs: list[PairWithGT] = []
    skipped: list[Skipped] = []
    sizes: dict[Path, tuple[int, int]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != _NUM_FIELDS:
            raise InputError(
                path, f"line {lineno}: expected {_NUM_FIELDS} fields (name0 name1 rot0 rot1 K0 K1 T_0to1), got {len(parts)}"
            )
        try:
            rot0, rot1, K0, K1, T = _parse_line(parts)
        except ValueError as e:
            raise InputError(path, f"line {lineno}: {e}") from None
        name0, name1 = parts[0], parts[1]
        label = f"{name0} {name1}"
        path0, path1 = image_dir / name0, image_dir / name1
        try:
            for p in (path0, path1):
                if p not in sizes:
                    sizes[p] = image_size(p)
        except InputError as e:
            skipped.append(Skipped(label, e.path, e.problem))
            continue
        try:
            cam1_from_cam0 = Pose.from_matrix(T)
            camera0, camera1 = _camera(K0, sizes[path0]), _camera(K1, sizes[path1])
        except (InvalidPoseError, InvalidCameraError) as e:
            skipped.append(Skipped(label, path, f"line {lineno}: {e}"))
            continue
        pairs.append(PairWithGT(name0, name1, path0, path1, camera0, camera1, rot0, rot1, cam1_from_cam0))
    if not pairs and not skipped:
        raise InputError(path, "pairs file holds no pair")
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("%s: %d pairs, %d skipped", path, len(pairs), len(skipped))
    return PairSet(path, pairs, skipped)
