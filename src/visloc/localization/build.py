"""``visloc map build``: database images with known poses -> a map folder (see :mod:`.map`).

Stages, each resumable: local features (sharded HDF5, skips images already done), global
descriptors + FAISS index, database 3D points (registered depth, triangulation or a COLMAP model's
points), manifest last.

On many machines (docs/scale.md): :mod:`.shards` and :mod:`.cluster` extract the local features elsewhere,
merge them into the map folder and finish with :func:`finish_build`, whose per-image work after the fit
runs through a :data:`Mapper` (here by default, Dask tasks on a cluster).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..datasets import load_frames
from ..datasets.base import Frame, FrameSet, Skipped
from ..datasets.colmap import read_colmap_observations
from ..errors import ConfigError, InputError
from ..features import LocalFeatures, extractors
from ..geometry import Camera, Pose
from ..geometry.backends import cam_from_img
from ..io.atomic import atomic_path, write_json
from ..io.cameras import write_cameras
from ..io.h5 import H5Reader, ShardedH5Writer, list_h5_names
from ..io.images import read_depth, read_image
from ..io.poses import write_poses
from ..matching import NearestNeighborMatcher, NNConfig
from ..retrieval import GlobalIndex, global_descriptors
from ..retrieval.pairs import pairs_from_poses
from ..runtime import torch_threads
from . import map as M
from .triangulation import TriangulationConfig, triangulate_database

logger = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """The versions of the libraries whose output a map holds (recorded in its manifest)."""
    import cv2
    import faiss
    import poselib
    import pycolmap
    import torch

    return {
        "visloc": __version__,
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "faiss": faiss.__version__,
        "poselib": getattr(poselib, "__version__", "?"),
        "pycolmap": pycolmap.__version__,
    }


def sample_depth(depth: np.ndarray, xy: np.ndarray, max_relative_step: float = 0.02) -> np.ndarray:
    """Bilinear depth at sub-pixel keypoints, NaN where a neighbour is invalid or the four
    neighbours disagree by more than ``max_relative_step`` (a depth edge: interpolation would
    invent a point between two surfaces).

    Args:
        depth: ``(H, W)`` metres, NaN invalid.
        xy: ``(N, 2)`` pixel coordinates (OpenCV convention).

    Returns:
        ``(N,)`` depth in metres.
    """
    h, w = depth.shape
    x0 = np.floor(xy[:, 0]).astype(int)
    y0 = np.floor(xy[:, 1]).astype(int)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + 1 < w) & (y0 + 1 < h)
    x0c, y0c = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    fx, fy = xy[:, 0] - x0c, xy[:, 1] - y0c
    d00, d01 = depth[y0c, x0c], depth[y0c, x0c + 1]
    d10, d11 = depth[y0c + 1, x0c], depth[y0c + 1, x0c + 1]
    stack = np.stack([d00, d01, d10, d11])
    with np.errstate(invalid="ignore"):
        spread = (np.nanmax(stack, 0) - np.nanmin(stack, 0)) / np.nanmin(stack, 0)
    z = (d00 * (1 - fx) + d01 * fx) * (1 - fy) + (d10 * (1 - fx) + d11 * fx) * fy
    ok = inside & np.all(np.isfinite(stack), axis=0) & (spread <= max_relative_step)
    return np.where(ok, z, np.nan)


def points_from_depth(frame: Frame, keypoints: np.ndarray) -> np.ndarray:
    """World points ``(N, 3)`` of keypoints from the frame's registered depth (NaN where unknown)."""
    depth = read_depth(frame.depth_path, scale=frame.depth_scale)
    z = sample_depth(depth, keypoints)
    rays = cam_from_img(frame.camera, keypoints)
    p_cam = np.concatenate([rays, np.ones((len(rays), 1))], axis=1) * z[:, None]
    return frame.pose.inverse().transform(p_cam).astype(np.float32)


def extract_all(frames: list[Frame], out: Path, config: M.MapConfig, skipped: list[Skipped]) -> list[Frame]:
    """Local features of every image, and its global descriptor when that needs no fitting (it is
    computed from the image while the image is in memory).

    Each image's file size and modification time (``source_size``, ``source_mtime_ns``: attributes of its
    feature group) are stored with its features; a rerun extracts again the images whose file changed
    since (or vanished: they are then skipped and reported), and keeps the others' features. Features
    stored without these attributes (older maps) are kept."""
    import h5py

    def file_stat(frame: Frame) -> tuple[int, int] | None:
        try:
            st = frame.image_path.stat()
        except OSError:
            return None
        return int(st.st_size), int(st.st_mtime_ns)

    extractor = extractors.create(config.extractor, **config.extractor_options)
    descriptor = global_descriptors.create(config.global_descriptor, **config.global_options)
    per_image_global = not getattr(descriptor, "needs_fit", False)
    writer = ShardedH5Writer(out / M.LOCAL_FEATURES, flush_every=16)
    global_writer = ShardedH5Writer(out / M.GLOBAL_FEATURES, flush_every=16) if per_image_global else None
    done = writer.done() & global_writer.done() if global_writer else writer.done()
    recorded: dict[str, tuple[int, int]] = {}
    shards = sorted(writer.shard_dir.glob("*.h5")) if writer.shard_dir.is_dir() else []
    for path in [writer.path, *shards]:  # the order finalize merges them in: a later entry wins
        if not path.is_file():
            continue
        with h5py.File(path, "r") as f:
            for name in list_h5_names(path):
                attrs = f[name].attrs
                if "source_size" in attrs and "source_mtime_ns" in attrs:
                    recorded[name] = (int(attrs["source_size"]), int(attrs["source_mtime_ns"]))
    changed = {f.name for f in frames if f.name in done and f.name in recorded and file_stat(f) != recorded[f.name]}
    todo = [f for f in frames if f.name not in done or f.name in changed]
    if len(todo) < len(frames):
        logger.info("resuming: %d of %d images already have features", len(frames) - len(todo), len(frames))
    if changed:
        logger.warning("%d image file(s) changed since their features were extracted (e.g. %s): extracting "
                       "them again", len(changed), min(changed))
    failed: set[str] = set()
    try:
        for frame in tqdm(todo, desc="local features", unit="img"):
            source = file_stat(frame)  # before reading: a file changed while it is read counts as changed
            try:
                image = read_image(frame.image_path)
            except InputError as e:
                skipped.append(Skipped(frame.name, frame.image_path, e.problem))
                failed.add(frame.name)
                continue
            feats = extractor(image)
            writer.add(
                frame.name,
                {
                    "keypoints": feats.keypoints,
                    "descriptors": feats.descriptors.T.astype(np.float16),
                    "scores": feats.scores,
                    "image_size": np.array(feats.image_size),
                },
                attrs={"source_size": source[0], "source_mtime_ns": source[1]} if source is not None else None,
            )
            if global_writer is not None:
                with torch_threads(1):  # the same bits as in a one-thread cluster task (runtime.torch_threads)
                    vector = descriptor(image, feats).astype(np.float32)
                global_writer.add(frame.name, {"global_descriptor": vector})
    finally:
        writer.flush()  # on Ctrl-C or an error, keep what was extracted (a hard kill loses one buffer)
        if global_writer is not None:
            global_writer.flush()
    writer.finalize(file_attrs={"extractor": config.extractor})
    if global_writer is not None:
        global_writer.finalize(file_attrs={"global_descriptor": config.global_descriptor})
    return [f for f in frames if f.name not in failed]


#: How the per-image work after extraction runs: ``mapper(task, common, items)`` is
#: ``task(*common, chunk)`` over chunks of ``items``, the returned lists concatenated in the items' order.
#: :func:`run_here` runs one chunk in this process; :mod:`.cluster` runs Dask tasks. The tasks below read
#: the map folder's files, so they run anywhere that sees it.
Mapper = Callable[[Callable[..., list], tuple, list], list]


def run_here(task: Callable[..., list], common: tuple, items: list) -> list:
    """The default :data:`Mapper`: the whole list in this process."""
    return task(*common, items)


def describe_images(map_dir: str | Path, config: M.MapConfig, names: list[str]) -> list[np.ndarray]:
    """Task: the global descriptors of database images, from the map's features and fitted state."""
    desc = M.load_global_descriptor(config, map_dir)
    with H5Reader(Path(map_dir) / M.LOCAL_FEATURES) as r:
        return [desc(None, M.read_local_features(r, n)) for n in tqdm(names, desc="global descriptors", unit="img")]


def depth_points(map_dir: str | Path, frames: list[Frame]) -> list[tuple[np.ndarray | None, str]]:
    """Task: the world points of the map's keypoints of ``frames`` from their registered depth
    (:func:`points_from_depth`), or ``None`` and the problem."""
    out: list[tuple[np.ndarray | None, str]] = []
    with H5Reader(Path(map_dir) / M.LOCAL_FEATURES) as r:
        for f in tqdm(frames, desc="3D points from depth", unit="img"):
            kps = M.read_local_features(r, f.name).keypoints
            try:
                out.append((points_from_depth(f, kps), ""))
            except InputError as e:
                out.append((None, str(e)))
    return out


def match_database_pairs(map_dir: str | Path, pairs: list[tuple[str, str]]) -> list[np.ndarray]:
    """Task: mutual nearest-neighbour matches ``(M, 2)`` of database image pairs, from the map's features."""
    matcher = NearestNeighborMatcher(NNConfig())
    descriptors: dict[str, np.ndarray] = {}
    out = []
    with H5Reader(Path(map_dir) / M.LOCAL_FEATURES) as r:
        for a, b in tqdm(pairs, desc="matching database pairs", unit="pair"):
            for n in (a, b):
                if n not in descriptors:
                    descriptors[n] = M.read_local_features(r, n).descriptors
            out.append(matcher(descriptors[a], descriptors[b]).pairs())
    return out


def _global_stage(frames: list[Frame], out: Path, config: M.MapConfig, mapper: Mapper = run_here) -> None:
    """Fit the global descriptor if it needs it and describe every image (otherwise the descriptors
    were written during extraction); fit a descriptor that learns from the database's global vectors
    (``fits_on_vectors``, e.g. the CNN descriptor's PCA whitening); save the state of either to
    ``global_state.npz``; then index the descriptors' L2-normalised retrieval part with FAISS as
    ``config.index`` says."""
    names = [f.name for f in frames]
    desc = global_descriptors.create(config.global_descriptor, **config.global_options)
    if getattr(desc, "needs_fit", False):
        with H5Reader(out / M.LOCAL_FEATURES) as r:

            def local(name: str) -> LocalFeatures:
                return M.read_local_features(r, name)

            logger.info("fitting the %s codebook on %d images", config.global_descriptor, len(names))
            desc.fit(local(n).descriptors for n in names)
            _save_state(out, desc)
    vectors = global_vectors(names, out, config, desc, mapper)
    if getattr(desc, "fits_on_vectors", False):
        logger.info("fitting the %s descriptor on the %d database vectors", config.global_descriptor, len(names))
        desc.fit_vectors(vectors)
        _save_state(out, desc)
    index = GlobalIndex.build(M.index_vectors(desc, vectors), names, config.index_config())
    index.save(out / M.GLOBAL_INDEX)


def global_vectors(names: list[str], out: Path, config: M.MapConfig, desc: Any,
                   mapper: Mapper = run_here) -> np.ndarray:
    """The raw global descriptors ``(N, D)`` of the images ``names`` of the map folder ``out``.

    A descriptor that needs a fit (``desc.needs_fit``: VLAD) describes them from their local features with
    the state saved in ``out/global_state.npz`` (:func:`describe_images` through ``mapper``) and adds them to
    ``global_features.h5``; the others were computed and stored there during extraction and are read."""
    if getattr(desc, "needs_fit", False):
        vectors = np.stack(mapper(describe_images, (str(out), config), names))
        writer = ShardedH5Writer(out / M.GLOBAL_FEATURES, flush_every=len(names) + 1)
        for n, v in zip(names, vectors, strict=True):
            writer.add(n, {"global_descriptor": v})
        writer.finalize(file_attrs={"global_descriptor": config.global_descriptor})
        return vectors
    with H5Reader(out / M.GLOBAL_FEATURES) as r:
        return np.stack([r.read(n, ("global_descriptor",))["global_descriptor"] for n in names])


def _save_state(out: Path, desc: Any) -> None:
    """The descriptor's state arrays to ``global_state.npz``, atomically."""
    with atomic_path(out / M.GLOBAL_STATE) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **desc.state())


def _check_index(config: M.MapConfig, num_images: int) -> None:
    """Refuse an index setting that cannot index ``num_images`` vectors, before any work.

    IVF-PQ trains ``nlist`` coarse centroids and ``2**nbits`` PQ centroids per sub-quantizer: with fewer
    database images than that it is a :class:`ConfigError` (no silent fallback to the flat index; the
    message says what to lower). Whether ``m`` divides the descriptor dimension is checked when the
    descriptors exist.
    """
    index = config.index_config()
    if index.kind == "ivfpq" and min(num_images, index.train_size) < index.min_train():
        raise ConfigError(
            f"index ivfpq: {num_images} database images are too few to train nlist={index.nlist} lists and "
            f"2**nbits={2**index.nbits} PQ centroids (need at least {index.min_train()}); lower nlist / nbits "
            "(--index-option nlist=..., nbits=...) or use --index flat"
        )


#: Where database 3D points can come from (``MapConfig.points``).
POINT_MODES = ("auto", "depth", "triangulate", "colmap", "none")
#: ``points="colmap"``: largest distance (pixels) between a database keypoint and the COLMAP observation
#: whose 3D point it takes.
COLMAP_RADIUS_PX = 1.5


def points_from_observations(
    keypoints: np.ndarray, observations: np.ndarray, points3D: np.ndarray, radius_px: float = COLMAP_RADIUS_PX
) -> np.ndarray:
    """The 3D point of each keypoint from the nearest observation of a reconstruction.

    Args:
        keypoints: ``(N, 2)`` pixels (visloc's convention).
        observations: ``(M, 2)`` observations of the image that have a 3D point, same convention.
        points3D: ``(M, 3)`` their world points.
        radius_px: largest keypoint-observation distance.

    Returns:
        ``(N, 3)`` float32: the world point of the observation nearest to each keypoint, NaN where none
        lies within ``radius_px`` (several keypoints may share one observation's point).
    """
    from scipy.spatial import cKDTree

    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    out = np.full((len(keypoints), 3), np.nan, dtype=np.float32)
    if len(keypoints) == 0 or len(observations) == 0:
        return out
    dist, idx = cKDTree(np.asarray(observations, dtype=np.float64)).query(
        keypoints, k=1, distance_upper_bound=radius_px)
    found = np.isfinite(dist)
    out[found] = np.asarray(points3D, dtype=np.float32)[idx[found]]
    return out


def _points_from_colmap(frames: list[Frame], out: Path, model_dir: Path) -> None:
    """``points3D.h5`` from the 3D points of a COLMAP model (see :func:`points_from_observations`)."""
    observations = read_colmap_observations(model_dir)
    none = (np.zeros((0, 2)), np.zeros((0, 3)))
    writer = ShardedH5Writer(out / M.POINTS3D, flush_every=len(frames) + 1)
    found = total = 0
    with H5Reader(out / M.LOCAL_FEATURES) as r:
        for f in tqdm(frames, desc="3D points from the COLMAP model", unit="img"):
            kps = M.read_local_features(r, f.name).keypoints
            points = points_from_observations(kps, *observations.get(f.name, none))
            writer.add(f.name, {"points3D": points})
            found, total = found + int(np.isfinite(points[:, 0]).sum()), total + len(points)
    writer.finalize(file_attrs={"source": "colmap"})
    logger.info("%d of %d database keypoints took a 3D point of %s (within %.1f px)", found, total, model_dir,
                COLMAP_RADIUS_PX)


def points_stage(frames: list[Frame], out: Path, mode: str, triangulation: TriangulationConfig,
                  colmap_model: Path | None = None, mapper: Mapper = run_here) -> str:
    """Write ``out``'s 3D points as ``mode`` says (``auto``: depth where every frame has it, else triangulate);
    returns the mode used."""
    if mode == "auto":
        mode = "depth" if frames and all(f.depth_path is not None for f in frames) else "triangulate"
    if mode == "none":
        return mode
    if mode == "colmap":
        if colmap_model is None:
            raise ConfigError("points=colmap takes the 3D points of a COLMAP model: read the map images "
                              "from one (--colmap MODEL_DIR, format='colmap')")
        _points_from_colmap(frames, out, colmap_model)
        return mode
    if mode == "depth":
        missing = [f for f in frames if f.depth_path is None]
        if missing:
            raise InputError(missing[0].image_path, "points=depth needs registered depth for every map image")
        writer = ShardedH5Writer(out / M.POINTS3D, flush_every=len(frames) + 1)
        for f, (points, problem) in zip(frames, mapper(depth_points, (str(out),), frames), strict=True):
            if points is None:
                logger.warning("no 3D points for %s: %s", f.name, problem)
            else:
                writer.add(f.name, {"points3D": points})
        writer.finalize(file_attrs={"source": "depth"})
        return mode
    triangulate_points(out, {f.name: f.pose for f in frames}, {f.name: f.camera for f in frames}, triangulation,
                       mapper)
    return "triangulate"


def triangulate_points(out: Path, poses: dict[str, Pose], cameras: dict[str, Camera],
                       triangulation: TriangulationConfig, mapper: Mapper = run_here,
                       targets: Collection[str] | None = None) -> None:
    """Triangulate database keypoints from database pairs chosen by pose (:func:`pairs_from_poses` over all
    of ``poses``) and add their points to ``out/points3D.h5``.

    Args:
        out: the map folder (its ``local_features.h5`` holds every image of ``poses``).
        poses / cameras: ``cam_from_world`` and intrinsics of every database image, in map order.
        targets: triangulate only these images (``None``: all), from the pairs that hold one of them. A
            point depends only on its image's own pairs (star-shaped tracks), so the targets get the points
            a build over all of ``poses`` would give them.
    """
    pairs = [tuple(pair) for pair in pairs_from_poses(poses, triangulation.num_neighbors)]
    if targets is not None:
        targets = set(targets)
        pairs = [(a, b) for a, b in pairs if a in targets or b in targets]
    involved = {n for pair in pairs for n in pair} | set(poses if targets is None else targets)
    names = [n for n in poses if n in involved]
    with H5Reader(out / M.LOCAL_FEATURES) as r:
        keypoints = {n: M.read_local_features(r, n).keypoints for n in names}
    pair_matches = dict(zip(pairs, mapper(match_database_pairs, (str(out),), pairs), strict=True))
    points = triangulate_database(keypoints, {n: cameras[n] for n in names}, {n: poses[n] for n in names},
                                  pair_matches, triangulation)
    writer = ShardedH5Writer(out / M.POINTS3D, flush_every=len(points) + 1)
    for n, p in points.items():
        if targets is None or n in targets:
            writer.add(n, {"points3D": p})
    writer.finalize(file_attrs={"source": "triangulation"})


#: Written when a build starts: a resumed build must use the same settings as the files already there.
BUILD_CONFIG = "build_config.json"


def check_started_config(path: Path, current: dict) -> None:
    """Record ``current`` in ``path`` (a folder's start-up settings), or refuse a folder started with others."""
    if path.is_file():
        try:
            started = json.loads(path.read_text())
        except json.JSONDecodeError:
            started = None
        now = json.loads(json.dumps(current))
        if isinstance(started, dict) and isinstance(started.get("config"), dict):
            started["config"].setdefault("index", {})  # folders started before maps had an index setting
        if started is not None and started != now:
            changed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in config_differences(started, now))
            raise ConfigError(
                f"{path.parent}: this map folder was started with other settings ({changed}; see {path}); "
                "build into a new folder or delete this one"
            )
    write_json(path, current)


def config_differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` of every leaf that differs between two JSON-like dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


@dataclasses.dataclass(frozen=True)
class MapSummary:
    root: Path
    num_images: int
    skipped: list[Skipped]
    points: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """The database images of a map build, chosen from a data set before any work.

    Attributes:
        frameset: the data set as read.
        frames: the database images (with a pose; all images for a retrieval-only map), in the data set's order.
        skipped: images of the data set left out, with the reason.
        config: the settings (``points="none"`` for a retrieval-only map).
        retrieval_only: images without any pose: a map to search, not to localize in.
        split: the split the frames were read from.
    """

    frameset: FrameSet
    frames: list[Frame]
    skipped: list[Skipped]
    config: M.MapConfig
    retrieval_only: bool
    split: str | None

    def started_config(self) -> dict:
        """What ``build_config.json`` records: a resumed build must have the same."""
        return {"config": dataclasses.asdict(self.config), "split": self.split, "source": str(self.frameset.root)}


def plan_build(data: str | Path | FrameSet, config: M.MapConfig = M.MapConfig(), split: str | None = None,
               **dataset_options: Any) -> BuildPlan:
    """Read the data set and choose the database images of a map (see :func:`build_map` for the arguments).

    Raises:
        ConfigError: a bad points mode or index setting.
        InputError: no database image.
    """
    if config.points not in POINT_MODES:
        raise ConfigError(f"unknown points mode {config.points!r}; choose one of {', '.join(POINT_MODES)}")
    frameset = data if isinstance(data, FrameSet) else load_frames(data, split=split, **dataset_options)
    if config.points == "colmap" and frameset.colmap_model is None:
        raise ConfigError(f"points=colmap takes the 3D points of a COLMAP model, but {frameset.root} was read "
                          f"as {frameset.format or 'frames'}: give the model (--colmap MODEL_DIR)")
    skipped = list(frameset.skipped)
    frames = [f for f in frameset.frames if f.pose is not None]
    retrieval_only = not frames and bool(frameset.frames) and config.points in ("none", "auto")
    if retrieval_only:  # images without any pose: a map to search, not to localize in
        logger.info("no database poses: building a retrieval-only map (no 3D points)")
        frames = list(frameset.frames)
        config = dataclasses.replace(config, points="none")
    skipped += [Skipped(f.name, f.image_path, "no ground-truth pose") for f in frameset.frames if f.pose is None
                and not retrieval_only]
    if not frames:
        raise InputError(frameset.root, "no database image with a pose to build a map from (a retrieval-only "
                                        "map of images without poses needs --points none)")
    _check_index(config, len(frames))
    return BuildPlan(frameset, frames, skipped, config, retrieval_only, split)


def build_map(
    data: str | Path | FrameSet,
    out: str | Path,
    config: M.MapConfig = M.MapConfig(),
    split: str | None = None,
    triangulation: TriangulationConfig = TriangulationConfig(),
    **dataset_options: Any,
) -> MapSummary:
    """Build (or resume building) a map of the database images of a data set.

    Args:
        data: a data set folder (7-Scenes/University layout, TUM RGB-D, an image folder with
            ``poses=``/``camera=`` options, or an image folder with a COLMAP model ``model_dir=``) or an
            already loaded :class:`FrameSet`.
        out: the map folder to create.
        config: feature / descriptor / 3D-point choices (``points``: one of :data:`POINT_MODES`;
            ``colmap`` needs frames read from a COLMAP model).
        split: which frames form the database (default: the format's own, ``train`` for 7-Scenes layouts).
        triangulation: settings used when 3D points are triangulated.
        dataset_options: passed to the data set reader (e.g. ``camera``, ``poses``).

    Returns:
        A summary; unusable images are listed in ``skipped`` (and in ``map.json``).

    The same map can be built in pieces: :mod:`.shards` (``--shard i/n`` + ``visloc map merge``) and
    :mod:`.cluster` (``--cluster``, Dask) extract the local features elsewhere and finish with :func:`finish_build`.
    """
    t0 = time.perf_counter()
    plan = plan_build(data, config, split, **dataset_options)
    return finish_build(plan, out, triangulation, t0=t0)


def _refuse_extended(manifest: Path) -> None:
    """A map that ``visloc map add`` extended holds images its data set does not give: building it again would
    write a manifest without them (their features left behind, unindexed). Refused, before any change."""
    try:
        additions = json.loads(manifest.read_text()).get("additions")
    except (OSError, ValueError, AttributeError):
        return  # no finished map there (or not one of ours: the settings check after this speaks for it)
    if additions:
        count = sum(int(a.get("num_images", 0)) for a in additions)
        sources = ", ".join(sorted({str(a.get("source", {}).get("path")) for a in additions}))
        raise InputError(manifest, f"this map holds {count} images added by `visloc map add` (from {sources}): "
                                   "building it again from its data set would drop them; build into a new folder "
                                   "(from a data set that holds every image), or keep extending it with `map add`")


def start_build(plan: BuildPlan, out: str | Path) -> Path:
    """Create the map folder, refuse one started with other settings, and mark it incomplete."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _refuse_extended(out / M.MANIFEST)
    check_started_config(out / BUILD_CONFIG, plan.started_config())
    (out / M.MANIFEST).unlink(missing_ok=True)  # the map is incomplete until the manifest is rewritten
    return out


def finish_build(plan: BuildPlan, out: str | Path, triangulation: TriangulationConfig = TriangulationConfig(),
                 mapper: Mapper = run_here, t0: float | None = None) -> MapSummary:
    """Build the map of ``plan`` into ``out``: extract the local features not yet stored there (all, unless
    they were merged in from shards), fit and compute the global descriptors, index them, add the 3D points,
    poses, cameras, and the manifest last. ``mapper`` runs the per-image work after extraction (global
    descriptors of a fitted descriptor, depth points, matching of database pairs): by default here."""
    t0 = time.perf_counter() if t0 is None else t0
    config = plan.config
    out = start_build(plan, out)
    skipped = list(plan.skipped)
    frames = extract_all(plan.frames, out, config, skipped)
    stored = set(list_h5_names(out / M.LOCAL_FEATURES))
    frames = [f for f in frames if f.name in stored]
    frameset = plan.frameset
    if not frames:
        raise InputError(frameset.root, "none of the database images could be read")
    _global_stage(frames, out, config, mapper)
    points = points_stage(frames, out, config.points, triangulation, frameset.colmap_model, mapper)

    write_poses(out / M.POSES, {f.name: f.pose for f in frames if f.pose is not None})
    write_cameras(out / M.CAMERAS, {f.name: f.camera for f in frames})
    manifest = {
        "format": "visloc-map",
        "version": 1,
        "config": dataclasses.asdict(config),
        "triangulation": dataclasses.asdict(triangulation),
        "points": points,
        "retrieval_only": plan.retrieval_only,
        "source": {"path": str(frameset.root), "format": frameset.format, "split": plan.split},
        "versions": library_versions(),
        "names": [f.name for f in frames],
        "scenes": {f.name: f.scene for f in frames},
        "image_paths": {f.name: str(f.image_path) for f in frames},
        "skipped": [{"name": s.name, "path": str(s.path), "reason": s.reason} for s in skipped],
    }
    write_json(out / M.MANIFEST, manifest)
    seconds = time.perf_counter() - t0
    logger.info("map of %d images written to %s in %.1f s (%d skipped)", len(frames), out, seconds, len(skipped))
    for s in skipped:
        logger.warning("skipped %s", s)
    return MapSummary(out, len(frames), skipped, points, seconds)
