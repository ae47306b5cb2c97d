"""Common types of the dataset readers.

A reader turns a folder in some published layout into a :class:`FrameSet`: a list of :class:`Frame`
with ground-truth :class:`~visloc.geometry.Pose` (``cam_from_world``, converted by the reader and
nowhere else) and :class:`~visloc.geometry.Camera` intrinsics. Items that cannot be used (missing or
invalid pose, missing image) are not fatal: they are listed in :attr:`FrameSet.skipped` with the reason,
and the caller reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..geometry import Camera, Pose

#: Split names every reader understands. ``train``/``test`` need a data set that defines them;
#: ``even``/``odd`` select by position in the sorted frame list (used for TUM sequences).
SPLITS = ("train", "test", "all", "even", "odd")


@dataclass(frozen=True)
class Frame:
    """One image of a data set.

    Attributes:
        name: unique key of the image, a relative path with ``/`` (e.g. ``stairs/seq-01/frame-000000.color.png``);
            it is the key in pose files, pairs files and HDF5 feature files.
        image_path: the image file.
        camera: intrinsics of this image.
        pose: ground truth ``cam_from_world`` or ``None`` when unknown (plain query images).
        scene: scene the image belongs to (first path component for multi-scene layouts).
        depth_path: depth image registered to ``image_path`` (same pixels), or ``None``.
        depth_scale: stored depth units per metre (1000 = millimetres).
    """

    name: str
    image_path: Path
    camera: Camera
    pose: Pose | None = None
    scene: str = ""
    depth_path: Path | None = None
    depth_scale: float = 1000.0


@dataclass(frozen=True)
class Skipped:
    """An item a reader could not use, with the file to blame and the reason."""

    name: str
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class FrameSet:
    """Frames read from one data set folder, plus what was skipped and why.

    Attributes:
        colmap_model: the COLMAP sparse model the frames were read from (``format="colmap"``), whose 3D
            points a map built with ``points="colmap"`` takes; ``None`` for the other formats.
    """

    root: Path
    frames: list[Frame]
    skipped: list[Skipped] = field(default_factory=list)
    format: str = ""
    colmap_model: Path | None = None

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.frames]

    @property
    def scenes(self) -> list[str]:
        return sorted({f.scene for f in self.frames})

    def poses(self) -> dict[str, Pose]:
        return {f.name: f.pose for f in self.frames if f.pose is not None}

    def by_name(self) -> dict[str, Frame]:
        return {f.name: f for f in self.frames}
