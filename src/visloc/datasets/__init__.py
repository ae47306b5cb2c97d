"""Dataset readers: each turns a published folder layout into a :class:`FrameSet` of frames with
``cam_from_world`` ground truth (converted at the reader and nowhere else).

:func:`load_frames` picks the reader from a small registry (:data:`FORMATS`), detecting the layout
when asked to. ScanNet pair lists are not frame sets; read them with :func:`read_scannet_pairs`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..io.cameras import read_cameras
from ..io.images import IMAGE_SUFFIXES
from .base import SPLITS, Frame, FrameSet, Skipped
from .colmap import read_colmap_model
from .image_folder import read_image_folder
from .scannet import PairSet, PairWithGT, read_scannet_pairs
from .semantic import (
    KeypointImage,
    SemanticPair,
    pf_willow_pairs,
    read_pairs_csv,
    read_pf_pascal_csv,
    read_pf_willow,
    read_pf_willow_csv,
    read_spair,
    write_pairs_csv,
)
from .sevenscenes import find_scenes, is_7scenes_scene, read_7scenes
from .tum import read_camera_file, read_trajectory, read_tum


@dataclass(frozen=True)
class FrameFormat:
    """A folder layout :func:`load_frames` can read.

    Attributes:
        name: the ``format`` value that selects it.
        reader: ``reader(root, split=..., **options) -> FrameSet``.
        detect: whether a folder looks like this layout (cheap: file names only).
        default_split: the split used when the caller gives none.
    """

    name: str
    reader: Callable[..., FrameSet]
    detect: Callable[[Path], bool]
    default_split: str


def _looks_7scenes(path: Path) -> bool:
    return is_7scenes_scene(path) or any(d.is_dir() and is_7scenes_scene(d) for d in path.iterdir())


def _looks_tum(path: Path) -> bool:
    return (path / "groundtruth.txt").is_file() and ((path / "rgb").is_dir() or (path / "rgb.txt").is_file())


def _has_images(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.rglob("*"))


def _never(path: Path) -> bool:
    """A layout chosen by an option, not by the folder (``model_dir=`` selects ``colmap``)."""
    return False


#: Readers by name, in detection order (the first whose ``detect`` accepts a folder wins).
FORMATS: dict[str, FrameFormat] = {
    f.name: f
    for f in (
        FrameFormat("7scenes", read_7scenes, _looks_7scenes, "train"),
        FrameFormat("tum", read_tum, _looks_tum, "all"),
        FrameFormat("folder", read_image_folder, _has_images, "all"),
        FrameFormat("colmap", read_colmap_model, _never, "all"),
    )
}


def detect_format(path: str | Path) -> str:
    """Name of the first format in :data:`FORMATS` that recognises the folder ``path``.

    Raises:
        InputError: ``path`` is missing, not a folder, empty, or holds no image and no known layout.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    if not path.is_dir():
        raise InputError(path, "expected a data set folder, got a file")
    for fmt in FORMATS.values():
        if fmt.detect(path):
            return fmt.name
    if not any(path.iterdir()):
        raise InputError(path, "folder is empty")
    raise InputError(
        path,
        "unrecognised folder: no 7-Scenes split files (TrainSplit.txt / TestSplit.txt), no TUM "
        "groundtruth.txt + rgb/, and no images",
    )


def load_frames(path: str | Path, split: str | None = None, format: str = "auto", **options: Any) -> FrameSet:
    """Read the frames of a data set folder with the reader of its format.

    Args:
        path: the data set folder.
        split: which frames (``train`` / ``test`` for 7-Scenes; ``all`` / ``even`` / ``odd`` everywhere).
            ``None`` takes the format's default: ``train`` for 7-Scenes, ``all`` otherwise.
        format: a name in :data:`FORMATS` (``7scenes``, ``tum``, ``folder``, ``colmap``) or ``auto`` to
            detect it (``auto`` with a ``model_dir`` option is ``colmap``).
        **options: passed to the reader, e.g. ``camera=``, ``poses=`` (image folders, which need
            ``camera`` and, for a map, ``poses`` with ``require_poses=True``), ``max_dt=`` (TUM),
            ``model_dir=`` (a COLMAP sparse model over the image folder ``path``).

    Raises:
        InputError: the folder is missing, empty or unrecognisable, or the reader rejects a file.
        ConfigError: unknown ``format``, an option the reader does not take or one it needs missing.
        ValueError: a split the format does not define.
    """
    if format == "auto" and "model_dir" in options:
        format = "colmap"
    name = detect_format(path) if format == "auto" else format
    if name not in FORMATS:
        raise ConfigError(f"unknown data set format {format!r}; known: auto, {', '.join(FORMATS)}")
    fmt = FORMATS[name]
    params = {n: p for n, p in list(inspect.signature(fmt.reader).parameters.items())[1:] if n != "split"}
    unknown = sorted(set(options) - set(params))  # the first parameter is the folder
    if unknown:
        raise ConfigError(f"option(s) {unknown} not understood by the {name} reader; it takes {sorted(params)}")
    missing = sorted(n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in options)
    if missing:
        raise ConfigError(f"the {name} reader needs the option(s) {missing}")
    return fmt.reader(Path(path), split=split or fmt.default_split, **options)


__all__ = [
    "FORMATS",
    "SPLITS",
    "Frame",
    "FrameFormat",
    "FrameSet",
    "KeypointImage",
    "PairSet",
    "PairWithGT",
    "SemanticPair",
    "Skipped",
    "detect_format",
    "find_scenes",
    "load_frames",
    "pf_willow_pairs",
    "read_7scenes",
    "read_camera_file",
    "read_cameras",
    "read_colmap_model",
    "read_image_folder",
    "read_pairs_csv",
    "read_pf_pascal_csv",
    "read_pf_willow",
    "read_pf_willow_csv",
    "read_scannet_pairs",
    "read_spair",
    "read_trajectory",
    "read_tum",
    "write_pairs_csv",
]
