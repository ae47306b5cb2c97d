"""Figures of a localization run: top views per scene and query / retrieved / matches panels."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..datasets.base import Frame
from ..evaluation.localization import default_scene_of
from ..geometry import Pose
from ..geometry.backends import cam_from_img
from ..geometry.epipolar import essential_from_pose, sampson_distance
from ..io.h5 import H5Reader, MatchReader
from ..io.images import read_image
from ..localization.localize import QueryResult
from ..localization.map import Map, read_local_features
from .plots import plot_matches, plot_retrieval, plot_trajectories_topview


def topview_figures(
    out_dir: Path, truth: Mapping[str, Pose], estimates: Mapping[str, Pose],
    database: Mapping[str, Pose] | None = None, database_scenes: Mapping[str, str] | None = None,
    scene_of: Callable[[str], str] | None = None,
) -> list[tuple[str, Path]]:
    """One top-view figure per scene: ground truth, estimates and the database cameras of that scene.

    Args:
        scene_of: the scene of a query name (default: the first path component); database images take
            their scene from ``database_scenes`` (the map's), so both sides use the data set's scene names.
    """
    scene_of = scene_of or default_scene_of
    figures = []
    for scene in sorted({scene_of(n) for n in truth}):
        gt = {n: p for n, p in truth.items() if scene_of(n) == scene}
        est = {n: p for n, p in estimates.items() if n in gt}
        db = None
        if database is not None:
            db = {n: p for n, p in database.items() if (database_scenes or {}).get(n, scene_of(n)) == scene}
        path = plot_trajectories_topview(gt, est, db, out_dir / f"topview_{scene}.png", f"{scene}: top view")
        figures.append((f"Top view: {scene}", path))
    return figures


def query_figures(
    out_dir: Path, the_map: Map, frame: Frame, result: QueryResult, features: Path | None = None,
    matches: Path | None = None, max_retrieved: int = 4, sampson_px: float = 2.0,
) -> list[tuple[str, Path]]:
    """Retrieval panel and, when localized and the run wrote them, the matches with the best supporting
    database image read from the run's ``features.h5`` / ``matches.h5`` (nothing is recomputed), coloured
    by agreement with the estimated pose (Sampson distance below ``sampson_px``)."""
    stem = Path(frame.name).with_suffix("").as_posix().replace("/", "_")
    query = read_image(frame.image_path)
    retrieved = result.retrieved[:max_retrieved]
    figs = [(
        f"Retrieval: {frame.name}",
        plot_retrieval(
            query, [the_map.image_paths[d] for d in retrieved], [f"#{i + 1} {d}" for i, d in enumerate(retrieved)],
            out_dir / f"retrieval_{stem}.png", f"{frame.name} ({result.status})",
            correct=[d in result.support for d in retrieved],
        ),
    )]
    if result.pose is None or not result.support or features is None or matches is None:
        return figs
    if not (features.is_file() and matches.is_file()):
        return figs
    inliers = dict(zip(result.retrieved, result.inliers, strict=False))  # empty for ``relpose``
    best = max(result.support, key=lambda d: inliers.get(d, 0))
    with H5Reader(features) as f, MatchReader(matches) as m:
        if frame.name not in f or (frame.name, best) not in m:
            return figs
        kq_all = read_local_features(f, frame.name).keypoints
        pairs, _ = m.read(frame.name, best)
    kq, kd = kq_all[pairs[:, 0]], the_map.local_features(best).keypoints[pairs[:, 1]]
    rel = result.pose @ the_map.poses[best].inverse()  # query_from_db
    err = sampson_distance(
        essential_from_pose(rel), cam_from_img(the_map.cameras[best], kd), cam_from_img(frame.camera, kq)
    ) * float(np.mean(frame.camera.focal))
    figs.append((
        f"Matches: {frame.name} - {best}",
        plot_matches(query, the_map.image_paths[best], kq, kd, err < sampson_px, out_dir / f"matches_{stem}.png",
                     f"{frame.name} vs {best}: {int((err < sampson_px).sum())}/{len(err)} agree with the pose"),
    ))
    return figs


def pick_examples(results: Sequence[QueryResult], count: int = 2) -> list[QueryResult]:
    """A localized query and a failed one when there is one (else the next localized ones)."""
    ok = [r for r in results if r.pose is not None]
    bad = [r for r in results if r.pose is None]
    chosen = ok[:1] + bad[:1]
    chosen += [r for r in ok[1:] if r not in chosen][: max(0, count - len(chosen))]
    return chosen[:count]
