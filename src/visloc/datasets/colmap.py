"""A COLMAP sparse model (``cameras``, ``images``, ``points3D`` as ``.bin`` or ``.txt``) over a folder of
images: the model most hloc users arrive with.

The model is read through pycolmap (:func:`visloc.geometry.backends.read_colmap_reconstruction`, the one
place that knows pycolmap's API) and converted here, and nowhere else:

* poses: COLMAP's ``cam_from_world`` is visloc's :class:`~visloc.geometry.Pose` convention; it is read as
  a rotation matrix, so the quaternion order of a pycolmap release (``xyzw`` in ``Rotation3d.quat``)
  never enters;
* pixels: COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``, visloc (OpenCV) at ``(0, 0)``.
  Principal points and 2D observations are shifted by ``-0.5``; focal lengths and distortion terms are
  unchanged. Every :class:`~visloc.geometry.Camera` in visloc, its camera strings and ``cameras.txt``
  files included, is in visloc's convention: this reader is the only place that converts.

Image names are the model's (paths relative to the image folder, as in hloc).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..geometry import CAMERA_MODELS, Camera, InvalidCameraError
from ..geometry.backends import ColmapCamera, read_colmap_reconstruction
from ..io.images import list_images
from ._common import image_size, select_split
from .base import Frame, FrameSet, Skipped

logger = logging.getLogger(__name__)

COLMAP_SPLITS = ("all", "even", "odd")
#: A model has no train/test split: the caller chose the model for its role, so both read it all.
_SPLIT_ALIASES = {"train": "all", "test": "all"}
#: Offset added to a COLMAP pixel coordinate to get visloc's (OpenCV) pixel coordinate.
COLMAP_TO_VISLOC_PX = -0.5


def camera_from_colmap(camera: ColmapCamera) -> Camera:
    """The visloc :class:`Camera` of a COLMAP camera: principal point shifted by ``-0.5`` px.

    Raises:
        InvalidCameraError: a model visloc does not support, or invalid parameters.
    """
    names = CAMERA_MODELS.get(camera.model)
    if names is None:
        raise InvalidCameraError(f"camera model {camera.model} is not supported by visloc (supported: "
                                 f"{', '.join(CAMERA_MODELS)})")
    params = list(camera.params)
    if len(params) != len(names):
        raise InvalidCameraError(f"{camera.model} takes {len(names)} parameters, got {len(params)}")
    params[names.index("cx")] += COLMAP_TO_VISLOC_PX
    params[names.index("cy")] += COLMAP_TO_VISLOC_PX
    return Camera(camera.model, camera.width, camera.height, tuple(params))


def read_colmap_model(
    images_root: str | Path,
    model_dir: str | Path,
    split: str = "all",
) -> FrameSet:
    """Read the registered images of a COLMAP sparse model, with their poses and intrinsics.

    Args:
        images_root: the image folder; the model's image names are paths relative to it.
        model_dir: the model folder (``cameras``, ``images``, ``points3D``; binary preferred to text).
        split: ``all``, ``even`` or ``odd`` (position in the name-sorted list of registered images);
            ``train`` and ``test`` mean ``all``.

    Returns:
        The frames sorted by name, each with its pose and camera (visloc conventions; see the module
        docstring) and ``scene`` the image folder's name; :attr:`FrameSet.colmap_model` is ``model_dir``
        (the 3D points of ``points="colmap"`` maps come from it). Listed in :attr:`FrameSet.skipped`,
        with the reason: images the model registers that are missing or unreadable on disk or whose size
        is not their camera's, images whose camera model visloc does not support, images the model lists
        without a pose and (``split="all"``) images on disk that the model does not hold.

    Raises:
        InputError: ``model_dir`` is not a readable COLMAP model or registers no image; ``images_root``
            is missing or holds no image.
        ValueError: unknown ``split``.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in COLMAP_SPLITS:
        raise ValueError(f"a COLMAP model has no split {split!r}; choose one of {', '.join(COLMAP_SPLITS)}")
    root, model_dir = Path(images_root), Path(model_dir)
    model = read_colmap_reconstruction(model_dir)
    if not model.images:
        raise InputError(model_dir, f"the COLMAP model registers no image ({len(model.unregistered)} "
                                    "images without a pose)")
    on_disk = {p.relative_to(root).as_posix(): p for p in list_images(root)}

    cameras: dict[int, Camera | str] = {}
    for cid, cam in model.cameras.items():
        try:
            cameras[cid] = camera_from_colmap(cam)
        except InvalidCameraError as e:
            cameras[cid] = f"camera {cid} of the model: {e}"
    frames: list[Frame] = []
    skipped: list[Skipped] = []
    for name, image in select_split(sorted(model.images.items()), split, COLMAP_SPLITS, "COLMAP model"):
        path = root / name
        cam = cameras.get(image.camera_id, f"camera {image.camera_id} is not in the model")
        if isinstance(cam, str):
            skipped.append(Skipped(name, path, cam))
            continue
        if name not in on_disk:
            skipped.append(Skipped(name, path, f"registered in the COLMAP model {model_dir} but no such image"))
            continue
        try:
            size = image_size(path)
        except InputError as e:
            skipped.append(Skipped(name, path, e.problem))
            continue
        if size != (cam.width, cam.height):
            skipped.append(Skipped(name, path, f"image is {size[0]}x{size[1]}, its camera in the COLMAP model "
                                               f"is {cam.width}x{cam.height}"))
            continue
        frames.append(Frame(name, path, cam, image.cam_from_world, scene=root.name))

    if split == "all":
        for name in sorted(model.unregistered):
            skipped.append(Skipped(name, root / name, f"in the COLMAP model {model_dir} without a pose"))
        listed = set(model.images) | set(model.unregistered)
        for name in sorted(set(on_disk) - listed):
            skipped.append(Skipped(name, on_disk[name], f"image not in the COLMAP model {model_dir}"))
    for s in skipped:
        logger.warning("skipped %s", s)
    logger.info("COLMAP model %s over %s (%s): %d frames, %d skipped", model_dir, root, split, len(frames),
                len(skipped))
    return FrameSet(root=root, frames=frames, skipped=skipped, format="colmap", colmap_model=model_dir)


def read_colmap_observations(model_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The 2D observations that have a 3D point, per registered image of a COLMAP model.

    Returns:
        ``{name: (xy, xyz)}``: ``xy`` ``(N, 2)`` pixels in visloc's convention (COLMAP's ``- 0.5``),
        ``xyz`` ``(N, 3)`` the world points they observe.

    Raises:
        InputError: ``model_dir`` is not a readable COLMAP model.
    """
    model = read_colmap_reconstruction(model_dir, observations=True)
    return {n: (im.points2D + COLMAP_TO_VISLOC_PX, im.points3D) for n, im in model.images.items()}
