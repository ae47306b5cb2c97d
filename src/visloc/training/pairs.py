"""Training pairs for the relative-pose network, chosen by view overlap (Publication V).

The original ``db_all_med_hard_*.txt`` files were made with undocumented "med_hard" criteria. visloc
instead measures how much two views see of the same surfaces and keeps pairs whose overlap lies in a
band (default 0.3-0.9: enough shared content to regress a relative pose, but not near-duplicates).

**Overlap with registered depth.** ``overlap(A -> B)`` is the share of a subsampled pixel grid of A
(pixels with valid depth only) whose back-projected 3D point

1. lies in front of camera B,
2. projects inside B's image (nearest pixel), and
3. is *visible* there: B's depth at that pixel agrees with the point's depth in B within
   ``depth_tolerance`` (relative), so occluded points do not count.

The symmetric overlap of a pair is ``min(overlap(A -> B), overlap(B -> A))``. Distortion is ignored
(the pinhole part of each camera is used), as for 7-Scenes and the embedded world.

**Fallback without depth** (a pose-only proxy, not a visibility measure): with ``a`` the angle between
the two optical axes and ``d`` the distance between the camera centres,
``overlap = max(0, 1 - a / max_view_angle_deg) * max(0, 1 - d / max_center_distance)``.
It is 1 for identical poses and 0 for opposite view directions or distant cameras.

Pairs are sampled jointly from all training scenes, never across scenes; each scene contributes at
most ``max_pairs_per_scene`` pairs. Files are written in the Publication V format
``img1 img2 scene_id tx ty tz qw qx qy qz`` (img1 = database image, img2 = query; visloc writes frame
names, relative to the data root), with a JSON sidecar holding the sampling settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import Frame, FrameSet
from ..errors import ConfigError, InputError
from ..geometry import Camera, Pose
from ..io.atomic import atomic_open, write_json
from ..io.images import read_depth
from ..io.text import data_lines

logger = logging.getLogger(__name__)

#: Columns of a Publication V pair file.
PAIR_COLUMNS = ("img1", "img2", "scene_id", "tx", "ty", "tz", "qw", "qx", "qy", "qz")
#: Points closer than this (metres, camera z) to camera B count as behind it.
MIN_DEPTH = 1e-6
#: A rotation label whose quaternion is shorter than this is refused (labels are unit quaternions).
MIN_QUATERNION_NORM = 1e-6


@dataclass(frozen=True)
class PairSamplingConfig:
    """How training pairs are chosen.

    Attributes:
        min_overlap: smallest symmetric overlap kept (inclusive).
        max_overlap: largest symmetric overlap kept (inclusive); excludes near-duplicate frames.
        max_pairs_per_scene: cap on the pairs drawn from one scene (randomly chosen among those in band).
        max_candidates_per_scene: cap on the pairs whose overlap is computed per scene (a random subset
            of the pose-filtered candidates; bounds the cost on scenes with thousands of frames).
        grid_step: stride in pixels of the grid of A whose points are tested (the first point sits at
            ``grid_step // 2``); 8 tests 4,800 points of a 640x480 image.
        depth_tolerance: relative depth agreement needed for a point to count as visible in B.
        max_center_distance: metres; pairs further apart are not candidates (and the fallback's scale).
        max_view_angle_deg: degrees between optical axes; wider pairs are not candidates (and the
            fallback's scale).
        depth_cache: depth maps kept in memory while sampling one scene (least recently used dropped).
        seed: seed of every random choice (candidate subset, kept subset, pair order).
    """

    min_overlap: float = 0.3
    max_overlap: float = 0.9
    max_pairs_per_scene: int = 2000
    max_candidates_per_scene: int = 50_000
    grid_step: int = 8
    depth_tolerance: float = 0.1
    max_center_distance: float = 3.0
    max_view_angle_deg: float = 90.0
    depth_cache: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_overlap <= self.max_overlap <= 1.0:
            raise ConfigError(
                f"need 0 <= min_overlap <= max_overlap <= 1, got {self.min_overlap} and {self.max_overlap}"
            )
        for name in ("max_pairs_per_scene", "max_candidates_per_scene", "grid_step", "depth_cache"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PairSamplingConfig.{name} must be a positive integer, got {value!r}")
        for name in ("depth_tolerance", "max_center_distance", "max_view_angle_deg"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"PairSamplingConfig.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RelPosePair:
    """One line of a Publication V pair file.

    Attributes:
        db: name of the database image (img1, the network's first input).
        query: name of the query image (img2).
        scene_id: index of the scene (0-based, in the sorted scene list of the data set).
        t: ``(3,)`` relative translation label.
        q: ``(4,)`` relative rotation label, w-first quaternion.
        overlap: symmetric overlap when sampled here (not stored in the file).
    """

    db: str
    query: str
    scene_id: int
    t: tuple[float, float, float]
    q: tuple[float, float, float, float]
    overlap: float | None = None


# --- overlap ------------------------------------------------------------------------------------------
def _grid(depth: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel coordinates ``(u, v)`` and depth ``z`` of the valid grid points, each ``(N,)``."""
    off = step // 2
    vs, us = np.mgrid[off : depth.shape[0] : step, off : depth.shape[1] : step]
    z = depth[vs, us].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    return us[valid].astype(np.float64), vs[valid].astype(np.float64), z[valid]


def _check_depth(depth: np.ndarray, camera: Camera, what: str) -> None:
    if depth.shape != (camera.height, camera.width):
        raise ValueError(
            f"depth of {what} is {depth.shape[1]}x{depth.shape[0]} but its camera is {camera.width}x{camera.height}"
        )


def view_overlap(
    depth_a: np.ndarray,
    camera_a: Camera,
    pose_a: Pose,
    depth_b: np.ndarray,
    camera_b: Camera,
    pose_b: Pose,
    *,
    grid_step: int = 8,
    depth_tolerance: float = 0.1,
) -> float:
    """Directed overlap ``A -> B``: share of A's grid points that B sees (see the module docstring).

    Args:
        depth_a: ``(H_a, W_a)`` depth of A in metres (camera z; NaN or <= 0 = invalid).
        camera_a: intrinsics of A (pinhole part used).
        pose_a: ``cam_from_world`` of A.
        depth_b: ``(H_b, W_b)`` depth of B.
        camera_b: intrinsics of B.
        pose_b: ``cam_from_world`` of B.
        grid_step: pixel stride of A's grid.
        depth_tolerance: relative depth agreement needed in B.

    Returns:
        A number in ``[0, 1]``; 0 when A has no valid depth on the grid.
    """
    _check_depth(depth_a, camera_a, "A")
    _check_depth(depth_b, camera_b, "B")
    u, v, z = _grid(depth_a, grid_step)
    if z.size == 0:
        return 0.0
    (fx, fy), (cx, cy) = camera_a.focal, camera_a.principal_point
    points_a = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=1)  # (N, 3) in A's frame
    points_world = (points_a - pose_a.t) @ pose_a.R  # R^T (x - t), row-wise
    points_b = pose_b.transform(points_world)
    zb = points_b[:, 2]
    front = zb > MIN_DEPTH
    (fx, fy), (cx, cy) = camera_b.focal, camera_b.principal_point
    zs = np.where(front, zb, 1.0)
    ub = np.rint(fx * points_b[:, 0] / zs + cx)
    vb = np.rint(fy * points_b[:, 1] / zs + cy)
    inside = front & (ub >= 0) & (ub < camera_b.width) & (vb >= 0) & (vb < camera_b.height)
    seen = depth_b[vb[inside].astype(np.int64), ub[inside].astype(np.int64)].astype(np.float64)
    visible = np.isfinite(seen) & (np.abs(seen - zb[inside]) <= depth_tolerance * seen)
    return float(np.count_nonzero(visible)) / float(z.size)


def optical_axis(pose: Pose) -> np.ndarray:
    """``(3,)`` viewing direction (camera +z) in world coordinates."""
    return pose.R[2].copy()


def view_angle_deg(pose_a: Pose, pose_b: Pose) -> float:
    """Angle between the optical axes of two cameras, in degrees."""
    c = float(np.clip(optical_axis(pose_a) @ optical_axis(pose_b), -1.0, 1.0))
    return float(np.degrees(np.arccos(c)))


def pose_overlap(pose_a: Pose, pose_b: Pose, max_view_angle_deg: float = 90.0, max_center_distance: float = 3.0) -> float:
    """The pose-only fallback overlap (see the module docstring), in ``[0, 1]``."""
    angle = view_angle_deg(pose_a, pose_b)
    dist = float(np.linalg.norm(pose_a.center - pose_b.center))
    return max(0.0, 1.0 - angle / max_view_angle_deg) * max(0.0, 1.0 - dist / max_center_distance)


class DepthCache:
    """Least-recently-used cache of depth maps in metres, keyed by frame name."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, frame: Frame) -> np.ndarray:
        if frame.name in self._items:
            self._items.move_to_end(frame.name)
            return self._items[frame.name]
        if frame.depth_path is None:
            raise InputError(frame.image_path, "frame has no registered depth")
        depth = read_depth(frame.depth_path, scale=frame.depth_scale)
        self._items[frame.name] = depth
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return depth


def frame_overlap(
    frame_a: Frame, frame_b: Frame, config: PairSamplingConfig = PairSamplingConfig(), cache: DepthCache | None = None
) -> float:
    """Symmetric overlap of two frames with poses: ``min`` of both directions with registered depth,
    else the pose-only fallback."""
    if frame_a.pose is None or frame_b.pose is None:
        raise ValueError(f"overlap needs poses ({frame_a.name}, {frame_b.name})")
    if frame_a.depth_path is None or frame_b.depth_path is None:
        return pose_overlap(frame_a.pose, frame_b.pose, config.max_view_angle_deg, config.max_center_distance)
    cache = cache or DepthCache(2)
    da, db = cache.get(frame_a), cache.get(frame_b)
    kw = {"grid_step": config.grid_step, "depth_tolerance": config.depth_tolerance}
    ab = view_overlap(da, frame_a.camera, frame_a.pose, db, frame_b.camera, frame_b.pose, **kw)
    if ab == 0.0:
        return 0.0
    ba = view_overlap(db, frame_b.camera, frame_b.pose, da, frame_a.camera, frame_a.pose, **kw)
    return min(ab, ba)


# --- sampling -----------------------------------------------------------------------------------------
def _candidates(first: Sequence[Frame], second: Sequence[Frame] | None, config: PairSamplingConfig) -> np.ndarray:
    """``(M, 2)`` index pairs ``(i, j)`` that pass the pose pre-filter (distance and view angle).

    ``i`` indexes ``first`` and ``j`` indexes ``second``; without ``second``, both index ``first`` and
    ``i < j``.
    """
    same = second is None
    second = first if second is None else second
    if not first or not second:
        return np.zeros((0, 2), dtype=np.int64)
    c1 = np.array([f.pose.center for f in first])  # type: ignore[union-attr]
    a1 = np.array([optical_axis(f.pose) for f in first])  # type: ignore[arg-type]
    c2 = np.array([f.pose.center for f in second])  # type: ignore[union-attr]
    a2 = np.array([optical_axis(f.pose) for f in second])  # type: ignore[arg-type]
    cos_max = np.cos(np.radians(config.max_view_angle_deg))
    out = [np.zeros((0, 2), dtype=np.int64)]
    for i in range(len(first)):
        j0 = i + 1 if same else 0
        d = np.linalg.norm(c2[j0:] - c1[i], axis=1)
        c = a2[j0:] @ a1[i]
        js = np.flatnonzero((d <= config.max_center_distance) & (c >= cos_max - 1e-12)) + j0
        out.append(np.stack([np.full(len(js), i), js], axis=1).astype(np.int64))
    return np.concatenate(out)


def sample_scene_pairs(
    frames: Sequence[Frame],
    scene_id: int,
    config: PairSamplingConfig,
    translation_frame: str = "camera",
    queries: Sequence[Frame] | None = None,
) -> list[RelPosePair]:
    """Pairs of one scene with overlap in the band, at most ``config.max_pairs_per_scene``.

    Args:
        frames: frames of ONE scene, all with poses.
        scene_id: value of the scene column.
        config: sampling settings.
        translation_frame: frame of the translation label, passed to
            :func:`visloc.geometry.relative_pose.relative_pose_label`.
        queries: frames of the same scene to pair with ``frames``. Given, every pair is
            (database from ``frames``, query from ``queries``), as at test time (validation pairs);
            otherwise pairs are drawn within ``frames`` and each pair's order is random.

    Returns:
        Pairs sorted by (db, query) name.
    """
    from ..geometry.relative_pose import relative_pose_label

    frames = sorted(frames, key=lambda f: f.name)
    second = None if queries is None else sorted(queries, key=lambda f: f.name)
    rng = np.random.default_rng([config.seed, scene_id])
    cand = _candidates(frames, second, config)
    if len(cand) > config.max_candidates_per_scene:
        cand = cand[np.sort(rng.choice(len(cand), config.max_candidates_per_scene, replace=False))]
    other = frames if second is None else second
    cache = DepthCache(config.depth_cache)
    overlaps = np.array([frame_overlap(frames[i], other[j], config, cache) for i, j in cand])
    in_band = np.flatnonzero((overlaps >= config.min_overlap) & (overlaps <= config.max_overlap))
    keep = in_band
    if len(keep) > config.max_pairs_per_scene:
        keep = np.sort(rng.choice(keep, config.max_pairs_per_scene, replace=False))
    swap = rng.random(len(keep)) < 0.5 if second is None else np.zeros(len(keep), dtype=bool)
    pairs = []
    for k, s in zip(keep, swap, strict=True):
        a, b = frames[cand[k][0]], other[cand[k][1]]
        db, query = (b, a) if s else (a, b)
        t, q = relative_pose_label(db.pose, query.pose, translation_frame)
        pairs.append(
            RelPosePair(db.name, query.name, scene_id, _floats(t, 3), _floats(q, 4), float(overlaps[k]))
        )
    method = "depth" if all(f.depth_path is not None for f in [*frames, *other]) else "pose fallback"
    logger.info(
        "scene %d: %d+%d frames, %d candidates, %d in overlap band [%.2f, %.2f] (%s), %d kept",
        scene_id, len(frames), 0 if second is None else len(second), len(cand), len(in_band),
        config.min_overlap, config.max_overlap, method, len(pairs),
    )
    return sorted(pairs, key=lambda p: (p.db, p.query))


def _floats(x: Any, n: int) -> tuple[float, ...]:
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} numbers, got shape {arr.shape}")
    return tuple(float(a) for a in arr)


def scene_ids_of(frames: FrameSet | Iterable[Frame]) -> dict[str, int]:
    """Scene name -> id: the position in the sorted list of scene names (7-Scenes order in Pub V)."""
    items = frames.frames if isinstance(frames, FrameSet) else list(frames)
    return {s: i for i, s in enumerate(sorted({f.scene for f in items}))}


def sample_pairs(
    frames: FrameSet | Iterable[Frame],
    config: PairSamplingConfig = PairSamplingConfig(),
    *,
    exclude_scenes: Iterable[str] = (),
    translation_frame: str = "camera",
    scene_ids: Mapping[str, int] | None = None,
    queries: FrameSet | Iterable[Frame] | None = None,
) -> list[RelPosePair]:
    """Sample training pairs jointly from every scene of ``frames`` (never across scenes).

    Args:
        frames: frames with ground-truth poses (frames without a pose are ignored with a warning).
        config: overlap band, caps, seed.
        exclude_scenes: scene names left out (e.g. the held-out scene of a leave-one-out benchmark).
        translation_frame: ``"world"`` or ``"camera"``, the frame of the translation label.
        scene_ids: scene name -> id; default :func:`scene_ids_of` over ALL scenes of ``frames``, so ids
            do not change when a scene is excluded.
        queries: frames (e.g. of the test split) to pair with ``frames`` scene by scene, database image
            from ``frames`` and query from ``queries`` (validation pairs that look like test-time pairs).

    Returns:
        Pairs, scene by scene in id order.

    Raises:
        ConfigError: an excluded scene is not in ``frames`` or every scene is excluded.
    """
    items = _posed(frames)
    query_items = None if queries is None else _posed(queries)
    ids = dict(scene_ids) if scene_ids is not None else scene_ids_of(items)
    scenes = sorted({f.scene for f in items}, key=lambda s: ids.get(s, len(ids)))
    excluded = set(exclude_scenes)
    unknown = sorted(excluded - set(scenes))
    if unknown:
        raise ConfigError(f"cannot exclude unknown scene(s) {unknown}; scenes: {scenes}")
    kept = [s for s in scenes if s not in excluded]
    if not kept:
        raise ConfigError("every scene is excluded; nothing to sample pairs from")
    missing = sorted(s for s in kept if s not in ids)
    if missing:
        raise ConfigError(f"scene(s) {missing} have no id in scene_ids")
    pairs: list[RelPosePair] = []
    for scene in kept:
        scene_queries = None if query_items is None else [f for f in query_items if f.scene == scene]
        pairs += sample_scene_pairs(
            [f for f in items if f.scene == scene], ids[scene], config, translation_frame, scene_queries
        )
    return pairs


def _posed(frames: FrameSet | Iterable[Frame]) -> list[Frame]:
    items = frames.frames if isinstance(frames, FrameSet) else list(frames)
    posed = [f for f in items if f.pose is not None]
    if len(posed) < len(items):
        logger.warning("%d frames without a pose are ignored for pair sampling", len(items) - len(posed))
    return posed


# --- files --------------------------------------------------------------------------------------------
def pair_sidecar(path: str | Path) -> Path:
    """The JSON sidecar of a pair file: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def write_pair_file(path: str | Path, pairs: Iterable[RelPosePair], metadata: Mapping[str, Any] | None = None) -> None:
    """Write pairs atomically in the Publication V format, plus the sidecar ``<path>.json`` with
    ``metadata`` (e.g. ``translation_frame`` and the sampling config) and the pair count."""
    pairs = list(pairs)
    with atomic_open(path) as f:
        for p in pairs:
            numbers = " ".join(f"{x:.9g}" for x in (*p.t, *p.q))
            f.write(f"{p.db} {p.query} {p.scene_id} {numbers}\n")
    write_json(pair_sidecar(path), {"columns": list(PAIR_COLUMNS), "num_pairs": len(pairs), **dict(metadata or {})})


def read_pair_file(path: str | Path, translation_frame: str | None = None) -> list[RelPosePair]:
    """Read a Publication V pair file (also the original ``db_all_med_hard_*.txt`` files).

    Args:
        path: the pair file.
        translation_frame: when given and the sidecar records another frame, the file is rejected.

    Raises:
        InputError: a malformed line (a zero rotation quaternion included), or a translation frame that
            differs from the sidecar's.
    """
    path = Path(path)
    pairs = []
    for lineno, parts in data_lines(path, "pair file"):
        if len(parts) != len(PAIR_COLUMNS):
            raise InputError(path, f"line {lineno}: expected {len(PAIR_COLUMNS)} fields ({' '.join(PAIR_COLUMNS)}), "
                                   f"got {len(parts)}")
        try:
            numbers = [float(x) for x in parts[3:]]
            scene_id = int(parts[2])
        except ValueError:
            raise InputError(path, f"line {lineno}: scene id and label must be numbers") from None
        if not np.all(np.isfinite(numbers)):
            raise InputError(path, f"line {lineno}: label holds NaN or infinity")
        if np.linalg.norm(numbers[3:]) < MIN_QUATERNION_NORM:
            raise InputError(path, f"line {lineno}: rotation label qw qx qy qz is zero (not a rotation; it "
                                   "would make the loss NaN)")
        pairs.append(RelPosePair(parts[0], parts[1], scene_id, _floats(numbers[:3], 3), _floats(numbers[3:], 4)))
    side = pair_sidecar(path)
    if translation_frame is not None and side.is_file():
        try:
            recorded = json.loads(side.read_text()).get("translation_frame")
        except (ValueError, AttributeError) as e:
            raise InputError(side, f"malformed pair-file sidecar ({e})") from None
        if recorded is not None and recorded != translation_frame:
            raise InputError(path, f"labels use translation_frame={recorded!r}, expected {translation_frame!r}")
    return pairs


def sampling_metadata(config: PairSamplingConfig, translation_frame: str, exclude_scenes: Iterable[str],
                      scene_ids: Mapping[str, int]) -> dict[str, Any]:
    """The sidecar content describing how a pair file was made."""
    return {
        "translation_frame": translation_frame,
        "exclude_scenes": sorted(exclude_scenes),
        "scene_ids": dict(scene_ids),
        "sampling": dataclasses.asdict(config),
    }
