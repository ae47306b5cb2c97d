"""``visloc map add MAP DATASET``: database images added to a finished map, without rebuilding it.

The images of the data set that the map does not hold yet are processed with the map's own settings, read
from ``map.json``: its local feature extractor, its fitted global descriptor (``global_state.npz``: the
VLAD codebook, the CNN descriptor's whitening, are not refitted) and its index's quantizers (an IVF-PQ
index encodes the new vectors with the ones it was trained with; an index whose lists are on disk is
extended with :func:`~visloc.retrieval.large_index.extend_ondisk`). Their 3D points come as the map's
``points`` mode says:

* ``depth``: from their registered depth, as the build does (every added image needs depth);
* ``colmap``: from the COLMAP model the new images are read from (``--colmap``);
* ``triangulate``: triangulated from the database pairs, chosen by pose among the old and the new images,
  that hold a new image (:func:`~visloc.localization.build.triangulate_points`): a new image gets the points
  a build of the whole map would give it; the old images keep theirs (a rebuild would also pair them with
  the new images);
* ``none`` (retrieval-only maps, whose images have no poses): none.

Interruption: the map's next files are written in ``MAP/add.staging/`` (each HDF5 file the map's with the
new images merged in, the extended index, poses, cameras and the new manifest); ``commit.json`` then records
them complete, and they are moved in: ``map.json`` removed first, the others renamed over the map's, the new
``map.json`` last. An interruption before the commit leaves the map as it was (a rerun with the same data
set resumes the staged extraction); one during the commit leaves a map without ``map.json``, refused as
incomplete (never names that disagree with the files), which the next ``visloc map add`` completes first.
Images already in the map are skipped: a rerun adds nothing and leaves the map untouched.

Refused: an index with database-side augmentation (``dba_k``): each indexed vector mixes in its database
neighbours, which the new images change; rebuild such a map.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import load_frames
from ..datasets.base import Frame, FrameSet, Skipped
from ..errors import ConfigError, InputError
from ..io.atomic import write_json, write_text
from ..io.cameras import format_camera_line
from ..io.h5 import list_h5_names
from ..io.lock import run_lock
from ..io.poses import format_pose_line
from . import map as M
from .build import (
    Mapper,
    config_differences,
    extract_all,
    global_vectors,
    library_versions,
    points_stage,
    run_here,
    triangulate_points,
)
from .shards import file_digest, link_or_copy
from .triangulation import TriangulationConfig

logger = logging.getLogger(__name__)

#: Held while ``visloc map add`` writes a map (a second live run on the same map is refused).
ADD_LOCK = "add.lock"
#: In the staging folder: which addition it holds (a rerun of the same one resumes it, another starts afresh).
ADD_RECORD = "add.json"
#: The map files an addition rewrites, in the order they are moved in (``map.json`` comes after them all).
STAGED_FILES = (M.LOCAL_FEATURES, M.GLOBAL_FEATURES, M.POINTS3D, M.GLOBAL_INDEX, M.POSES, M.CAMERAS)
#: Map files the staging folder starts from (hard links where the file system allows it: never written in place).
SOURCE_FILES = (M.LOCAL_FEATURES, M.GLOBAL_FEATURES, M.POINTS3D, M.GLOBAL_STATE)


@dataclasses.dataclass(frozen=True)
class AddSummary:
    """What :func:`add_to_map` did.

    Attributes:
        root: the map folder.
        num_added: images added.
        num_images: images in the map now.
        num_present: images of the data set the map held already (left as they are).
        skipped: images of the data set not added, with the reason.
        points: the map's 3D points mode, which the added images followed.
        seconds: wall time.
    """

    root: Path
    num_added: int
    num_images: int
    num_present: int
    skipped: list[Skipped]
    points: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class AddPlan:
    """The images to add to a map, chosen from a data set before any work.

    Attributes:
        frameset: the data set as read.
        frames: its images that the map does not hold, usable by the map (with a pose unless the map is
            retrieval-only), in the data set's order.
        skipped: images left out, with the reason.
        num_present: images the map holds already.
        split: the split the frames were read from.
    """

    frameset: FrameSet
    frames: list[Frame]
    skipped: list[Skipped]
    num_present: int
    split: str | None


def plan_add(the_map: M.Map, data: str | Path | FrameSet, split: str | None = None,
             **dataset_options: Any) -> AddPlan:
    """Read the data set and choose the images to add to ``the_map`` (arguments as :func:`add_to_map`).

    Raises:
        InputError: an image to add lacks the registered depth of a ``depth`` map.
        ConfigError: the images of a ``colmap`` map are not read from a COLMAP model.
    """
    frameset = data if isinstance(data, FrameSet) else load_frames(data, split=split, **dataset_options)
    present = set(the_map.names)
    skipped = list(frameset.skipped)
    frames: list[Frame] = []
    for f in frameset.frames:
        if f.name in present:
            continue
        if the_map.has_poses and f.pose is None:
            skipped.append(Skipped(f.name, f.image_path, "no ground-truth pose"))
        elif any(c.isspace() for c in f.name):
            skipped.append(Skipped(f.name, f.image_path, "its name holds white space, which pose and camera "
                                                         "files cannot hold"))
        else:
            frames.append(f)
    points = the_map.manifest["points"]
    missing = [f for f in frames if f.depth_path is None]
    if points == "depth" and missing:
        raise InputError(missing[0].image_path, f"the map {the_map.root} takes its 3D points from registered "
                                                "depth (points=depth): every image added needs it")
    if points == "colmap" and frames and frameset.colmap_model is None:
        raise ConfigError(f"the map {the_map.root} takes its 3D points from a COLMAP model (points=colmap), but "
                          f"{frameset.root} was read as {frameset.format or 'frames'}: give the model of the "
                          "images to add (--colmap MODEL_DIR)")
    num_present = sum(f.name in present for f in frameset.frames)
    return AddPlan(frameset, frames, skipped, num_present, split)


def add_to_map(map_dir: str | Path, data: str | Path | FrameSet, split: str | None = None,
               mapper: Mapper = run_here, **dataset_options: Any) -> AddSummary:
    """Add to the complete map ``map_dir`` every database image of ``data`` that it does not hold yet, with
    the map's settings (see the module docstring).

    Args:
        map_dir: a map folder from ``visloc map build``.
        data: a data set folder (any layout ``build_map`` reads) or a loaded :class:`FrameSet`.
        split: which of its frames (default: the format's own, ``train`` for 7-Scenes layouts).
        mapper: runs the per-image work after extraction (see :data:`~visloc.localization.build.Mapper`).
        dataset_options: passed to the data set reader (e.g. ``camera``, ``poses``, ``model_dir``).

    Returns:
        A summary: ``num_added`` is 0 when every image is in the map already (not an error); unreadable
        images are listed in ``skipped`` while the others are added.

    Raises:
        InputError: ``map_dir`` is not a complete map, or the data set cannot be read.
        ConfigError: the map's index uses database-side augmentation, or bad data set options.
    """
    t0 = time.perf_counter()
    root = Path(map_dir)
    if not root.is_dir():
        raise InputError(root, "no such map folder (build one with `visloc map build`)")
    with run_lock(root / ADD_LOCK, f"the map {root}"):
        finish_pending_add(root)
        the_map = M.Map(root)
        try:
            if the_map.config.index_config().dba_k:
                raise ConfigError(f"{root}: the map's index uses database-side augmentation (dba_k="
                                  f"{the_map.config.index_config().dba_k}): every indexed vector mixes in its "
                                  "neighbours, which new images change; rebuild the map with the new images")
            plan = plan_add(the_map, data, split, **dataset_options)
            points = str(the_map.manifest["points"])
            before = len(the_map.names)
            added: list[Frame] = []
            skipped = plan.skipped
            if plan.frames:
                _warn_versions(the_map)
                staging = _start_staging(the_map, plan)
                added, skipped = _stage(the_map, plan, staging, mapper)
        finally:
            the_map.close()
        if added:
            _commit(root)
        elif plan.frames:  # none could be read: nothing to commit
            shutil.rmtree(staging)
    seconds = time.perf_counter() - t0
    logger.info("added %d images to %s (now %d) in %.1f s (%d already there, %d skipped)", len(added), root,
                before + len(added), seconds, plan.num_present, len(skipped))
    for s in skipped:
        logger.warning("skipped %s", s)
    return AddSummary(root, len(added), before + len(added), plan.num_present, skipped, points, seconds)


def _warn_versions(the_map: M.Map) -> None:
    """Warn when the libraries differ from the map's build (features of the new images may then differ)."""
    changed = config_differences(the_map.manifest.get("versions", {}), library_versions())
    if changed:
        logger.warning("%s was built with other library versions (%s): the added images' features may differ "
                       "slightly from the build's", the_map.root,
                       "; ".join(f"{key} {old} -> {new}" for key, old, new in changed))


def _start_staging(the_map: M.Map, plan: AddPlan) -> Path:
    """The staging folder of this addition: resumed when it holds the same one (same map state, data set
    folder and images), else started afresh from (links to) the map's files."""
    staging = the_map.root / M.ADD_STAGING
    record = {"base": file_digest(the_map.root / M.MANIFEST), "source": str(Path(plan.frameset.root).resolve()),
              "names": [f.name for f in plan.frames]}
    if staging.is_dir():
        try:
            same = json.loads((staging / ADD_RECORD).read_text()) == record
        except (OSError, json.JSONDecodeError):
            same = False
        if same:
            logger.info("resuming the addition staged in %s", staging)
        else:
            logger.info("discarding %s: an unfinished addition of other images", staging)
            shutil.rmtree(staging)
    staging.mkdir(exist_ok=True)
    for leftover in staging.glob(".*.tmp"):  # a file being written when a run was killed
        leftover.unlink(missing_ok=True)
    write_json(staging / ADD_RECORD, record)
    for name in SOURCE_FILES:
        if (the_map.root / name).is_file() and not (staging / name).exists():
            link_or_copy(the_map.root / name, staging / name)
    return staging


def _stage(the_map: M.Map, plan: AddPlan, staging: Path, mapper: Mapper) -> tuple[list[Frame], list[Skipped]]:
    """Write the map's next state into ``staging`` and, last, its commit record. Returns the frames added
    (none when no image could be read: nothing is then recorded) and the images skipped."""
    config = the_map.config
    skipped = list(plan.skipped)
    extracted = extract_all(plan.frames, staging, config, skipped)
    stored = set(list_h5_names(staging / M.LOCAL_FEATURES))
    frames = [f for f in extracted if f.name in stored]
    if not frames:
        return frames, skipped
    names = [f.name for f in frames]
    vectors = global_vectors(names, staging, config, the_map.descriptor, mapper)
    lists = _stage_index(the_map, staging, M.index_vectors(the_map.descriptor, vectors), names)
    _stage_points(the_map, plan, frames, staging, mapper)
    poses = [format_pose_line(f.name, f.pose) for f in frames] if the_map.has_poses else []
    write_text(staging / M.POSES, _appended(the_map.root / M.POSES, poses))
    write_text(staging / M.CAMERAS, _appended(the_map.root / M.CAMERAS,
                                              [format_camera_line(f.name, f.camera) for f in frames]))
    manifest = dict(the_map.manifest)
    manifest["names"] = [*the_map.names, *names]
    manifest["scenes"] = {**the_map.manifest["scenes"], **{f.name: f.scene for f in frames}}
    manifest["image_paths"] = {**the_map.manifest["image_paths"], **{f.name: str(f.image_path) for f in frames}}
    manifest["additions"] = [*the_map.manifest.get("additions", []), {
        "source": {"path": str(plan.frameset.root), "format": plan.frameset.format, "split": plan.split},
        "num_images": len(frames),
        "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped],
        "versions": library_versions(),
    }]
    write_json(staging / M.MANIFEST, manifest)
    files = ([lists.name] if lists is not None else []) + [n for n in STAGED_FILES if (staging / n).is_file()]
    replaced = the_map.index.lists_file  # an on-disk index's lists file, which the new one replaces
    write_json(staging / M.ADD_COMMIT, {"base": file_digest(the_map.root / M.MANIFEST), "files": files,
                                        "stale": [replaced.name] if replaced is not None else []})
    return frames, skipped


def _stage_index(the_map: M.Map, staging: Path, vectors: np.ndarray, names: list[str]) -> Path | None:
    """The map's index with ``(K, D)`` index ``vectors`` of ``names`` appended (rows ``N .. N+K-1``, encoded with
    its quantizers), at ``staging/global_index.faiss``. Returns the new lists file of an on-disk index."""
    target = staging / M.GLOBAL_INDEX
    stem = Path(M.GLOBAL_INDEX).stem
    for old in staging.glob(f"{stem}.*.ivfdata"):  # left by an interrupted run: the index is staged afresh
        old.unlink()
    lists = the_map.index.lists_file
    if lists is None:
        the_map.index.add(vectors, names)
        the_map.index.save(target)
        return None
    from ..retrieval.large_index import extend_ondisk

    link_or_copy(the_map.root / M.GLOBAL_INDEX, target)
    link_or_copy(lists, staging / lists.name)
    extend_ondisk(target, [vectors])  # replaces the staged index file and the staged link of the old lists
    return next(p for p in staging.glob("*.ivfdata") if p.name != lists.name)


def _stage_points(the_map: M.Map, plan: AddPlan, frames: list[Frame], staging: Path, mapper: Mapper) -> None:
    """The 3D points of the added images into ``staging/points3D.h5``, as the map's points mode says."""
    mode = the_map.manifest["points"]
    triangulation = TriangulationConfig(**the_map.manifest.get("triangulation", {}))
    if mode == "triangulate":
        poses = {**the_map.poses, **{f.name: f.pose for f in frames}}
        cameras = {**the_map.cameras, **{f.name: f.camera for f in frames}}
        triangulate_points(staging, poses, cameras, triangulation, mapper, targets=[f.name for f in frames])
    elif mode in ("depth", "colmap"):
        points_stage(frames, staging, mode, triangulation, plan.frameset.colmap_model, mapper)


def _appended(path: Path, lines: list[str]) -> str:
    """The text of ``path`` (kept byte for byte) followed by ``lines``."""
    text = path.read_text() if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(line + "\n" for line in lines)


def _commit(root: Path) -> None:
    """Move the staged files of a complete addition into the map, ``map.json`` removed first and written
    last, then remove the staging folder and the replaced lists file of an on-disk index. Idempotent: a
    rerun after an interruption moves what is left."""
    staging = root / M.ADD_STAGING
    record = json.loads((staging / M.ADD_COMMIT).read_text())
    if (staging / M.MANIFEST).is_file():
        (root / M.MANIFEST).unlink(missing_ok=True)  # the map is incomplete until the new manifest is in
        for name in record["files"]:
            if (staging / name).is_file():
                os.replace(staging / name, root / name)
        os.replace(staging / M.MANIFEST, root / M.MANIFEST)
    for name in record["stale"]:
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(staging)


def finish_pending_add(root: str | Path) -> bool:
    """Complete the commit of an addition interrupted while it moved its files into the map ``root``
    (:func:`add_to_map` does this first; the caller holds the map's :data:`ADD_LOCK`). A commit staged for
    another state of the map (rebuilt since) is discarded. Returns whether one was completed."""
    root = Path(root)
    staging = root / M.ADD_STAGING
    if not (staging / M.ADD_COMMIT).is_file():
        return False
    record = json.loads((staging / M.ADD_COMMIT).read_text())
    manifest = root / M.MANIFEST
    if manifest.is_file() and (staging / M.MANIFEST).is_file() and file_digest(manifest) != record["base"]:
        logger.warning("discarding %s: staged for another state of the map", staging)
        shutil.rmtree(staging)
        return False
    logger.info("completing the interrupted addition of images to %s", root)
    _commit(root)
    return True
