"""Place-recognition ground truth from poses, and Recall@N against sets of correct database images.

A database image is a correct answer to a query when it shows the same place from about the same side:

* it is in the **same scene** (room) as the query,
* its camera centre is within ``max_distance`` (1 m) of the query's, and
* its viewing direction (the optical axis, camera z in the world) is within ``max_angle_deg`` (45 deg) of the
  query's.

Both thresholds are inclusive. Poses are visloc :class:`~visloc.geometry.Pose` (``cam_from_world``).
:func:`world_place_ground_truth` reads the queries (test split) and database (training split) of a data set
folder in the 7-Scenes layout, such as the embedded world written by ``visloc world make``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets import load_frames
from ..datasets.base import Frame
from ..errors import InputError
from ..geometry import Pose

#: Default thresholds of the place rule.
MAX_DISTANCE_M = 1.0
MAX_ANGLE_DEG = 45.0
DEFAULT_NS = (1, 5, 10)


def _centres_and_axes(poses: Sequence[Pose]) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([p.center for p in poses], dtype=np.float64).reshape(-1, 3)
    axes = np.array([p.R[2] for p in poses], dtype=np.float64).reshape(-1, 3)  # camera z in the world
    return centres, axes / np.linalg.norm(axes, axis=1, keepdims=True)


def correct_database_images(
    query_poses: Sequence[Pose],
    query_scenes: Sequence[str],
    db_poses: Sequence[Pose],
    db_scenes: Sequence[str],
    max_distance: float = MAX_DISTANCE_M,
    max_angle_deg: float = MAX_ANGLE_DEG,
) -> list[set[int]]:
    """For each query, the indices of the correct database images (same scene, centre within
    ``max_distance`` metres, viewing direction within ``max_angle_deg`` degrees; both inclusive).

    Args:
        query_poses: ``cam_from_world`` of each query.
        query_scenes: scene (room) name of each query.
        db_poses: ``cam_from_world`` of each database image.
        db_scenes: scene name of each database image.

    Returns:
        One set of database indices per query (empty when no database image qualifies).
    """
    if len(query_poses) != len(query_scenes) or len(db_poses) != len(db_scenes):
        raise ValueError("one scene name per pose is needed, for the queries and for the database")
    if not (max_distance >= 0 and 0 <= max_angle_deg <= 180):
        raise ValueError(f"need max_distance >= 0 and max_angle_deg in [0, 180], got {max_distance}, {max_angle_deg}")
    if not db_poses:
        return [set() for _ in query_poses]
    qc, qa = _centres_and_axes(query_poses)
    dc, da = _centres_and_axes(db_poses)
    db_scene = np.asarray(list(db_scenes), dtype=object)
    out = []
    for i in range(len(qc)):
        dist = np.linalg.norm(dc - qc[i], axis=1)
        cos = np.clip(da @ qa[i], -1.0, 1.0)
        angle = np.degrees(np.arccos(cos))
        ok = (db_scene == query_scenes[i]) & (dist <= max_distance) & (angle <= max_angle_deg)
        out.append({int(j) for j in np.flatnonzero(ok)})
    return out


def recall_at_n_from_sets(
    ranked_lists: Sequence[Sequence[Hashable]] | np.ndarray,
    positives: Sequence[Iterable[Hashable]],
    ns: Iterable[int] = DEFAULT_NS,
) -> dict[int, float]:
    """Recall@N: the share of queries with a correct database image among their first ``N`` results.

    Args:
        ranked_lists: per query, database ids (indices or names) best first; may be shorter than ``max(ns)``.
        positives: per query, the correct database ids (same kind of id). A query without any counts as a
            miss (it is in the denominator).
        ns: the ``N`` values.

    Returns:
        ``{N: recall in [0, 1]}`` (``nan`` without queries).
    """
    ns_t = tuple(int(n) for n in ns)
    if any(n < 1 for n in ns_t):
        raise ValueError(f"N must be >= 1, got {ns_t}")
    if len(ranked_lists) != len(positives):
        raise ValueError(f"{len(ranked_lists)} ranked lists for {len(positives)} sets of positives")
    first = first_correct_ranks(ranked_lists, positives)
    nq = len(first)
    return {n: (float(np.count_nonzero(first <= n)) / nq if nq else float("nan")) for n in ns_t}


def first_correct_ranks(ranked_lists: Sequence[Sequence[Hashable]] | np.ndarray,
                        positives: Sequence[Iterable[Hashable]]) -> np.ndarray:
    """``(Q,)`` 1-based position of the first correct result of each query (``inf``: none in its list)."""
    out = np.full(len(ranked_lists), np.inf)
    for i, (ranked, good) in enumerate(zip(ranked_lists, positives, strict=True)):
        good_set = {_plain(g) for g in good}
        for rank, item in enumerate(ranked, start=1):
            if _plain(item) in good_set:
                out[i] = rank
                break
    return out


def _plain(item: Hashable) -> Hashable:
    """NumPy integers compare as Python ints (index arrays vs. sets of ints)."""
    return int(item) if isinstance(item, np.integer) else item


@dataclass(frozen=True)
class PlaceGroundTruth:
    """Queries, database and the correct database images of each query.

    Attributes:
        queries: query frames (with poses).
        database: database frames (with poses).
        positives: per query, indices into ``database``.
    """

    queries: list[Frame]
    database: list[Frame]
    positives: list[set[int]]

    @property
    def query_names(self) -> list[str]:
        return [f.name for f in self.queries]

    @property
    def database_names(self) -> list[str]:
        return [f.name for f in self.database]

    def positive_names(self) -> dict[str, set[str]]:
        """``{query name: {database names}}``."""
        db = self.database_names
        return {q.name: {db[j] for j in good} for q, good in zip(self.queries, self.positives, strict=True)}

    def recall(self, ranked: dict[str, Sequence[str]], ns: Iterable[int] = DEFAULT_NS) -> dict[int, float]:
        """Recall@N of ranked database names per query name (a query missing from ``ranked`` is a miss)."""
        truth = self.positive_names()
        return recall_at_n_from_sets([list(ranked.get(q, [])) for q in self.query_names],
                                     [truth[q] for q in self.query_names], ns)


def world_place_ground_truth(
    root: str | Path,
    query_split: str = "test",
    database_split: str = "train",
    max_distance: float = MAX_DISTANCE_M,
    max_angle_deg: float = MAX_ANGLE_DEG,
) -> PlaceGroundTruth:
    """The place-recall ground truth of a posed data set folder (e.g. the embedded world): its
    ``query_split`` frames against its ``database_split`` frames, with the place rule of this module.

    Raises:
        InputError: the folder cannot be read or a frame has no pose.
    """
    queries = load_frames(root, split=query_split).frames
    database = load_frames(root, split=database_split).frames
    for f in (*queries, *database):
        if f.pose is None:
            raise InputError(f.image_path, "no ground-truth pose; place recall needs the poses of every frame")
    positives = correct_database_images([f.pose for f in queries], [f.scene for f in queries],
                                        [f.pose for f in database], [f.scene for f in database],
                                        max_distance, max_angle_deg)
    return PlaceGroundTruth(queries=list(queries), database=list(database), positives=positives)
