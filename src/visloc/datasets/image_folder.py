"""A plain folder of images, with optional hloc poses and intrinsics.

* Poses: an hloc pose file (``name qw qx qy qz tx ty tz``, world-to-camera), read by
  :func:`visloc.io.poses.read_poses`; it is already visloc's convention.
* Intrinsics: one COLMAP camera string for every image (``PINHOLE 640 480 525 525 320 240``), a
  :class:`~visloc.geometry.Camera`, or a file in hloc's query-list format (``name MODEL W H params...``
  per line). Without any, each image gets :func:`default_camera` for its own size, with the focal length
  of its EXIF when it has one (enough for retrieval; give the real intrinsics to localize precisely).

Image names are paths relative to the folder, with ``/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError, InputError
from ..geometry import CAMERA_MODELS, Camera, InvalidCameraError, Pose
from ..io.cameras import read_cameras
from ..io.images import list_images
from ..io.poses import read_poses
from ._common import image_size, select_split, unknown_split
from .base import Frame, FrameSet, Skipped

logger = logging.getLogger(__name__)

FOLDER_SPLITS = ("all", "even", "odd")
#: A folder has no train/test split: the caller chose the folder for its role, so both read it all.
_SPLIT_ALIASES = {"train": "all", "test": "all"}
#: Largest relative difference between the aspect ratios of a camera and an image it is scaled to.
_ASPECT_TOL = 0.01


def parse_camera_option(camera: Camera | str | Path | None) -> tuple[Camera | None, dict[str, Camera] | None]:
    """Interpret the ``camera`` option: one camera for all images, or a per-image intrinsics file.

    A string whose first word is a COLMAP model name is a camera string; any other string is a path (one of
    several words that names no file is refused as a mistyped camera string).

    Returns:
        ``(shared camera, None)``, ``(None, per-image cameras)`` or ``(None, None)``.

    Raises:
        ConfigError: a malformed camera string (too few parameters, NaN, a focal length that is not
            positive ...), or a string that is neither a camera string nor an existing file; the message
            names the ``--camera`` option and the string.
        InputError: a missing or malformed intrinsics file.
    """
    if camera is None or isinstance(camera, Camera):
        return camera, None
    text = str(camera).strip()
    words = text.split()
    if isinstance(camera, str) and words and words[0] in CAMERA_MODELS:
        try:
            return Camera.from_colmap_string(text), None
        except InvalidCameraError as e:
            raise ConfigError(f"--camera {text!r}: {e}") from None
    if isinstance(camera, str) and len(words) > 1 and not Path(text).exists():
        raise ConfigError(
            f"--camera {text!r}: neither an intrinsics file nor a camera string 'MODEL WIDTH HEIGHT PARAMS...' "
            f"(models: {', '.join(CAMERA_MODELS)})"
        )
    return None, read_cameras(camera)


#: Focal length of :func:`default_camera`, in units of the longer image side.
DEFAULT_FOCAL_FACTOR = 1.2


#: EXIF tags: the Exif sub-IFD and, in it, the 35 mm-equivalent focal length (mm).
_EXIF_IFD, _EXIF_FOCAL_35MM = 0x8769, 0xA405
#: The long side of a 35 mm film frame, in mm.
_FILM_LONG_SIDE_MM = 36.0


def exif_focal_px(path: Path, size: tuple[int, int]) -> float | None:
    """Focal length in pixels from the image's EXIF 35 mm-equivalent focal length (``f35 / 36 mm`` of the
    longer image side), or ``None`` when the file has none."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            f35 = img.getexif().get_ifd(_EXIF_IFD).get(_EXIF_FOCAL_35MM)
    except Exception:  # unreadable or malformed EXIF: no focal length
        return None
    try:
        f35 = float(f35)
    except (TypeError, ValueError):
        return None
    return f35 / _FILM_LONG_SIDE_MM * max(size) if f35 > 0 else None


def default_camera(width: int, height: int, focal_px: float | None = None) -> Camera:
    """The intrinsics assumed for an image without any: ``SIMPLE_PINHOLE`` with focal length ``focal_px``
    (from EXIF, :func:`exif_focal_px`) or else ``1.2 * max(width, height)`` (a common guess for photos, as
    COLMAP's default), and the principal point at the image centre ``((width - 1) / 2, (height - 1) / 2)``
    (visloc's pixel-centre convention)."""
    f = focal_px if focal_px is not None else DEFAULT_FOCAL_FACTOR * max(width, height)
    return Camera("SIMPLE_PINHOLE", width, height, (f, (width - 1) / 2, (height - 1) / 2))


def _fit(camera: Camera, size: tuple[int, int]) -> Camera | None:
    """``camera`` for an image of ``size``: as is, rescaled (same aspect ratio), or ``None``."""
    width, height = size
    if (camera.width, camera.height) == (width, height):
        return camera
    sx, sy = width / camera.width, height / camera.height
    if abs(sx / sy - 1.0) > _ASPECT_TOL:
        return None
    scaled = camera.scaled(sx, sy)
    return Camera(scaled.model, width, height, scaled.params)


def _camera_for(
    name: str,
    path: Path,
    shared: Camera | None,
    per_image: dict[str, Camera] | None,
    source: object,
) -> tuple[Camera | None, str]:
    """Intrinsics of one image, or ``(None, reason)``."""
    if per_image is not None:
        cam = per_image.get(name)
        return (cam, "") if cam is not None else (None, f"no intrinsics for this image in {source}")
    try:
        size = image_size(path)
    except InputError as e:
        return None, e.problem
    if shared is None:
        return default_camera(*size, focal_px=exif_focal_px(path, size)), ""
    cam = _fit(shared, size)
    if cam is None:
        return None, (f"image is {size[0]}x{size[1]}, the shared --camera is {shared.width}x{shared.height} (another "
                      "aspect ratio); give a query-list file with one camera per image, or no --camera for each "
                      "image's own default")
    return cam, ""


def read_image_folder(
    root: str | Path,
    poses: str | Path | dict[str, Pose] | None = None,
    camera: Camera | str | Path | None = None,
    require_poses: bool = False,
    split: str = "all",
) -> FrameSet:
    """Read a folder of images (recursively) with optional poses and intrinsics.

    Args:
        root: the image folder; names are paths relative to it.
        poses: an hloc pose file (world-to-camera) or a ``{name: Pose}`` mapping.
        camera: a :class:`Camera` or COLMAP camera string for every image, or an hloc query-list file
            (``name MODEL W H params...``). A shared camera defined at another size with the same
            aspect ratio is rescaled to each image. ``None``: :func:`default_camera` per image.
        require_poses: ``False``: images without a pose get ``pose=None`` (queries); ``True``: they are
            listed in :attr:`FrameSet.skipped` (a map needs every pose).
        split: ``all``, ``even`` or ``odd`` (position in the name-sorted image list); ``train`` and
            ``test`` mean ``all`` (the folder itself is the split).

    Returns:
        The frames sorted by name. Images without intrinsics (or of a size the shared camera cannot be
        scaled to), unreadable image headers, poses whose image is missing and, with ``require_poses``,
        images without a pose are listed in :attr:`FrameSet.skipped`.

    Raises:
        InputError: the folder is missing or holds no image, or the pose /
            intrinsics file is malformed.
        ConfigError: unknown ``split``, or a malformed camera string.
    """
    if _SPLIT_ALIASES.get(split, split) not in FOLDER_SPLITS:
        raise unknown_split(split, FOLDER_SPLITS, "an image folder", "train and test read the whole folder")
    split = _SPLIT_ALIASES.get(split, split)
    root = Path(root)
    files = list_images(root)
    shared, per_image = parse_camera_option(camera)
    if shared is None and per_image is None:
        logger.info("%s: no intrinsics given, assuming the default camera of each image's size", root)
    pose_map: dict[str, Pose] = {}
    pose_source = Path("<poses>")
    if isinstance(poses, dict):
        pose_map = dict(poses)
    elif poses is not None:
        pose_source = Path(poses)
        pose_map = read_poses(pose_source)

    named = {p.relative_to(root).as_posix(): p for p in files}
    frames: list[Frame] = []
    skipped: list[Skipped] = []
    for name, path in select_split(sorted(named.items()), split, FOLDER_SPLITS, "an image folder"):
        pose = pose_map.get(name)
        if pose is None and require_poses:
            skipped.append(Skipped(name, path, f"no pose for this image in {pose_source}"))
            continue
        cam, problem = _camera_for(name, path, shared, per_image, camera)
        if cam is None:
            skipped.append(Skipped(name, path, problem))
            continue
        frames.append(Frame(name, path, cam, pose, scene=root.name))

    if split == "all":
        for name in sorted(set(pose_map) - set(named)):
            skipped.append(Skipped(name, root / name, f"pose in {pose_source} but no such image"))
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("image folder %s (%s): %d frames, %d skipped", root, split, len(frames), len(skipped))
    return FrameSet(root=root, frames=frames, skipped=skipped, format="folder")
