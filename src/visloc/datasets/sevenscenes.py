"""7-Scenes layout reader (also the University data set and visloc's synthetic world).

Layout::

    <base>/<scene>/TrainSplit.txt, TestSplit.txt     lines "sequence1", "sequence2", ...
    <base>/<scene>/seq-XX/frame-NNNNNN.color.png    (or .color.jpg)
    <base>/<scene>/seq-XX/frame-NNNNNN.depth.png    16-bit millimetres, 65535 = invalid
    <base>/<scene>/seq-XX/frame-NNNNNN.pose.txt     4x4 camera-to-world, metres
    <base>/dataset.json                             optional (visloc's synthetic world writes it)

``pose.txt`` holds **camera-to-world**; it is inverted here into visloc's ``cam_from_world``
:class:`~visloc.geometry.Pose`, and nowhere else. 7-Scenes ships no intrinsics: the default is the
kapture / DSAC convention (PINHOLE f=525, c=(320, 240) at 640x480). Real 7-Scenes depth is *not*
registered to the colour image, so :attr:`Frame.depth_path` is only set when the data say it is
(``dataset.json``) or the caller does.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import Camera, InvalidCameraError, InvalidPoseError, Pose
from ._common import image_size, select_split, unknown_split
from .base import Frame, FrameSet, Skipped

logger = logging.getLogger(__name__)

#: Intrinsics assumed for 7-Scenes colour images (kapture, DSAC*), defined at 640x480.
DEFAULT_CAMERA = Camera.pinhole(525.0, 525.0, 320.0, 240.0, 640, 480)
#: Split name -> split file of a scene folder.
SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}
#: Splits this reader accepts (``all`` = every sequence listed in either split file).
SEVENSCENES_SPLITS = ("train", "test", "all", "even", "odd")
METADATA_FILE = "dataset.json"
DEFAULT_DEPTH_SCALE = 1000.0

_FRAME_FILE = re.compile(r"^(frame-\d+)\.(color\.(?:png|jpg|jpeg)|pose\.txt)$", re.IGNORECASE)
_COLOR_SUFFIXES = ("color.png", "color.jpg", "color.jpeg")


@dataclass(frozen=True)
class _Metadata:
    """Contents of an optional ``dataset.json``."""

    camera: Camera | None = None
    depth_registered: bool = False
    depth_scale: float = DEFAULT_DEPTH_SCALE


def is_7scenes_scene(folder: Path) -> bool:
    """True when ``folder`` holds a 7-Scenes split file."""
    return any((folder / f).is_file() for f in SPLIT_FILES.values())


def find_scenes(root: str | Path) -> tuple[Path, list[Path]]:
    """Locate the scene folders of a 7-Scenes root.

    Args:
        root: one scene folder (it contains the split files) or a folder of scene folders.

    Returns:
        ``(base, scene_dirs)``: the folder that contains the scene folders (frame names are relative to
        it) and the scene folders, sorted by name.

    Raises:
        InputError: ``root`` is missing or holds no split file, neither itself nor in a subfolder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "7-Scenes folder does not exist")
    if is_7scenes_scene(root):
        return root.parent, [root]
    scenes = sorted(d for d in root.iterdir() if d.is_dir() and is_7scenes_scene(d))
    if not scenes:
        raise InputError(
            root, "not a 7-Scenes folder: no TrainSplit.txt / TestSplit.txt in it or in its subfolders"
        )
    return root, scenes


def read_split_file(path: Path) -> list[int]:
    """Sequence numbers listed in a split file (lines ``sequenceN``, any case; blank lines ignored).

    Raises:
        InputError: the file is missing, a line does not parse, or it lists no sequence.
    """
    if not path.is_file():
        raise InputError(path, "split file does not exist")
    sequences: list[int] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        try:
            # The parse MapNet-style loaders use, made case-insensitive.
            sequences.append(int(text.lower().split("sequence")[-1]))
        except ValueError:
            raise InputError(path, f"line {lineno}: expected 'sequenceN', got {text!r}") from None
    if not sequences:
        raise InputError(path, "split file lists no sequence")
    return sequences


def read_pose_file(path: Path) -> Pose:
    """Read a 7-Scenes ``pose.txt`` (camera-to-world 4x4, or its top 3x4) as ``cam_from_world``.

    Raises:
        InputError: the file is missing, does not hold 12 or 16 numbers, or not a rigid transform.
    """
    if not path.is_file():
        raise InputError(path, "pose file does not exist")
    try:
        values = np.array(path.read_text(encoding="utf-8", errors="replace").split(), dtype=np.float64)
    except ValueError as e:
        raise InputError(path, f"pose file holds non-numeric text ({e})") from None
    if values.size not in (12, 16):
        raise InputError(path, f"expected a 4x4 camera-to-world matrix (16 numbers), got {values.size}")
    world_from_cam = values.reshape(-1, 4)
    try:
        return Pose.from_matrix(world_from_cam).inverse()
    except InvalidPoseError as e:
        raise InputError(path, f"invalid camera-to-world pose: {e}") from None


def _read_metadata(path: Path) -> _Metadata:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot parse JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    camera = None
    if data.get("camera") is not None:
        try:
            camera = Camera.from_colmap_string(str(data["camera"]))
        except InvalidCameraError as e:
            raise InputError(path, f"key 'camera': {e}") from None
    try:
        depth_scale = float(data.get("depth_scale", DEFAULT_DEPTH_SCALE))
    except (TypeError, ValueError):
        raise InputError(path, f"key 'depth_scale' must be a number, got {data['depth_scale']!r}") from None
    if not depth_scale > 0:
        raise InputError(path, f"key 'depth_scale' must be positive, got {depth_scale}")
    return _Metadata(camera, bool(data.get("depth_registered", False)), depth_scale)


def _metadata_for(scene_dir: Path, base: Path) -> _Metadata:
    """``dataset.json`` of the scene folder, else of the folder holding the scenes, else defaults."""
    for candidate in (scene_dir / METADATA_FILE, base / METADATA_FILE):
        if candidate.is_file():
            return _read_metadata(candidate)
    return _Metadata()


def _fit_camera(camera: Camera, size: tuple[int, int]) -> Camera:
    """``camera`` rescaled to an image of ``size`` = ``(width, height)`` when it was defined for another."""
    width, height = size
    if (camera.width, camera.height) == (width, height):
        return camera
    logger.info(
        "7-Scenes images are %dx%d; scaling intrinsics defined at %dx%d",
        width, height, camera.width, camera.height,
    )
    scaled = camera.scaled(width / camera.width, height / camera.height)
    return Camera(scaled.model, width, height, scaled.params)


def _sequence_frames(seq_dir: Path) -> dict[str, dict[str, Path]]:
    """``{frame id: {"color": path, "pose": path}}`` for the files present in a sequence folder."""
    frames: dict[str, dict[str, Path]] = {}
    for path in seq_dir.iterdir():
        m = _FRAME_FILE.match(path.name)
        if m is None or not path.is_file():
            continue
        kind = "pose" if m.group(2).lower() == "pose.txt" else "color"
        entry = frames.setdefault(m.group(1), {})
        # Prefer PNG (the original 7-Scenes encoding) when both are present.
        if kind == "color" and "color" in entry and entry["color"].suffix.lower() == ".png":
            continue
        entry[kind] = path
    return frames


@dataclass(frozen=True)
class _SceneContext:
    base: Path
    scene: str
    camera: Camera
    depth_registered: bool
    depth_scale: float
    require_poses: bool


def _read_sequence(seq_dir: Path, ctx: _SceneContext, frames: list[Frame], skipped: list[Skipped]) -> None:
    rel_seq = f"{ctx.scene}/{seq_dir.name}"
    entries = _sequence_frames(seq_dir)
    if not entries:
        skipped.append(Skipped(rel_seq, seq_dir, "sequence folder holds no frame-*.color.* / pose.txt files"))
        return
    camera: Camera | None = None
    for frame_id in sorted(entries):
        entry = entries[frame_id]
        color = entry.get("color")
        pose_path = entry.get("pose", seq_dir / f"{frame_id}.pose.txt")
        if color is None:
            missing = seq_dir / f"{frame_id}.color.png"
            skipped.append(Skipped(f"{rel_seq}/{missing.name}", missing, "colour image missing (pose file exists)"))
            continue
        name = f"{rel_seq}/{color.name}"
        pose: Pose | None
        try:
            pose = read_pose_file(pose_path)
        except InputError as e:
            if ctx.require_poses:
                skipped.append(Skipped(name, pose_path, e.problem))
                continue
            logger.info("%s: %s; frame kept without pose", pose_path, e.problem)
            pose = None
        if camera is None:  # one image header per sequence: 7-Scenes sequences have one size
            try:
                camera = _fit_camera(ctx.camera, image_size(color))
            except InputError as e:
                skipped.append(Skipped(name, color, e.problem))
                continue
        depth_path = None
        if ctx.depth_registered:
            candidate = seq_dir / f"{frame_id}.depth.png"
            if candidate.is_file():
                depth_path = candidate
            else:
                logger.debug("%s: registered depth missing", candidate)
        frames.append(
            Frame(name, color, camera, pose, ctx.scene, depth_path=depth_path, depth_scale=ctx.depth_scale)
        )


def _scene_sequences(scene_dir: Path, split: str) -> list[tuple[int, str]]:
    """``(sequence number, split file name)`` of the sequences of ``split`` (``all`` = both files)."""
    if split in SPLIT_FILES:
        files = [SPLIT_FILES[split]]
    else:
        files = [f for f in SPLIT_FILES.values() if (scene_dir / f).is_file()]
    found: dict[int, str] = {}
    for file_name in files:
        for seq in read_split_file(scene_dir / file_name):
            found.setdefault(seq, file_name)
    return sorted(found.items())


def read_7scenes(
    root: str | Path,
    split: str = "train",
    camera: Camera | None = None,
    depth_registered: bool | None = None,
    scenes: list[str] | None = None,
    require_poses: bool = True,
) -> FrameSet:
    """Read a 7-Scenes-layout folder (one scene, or a folder of scenes).

    Args:
        root: a scene folder (it contains ``TrainSplit.txt`` / ``TestSplit.txt``) or a folder whose
            subfolders are scene folders.
        split: ``train`` / ``test`` (the sequences of the split file), ``all`` (both split files), or
            ``even`` / ``odd`` (every other frame of ``all``, by name).
        camera: intrinsics of the colour images; default: ``dataset.json``'s, else PINHOLE f=525,
            c=(320, 240) at 640x480. Either is rescaled when the images have another size.
        depth_registered: whether ``depth.png`` is registered to the colour image (then
            :attr:`Frame.depth_path` is set); default: ``dataset.json``'s flag, else ``False``
            (real 7-Scenes depth is not registered).
        scenes: restrict a multi-scene root to these scene folder names.
        require_poses: ``True``: a frame with a missing or invalid pose file is listed in
            :attr:`FrameSet.skipped`; ``False``: it is kept with ``pose=None`` (query use).

    Returns:
        Frames named ``<scene>/seq-XX/frame-NNNNNN.color.png`` (relative to the folder holding the
        scenes), sorted by name, with ``cam_from_world`` poses. Frames with a missing, unparsable or
        invalid pose file or a missing image are listed in :attr:`FrameSet.skipped`.

    Raises:
        InputError: ``root`` is not a 7-Scenes folder, a needed split file is missing or unparsable,
            ``dataset.json`` is malformed, or a requested scene does not exist.
        ConfigError: unknown ``split``.
    """
    if split not in SEVENSCENES_SPLITS:
        raise unknown_split(split, SEVENSCENES_SPLITS, "7-Scenes")
    root = Path(root)
    base, scene_dirs = find_scenes(root)
    if scenes is not None:
        available = {d.name: d for d in scene_dirs}
        unknown = sorted(set(scenes) - set(available))
        if unknown:
            raise InputError(root, f"scene(s) {unknown} not found; available: {sorted(available)}")
        scene_dirs = [available[s] for s in sorted(set(scenes))]

    frames: list[Frame] = []
    skipped: list[Skipped] = []
    for scene_dir in scene_dirs:
        meta = _metadata_for(scene_dir, base)
        ctx = _SceneContext(
            base=base,
            scene=scene_dir.name,
            camera=camera if camera is not None else meta.camera if meta.camera is not None else DEFAULT_CAMERA,
            depth_registered=meta.depth_registered if depth_registered is None else depth_registered,
            depth_scale=meta.depth_scale,
            require_poses=require_poses,
        )
        for seq, split_file in _scene_sequences(scene_dir, split):
            seq_dir = scene_dir / f"seq-{seq:02d}"
            if not seq_dir.is_dir():
                skipped.append(
                    Skipped(f"{ctx.scene}/{seq_dir.name}", seq_dir, f"sequence listed in {split_file} does not exist")
                )
                continue
            _read_sequence(seq_dir, ctx, frames, skipped)

    frames.sort(key=lambda f: f.name)
    if split in ("even", "odd"):
        frames = select_split(frames, split, SEVENSCENES_SPLITS, "7-Scenes")
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("7-Scenes %s (%s): %d frames, %d skipped", root, split, len(frames), len(skipped))
    return FrameSet(root=root, frames=frames, skipped=skipped, format="7scenes")
