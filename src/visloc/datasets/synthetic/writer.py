"""Write the synthetic world to disk in the 7-Scenes layout.

::

    <root>/dataset.json                           written last: marks a finished world
    <root>/<scene>/TrainSplit.txt                 sequence1 ... sequenceK
    <root>/<scene>/TestSplit.txt                  sequenceK+1
    <root>/<scene>/seq-XX/frame-NNNNNN.color.png  8-bit RGB, photometric nuisances applied
    <root>/<scene>/seq-XX/frame-NNNNNN.depth.png  16-bit millimetres, 65535 = invalid, registered to colour
    <root>/<scene>/seq-XX/frame-NNNNNN.pose.txt   4x4 camera-to-world matrix (as real 7-Scenes)

Every file is written atomically; frames whose three files exist are skipped, so an interrupted run
resumes where it stopped, and a finished folder is left untouched. The same config gives byte-identical
files whatever the number of worker processes.

A world made with the hard options (``WorldConfig.preset("hard")``) also gets ``object_queries.txt`` /
``.json`` (:mod:`visloc.datasets.synthetic.objects`), and its ``dataset.json`` records the preset, the
moved / removed objects, the lamps and the occluded frames of every scene.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from ... import __version__
from ...errors import ConfigError
from ...geometry import Pose
from ...io.atomic import atomic_open, write_json, write_text
from ...io.images import write_depth
from .config import GENERATOR_VERSION, WorldConfig
from .layout import build_world
from .objects import OBJECT_QUERIES_JSON, OBJECT_QUERIES_TXT, write_object_queries
from .render import render_frame
from .scene import World, frame_rng

logger = logging.getLogger(__name__)

#: Hidden file holding the config of a world being written; removed when ``dataset.json`` appears.
PROGRESS_FILE = ".synthetic-progress.json"
DEPTH_SCALE = 1000.0
#: Colour PNG encoding: fast zlib level, Paeth filter, run-length strategy (about twice as fast as
#: OpenCV's default for noisy images, and smaller).
PNG_PARAMS = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH,
              cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)


def frame_stem(root: Path, scene: str, sequence: int, frame: int) -> Path:
    """``<root>/<scene>/seq-XX/frame-NNNNNN`` (append ``.color.png``, ``.depth.png``, ``.pose.txt``)."""
    return Path(root) / scene / f"seq-{sequence:02d}" / f"frame-{frame:06d}"


def _frame_files(stem: Path) -> tuple[Path, Path, Path]:
    return (stem.with_name(stem.name + ".color.png"), stem.with_name(stem.name + ".depth.png"),
            stem.with_name(stem.name + ".pose.txt"))


def pose_text(pose: Pose) -> str:
    """7-Scenes ``pose.txt`` content: the 4x4 camera-to-world matrix, one whitespace-separated row a line."""
    T = pose.inverse().matrix
    return "".join(" ".join(f"{v:.10e}" for v in row) + "\n" for row in T)


def _frame_list(config: WorldConfig) -> list[tuple[int, int, int]]:
    """``(scene index, sequence number, frame index)`` of every frame of ``config``."""
    out = []
    for s in range(config.num_scenes):
        for seq in range(1, config.train_traversals + 2):
            n = config.frames_per_train_traversal if seq <= config.train_traversals else config.frames_per_test_traversal
            out += [(s, seq, i) for i in range(n)]
    return out


def dataset_metadata(world: World) -> dict[str, Any]:
    """Content of ``<root>/dataset.json``."""
    config = world.config
    scenes = []
    for scene in world.scenes:
        lo, hi = scene.bounds
        scenes.append({
            "name": scene.name,
            "bounds_min": [round(float(v), 6) for v in lo],
            "bounds_max": [round(float(v), 6) for v in hi],
            "train": [t.name for t in scene.train_traversals],
            "test": [t.name for t in scene.test_traversals],
            "frames": {t.name: len(t) for t in scene.traversals},
        })
        if config.has_hard_options:  # (left out of the default world's file, which stays as it was)
            test = scene.test_traversals[0]
            scenes[-1]["test_changes"] = scene.changes
            scenes[-1]["lamp"] = None if scene.lamp is None else [round(float(v), 6) for v in scene.lamp]
            scenes[-1]["occluded_frames"] = {test.name: sorted(scene.occluders)}
    out = {
        "format": "7scenes",
        "camera": config.camera.to_colmap_string(),
        "depth_registered": True,
        "depth_scale": DEPTH_SCALE,
        "depth_invalid": 65535,
        "pose_file": "camera-to-world 4x4",
        "world_frame": "z up, metres; rooms side by side along +x, one shared frame",
        "world": config.to_dict(),
        "scenes": scenes,
        "generator": "visloc.datasets.synthetic",
        "generator_version": GENERATOR_VERSION,
        "version": __version__,
    }
    if config.has_hard_options:
        out["preset"] = config.preset_name
        out["test_traversal"] = ("its own lighting, moved / removed objects and occluders (geometry: depth "
                                 "and poses exact); the training traversals see the room as it was")
    return out


# --- frame production ----------------------------------------------------------------------------

def write_frame(world: World, root: Path, scene_index: int, sequence: int, frame: int) -> None:
    """Render one frame and write its colour, depth and pose files atomically."""
    scene = world.scenes[scene_index]
    traversal = scene.traversals[sequence - 1]
    pose = traversal.poses[frame]
    result = render_frame(world, scene_index, sequence, frame)
    depth = result.depth
    rgb = traversal.photometric.apply(result.rgb, frame_rng(world.config.seed, scene_index, sequence, frame))
    color_path, depth_path, pose_path = _frame_files(frame_stem(root, scene.name, sequence, frame))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), list(PNG_PARAMS))
    if not ok:  # pragma: no cover - OpenCV failure
        raise RuntimeError(f"cannot encode {color_path}")
    with atomic_open(color_path, "wb") as f:
        f.write(png.tobytes())
    write_depth(depth_path, depth, scale=DEPTH_SCALE, compress_level=1)
    write_text(pose_path, pose_text(pose))


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_text(path, text)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2) + "\n"


def make_world(out_dir: str | Path, config: WorldConfig | None = None, progress: bool = True, *,
               workers: int | None = None, object_queries: bool | None = None) -> Path:
    """Generate the synthetic world into ``out_dir`` (7-Scenes layout) and return that root.

    Args:
        out_dir: root folder; created if needed.
        config: world config (default :class:`WorldConfig` ()).
        progress: show a tqdm bar over frames.
        workers: threads rendering frames (default: one per available core, at most 4; the files do not
            depend on it).
        object_queries: also write ``object_queries.txt`` / ``.json``
            (:func:`~visloc.datasets.synthetic.objects.write_object_queries`); default: for configs with the
            hard options (``WorldConfig.preset("hard")``), not for the default world.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``out_dir`` holds a world (finished or not) made with another config.
    """
    config = config or WorldConfig()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "dataset.json"
    progress_file = root / PROGRESS_FILE
    wanted = config.to_dict()
    stale = False  # files written by another generator version: make everything again
    for existing in (marker, progress_file):
        if existing.is_file():
            try:
                found = json.loads(existing.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                found = {}
            if not isinstance(found, dict):
                found = {}
            if found.get("world") is not None and found["world"] != wanted:
                raise ConfigError(f"{root} already holds a synthetic world made with another config "
                                  f"({existing.name}: {found['world']}); use another folder or delete it")
            stale |= found.get("generator_version") != GENERATOR_VERSION
    if object_queries is None:
        object_queries = config.has_hard_options
    query_files = [root / OBJECT_QUERIES_TXT, root / OBJECT_QUERIES_JSON] if object_queries else []
    names = config.scene_names
    jobs = [(s, seq, i) for s, seq, i in _frame_list(config)
            if stale or not all(p.is_file() for p in _frame_files(frame_stem(root, names[s], seq, i)))]
    splits = [root / name / f for name in names for f in ("TrainSplit.txt", "TestSplit.txt")]
    if marker.is_file() and not jobs and all(p.is_file() for p in splits + query_files):
        logger.info("synthetic world in %s is complete; nothing to do", root)
        return root
    if stale:
        logger.warning("%s was made by another version of the generator; making it again", root)
    if stale or not progress_file.is_file():
        write_json(progress_file, {"world": wanted, "generator_version": GENERATOR_VERSION})

    logger.info("building synthetic world (%d scenes) for %s", config.num_scenes, root)
    world = build_world(config)
    world.quads, world.quad_offsets  # noqa: B018 -- computed once here, before the threads share them
    n_workers = max(1, min(workers if workers is not None else min(4, _available_cores()), len(jobs)))
    logger.info("rendering %d frames with %d thread(s)", len(jobs), n_workers)
    with tqdm(total=len(jobs), disable=not progress, desc="synthetic world", unit="frame") as bar:
        if n_workers == 1:
            for s, seq, i in jobs:
                write_frame(world, root, s, seq, i)
                bar.update(1)
        else:
            # Threads, not processes: rendering, PNG encoding and zlib spend their time in NumPy / OpenCV /
            # Pillow code that releases the GIL, and threads share the world without forking (forking a
            # process whose OpenCV thread pool is busy can deadlock the children).
            with ThreadPoolExecutor(n_workers, thread_name_prefix="visloc-synthetic") as pool:
                futures = [pool.submit(write_frame, world, root, *job) for job in jobs]
                try:
                    for future in as_completed(futures):
                        future.result()
                        bar.update(1)
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise

    for scene in world.scenes:
        train = "".join(f"sequence{t.sequence}\n" for t in scene.train_traversals)
        test = "".join(f"sequence{t.sequence}\n" for t in scene.test_traversals)
        _write_if_changed(root / scene.name / "TrainSplit.txt", train)
        _write_if_changed(root / scene.name / "TestSplit.txt", test)
    if object_queries and (stale or not all(p.is_file() for p in query_files)):
        logger.info("finding the object queries of %s", root)
        write_object_queries(world, root)
    _write_if_changed(marker, _json_text(dataset_metadata(world)))
    progress_file.unlink(missing_ok=True)
    logger.info("synthetic world written to %s", root)
    return root
